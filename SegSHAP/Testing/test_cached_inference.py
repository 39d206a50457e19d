"""The cached engine gives, inside the ROI box, exactly nnU-Net's own logits - for the baseline and for
perturbed coalitions - with fewer patch forwards than the published cache, which needs fewer than none."""

from __future__ import annotations

import numpy as np
import pytest

from SegSHAPLib.inference.cached_inference import CachedSlidingWindow, SlidingWindowLayout
from SegSHAPLib.io.image_io import Volume, read_volume
from SegSHAPLib.inference.model import predict_logits, preprocess
from SegSHAPLib.inference.network_grid import NetworkGrid
from SegSHAPLib.inference.perturbation import apply_coalition
from SegSHAPLib.scoring.roi import bounding_box

MASK_VALUE = -3.0   # a normalised intensity well below the model's clipping range


def _organ_units(organs: np.ndarray, labels: list[int]) -> np.ndarray:
    """Unit map (z, y, x): unit j+1 = organ labels[j], 0 elsewhere."""
    lookup = np.zeros(int(organs.max()) + 1, dtype=np.int32)
    lookup[labels] = np.arange(1, len(labels) + 1)
    return lookup[organs]


@pytest.fixture(scope="module")
def spleen_case(demo_predictor, sample_ct, sample_organs):
    pre = preprocess(demo_predictor, sample_ct)
    grid = NetworkGrid.from_preprocessing(pre.properties, demo_predictor.plans_manager.transpose_forward,
                                          pre.data.shape[1:], sample_ct.shape_zyx)
    units_ct = _organ_units(sample_organs.array, [1, 5, 6, 3, 20, 86])   # spleen, liver, stomach, kidney, ...
    box = grid.ct_box_to_network(bounding_box(sample_organs.array == 1))
    return pre, grid, grid.to_network(units_ct), box


def _engine(predictor, pre, units_net, box, mode="memo", batch_size=1):
    layout = SlidingWindowLayout(predictor, pre.data)
    return CachedSlidingWindow(predictor, layout, units_net, int(units_net.max()), box, MASK_VALUE,
                               cache_mode=mode, batch_size=batch_size)


def _nnunet_box_logits(predictor, data, box):
    return predict_logits(predictor, data).float().numpy()[(slice(None), *(slice(a, b) for a, b in box))]


def test_baseline_logits_in_box_are_bit_identical_to_nnunet(demo_predictor, spleen_case):
    pre, _, units_net, box = spleen_case
    engine = _engine(demo_predictor, pre, units_net, box)
    ours = engine.evaluate(np.ones((1, int(units_net.max())), dtype=bool))[0]
    theirs = _nnunet_box_logits(demo_predictor, pre.data, box)
    assert np.array_equal(ours, theirs)
    assert engine.counters.patches_in_support < engine.counters.patches_full_grid
    assert engine.counters.patch_forwards == engine.counters.patches_in_support


def test_perturbed_coalitions_are_bit_identical_to_nnunet_full_recomputation(demo_predictor, spleen_case):
    pre, _, units_net, box = spleen_case
    m = int(units_net.max())
    engine = _engine(demo_predictor, pre, units_net, box)
    keep = np.array([[False, True, True, True, True, True],       # spleen removed
                     [True, False, False, True, False, True]])     # liver, stomach, colon removed
    ours = engine.evaluate(keep)
    for row, logits in zip(keep, ours):
        perturbed = apply_coalition(pre.data[0], units_net, row, np.float32(MASK_VALUE))[None]
        assert np.array_equal(logits, _nnunet_box_logits(demo_predictor, perturbed, box))
    # removing the spleen itself must change the logits in the box (the test could not pass by accident)
    baseline = engine.evaluate(np.ones((1, m), dtype=bool))[0]
    assert np.abs(ours[0] - baseline).max() > 0.1


@pytest.fixture(scope="module")
def cropped_spleen_case(demo_predictor, cropped_cases):
    """The spleen crop of the sample CT (two sliding-window patches) with its three largest organs as units."""
    ct, organs = read_volume(cropped_cases / "spleen_ct.nii.gz"), read_volume(cropped_cases / "spleen_organs.nii.gz")
    pre = preprocess(demo_predictor, ct)
    grid = NetworkGrid.from_preprocessing(pre.properties, demo_predictor.plans_manager.transpose_forward,
                                          pre.data.shape[1:], ct.shape_zyx)
    units_ct = _organ_units(organs.array, [1, 86, 3])                   # spleen, colon, left kidney
    box = grid.ct_box_to_network(bounding_box(organs.array == 1))
    return pre, grid, grid.to_network(units_ct), box


def test_memo_needs_fewer_forwards_than_baseline_cache_which_needs_fewer_than_none(demo_predictor,
                                                                                    cropped_spleen_case):
    """On a crop (the counts, not the CT's size, are what is compared)."""
    pre, _, units_net, box = cropped_spleen_case
    m = int(units_net.max())
    rng = np.random.default_rng(0)
    keep = np.concatenate([np.ones((1, m), dtype=bool), rng.random((12, m)) < 0.5])
    outputs, forwards = {}, {}
    for mode in ("memo", "baseline", "none"):
        engine = _engine(demo_predictor, pre, units_net, box, mode)
        outputs[mode] = engine.evaluate(keep)
        forwards[mode] = engine.counters.patch_forwards
        assert engine.counters.naive_patch_forwards == len(keep) * engine.counters.patches_full_grid
    assert forwards["memo"] < forwards["baseline"] < forwards["none"]
    assert np.array_equal(outputs["memo"], outputs["baseline"])
    assert np.array_equal(outputs["memo"], outputs["none"])


def test_batched_forwards_match_to_float16_precision(demo_predictor, spleen_case):
    pre, _, units_net, box = spleen_case
    m = int(units_net.max())
    keep = np.array([[True] * m, [False] + [True] * (m - 1)])
    exact = _engine(demo_predictor, pre, units_net, box, batch_size=1).evaluate(keep)
    batched = _engine(demo_predictor, pre, units_net, box, batch_size=8).evaluate(keep)
    assert np.allclose(exact, batched, atol=2e-2)


def _resampled_cropped_case(sample_ct: Volume) -> tuple[Volume, np.ndarray]:
    """The sample CT at 1.5 mm in x (the plans resample it to 3 mm) inside an all-zero frame nnU-Net crops away,
    with a bright 4x4x8-voxel marker box; returns the CT and the marker mask (z, y, x)."""
    array = np.repeat(sample_ct.array[:, 10:70, 20:70], 2, axis=2).astype(np.int16)   # (30, 60, 100)
    marker = np.zeros(array.shape, dtype=bool)
    marker[12:16, 30:34, 40:48] = True
    array[marker] = 1200
    framed = np.zeros((array.shape[0] + 4, array.shape[1] + 6, array.shape[2] + 8), dtype=np.int16)
    framed[2:-2, 3:-3, 4:-4] = array
    framed_marker = np.zeros(framed.shape, dtype=bool)
    framed_marker[2:-2, 3:-3, 4:-4] = marker
    return Volume(framed, (1.5, 3.0, 3.0), sample_ct.origin, sample_ct.direction), framed_marker


def test_roi_mapping_through_resampling_and_cropping(demo_predictor, sample_ct):
    ct, marker = _resampled_cropped_case(sample_ct)
    pre = preprocess(demo_predictor, ct)
    grid = NetworkGrid.from_preprocessing(pre.properties, demo_predictor.plans_manager.transpose_forward,
                                          pre.data.shape[1:], ct.shape_zyx)
    assert grid.crop == ((2, 32), (3, 63), (4, 104))                  # the zero frame is cropped away
    assert pre.data.shape[1:] == (30, 60, 50)                        # x resampled from 100 to 50 voxels
    marker_net = grid.to_network(marker)
    # nnU-Net's own resampling of the same mask as a segmentation (linear on one-hot, then argmax)
    _, seg, _ = demo_predictor.configuration_manager.preprocessor_class(verbose=False).run_case_npy(
        ct.array[None].astype(np.float32), marker[None].astype(np.int16), {"spacing": list(ct.spacing_zyx)},
        demo_predictor.plans_manager, demo_predictor.configuration_manager, demo_predictor.dataset_json)
    nnunet_marker = seg[0] == 1
    iou = (marker_net & nnunet_marker).sum() / (marker_net | nnunet_marker).sum()
    assert iou > 0.7
    box_net = grid.ct_box_to_network(bounding_box(marker))
    assert bounding_box(marker_net) == box_net
    back = grid.network_box_to_ct(box_net)          # the CT voxels those network voxels sample
    for (b0, b1), (m0, m1), factor in zip(back, bounding_box(marker), (1, 1, 2)):
        assert m0 <= b0 and b1 <= m1 and (m1 - m0) - (b1 - b0) < factor   # x is downsampled by 2


def test_engine_is_exact_on_a_resampled_cropped_case(demo_predictor, sample_ct):
    ct, marker = _resampled_cropped_case(sample_ct)
    pre = preprocess(demo_predictor, ct)
    grid = NetworkGrid.from_preprocessing(pre.properties, demo_predictor.plans_manager.transpose_forward,
                                          pre.data.shape[1:], ct.shape_zyx)
    units_net = grid.to_network(marker.astype(np.int32))
    box = grid.ct_box_to_network(bounding_box(marker))
    engine = _engine(demo_predictor, pre, units_net, box)
    for keep in (np.array([True]), np.array([False])):
        ours = engine.evaluate(keep[None])[0]
        perturbed = apply_coalition(pre.data[0], units_net, keep, np.float32(MASK_VALUE))[None]
        assert np.array_equal(ours, _nnunet_box_logits(demo_predictor, perturbed, box))
