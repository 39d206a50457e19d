"""The region of interest R and the scoring region built from it.

Arrays are numpy arrays in (z, y, x) order on the CT grid. Points and indices that come from the user are
(x, y, z): RAS millimetres (Slicer's convention) or (i, j, k) voxel indices, where i indexes the last
numpy axis (x) and k the first (z). Bounding boxes are half-open throughout: (start, stop) with stop one
past the last voxel, as Python slices are.
"""

from __future__ import annotations

import re

import numpy as np
from scipy import ndimage

from SegSHAPLib import options
from SegSHAPLib.box import Box
from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import Volume, describe_grid_mismatch
from SegSHAPLib.io.label_maps import binary_mask
from SegSHAPLib.scoring.values import VALUE_FUNCTIONS

CONNECTIVITIES = {6: 1, 18: 2, 26: 3}  # neighbourhood size -> rank of scipy's generate_binary_structure
# Distances equal to D up to floating-point rounding count as "within D mm".
_DILATE_TOLERANCE_MM = 1e-6


def _volume_extent(volume: Volume, space: str) -> str:
    """The volume's extent in ``space``, as text: index ranges for "ijk", RAS bounds in mm for "ras"."""
    nx, ny, nz = volume.shape_zyx[::-1]
    if space == "ijk":
        return f"i in [0, {nx - 1}], j in [0, {ny - 1}], k in [0, {nz - 1}]"
    # The eight corners of the voxel-centre box, widened by half a voxel (what rounds into the volume).
    corners = np.array([[i, j, k] for i in (-0.5, nx - 0.5) for j in (-0.5, ny - 0.5) for k in (-0.5, nz - 0.5)])
    ras = volume.ijk_to_ras(corners)
    lo, hi = ras.min(axis=0), ras.max(axis=0)
    return ", ".join(f"{axis} in [{a:.1f}, {b:.1f}]" for axis, a, b in zip("RAS", lo, hi)) + " mm"


def point_to_ijk(volume: Volume, point_xyz, space: str = "ras") -> tuple[int, int, int]:
    """The voxel (i, j, k) nearest to a point given in RAS mm or as (i, j, k) indices.

    point_xyz: three numbers, (x, y, z) order: (R, A, S) in mm for space "ras", (i, j, k) for "ijk".
    Returns integer (i, j, k) (i indexes numpy axis 2, k axis 0), rounded to the nearest voxel centre
    (halves round up). Raises InputError when the point is not three finite numbers or lies outside the
    volume; the message gives the volume's extent in the same space.
    """
    if space not in options.POINT_SPACES:
        raise InputError(f"point space {space!r} is not one of {', '.join(options.POINT_SPACES)}")
    try:
        point = np.asarray(point_xyz, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"ROI point {point_xyz!r} is not three numbers x,y,z") from None
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise InputError(f"ROI point {point_xyz!r} is not three finite numbers x,y,z")
    continuous = volume.ras_to_ijk(point) if space == "ras" else point
    ijk = np.floor(continuous + 0.5).astype(int)
    size_ijk = np.array(volume.shape_zyx[::-1])
    if np.any(ijk < 0) or np.any(ijk >= size_ijk):
        shown = ", ".join(f"{v:g}" for v in point)
        raise InputError(f"ROI point ({shown}) in {space.upper()} is outside the CT (nearest voxel index "
                         f"{tuple(int(v) for v in ijk)}); the CT covers {_volume_extent(volume, space)}")
    return tuple(int(v) for v in ijk)


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in CONNECTIVITIES:
        raise InputError(f"connectivity {connectivity} is not one of 6, 18, 26")
    return ndimage.generate_binary_structure(3, CONNECTIVITIES[connectivity])


def _nearest_voxel_ijk(mask: np.ndarray, ijk: tuple[int, int, int]) -> tuple[int, int, int]:
    """The voxel of ``mask`` (z, y, x) nearest in index space to ``ijk``, returned as (i, j, k)."""
    zyx = np.argwhere(mask)
    d2 = ((zyx - np.array(ijk[::-1])) ** 2).sum(axis=1)
    return tuple(int(v) for v in zyx[int(np.argmin(d2))][::-1])


def roi_from_point(prediction_zyx: np.ndarray, target: int, ijk: tuple[int, int, int],
                   connectivity: int = 26) -> np.ndarray:
    """The connected component of ``prediction == target`` that contains voxel ``ijk``.

    prediction_zyx: integer label array (z, y, x). ijk: (i, j, k) = (x, y, z) index of the clicked voxel.
    connectivity: 6 (faces), 18 (faces and edges) or 26 (faces, edges and corners).
    Returns a bool mask (z, y, x). Raises InputError when the voxel is outside the array, when the
    prediction has no voxel of the target class, or when the clicked voxel is of another class (the message
    names that class and the nearest target voxel, in (i, j, k)).
    """
    structure = _structure(connectivity)
    i, j, k = (int(v) for v in ijk)
    nz, ny, nx = prediction_zyx.shape
    if not (0 <= i < nx and 0 <= j < ny and 0 <= k < nz):
        raise InputError(f"ROI voxel (i, j, k) = ({i}, {j}, {k}) is outside the prediction "
                         f"(i in [0, {nx - 1}], j in [0, {ny - 1}], k in [0, {nz - 1}])")
    target_mask = prediction_zyx == target
    if not target_mask.any():
        raise InputError(f"the prediction has no voxel of target class {target}; check --target")
    clicked = int(prediction_zyx[k, j, i])
    if clicked != target:
        nearest = _nearest_voxel_ijk(target_mask, (i, j, k))
        what = "background (class 0)" if clicked == 0 else f"class {clicked}"
        raise InputError(f"the ROI point (i, j, k) = ({i}, {j}, {k}) is predicted as {what}, not the target "
                         f"class {target}; the nearest class-{target} voxel is at (i, j, k) = {nearest}")
    components, _ = ndimage.label(target_mask, structure=structure)
    return components == components[k, j, i]


def roi_from_mask(mask_volume: Volume, ct_volume: Volume) -> np.ndarray:
    """A user-given ROI mask (nonzero = inside) as a bool array (z, y, x) on the CT grid.

    Raises InputError when the mask is not on the CT's voxel grid, is not binary (non-integer values or several
    labels: the message lists them) or has no nonzero voxel.
    """
    if not ct_volume.same_grid(mask_volume):
        raise InputError(describe_grid_mismatch(ct_volume, mask_volume, "the CT", "the ROI mask"))
    mask = binary_mask(mask_volume.array, "the ROI mask")
    if not mask.any():
        raise InputError("the ROI mask is empty (no nonzero voxel); paint the region to explain")
    return mask


def bounding_box(mask: np.ndarray) -> Box:
    """Half-open bounding box ((z0, z1), (y0, y1), (x0, x1)) of the True voxels of a (z, y, x) mask."""
    if not mask.any():
        raise ValueError("an empty mask has no bounding box")
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return Box(box)


def bbox_ijk(box_zyx) -> list[list[int]]:
    """A half-open (z, y, x) box as summary.json's ``bbox_ijk``: [[i0, i1], [j0, j1], [k0, k1]], half-open
    (i1 is one past the last voxel), i.e. the same box with the axes in (x, y, z) order."""
    return [[int(a), int(b)] for a, b in box_zyx[::-1]]


def scoring_region(roi_mask: np.ndarray, kind: str, spacing_zyx, dilate_mm: float | None = None) -> np.ndarray:
    """The scoring region (bool, (z, y, x)) built from the ROI mask R.

    kind "component": R itself; "box": the filled bounding box of R; "dilated": every voxel whose centre is
    within ``dilate_mm`` mm (Euclidean, in physical mm using ``spacing_zyx`` = (sz, sy, sx)) of a voxel of R.
    Raises InputError for an unknown kind, or for "dilated" without a positive D or with a D below the
    smallest voxel spacing (which would add no voxel and silently equal "component").
    """
    if kind not in options.SCORE_REGIONS:
        raise InputError(f"score region {kind!r} is not one of {', '.join(options.SCORE_REGIONS)}")
    if kind == "component":
        return roi_mask.copy()
    box = bounding_box(roi_mask)
    if kind == "box":
        region = np.zeros_like(roi_mask, dtype=bool)
        region[box.slices] = True
        return region
    spacing = np.asarray(spacing_zyx, dtype=float)
    if dilate_mm is None or not np.isfinite(dilate_mm) or dilate_mm <= 0:
        raise InputError(f"score region 'dilated' needs a positive --dilate-mm (got {dilate_mm})")
    if dilate_mm < spacing.min():
        raise InputError(f"--dilate-mm {dilate_mm:g} is below the smallest voxel spacing ({spacing.min():g} mm), "
                         "so the dilation adds no voxel; use a larger D or --score-region component")
    # Only voxels within floor(D / s) voxels of the box along each axis can be within D mm: work on that crop.
    pad = np.floor(dilate_mm / spacing + _DILATE_TOLERANCE_MM).astype(int)
    crop = tuple(slice(max(a - p, 0), min(b + p, n)) for (a, b), p, n in zip(box, pad, roi_mask.shape))
    distance = ndimage.distance_transform_edt(~roi_mask[crop], sampling=spacing)
    region = np.zeros_like(roi_mask, dtype=bool)
    region[crop] = distance <= dilate_mm + _DILATE_TOLERANCE_MM
    return region


def check_value_region(value: str, kind: str) -> None:
    """Refuse a value function / scoring region pair that is identically zero for a clicked ROI.

    With R the clicked connected component of the baseline prediction P_0, P_0 = 1 on every voxel of R, so
    S_FP (which sums over voxels with P_0 = 0) is identically 0 on "component". Every other pair scores
    something for a clicked ROI: tp, dice and softdice see P_0 = 1 voxels in any region containing R, and
    "box"/"dilated" regions usually hold P_0 = 0 voxels (when they do not, ``check_value_on_region`` says so).
    Also note that on "component" (w = 1 on R) softdice equals tp; it is not refused, as it is not zero.
    Raises InputError naming the problem and what to choose instead.
    """
    if value not in VALUE_FUNCTIONS:
        raise InputError(f"value function {value!r} is not one of {', '.join(VALUE_FUNCTIONS)}")
    if kind not in options.SCORE_REGIONS:
        raise InputError(f"score region {kind!r} is not one of {', '.join(options.SCORE_REGIONS)}")
    if value == "fp" and kind == "component":
        raise InputError("--value fp with --score-region component is identically 0: the ROI is a component of "
                         "the prediction, so none of its voxels can become a new false positive; use "
                         "--score-region box or --score-region dilated --dilate-mm D")


def check_value_on_region(value: str, region: np.ndarray, baseline_pred: np.ndarray) -> None:
    """Refuse a value function that is identically zero on this scoring region and baseline prediction.

    region, baseline_pred: bool (z, y, x) on the same grid (P_0 = baseline argmax == target). Exact rules:
    tp and dice are identically 0 when no voxel of the region has P_0 = 1 (possible for a given ROI mask
    outside the prediction); fp is identically 0 when every voxel of the region has P_0 = 1 (a clicked
    component scored on itself, a box around a cuboid component, a given mask inside the prediction).
    softdice is never identically 0 on a nonempty region. Raises InputError saying why and what to do.
    """
    if value not in VALUE_FUNCTIONS:
        raise InputError(f"value function {value!r} is not one of {', '.join(VALUE_FUNCTIONS)}")
    if not region.any():
        raise InputError("the scoring region is empty; give an ROI with at least one voxel")
    inside = baseline_pred[region]
    if value in ("tp", "dice") and not inside.any():
        raise InputError(f"--value {value} is identically 0 here: no voxel of the scoring region is predicted as "
                         "the target; use --value fp or softdice, or a region that overlaps the prediction")
    if value == "fp" and inside.all():
        raise InputError("--value fp is identically 0 here: every voxel of the scoring region is already predicted "
                         "as the target, so none can become a false positive; use --score-region dilated "
                         "--dilate-mm D (or box) so the region reaches beyond the prediction")


def parse_point(text: str, name: str = "--roi-point") -> tuple[float, float, float]:
    """'x,y,z' or 'x y z' (negative numbers welcome) -> three floats; InputError naming ``name`` otherwise."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise InputError(f"{name} {text!r}: give three comma-separated numbers, e.g. -111.9,122.3,148.3")
    return values
