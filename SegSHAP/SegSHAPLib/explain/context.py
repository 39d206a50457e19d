"""Everything one explanation needs before the solver runs: model, ROI, support, units, engine, value function.

``prepare_context`` turns a request (paths or in-memory volumes) into an ``ExplanationContext`` whose
``values(keep)`` is the game v(m) the solver asks about. The same context serves ``segshap explain`` (solver),
``--verify`` (against nnU-Net's own full prediction) and ``segshap evaluate`` (MoRF/LeRF curves), so all three
use one operator and one value function.

Grids: CT-grid arrays are (z, y, x); network-grid arrays are (z', y', x') (see ``network_grid``). Boxes are
half-open. The value is computed on the network grid, on the box B' that holds the scoring region carried there
by nearest neighbour (for the plans' own spacing, as in the demo model, the two grids coincide).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SegSHAPLib.inference.cached_inference import CachedSlidingWindow, SlidingWindowLayout
from SegSHAPLib.inference.case_cache import cached_case, cached_predictor
from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import Volume, describe_grid_mismatch, read_volume
from SegSHAPLib.inference.mask_value import MaskValue, mask_value
from SegSHAPLib.inference.model import Preprocessed, resolve_target
from SegSHAPLib.box import Box
from SegSHAPLib.inference.network_grid import NetworkGrid
from SegSHAPLib.scoring.roi import (REGION_KINDS, bounding_box, check_value_on_region, check_value_region, point_to_ijk, roi_from_mask,
                  roi_from_point, scoring_region)
from SegSHAPLib.units.unit_map import UnitMap
from SegSHAPLib.units import fcc_units, hybrid_units, organ_class_names, organ_units
from SegSHAPLib.scoring.values import value_function

UNIT_TYPES = ("organs", "fcc", "hybrid")


@dataclass
class ExplanationContext:
    """A prepared explanation. Arrays on the CT grid are (z, y, x); ``*_net`` ones are on the network box."""

    request: object
    ct: Volume
    predictor: object
    preprocessed: Preprocessed
    grid: NetworkGrid
    prediction: Volume                 # label map used to pick the ROI (model's own unless given)
    target: int
    roi_point_ijk: tuple[int, int, int] | None
    roi: np.ndarray                    # bool, the clicked component R (or the given mask)
    region: np.ndarray                 # bool, the scoring region on the CT grid
    box_ct: Box                        # bounding box of the scoring region
    support_mask: np.ndarray           # bool, B_RF on the CT grid
    units: UnitMap
    engine: CachedSlidingWindow
    mask_value: MaskValue              # b in the CT's units and normalised as nnU-Net normalises this CT
    region_net: np.ndarray             # bool (bz, by, bx)
    baseline_pred_net: np.ndarray      # bool (bz, by, bx), P_0
    value_name: str

    @property
    def n_units(self) -> int:
        return self.units.n_units

    def values(self, keep: np.ndarray, cancel=None, progress=None) -> np.ndarray:
        """v(m) for a batch of coalitions: keep bool (n, M), True = unit kept -> float64 (n,)."""
        logits = self.engine.evaluate(keep, cancel=cancel, progress=progress)
        return value_function(self.value_name)(logits, self.region_net, self.baseline_pred_net, self.target)


def _load_aligned(volume: Volume | None, path, ct: Volume, what: str, flag: str) -> Volume | None:
    """An in-memory volume or one read from ``path``; InputError unless it lies on the CT's voxel grid."""
    if volume is None and path is None:
        return None
    volume = volume if volume is not None else read_volume(path)
    if not volume.same_grid(ct):
        raise InputError(f"{flag}: " + describe_grid_mismatch(ct, volume, "the CT", what))
    return volume


def check_request(request, roi_mask_in_memory: bool) -> None:
    """Refuse bad arguments before anything heavy runs (one clear line each)."""
    if request.units not in UNIT_TYPES:
        raise InputError(f"unknown unit type {request.units!r}; choose one of {', '.join(UNIT_TYPES)}")
    if request.score_region not in REGION_KINDS:
        raise InputError(f"unknown score region {request.score_region!r}; choose one of {', '.join(REGION_KINDS)}")
    value_function(request.value)
    if request.units in ("fcc", "hybrid") and not request.fcc_scale_mm > 0:
        raise InputError(f"--fcc-scale-mm must be > 0 (got {request.fcc_scale_mm})")
    if request.budget < 2:
        raise InputError(f"--budget must be at least 2 (the empty and the full coalition), got {request.budget}")
    if request.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {request.batch_size}")
    if not np.isfinite(request.mask_value):
        raise InputError(f"--mask-value must be a finite HU value, got {request.mask_value}")
    has_mask = roi_mask_in_memory or request.roi_mask is not None
    if (request.roi_point is None) == (not has_mask):
        raise InputError("give exactly one of --roi-point and --roi-mask")
    if not has_mask:  # R is then a component of P_0, so some value/region pairs are identically zero
        check_value_region(request.value, request.score_region)


def _roi(request, ct: Volume, prediction: Volume, target: int, roi_mask_volume: Volume | None):
    """(R bool (z, y, x), clicked (i, j, k) or None)."""
    if roi_mask_volume is not None or request.roi_mask is not None:
        mask = roi_mask_volume if roi_mask_volume is not None else read_volume(request.roi_mask)
        return roi_from_mask(mask, ct), None
    ijk = point_to_ijk(ct, request.roi_point, request.point_space)
    return roi_from_point(prediction.array, target, ijk), ijk


def _support_mask(grid: NetworkGrid, layout: SlidingWindowLayout, box_net: Box) -> np.ndarray:
    """B_RF on the CT grid: every CT voxel that the support patches of ``box_net`` sample."""
    mask = np.zeros(grid.ct_shape, dtype=bool)
    for patch_box in layout.support_network_boxes(box_net):
        mask[grid.network_box_to_ct(patch_box).slices] = True
    return mask


def _units(request, ct: Volume, organs: Volume | None, names: dict[int, str] | None,
           support_mask: np.ndarray) -> UnitMap:
    if request.units in ("organs", "hybrid") and organs is None:
        raise InputError(f"--units {request.units} needs --organs LABELMAP (a TotalSegmentator-style organ map on "
                         "the CT grid)")
    if organs is not None and names is None:
        names = organ_class_names(request.organs) if request.organs is not None else {}
    if request.units == "organs":
        return organ_units(organs.array, support_mask, names, grouping=request.grouping)
    organ_array = organs.array if organs is not None else None
    cells = fcc_units(ct, support_mask, request.fcc_scale_mm, organ_labels_zyx=organ_array, class_names=names)
    if request.units == "fcc":
        return cells
    return hybrid_units(cells, organ_array, names)


def prepare_context(request, *, ct_volume: Volume | None = None, organ_volume: Volume | None = None,
                    prediction_volume: Volume | None = None, roi_mask_volume: Volume | None = None,
                    organ_names: dict[int, str] | None = None, predictor=None,
                    units_volume: Volume | None = None, unit_names: list[str] | None = None) -> ExplanationContext:
    """Build the explanation context of a request.

    In-memory volumes take precedence over the request's paths. ``units_volume``/``unit_names`` reuse a unit
    map written by an earlier run (``segshap evaluate``) instead of building one.
    """
    check_request(request, roi_mask_volume is not None)
    ct = ct_volume if ct_volume is not None else read_volume(request.ct)
    predictor = predictor or cached_predictor(request.model, request.fold, request.device, request.tile_step,
                                              request.tta, request.checkpoint)
    if predictor.label_manager.has_regions:
        raise InputError("region-based nnU-Net models (overlapping regions) are not supported; use a model "
                         "trained on plain labels")
    target = resolve_target(predictor, request.target)
    organs = _load_aligned(organ_volume, request.organs, ct, "the organ map", "--organs")
    given_prediction = _load_aligned(prediction_volume, getattr(request, "prediction", None), ct,
                                     "the prediction", "--prediction")

    pre, own_prediction = cached_case(predictor, ct, with_prediction=given_prediction is None)
    grid = NetworkGrid.from_preprocessing(pre.properties, predictor.plans_manager.transpose_forward,
                                          pre.data.shape[1:], ct.shape_zyx)
    prediction = given_prediction if given_prediction is not None else own_prediction

    roi, ijk = _roi(request, ct, prediction, target, roi_mask_volume)
    region = scoring_region(roi, request.score_region, ct.spacing_zyx, request.dilate_mm) | roi
    box_ct = bounding_box(region)
    try:
        box_net = grid.ct_box_to_network(box_ct)
    except ValueError as err:
        raise InputError(f"the ROI cannot be explained: {err}") from None
    layout = SlidingWindowLayout(predictor, pre.data)
    support = _support_mask(grid, layout, box_net)

    if units_volume is not None:
        units = UnitMap(units_volume.array.astype(np.int32), list(unit_names))
    else:
        units = _units(request, ct, organs, organ_names, support)
    mask = mask_value(predictor, ct, request.mask_value)
    engine = CachedSlidingWindow(predictor, layout, grid.to_network(units.labels), units.n_units, box_net,
                                 mask.normalised, cache_mode=request.cache, batch_size=request.batch_size)
    baseline = engine.evaluate(np.ones((1, units.n_units), dtype=bool))[0]        # (C, bz, by, bx)
    region_net = grid.to_network(region)[box_net.slices]
    baseline_pred = baseline.argmax(axis=0) == target
    check_value_on_region(request.value, region_net, baseline_pred)
    return ExplanationContext(request, ct, predictor, pre, grid, prediction, target, ijk, roi, region, box_ct,
                              support, units, engine, mask, region_net, baseline_pred, request.value)


def resolve_path(path) -> str | None:
    """A path as an absolute string for summary.json (None stays None)."""
    return None if path is None else str(Path(path).resolve())
