"""Organ groupings: which organs of an organ map join one unit (numpy-free, so the Slicer panel can check a
grouping file before the heavy dependencies are even installed).

A grouping is a JSON object mapping a group name to a list of glob patterns (``fnmatch``) on organ names, e.g.
``{"rib cage": ["rib_left_*", "rib_right_*", "costal_cartilages", "sternum"]}``; built-in groupings are selected by
name (``BUILTIN_GROUPINGS``). ``units.organs.organ_units`` applies it. Names and patterns are compared by
``organ_name_key``: case is ignored and spaces, hyphens and underscores are the same character, so "Rib left 1"
(a renamed segment) matches ``rib_left_*`` like TotalSegmentator's own "rib_left_1".
"""

from __future__ import annotations

import json
import os
import re
from fnmatch import fnmatchcase
from pathlib import Path

from SegSHAPLib.errors import InputError

BUILTIN_GROUPINGS: dict[str, dict[str, list[str]]] = {
    # On TotalSegmentator "total" names: repeated small structures (ribs, vertebrae, lung lobes per lung, paired
    # muscles, glands and vessels) become one unit per group; single and large paired organs stay on their own.
    "default": {
        "rib cage": ["rib_left_*", "rib_right_*", "costal_cartilages", "sternum"],
        "vertebrae": ["vertebrae_*", "sacrum"],
        "left lung": ["lung_*_left"],
        "right lung": ["lung_*_right"],
        "adrenal glands": ["adrenal_gland_*"],
        "back muscles": ["autochthon_*"],
        "iliopsoas": ["iliopsoas_*"],
        "gluteal muscles": ["gluteus_*"],
        "iliac vessels": ["iliac_artery_*", "iliac_vena_*"],
        "kidney cysts": ["kidney_cyst_*"],
    },
    # Coarser, by organ system, for a first look with few units (exact enumeration is affordable when each
    # network patch holds few units; then zoom, ``--refine``, into the organs that matter: hybrid cells are split
    # per organ label, so a zoom into "liver and gallbladder" separates the two again). Solid upper-abdominal
    # organs other than the liver stay on their own.
    "systems": {
        "liver and gallbladder": ["liver", "gallbladder"],
        "kidneys and adrenal glands": ["kidney_*", "adrenal_gland_*"],
        "lungs and chest wall": ["lung_*", "trachea", "rib_left_*", "rib_right_*", "costal_cartilages", "sternum"],
        "bowel": ["esophagus", "duodenum", "small_bowel", "colon"],
        "vessels": ["aorta", "inferior_vena_cava", "superior_vena_cava", "portal_vein_and_splenic_vein",
                    "iliac_artery_*", "iliac_vena_*", "pulmonary_*", "brachiocephalic_*", "subclavian_artery_*",
                    "common_carotid_artery_*"],
        "spine and back muscles": ["vertebrae_*", "sacrum", "spinal_cord", "autochthon_*", "iliopsoas_*"],
        "pelvis and hips": ["hip_*", "femur_*", "gluteus_*", "urinary_bladder", "prostate"],
    },
}


def organ_name_key(name: str) -> str:
    """The form organ names and patterns are compared in: lower case, runs of spaces/hyphens/underscores -> "_"."""
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def pattern_matches(name: str, pattern: str) -> bool:
    """Whether a grouping's glob pattern matches an organ name (``organ_name_key`` on both)."""
    return fnmatchcase(organ_name_key(name), organ_name_key(pattern))


def load_grouping(grouping) -> dict[str, list[str]]:
    """A grouping as {group name: [glob patterns]} from None, a dict, a built-in name or a JSON file path."""
    if grouping is None:
        return {}
    if isinstance(grouping, (str, os.PathLike)) and str(grouping) in BUILTIN_GROUPINGS:
        return BUILTIN_GROUPINGS[str(grouping)]
    if isinstance(grouping, (str, os.PathLike)):
        path = Path(grouping)
        if not path.is_file():
            raise InputError(f"organ grouping {str(grouping)!r} is neither a built-in grouping "
                             f"({', '.join(BUILTIN_GROUPINGS)}) nor a JSON file")
        try:
            grouping = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"organ grouping file {path} is not valid JSON ({err})") from None
        except OSError as err:
            raise InputError(f"organ grouping file {path} cannot be read ({err.strerror or err})") from None
    if not (isinstance(grouping, dict) and all(isinstance(k, str) and isinstance(v, list)
                                               and all(isinstance(p, str) for p in v)
                                               for k, v in grouping.items())):
        raise InputError('an organ grouping must be a JSON object {"group name": ["glob pattern", ...], ...}')
    return grouping
