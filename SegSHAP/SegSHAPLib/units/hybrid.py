"""Hybrid units: FCC cells split by organ label. Background (organ label 0) is not a unit.

A hybrid unit is "organ o inside FCC unit c", named "<organ> @ cell <c>" (e.g. "spleen @ cell 12", with c the
unit id in the FCC map, whose own name is "cell 12"). Fragments (pieces below ``min_voxels``) merge into the
neighbouring piece of the same organ in an adjacent cell, else are dropped (see ``unit_map``); so every
hybrid unit lies in exactly one organ, and in exactly one FCC cell apart from such merged fragments.
"""

from __future__ import annotations

import numpy as np

from SegSHAPLib.units.unit_map import UnitMap, finish_units, support_box
from SegSHAPLib import options
from SegSHAPLib.units.organs import check_label_map, class_name


def hybrid_units(fcc_map: UnitMap, organ_labels_zyx: np.ndarray, class_names: dict[int, str], *,
                 min_voxels: int = options.MIN_ORGAN_VOXELS) -> UnitMap:
    """Split each FCC unit by organ label.

    fcc_map: the FCC units (``fcc_units``) on the CT grid; its units define the support.
    organ_labels_zyx: integer organ label array (z, y, x) on the same grid. class_names: label id -> name.
    Units are numbered by FCC unit, then organ label; ``source_labels[j-1]`` = (FCC unit id, organ label id).
    """
    check_label_map(organ_labels_zyx, fcc_map.labels.shape)
    box = support_box(fcc_map.labels > 0)
    cells, organs = fcc_map.labels[box].astype(np.int64), organ_labels_zyx[box].astype(np.int64)
    in_unit = (cells > 0) & (organs > 0)
    n_labels = int(organs.max(initial=0)) + 1
    keys, piece = np.unique(cells[in_unit] * n_labels + organs[in_unit], return_inverse=True)
    raw = np.zeros(cells.shape, dtype=np.int64)
    raw[in_unit] = piece + 1
    cell_ids, organ_ids = keys // n_labels, keys % n_labels
    names = [f"{class_name(class_names, o)} @ cell {c}" for c, o in zip(cell_ids, organ_ids)]
    return finish_units(raw, names, [(int(c), int(o)) for c, o in zip(cell_ids, organ_ids)],
                        shape=fcc_map.labels.shape, box=box, min_voxels=min_voxels, merge_key=organ_ids,
                        no_units_hint="the organ map has no organ there; check that --organs belongs to this CT "
                                      "or use --units fcc")
