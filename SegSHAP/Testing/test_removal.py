"""Removal operators (--removal constant|blur|mean): the replacement each gives, that the memo's patch forwards
for one plan do not depend on the operator, that the cached engine stays exact (nnU-Net's own prediction of the
perturbed input) for each, and end to end: --verify, the summary, the journal spec and segshap evaluate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import cropped_explain_args
from test_cached_inference import cropped_spleen_case  # noqa: F401 (a fixture)
from SegSHAPLib import options
from SegSHAPLib.cli.main import main
from SegSHAPLib.inference.cached_inference import CachedSlidingWindow, SlidingWindowLayout
from SegSHAPLib.inference.mask_value import MaskValue, mask_value
from SegSHAPLib.inference.model import predict_logits, preprocess
from SegSHAPLib.inference.network_grid import NetworkGrid
from SegSHAPLib.inference.perturbation import apply_coalition
from SegSHAPLib.inference.removal import build_removal, network_spacing
from SegSHAPLib.io.image_io import Volume, read_volume

B = MaskValue(-1024.0, -4.5, "CTNormalization", False)


def test_constant_is_the_normalised_mask_value():
    removal = build_removal("constant", np.zeros((2, 2, 2), np.float32), np.ones((2, 2, 2), np.int32), B,
                            sigma_mm=5.0, spacing_net=(1.0, 1.0, 1.0))
    assert removal.replacement == -4.5 and removal.as_summary()["operator"] == "constant"


def test_mean_gives_each_voxel_its_own_units_mean():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 5, 6)).astype(np.float32)
    units = rng.integers(0, 4, size=(4, 5, 6)).astype(np.int32)
    replacement = build_removal("mean", image, units, B, sigma_mm=5.0, spacing_net=(1.0, 1.0, 1.0)).replacement
    assert replacement.dtype == np.float32 and replacement.shape == image.shape
    for unit in range(1, 4):
        in_unit = units == unit
        assert np.allclose(replacement[in_unit], image[in_unit].astype(np.float64).mean(), atol=1e-6)
    # removing every unit of a coalition replaces unit j's voxels by unit j's mean, the rest is untouched
    out = apply_coalition(image, units, np.array([False, True, False]), replacement)
    assert np.array_equal(out[units == 2], image[units == 2]) and np.array_equal(out[units == 0], image[units == 0])
    assert np.allclose(out[units == 3], image[units == 3].mean(), atol=1e-6)


def test_blur_sigma_is_in_millimetres_per_axis():
    """A step edge along each axis in turn, on a grid of 1 x 2 x 4 mm voxels: the blurred step's 16-84 % width is
    about 2 sigma in mm whatever the axis's spacing; a constant image stays constant."""
    spacing, sigma_mm = (1.0, 2.0, 4.0), 8.0
    for axis in range(3):
        n = int(160 / spacing[axis])
        shape = [8, 8, 8]
        shape[axis] = n
        coordinate = np.arange(n) * spacing[axis]
        step = np.broadcast_to((coordinate >= 80).astype(np.float32).reshape([-1 if a == axis else 1
                                                                              for a in range(3)]), shape)
        blurred = build_removal("blur", np.ascontiguousarray(step), np.ones(shape, np.int32), B,
                                sigma_mm=sigma_mm, spacing_net=spacing).replacement
        profile = blurred[tuple(slice(None) if a == axis else 0 for a in range(3))]
        width_mm = np.interp(0.84, profile, coordinate) - np.interp(0.16, profile, coordinate)
        assert abs(width_mm - 2 * sigma_mm) < 0.15 * 2 * sigma_mm, (axis, width_mm)
    flat = build_removal("blur", np.full((6, 7, 8), 3.0, np.float32), np.ones((6, 7, 8), np.int32), B,
                         sigma_mm=20.0, spacing_net=spacing)
    assert np.allclose(flat.replacement, 3.0)
    assert flat.as_summary() == {"operator": "blur", "space": "normalised network input", "sigma_mm": 20.0,
                                 "sigma_network_voxels": [20.0, 10.0, 5.0]}


def test_network_spacing_follows_nnunets_resampling(demo_predictor, sample_ct):
    """A CT at 1.5 mm in x: the plans resample it to their own spacing, which is the network grid's."""
    ct = Volume(np.repeat(sample_ct.array[:, 10:60, 20:60], 2, axis=2), (1.5, 3.0, 3.0), sample_ct.origin,
                sample_ct.direction)
    pre = preprocess(demo_predictor, ct)
    grid = NetworkGrid.from_preprocessing(pre.properties, demo_predictor.plans_manager.transpose_forward,
                                          pre.data.shape[1:], ct.shape_zyx)
    assert np.allclose(network_spacing(grid, ct.spacing_zyx), demo_predictor.configuration_manager.spacing)


@pytest.fixture(scope="module")
def cropped_spleen(demo_predictor, cropped_cases, cropped_spleen_case):
    """test_cached_inference's spleen crop (three organ units) with the replacement of every operator."""
    pre, grid, units_net, box = cropped_spleen_case
    ct = read_volume(cropped_cases / "spleen_ct.nii.gz")
    mask = mask_value(demo_predictor, ct, options.MASK_VALUE)
    removals = {op: build_removal(op, pre.data[0], units_net, mask, sigma_mm=options.BLUR_SIGMA_MM,
                                  spacing_net=network_spacing(grid, ct.spacing_zyx)) for op in options.REMOVALS}
    return pre, units_net, box, removals


def test_memo_forwards_do_not_depend_on_the_operator_and_each_is_exact(demo_predictor, cropped_spleen):
    pre, units_net, box, removals = cropped_spleen
    m = int(units_net.max())
    rng = np.random.default_rng(1)
    keep = np.concatenate([np.ones((1, m), bool), np.zeros((1, m), bool), rng.random((8, m)) < 0.5])
    forwards, emptied = {}, {}
    for operator, removal in removals.items():
        engine = CachedSlidingWindow(demo_predictor, SlidingWindowLayout(demo_predictor, pre.data), units_net, m,
                                     box, removal.replacement)
        planned = engine.planned_forwards(keep)
        logits = engine.evaluate(keep)
        forwards[operator] = (planned, engine.counters.patch_forwards, engine.counters.patch_cache_hits)
        for row, ours in zip(keep[1:3], logits[1:3]):                   # nothing kept and a random coalition
            perturbed = apply_coalition(pre.data[0], units_net, row, removal.replacement)[None]
            theirs = predict_logits(demo_predictor, perturbed).float().numpy()[(slice(None), *box.slices)]
            assert np.array_equal(ours, theirs), operator
        emptied[operator] = logits[1]
    assert forwards["constant"] == forwards["blur"] == forwards["mean"]
    assert forwards["constant"][1] < len(keep) * len(CachedSlidingWindow(
        demo_predictor, SlidingWindowLayout(demo_predictor, pre.data), units_net, m, box, 0.0).support)
    # the operators are different perturbations (the equalities above could have failed)
    assert np.abs(emptied["constant"] - emptied["blur"]).max() > 0.1
    assert np.abs(emptied["constant"] - emptied["mean"]).max() > 0.1


@pytest.mark.parametrize("operator", options.REMOVALS)
def test_explain_verify_is_exact_and_evaluate_uses_the_same_operator(operator, cropped_cases, tmp_path, capsys):
    """Each operator end to end on the cropped false-positive case with organ units: --verify exact, the operator in
    summary.json and the journal spec; then segshap evaluate with the journal removed (every coalition recomputed)
    gives s_min = v(nothing kept) = the explanation's base value (the operators differ: the test above)."""
    out = tmp_path / operator
    assert main(["explain", *cropped_explain_args(cropped_cases, "liver_fp", out, "--removal", operator,
                                                  "--verify", "1", "--batch-size", "1")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inference"]["verify"]["max_abs_logit_diff"] == 0.0
    assert summary["removal"]["operator"] == operator and summary["inputs"]["removal"] == operator
    spec = json.loads((out / "journal_spec.json").read_text())
    assert spec.get("removal", "constant") == operator       # constant is left out: older journals still resume
    assert ("mask_value" in spec) == (operator == "constant") and ("blur_sigma_mm" in spec) == (operator == "blur")
    (out / "journal.tsv").unlink()
    assert main(["evaluate", str(out)]) == 0
    faithfulness = json.loads((out / "faithfulness.json").read_text())
    assert faithfulness["removal"] == operator
    assert faithfulness["s_min"] == pytest.approx(summary["base_value"], abs=1e-6)
    capsys.readouterr()


def test_another_operator_does_not_reuse_the_journal(cropped_cases, tmp_path, capsys):
    out = tmp_path / "run"
    args = cropped_explain_args(cropped_cases, "liver_fp", out, budget=4)
    assert main(["explain", *args]) == 0
    assert main(["explain", *args, "--removal", "mean"]) == 2
    assert "removal" in capsys.readouterr().err
    shutil.rmtree(out)


def test_a_bad_blur_sigma_is_one_line(cropped_cases, tmp_path, capsys):
    args = cropped_explain_args(cropped_cases, "liver_fp", tmp_path / "o", "--removal", "blur", "--blur-sigma-mm", "0")
    assert main(["explain", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].count("--blur-sigma-mm must be a positive number of mm") == 1 and "Traceback" not in "".join(err)


def test_a_zoom_with_mean_removal_does_not_reuse_the_parents_values(cropped_cases, tmp_path, capsys):
    """A removed organ takes the organ's mean, its removed cells their own means: the parent's values differ."""
    parent, child = tmp_path / "parent", tmp_path / "child"
    assert main(["explain", *cropped_explain_args(cropped_cases, "liver_fp", parent, "--removal", "mean",
                                                  budget=4)]) == 0
    assert main(["explain", "--refine", str(parent), "--refine-top", "1", "--budget", "4", "--out", str(child)]) == 0
    refine = json.loads((child / "summary.json").read_text())["refine"]
    assert refine["reused_coalitions"] == 0 and "--removal mean" in refine["reuse_refused"]
    assert json.loads((child / "summary.json").read_text())["removal"]["operator"] == "mean"
    capsys.readouterr()
