"""Organ units: one unit per organ label (or per group of organ labels) of an organ map inside the support.

Organ names come from the label file's own table, else from TotalSegmentator's ``total`` class map, else
"label_<id>" (``organ_class_names``). Grouping lets a user bring M down: a JSON object mapping a group name to
a list of glob patterns (``fnmatch``; case, spaces, hyphens and underscores ignored: ``grouping.organ_name_key``) on
organ names, e.g.
    {"rib cage": ["rib_left_*", "rib_right_*", "costal_cartilages", "sternum"], "vertebrae": ["vertebrae_*"]}
Every organ matched by a group's patterns joins that group's unit (named after the group); unmatched organs
stay units of their own; an organ matched by two groups is an error. Built-in groupings are selected by name
(``grouping.BUILTIN_GROUPINGS``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.errors import InputError
from SegSHAPLib.units.grouping import load_grouping, pattern_matches
from SegSHAPLib.io.image_io import read_volume
from SegSHAPLib.units.unit_map import UnitMap, finish_units, support_box


def _names_from_label_table(path: Path) -> dict[int, str]:
    """id -> name from a NIfTI header's CaretExtension XML label table ({} when there is none)."""
    try:
        import nibabel
        from nibabel.filebasedimages import ImageFileError
    except ImportError:
        return {}
    try:
        header = nibabel.load(str(path)).header
    except (ImageFileError, OSError):  # not a NIfTI file: it has no such table
        return {}
    names = {}
    for extension in getattr(header, "extensions", []):
        content = extension.get_content()
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        text = text.strip("\x00 \t\r\n")
        if "<LabelTable" not in text:
            continue
        try:
            root = ElementTree.fromstring(text)
        except ElementTree.ParseError:
            continue
        for label in root.iter("Label"):
            name = (label.text or "").strip()
            try:
                key = int(label.get("Key", ""))
            except ValueError:
                continue
            if name:
                names[key] = name
    return names


def _names_from_totalsegmentator() -> dict[int, str]:
    """TotalSegmentator's ``total`` task names when the package is installed, else {}."""
    try:
        from totalsegmentator.map_to_binary import class_map
    except ImportError:
        return {}
    return {int(k): str(v) for k, v in class_map["total"].items()}


def organ_class_names(label_volume_path: str | os.PathLike) -> dict[int, str]:
    """Organ label id -> name for an organ map file.

    Source, first that has names: the file's own CaretExtension label table (TotalSegmentator writes one into
    its multilabel NIfTI), then TotalSegmentator's ``total`` class map if the package is installed (the file is
    then assumed to be a ``total`` map), then nothing. Every nonzero label present in the file that is still
    unnamed gets "label_<id>".
    """
    path = Path(label_volume_path)
    names = _names_from_label_table(path) or _names_from_totalsegmentator()
    present = np.unique(read_volume(path).array)
    for label in present[present > 0]:
        names.setdefault(int(label), f"label_{int(label)}")
    return names


def class_name(class_names: dict[int, str], label: int) -> str:
    """The name of an organ label, "label_<id>" when unnamed."""
    return class_names.get(int(label), f"label_{int(label)}")


def _group_of(name: str, grouping: dict[str, list[str]]) -> str | None:
    """The group whose patterns match ``name`` (None when no group does); InputError when two groups do."""
    groups = [g for g, patterns in grouping.items() if any(pattern_matches(name, p) for p in patterns)]
    if len(groups) > 1:
        raise InputError(f"organ {name!r} matches groups {groups[0]!r} and {groups[1]!r}; make the grouping's "
                         "patterns exclusive")
    return groups[0] if groups else None


def check_label_map(organ_labels_zyx: np.ndarray, shape: tuple[int, ...]) -> None:
    """InputError unless ``organ_labels_zyx`` is a non-negative integer label array of the given shape."""
    if organ_labels_zyx.shape != tuple(shape):
        raise InputError(f"the organ map's size (x,y,z) {organ_labels_zyx.shape[::-1]} differs from the CT's "
                         f"{tuple(shape)[::-1]}; resample the organ map onto the CT first")
    if not np.issubdtype(organ_labels_zyx.dtype, np.integer):
        raise InputError(f"the organ map holds {organ_labels_zyx.dtype} values; give an integer label map")
    if organ_labels_zyx.size and organ_labels_zyx.min() < 0:
        raise InputError("the organ map holds negative labels; give a label map with 0 = background")


def organ_units(organ_labels_zyx: np.ndarray, support_mask: np.ndarray, class_names: dict[int, str],
                grouping=None, min_voxels: int = options.MIN_ORGAN_VOXELS) -> UnitMap:
    """One unit per organ label (or group) present inside the support; background (0) is not a unit.

    organ_labels_zyx: integer label array (z, y, x) on the CT grid. support_mask: bool (z, y, x).
    class_names: label id -> name (``organ_class_names``). grouping: None, a built-in name, a JSON path or a
    dict (see the module docstring). min_voxels: an organ (or group) with fewer voxels inside the support is
    dropped (left unperturbed). Units are numbered by their smallest organ label id; ``source_labels[j-1]``
    holds the organ label ids of unit j.
    """
    check_label_map(organ_labels_zyx, support_mask.shape)
    groups = load_grouping(grouping)
    box = support_box(support_mask)
    organs = np.where(support_mask[box], organ_labels_zyx[box], 0)
    present = [int(v) for v in np.unique(organs) if v > 0]
    members: dict[tuple[bool, str], list[int]] = {}  # (is a group, unit name) -> organ labels
    for label in present:
        name = class_name(class_names, label)
        group = _group_of(name, groups)
        members.setdefault((group is not None, group or name), []).append(label)
    candidates = sorted(((name, labels) for (_, name), labels in members.items()), key=lambda item: min(item[1]))
    lookup = np.zeros(max(present, default=0) + 1, dtype=np.int32)
    for candidate_id, (_, labels) in enumerate(candidates, start=1):
        lookup[labels] = candidate_id
    return finish_units(lookup[organs], [name for name, _ in candidates], [tuple(ls) for _, ls in candidates],
                        shape=support_mask.shape, box=box, min_voxels=min_voxels,
                        merge_key=np.arange(len(candidates)),
                        no_units_hint="the organ map has no organ there; check that --organs belongs to this CT "
                                      "or use --units fcc")


def dominant_organ_names(unit_labels: np.ndarray, organs: np.ndarray, n_units: int,
                          class_names: dict[int, str]) -> list[str]:
    """For units 1..n on a box: the name of the label (organ or background 0) covering most of each unit,
    "" where background is the largest."""
    n_labels = int(organs.max(initial=0)) + 1
    keys, counts = np.unique((unit_labels.astype(np.int64) * n_labels + organs)[unit_labels > 0], return_counts=True)
    unit, organ = keys // n_labels, keys % n_labels
    order = np.lexsort((organ, -counts, unit))
    unit, organ = unit[order], organ[order]
    first = np.r_[True, unit[1:] != unit[:-1]]
    dominant = np.zeros(n_units + 1, dtype=np.int64)
    dominant[unit[first]] = organ[first]
    return ["" if label == 0 else class_name(class_names, label) for label in dominant[1:]]


def cell_names(units: UnitMap, box: tuple[slice, slice, slice], organ_labels_zyx: np.ndarray | None,
               class_names: dict[int, str] | None) -> list[str]:
    """Names of supervoxel units (FCC or SLIC cells) numbered 1..M: "cell <j>", or with an organ map
    (z, y, x) on the CT grid "cell <j> (<organ>)" after the label covering most of unit j (plain "cell <j>" when
    that is background). ``box``: the support's bounding box, which holds every unit."""
    names = [f"cell {j}" for j in range(1, units.n_units + 1)]
    if organ_labels_zyx is None:
        return names
    check_label_map(organ_labels_zyx, units.labels.shape)
    organs = dominant_organ_names(units.labels[box], organ_labels_zyx[box], units.n_units, class_names or {})
    return [f"{name} ({organ})" if organ else name for name, organ in zip(names, organs)]
