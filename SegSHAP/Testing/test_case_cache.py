"""The per-process reuse of model, preprocessing and prediction across explanations of one CT (case_cache).

The spies below wrap the real functions (they count calls and call through): nothing is faked.
"""

from __future__ import annotations

import numpy as np
import pytest

from SegSHAPLib.inference import case_cache
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.explain.run import run_explain
from SegSHAPLib.io.image_io import read_volume

from conftest import CROPPED_CASES, DEMO_MODEL


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """Counts of model loads, preprocessings and full-volume predictions, from a cleared cache."""
    case_cache.clear()
    counts = {}
    for name in ("load_predictor", "preprocess", "predict_segmentation"):
        real = getattr(case_cache, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(case_cache, name, spy)
    yield counts
    case_cache.clear()


def request(folder, out, value: str) -> ExplainRequest:
    _, point, space = CROPPED_CASES["spleen"]
    return ExplainRequest(model=DEMO_MODEL, out=out, ct=folder / "spleen_ct.nii.gz", target="spleen",
                          roi_point=tuple(float(v) for v in point.split(",")), point_space=space, units="organs",
                          organs=folder / "spleen_organs.nii.gz", value=value, budget=8, batch_size=8)


def test_explanations_of_one_ct_share_model_preprocessing_and_prediction(cropped_cases, tmp_path, calls):
    first = run_explain(request(cropped_cases, tmp_path / "a", "softdice"))
    second = run_explain(request(cropped_cases, tmp_path / "b", "dice"))
    assert calls == {"load_predictor": 1, "preprocess": 1, "predict_segmentation": 1}
    assert first.phi.shape == second.phi.shape

    case_cache.clear()                                     # the same request from scratch: the same numbers
    fresh = run_explain(request(cropped_cases, tmp_path / "c", "dice"))
    assert calls == {"load_predictor": 2, "preprocess": 2, "predict_segmentation": 2}
    np.testing.assert_array_equal(fresh.phi, second.phi)
    np.testing.assert_array_equal(fresh.prediction.array, second.prediction.array)


def test_another_ct_or_model_setting_is_computed_again(cropped_cases, calls):
    ct = read_volume(cropped_cases / "spleen_ct.nii.gz")
    predictor = case_cache.cached_predictor(DEMO_MODEL, None, "cpu", 0.5, False)
    assert case_cache.cached_predictor(DEMO_MODEL, None, "cpu", 0.5, False) is predictor
    case_cache.cached_case(predictor, ct, with_prediction=False)
    case_cache.cached_case(predictor, ct.with_array(ct.array.copy()), with_prediction=False)      # same voxels: kept
    assert calls["preprocess"] == 1

    changed = ct.array.copy()
    changed[0, 0, 0] += 1
    case_cache.cached_case(predictor, ct.with_array(changed), with_prediction=False)               # one voxel differs
    moved = ct.with_array(ct.array)
    moved.origin = (ct.origin[0] + 1.0, ct.origin[1], ct.origin[2])
    case_cache.cached_case(predictor, moved, with_prediction=False)                                # geometry differs
    assert calls["preprocess"] == 3

    assert case_cache.cached_predictor(DEMO_MODEL, None, "cpu", 0.25, False) is not predictor
    assert calls["load_predictor"] == 2
