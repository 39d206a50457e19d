"""SLIC units: boundary-adherent supervoxels of the CT inside the support, by scikit-image's 3D ``slic``.

Size S (``size_mm``) plays FCC's scale: SLIC is asked for round(V_support / (S^3 / sqrt 2)) supervoxels, so
their mean volume is that of an FCC cell of scale S (V_support: the support's volume in mm^3). Compactness m
(``compactness``) is scikit-image's: the CT is clipped to a soft-tissue window (``options.SLIC_HU_WINDOW``, HU,
so that air and bone do not set the intensity scale), ``slic`` rescales it to [0, 1] over the support (min to
max), and a spatial distance of one seed step weighs as much as an intensity difference of m; small m follows
intensity edges (organ boundaries), large m gives near-cubic cells.

Millimetres: the distance is physical because ``spacing`` is passed to ``slic`` (the voxel spacing along z, y,
x, divided by the finest one so that scikit-image's seed step, counted in voxels, stays on the same scale),
and a CT's direction matrix is a rotation or reflection, which keeps distances. The seeds are placed by
scikit-image (k-means on the support's voxel indices, its fixed random state), so unlike FCC the cells are not
anchored in physical space: a different crop or support moves them. ``slic`` runs on the support's bounding box
with the support as its mask; ``enforce_connectivity`` makes every supervoxel one connected piece.

Fragments (below a quarter of the mean supervoxel's voxels) merge into the neighbouring supervoxel (see
``unit_map``). Deterministic: the same CT, support and parameters give the same units.
"""

from __future__ import annotations

import math

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import Volume
from SegSHAPLib.units.fcc import MIN_CELL_FRACTION, cell_volume_mm3
from SegSHAPLib.units.organs import cell_names
from SegSHAPLib.units.unit_map import UnitMap, finish_units, support_box


def _check_parameters(volume: Volume, size_mm: float, compactness: float) -> None:
    if not (math.isfinite(size_mm) and size_mm > 0):
        raise InputError(f"--slic-size-mm must be a positive number of mm (got {size_mm})")
    coarsest = max(volume.spacing)
    if size_mm < coarsest:
        raise InputError(f"--slic-size-mm {size_mm:g} is below the CT's coarsest voxel spacing ({coarsest:g} mm); "
                         f"use at least {coarsest:g} mm")
    if not (math.isfinite(compactness) and compactness > 0):
        raise InputError(f"--slic-compactness must be a positive number (got {compactness})")


def slic_units(volume: Volume, support_mask: np.ndarray, size_mm: float, compactness: float, *,
               organ_labels_zyx: np.ndarray | None = None, class_names: dict[int, str] | None = None,
               window: tuple[float, float] = options.SLIC_HU_WINDOW) -> UnitMap:
    """SLIC supervoxels of size S (mm) and compactness m inside the support (see the module docstring).

    volume: the CT, array (z, y, x) in its own units (HU). support_mask: bool (z, y, x) on the CT grid.
    window: (low, high) the CT is clipped to before SLIC, in its own units.
    organ_labels_zyx, class_names: optional organ map; units are then named "cell <j> (<organ>)" like FCC's.
    Units are numbered in scikit-image's label order; ``source_labels[j-1]`` is (SLIC label,) of unit j.
    """
    from skimage.segmentation import slic

    _check_parameters(volume, size_mm, compactness)
    if support_mask.shape != volume.shape_zyx:
        raise ValueError(f"support {support_mask.shape} is not on the CT grid {volume.shape_zyx}")
    box = support_box(support_mask)
    inside = support_mask[box]
    voxels_per_cell = cell_volume_mm3(size_mm) / volume.voxel_volume_mm3()
    n_segments = max(2, round(int(inside.sum()) / voxels_per_cell))       # scikit-image labels nothing for 1
    spacing = np.asarray(volume.spacing_zyx, dtype=np.float64)
    raw = slic(np.clip(volume.array[box].astype(np.float64), *window), n_segments=n_segments, compactness=compactness,
               spacing=spacing / spacing.min(), mask=inside, channel_axis=None, start_label=1,
               enforce_connectivity=True)
    n_candidates = int(raw.max(initial=0))
    units = finish_units(raw, [""] * n_candidates, [(label,) for label in range(1, n_candidates + 1)],
                         shape=support_mask.shape, box=box,
                         min_voxels=math.ceil(MIN_CELL_FRACTION * voxels_per_cell), merge_key=None,
                         no_units_hint="it is smaller than a quarter of one supervoxel; use a smaller --slic-size-mm")
    if units.n_units < 2:
        raise InputError(f"--slic-size-mm {size_mm:g} gives a single unit over the ROI's support; use a smaller "
                         "size so that the support holds several supervoxels")
    units.names = cell_names(units, box, organ_labels_zyx, class_names)
    return units
