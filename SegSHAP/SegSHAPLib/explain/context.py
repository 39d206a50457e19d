"""Everything one explanation needs before the solver runs: model, ROI, support, units, engine, value function.

``prepare_context`` turns a request (paths or in-memory volumes) into an ``ExplanationContext`` whose
``values(keep)`` gives, from one network evaluation per coalition, every value function defined for the scoring
region (the games the solver asks about; the journal stores them all). The same context serves ``segshap explain`` (solver),
``--verify`` (against nnU-Net's own full prediction) and ``segshap evaluate`` (MoRF/LeRF curves), so all three
use one operator and one value function.

Grids: CT-grid arrays are (z, y, x); network-grid arrays are (z', y', x') (see ``network_grid``). Boxes are
half-open. The value is computed on the network grid, on the box B' that holds the scoring region carried there
by nearest neighbour (for the plans' own spacing, as in the demo model, the two grids coincide).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.explain.case_inputs import CaseInputs
from SegSHAPLib.explain.refine import refined_unit_ids
from SegSHAPLib.inference.cached_inference import CachedSlidingWindow, SlidingWindowLayout
from SegSHAPLib.inference.case_cache import cached_case, cached_predictor
from SegSHAPLib.inference.case_store import open_store
from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import Volume, describe_grid_mismatch, read_volume
from SegSHAPLib.inference.mask_value import MaskValue, mask_value
from SegSHAPLib.inference.removal import Removal, build_removal, network_spacing
from SegSHAPLib.inference.model import Preprocessed, check_model_folder, class_names, resolve_target
from SegSHAPLib.io.label_maps import label_values, shown
from SegSHAPLib.box import Box
from SegSHAPLib.inference.network_grid import NetworkGrid
from SegSHAPLib.scoring.roi import (bounding_box, check_value_on_region, check_value_region, point_to_ijk, roi_from_mask,
                  roi_from_point, scoring_region)
from SegSHAPLib.units.unit_map import UnitMap
from SegSHAPLib.units import fcc_units, hybrid_units, organ_class_names, organ_units
from SegSHAPLib.units.slic import slic_units
from SegSHAPLib.units.zoom import parent_unit_of, refine_units
from SegSHAPLib.scoring.values import ALL, ALL_ORDER, requested_values, value_table



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
    baseline_pred_net: np.ndarray | None   # bool (bz, by, bx), P_0 (None when prepared without the baseline)
    value_names: list[str]             # every value function defined here: the requested ones first, then the rest
    requested: list[str]               # the request's value functions (``--value``), in its order
    parent_unit_of: np.ndarray | None = None   # zoom: (M,) the parent organ unit id holding each unit
    case_source: str = "computed"      # where the CT's preprocessing came from: memory, disk or computed
    full_predictions: int = 0          # full-volume predictions this preparation ran (0 or 1)
    removal: Removal | None = None     # the removal operator and its replacement R on the network grid

    @property
    def n_units(self) -> int:
        return self.units.n_units

    def values(self, keep: np.ndarray, cancel=None, progress=None, names: list[str] | None = None) -> np.ndarray:
        """v(m) for a batch of coalitions: keep bool (n, M), True = unit kept -> float64 (n, V), one column per
        value function of ``names`` (default ``value_names``), from one network evaluation."""
        logits = self.engine.evaluate(keep, cancel=cancel, progress=progress)
        return value_table(names or self.value_names, logits, self.region_net, self.baseline_pred_net, self.target)


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
    if request.units not in options.UNIT_TYPES:
        raise InputError(f"unknown unit type {request.units!r}; choose one of {', '.join(options.UNIT_TYPES)}")
    if request.score_region not in options.SCORE_REGIONS:
        raise InputError(f"unknown score region {request.score_region!r}; "
                         f"choose one of {', '.join(options.SCORE_REGIONS)}")
    explicit = request.value.strip() != ALL
    names = requested_values(request.value)
    if request.units in ("fcc", "hybrid") and not request.fcc_scale_mm > 0:
        raise InputError(f"--fcc-scale-mm must be > 0 (got {request.fcc_scale_mm})")
    if request.units in options.SLIC_UNIT_TYPES and not (request.slic_size_mm > 0 and request.slic_compactness > 0):
        raise InputError(f"--slic-size-mm and --slic-compactness must be > 0 (got {request.slic_size_mm}, "
                         f"{request.slic_compactness})")
    if request.budget < 2:
        raise InputError(f"--budget must be at least 2 (the empty and the full coalition), got {request.budget}")
    if request.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {request.batch_size}")
    if not np.isfinite(request.mask_value):
        raise InputError(f"--mask-value must be a finite HU value, got {request.mask_value}")
    if request.removal not in options.REMOVALS:
        raise InputError(f"--removal {request.removal!r} is not one of {', '.join(options.REMOVALS)}")
    if request.removal == "blur" and not (np.isfinite(request.blur_sigma_mm) and request.blur_sigma_mm > 0):
        raise InputError(f"--blur-sigma-mm must be a positive number of mm, got {request.blur_sigma_mm}")
    if not 0 <= request.seed < 2 ** 63:
        raise InputError(f"--seed must be a whole number >= 0, got {request.seed}")
    if request.verify < 0:
        raise InputError(f"--verify must be >= 0 (the number of random coalitions to check), got {request.verify}")
    if not 0 < request.tile_step <= 1:
        raise InputError(f"--tile-step must be in (0, 1] (nnU-Net's default is 0.5), got {request.tile_step}")
    if request.cache not in options.CACHE_MODES:
        raise InputError(f"--cache {request.cache!r} is not one of {', '.join(options.CACHE_MODES)}")
    if request.point_space not in options.POINT_SPACES:
        raise InputError(f"--point-space {request.point_space!r} is not one of {', '.join(options.POINT_SPACES)}")
    if request.score_region == "dilated" and not (np.isfinite(request.dilate_mm) and request.dilate_mm > 0):
        raise InputError(f"--score-region dilated needs a positive --dilate-mm, got {request.dilate_mm}")
    bad_folds = [f for f in request.fold or () if not (str(f).isdigit() or f == "all")]
    if bad_folds:
        raise InputError(f"--fold {' '.join(map(str, bad_folds))}: give fold numbers (0 1 ...) or 'all'")
    has_mask = roi_mask_in_memory or request.roi_mask is not None
    if (request.roi_point is None) == (not has_mask):
        raise InputError("give exactly one of --roi-point and --roi-mask")
    if not has_mask and explicit:  # R is then a component of P_0, so some value/region pairs are identically zero
        for name in names:
            check_value_region(name, request.score_region)


def defined_values(request, region_net: np.ndarray, baseline_pred: np.ndarray, clicked: bool) -> list[str]:
    """The value functions not identically zero for this request, scoring region and baseline prediction
    (bool (bz, by, bx) both), in ALL_ORDER; InputError for an explicitly requested one that is."""
    explicit = request.value.strip() != ALL
    defined = []
    for name in ALL_ORDER:
        try:
            if clicked:
                check_value_region(name, request.score_region)
            check_value_on_region(name, region_net, baseline_pred)
        except InputError:
            if explicit and name in requested_values(request.value):
                raise
            continue
        defined.append(name)
    return defined


def _check_prediction_labels(prediction: Volume, predictor) -> None:
    """Refuse a given prediction whose labels are not the model's (another model's or an organ map's label map
    would make its class N the ROI of this model's class N)."""
    names = class_names(predictor)
    foreign = [v for v in label_values(prediction.array, "the prediction (--prediction)") if int(v) not in names]
    if foreign:
        listing = ", ".join(f"{v}={n}" for v, n in sorted(names.items()))
        raise InputError(f"--prediction has label(s) {shown(foreign)} that this model does not have (its labels: "
                         f"{listing}); give a label map of this model's classes (e.g. segshap predict's output)")


def _roi(request, ct: Volume, prediction: Volume, target: int, roi_mask: Volume | None):
    """(R bool (z, y, x), clicked (i, j, k) or None)."""
    if roi_mask is not None or request.roi_mask is not None:
        mask = roi_mask if roi_mask is not None else read_volume(request.roi_mask)
        return roi_from_mask(mask, ct), None
    if not (prediction.array == target).any():
        source = "--prediction has" if getattr(request, "prediction", None) is not None else "the model predicts"
        low, high = float(np.min(ct.array)), float(np.max(ct.array))
        raise InputError(f"{source} no voxel of class {target} in this CT ({' x '.join(map(str, ct.shape_zyx[::-1]))} "
                         f"voxels, values {low:g}..{high:g}): check --target, and that the CT is a whole, "
                         "undamaged CT in Hounsfield units (air about -1000) that shows that organ")
    ijk = point_to_ijk(ct, request.roi_point, request.point_space)
    return roi_from_point(prediction.array, target, ijk), ijk


def _support_mask(grid: NetworkGrid, layout: SlidingWindowLayout, box_net: Box) -> np.ndarray:
    """B_RF on the CT grid: every CT voxel that the support patches of ``box_net`` sample."""
    mask = np.zeros(grid.ct_shape, dtype=bool)
    for patch_box in layout.support_network_boxes(box_net):
        mask[grid.network_box_to_ct(patch_box).slices] = True
    return mask


def _units(request, ct: Volume, organs: Volume | None, names: dict[int, str] | None,
           support_mask: np.ndarray) -> tuple[UnitMap, np.ndarray | None]:
    """The request's units, and for a zoom (``request.refine``) the parent organ unit id of each unit."""
    if request.units in options.ORGAN_UNIT_TYPES and organs is None:
        raise InputError(f"--units {request.units} needs --organs LABELMAP (a TotalSegmentator-style organ map on "
                         "the CT grid)")
    if organs is not None and names is None:
        names = organ_class_names(request.organs) if request.organs is not None else {}
    organ_array = organs.array if organs is not None else None
    if request.units == "organs":
        organ_map = organ_units(organ_array, support_mask, names, grouping=request.grouping)
        if request.refine is None:
            return organ_map, None
        refined = refined_unit_ids(request, organ_map)
    if request.units in options.SLIC_UNIT_TYPES:
        cells = slic_units(ct, support_mask, request.slic_size_mm, request.slic_compactness,
                           organ_labels_zyx=organ_array, class_names=names)
        return (cells if request.units == "slic" else hybrid_units(cells, organ_array, names)), None
    cells = fcc_units(ct, support_mask, request.fcc_scale_mm, organ_labels_zyx=organ_array, class_names=names)
    if request.units == "fcc":
        return cells, None
    hybrid = hybrid_units(cells, organ_array, names)
    if request.units == "hybrid":
        return hybrid, None
    units = refine_units(organ_map, hybrid, refined)
    return units, parent_unit_of(units, organ_map.labels)


def prepare_context(request, *, inputs: CaseInputs | None = None, predictor=None,
                    units_volume: Volume | None = None, unit_names: list[str] | None = None,
                    with_baseline: bool = True) -> ExplanationContext:
    """Build the explanation context of a request.

    In-memory ``inputs`` take precedence over the request's paths. ``units_volume``/``unit_names`` reuse a unit
    map written by an earlier run (``segshap evaluate``) instead of building one. ``with_baseline=False`` stops
    before the first network forward (for counting, ``explain.cost``): ``baseline_pred_net`` is then None.
    """
    inputs = inputs or CaseInputs()
    check_request(request, inputs.roi_mask is not None)
    ct = inputs.ct if inputs.ct is not None else read_volume(request.ct)
    predictor = predictor or cached_predictor(request.model, request.fold, request.device, request.tile_step,
                                              request.tta, request.checkpoint)
    if predictor.label_manager.has_regions:
        raise InputError("region-based nnU-Net models (overlapping regions) are not supported; use a model "
                         "trained on plain labels")
    target = resolve_target(predictor, request.target)
    organs = _load_aligned(inputs.organs, request.organs, ct, "the organ map", "--organs")
    given_prediction = _load_aligned(inputs.prediction, getattr(request, "prediction", None), ct,
                                     "the prediction", "--prediction")

    if organs is not None:
        label_values(organs.array, "the organ map (--organs)")
    if given_prediction is not None:
        _check_prediction_labels(given_prediction, predictor)
    case = cached_case(predictor, ct, with_prediction=given_prediction is None,
                       store=open_store(getattr(request, "case_cache", None)),
                       model_key=model_settings(request, predictor))
    pre, own_prediction = case.preprocessed, case.prediction
    grid = NetworkGrid.from_preprocessing(pre.properties, predictor.plans_manager.transpose_forward,
                                          pre.data.shape[1:], ct.shape_zyx)
    prediction = given_prediction if given_prediction is not None else own_prediction

    roi, ijk = _roi(request, ct, prediction, target, inputs.roi_mask)
    region = scoring_region(roi, request.score_region, ct.spacing_zyx, request.dilate_mm) | roi
    box_ct = bounding_box(region)
    try:
        box_net = grid.ct_box_to_network(box_ct)
    except ValueError as err:
        raise InputError(f"the ROI cannot be explained: {err}") from None
    layout = SlidingWindowLayout(predictor, pre.data)
    support = _support_mask(grid, layout, box_net)

    parent_of = None
    if units_volume is not None:
        units = UnitMap(units_volume.array.astype(np.int32), list(unit_names))
    else:
        units, parent_of = _units(request, ct, organs, inputs.organ_names, support)
    mask = mask_value(predictor, ct, request.mask_value)
    units_net = grid.to_network(units.labels)
    removal = build_removal(request.removal, pre.data[0], units_net, mask, sigma_mm=request.blur_sigma_mm,
                            spacing_net=network_spacing(grid, ct.spacing_zyx))
    engine = CachedSlidingWindow(predictor, layout, units_net, units.n_units, box_net, removal.replacement,
                                 cache_mode=request.cache, batch_size=request.batch_size)
    region_net = grid.to_network(region)[box_net.slices]
    baseline_pred, value_names, requested = None, [], []
    if with_baseline:
        baseline = engine.evaluate(np.ones((1, units.n_units), dtype=bool))[0]        # (C, bz, by, bx)
        baseline_pred = baseline.argmax(axis=0) == target
        defined = defined_values(request, region_net, baseline_pred, clicked=ijk is not None)
        requested = [name for name in requested_values(request.value) if name in defined]
        if not requested:
            raise InputError("every value function is identically 0 on this scoring region; choose another ROI or "
                             "--score-region")
        value_names = requested + [name for name in defined if name not in requested]
    return ExplanationContext(request, ct, predictor, pre, grid, prediction, target, ijk, roi, region, box_ct,
                              support, units, engine, mask, region_net, baseline_pred, value_names, requested,
                              parent_of, case.source, case.full_predictions, removal)


def model_settings(request, predictor) -> dict:
    """The model and inference settings that key the case cache and the patch timing
    (``case_store.model_digest``'s arguments)."""
    return {"model_dir": request.model,
            "folds": check_model_folder(request.model, request.fold, request.checkpoint),
            "device_type": predictor.device.type, "tile_step": request.tile_step, "tta": request.tta,
            "checkpoint": request.checkpoint}

