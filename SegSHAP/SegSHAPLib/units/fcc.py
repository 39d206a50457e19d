"""FCC units: supervoxels that are the Voronoi cells of a face-centred-cubic lattice in physical millimetres.

Scale S (``scale_mm``) is the nearest-neighbour distance between cell centres. The lattice is
    { (S / sqrt 2) * (a, b, c) : a, b, c integers, a + b + c even }      (LPS mm)
i.e. cubic cell edge sqrt(2) S, anchored at the physical origin (0, 0, 0) with its axes along L, P, S. It is
fixed in physical space, so a physical point always falls in the same cell, whatever the grid, crop or support.
Each cell is a rhombic dodecahedron of volume S^3 / sqrt 2 (a ball of the same volume has diameter ~1.1 S) and
extent sqrt(2) S along each of L, P, S: isotropic in mm whatever the voxel spacing and direction matrix.
A voxel belongs to the cell whose centre is nearest to its centre's physical position (origin + direction *
spacing * ijk), found exactly by rounding to the lattice (Conway & Sloane's D3 decoder), no search.

Degenerate scales are refused (InputError): S <= 0 or not finite; S below the coarsest voxel spacing (cells
thinner than a slice cannot be isotropic); and S so large that the support holds fewer than 2 units.
Fragments: a cell with less than a quarter of a whole cell's voxels inside the support (cut by the support's
boundary) merges into its neighbouring cell (see ``unit_map``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import Volume
from SegSHAPLib.units.unit_map import UnitMap, finish_units, support_box
from SegSHAPLib.units.organs import cell_names

MIN_CELL_FRACTION = 0.25
_CHUNK_VOXELS = 1 << 20            # physical positions are computed this many voxels at a time
_KEY_BITS = 21                     # lattice index a, b, c each packed in 21 bits of an int64 key
_KEY_OFFSET = 1 << (_KEY_BITS - 1)


def lattice_step_mm(scale_mm: float) -> float:
    """The lattice's coordinate step h = S / sqrt 2 (half the cubic cell edge), in mm."""
    return scale_mm / math.sqrt(2.0)


def cell_volume_mm3(scale_mm: float) -> float:
    """Volume of one FCC cell (rhombic dodecahedron) at scale S: S^3 / sqrt 2, in mm^3."""
    return scale_mm ** 3 / math.sqrt(2.0)


def nearest_lattice_index(points_lps: np.ndarray, scale_mm: float) -> np.ndarray:
    """Lattice index (a, b, c), int64 (N, 3), of the FCC centre nearest to each LPS point (N, 3) in mm."""
    q = points_lps / lattice_step_mm(scale_mm)
    index = np.floor(q + 0.5)
    odd = np.flatnonzero(index.sum(axis=1) % 2 != 0)
    # Odd coordinate sum: re-round, the other way, the coordinate that was farthest from its integer.
    residual = q[odd] - index[odd]
    worst = np.abs(residual).argmax(axis=1)
    index[odd, worst] += np.where(residual[np.arange(odd.size), worst] >= 0, 1.0, -1.0)
    return index.astype(np.int64)


def _pack(index: np.ndarray) -> np.ndarray:
    """(N, 3) lattice indices (a, b, c) -> int64 keys ordered by c (S), then b (P), then a (L)."""
    if np.abs(index).max(initial=0) >= _KEY_OFFSET:
        raise ValueError("the image lies too far from the physical origin for the FCC lattice keys")
    shifted = index + _KEY_OFFSET
    return (shifted[:, 2] << (2 * _KEY_BITS)) | (shifted[:, 1] << _KEY_BITS) | shifted[:, 0]


def _unpack(keys: np.ndarray) -> np.ndarray:
    mask = (1 << _KEY_BITS) - 1
    return np.stack([keys & mask, (keys >> _KEY_BITS) & mask, keys >> (2 * _KEY_BITS)], axis=1) - _KEY_OFFSET


def _cell_keys(volume: Volume, box: tuple[slice, slice, slice], inside: np.ndarray, scale_mm: float) -> np.ndarray:
    """Packed lattice key of the nearest cell centre for each True voxel of ``inside`` (the support over
    ``box``, (z, y, x)), in C order. Works a slab of z-slices at a time to bound memory."""
    ijk_to_lps = volume.ijk_to_lps_matrix()
    k_axis, j_axis, i_axis = (np.arange(s.start, s.stop, dtype=np.float64) for s in box)
    slab = max(1, _CHUNK_VOXELS // (len(j_axis) * len(i_axis)))
    keys = []
    for z0 in range(0, len(k_axis), slab):
        k, chosen = k_axis[z0:z0 + slab, None, None], inside[z0:z0 + slab]
        lps = np.stack([(ijk_to_lps[c, 3] + ijk_to_lps[c, 0] * i_axis[None, None, :]
                         + ijk_to_lps[c, 1] * j_axis[None, :, None] + ijk_to_lps[c, 2] * k)[chosen]
                        for c in range(3)], axis=1)
        keys.append(_pack(nearest_lattice_index(lps, scale_mm)))
    return np.concatenate(keys)


def _check_scale(volume: Volume, scale_mm: float) -> None:
    if not (isinstance(scale_mm, numbers.Real) and math.isfinite(scale_mm) and scale_mm > 0):
        raise InputError(f"--fcc-scale-mm must be a positive number of mm (got {scale_mm})")
    coarsest = max(volume.spacing)
    if scale_mm < coarsest:
        raise InputError(f"--fcc-scale-mm {scale_mm:g} is below the CT's coarsest voxel spacing ({coarsest:g} mm), "
                         f"so cells would be thinner than a voxel; use at least {coarsest:g} mm")


def fcc_units(volume: Volume, support_mask: np.ndarray, scale_mm: float, *, min_voxels: int | None = None,
              organ_labels_zyx: np.ndarray | None = None, class_names: dict[int, str] | None = None) -> UnitMap:
    """FCC cells of scale S (mm) inside the support, as units (see the module docstring for the lattice).

    volume: the CT (its geometry is used; array (z, y, x)). support_mask: bool (z, y, x) on the CT grid.
    min_voxels: fragment threshold; default a quarter of a whole cell's voxels, ceil(S^3 / (4 sqrt 2 V_voxel)).
    organ_labels_zyx, class_names: optional organ map; then a unit is named "cell <j> (<organ>)" after the
    label covering most of it (plain "cell <j>" when that is background).
    Units are numbered along S, then P, then L of their centres; ``source_labels[j-1]`` is the lattice index
    (a, b, c) of unit j's centre, at LPS (a, b, c) * S / sqrt 2 mm.
    """
    _check_scale(volume, scale_mm)
    if support_mask.shape != volume.shape_zyx:
        raise ValueError(f"support {support_mask.shape} is not on the CT grid {volume.shape_zyx}")
    if min_voxels is None:
        min_voxels = math.ceil(MIN_CELL_FRACTION * cell_volume_mm3(scale_mm) / volume.voxel_volume_mm3())
    box = support_box(support_mask)
    inside = support_mask[box]
    keys, cell_of_voxel = np.unique(_cell_keys(volume, box, inside, scale_mm), return_inverse=True)
    raw = np.zeros(inside.shape, dtype=np.int64)
    raw[inside] = cell_of_voxel + 1
    units = finish_units(raw, [""] * len(keys), [tuple(int(v) for v in index) for index in _unpack(keys)],
                         shape=support_mask.shape, box=box, min_voxels=min_voxels, merge_key=None,
                         no_units_hint="it is smaller than a quarter of one cell; use a smaller --fcc-scale-mm")
    if units.n_units < 2:
        raise InputError(f"--fcc-scale-mm {scale_mm:g} gives a single unit over the ROI's support; use a smaller "
                         "scale so that the support holds several cells")
    units.names = cell_names(units, box, organ_labels_zyx, class_names)  # named once numbered
    return units
