"""Interpretable units {U_j}, j = 1..M, partitioning part of the ROI's support (docs/method.md, section 4 "Units").

The public entry point; each unit type lives in its own module:
- ``unit_map``:      ``UnitMap`` and the common rule (support, fragments, numbering 1..M, no units -> error).
- ``organs``:        organ units from an organ map, names, grouping (``organ_units``, ``organ_class_names``).
- ``grouping``:      organ groupings, built-in or from a JSON file (``load_grouping``, ``BUILTIN_GROUPINGS``).
- ``organ_segmentation``: TotalSegmentator's organ map on the CT grid (``segshap organs``).
- ``fcc``:           face-centred-cubic supervoxels in physical mm (``fcc_units``).
- ``hybrid``:        FCC (or SLIC) cells split by organ (``hybrid_units``).
- ``slic``:          boundary-adherent SLIC supervoxels of the CT, in mm (``slic_units``; scikit-image's ``slic``).
- ``zoom``:          organ units with chosen organs split into their hybrid cells (``refine_units``).
All arrays are (z, y, x) on the CT grid.
"""

from SegSHAPLib.units.unit_map import UnitMap
from SegSHAPLib.units.fcc import cell_volume_mm3, fcc_units
from SegSHAPLib.units.hybrid import hybrid_units
from SegSHAPLib.units.slic import slic_units
from SegSHAPLib.units.grouping import BUILTIN_GROUPINGS, load_grouping
from SegSHAPLib.units.organs import organ_class_names, organ_units

__all__ = ["UnitMap", "organ_units", "organ_class_names", "load_grouping", "BUILTIN_GROUPINGS",
           "fcc_units", "cell_volume_mm3", "hybrid_units", "slic_units"]
