"""The cost preview (explain.cost): its counted patch forwards equal those of the run that follows, a journaled
run costs only its baseline, and the patch time is measured once per model and device (kept in the case cache
folder). Real model, real cropped CT; the spy below counts calls of the real measurement and calls through."""

from __future__ import annotations

import json

import pytest

from conftest import CROPPED_CASES, DEMO_MODEL
from SegSHAPLib.explain.cost import cost_preview
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.explain.run import run_explain
from SegSHAPLib.inference import patch_timing
from SegSHAPLib.inference.case_store import CACHE_DIR_ENV

pytestmark = pytest.mark.slow


def test_the_preview_counts_the_forwards_the_run_then_runs(cropped_cases, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    measured = []
    real = patch_timing.measure_patch_seconds
    monkeypatch.setattr(patch_timing, "measure_patch_seconds", lambda p: measured.append(1) or real(p))
    _, point, space = CROPPED_CASES["liver_fp"]
    request = ExplainRequest(model=DEMO_MODEL, out=tmp_path / "out", ct=cropped_cases / "liver_fp_ct.nii.gz",
                             target="spleen", roi_point=tuple(float(v) for v in point.split()), point_space=space,
                             units="organs", organs=cropped_cases / "liver_fp_organs.nii.gz", value="softdice", budget=24,
                             batch_size=4)

    before = cost_preview(request)
    summary = run_explain(request).summary
    assert before.coalitions == summary["solver"]["coalitions"] and before.journaled == 0
    assert before.method == summary["solver"]["method"] and before.n_units == len(summary["units"])
    for key in ("patches_full_grid", "patches_in_support", "folds", "naive_patch_forwards"):
        assert getattr(before, key) == summary["inference"][key], key
    assert before.patch_forwards["memo"] == summary["inference"]["patch_forwards"]
    assert before.seconds_estimate == pytest.approx(before.patch_forwards["memo"] * before.seconds_per_forward)
    assert before.seconds_per_forward > 0 and before.seconds_source == "measured" and before.device == "cpu"
    assert len(before.warnings) == 1 and before.warnings[0].startswith("running on the CPU")

    after = cost_preview(request)                          # everything journaled: only the baseline is left
    assert after.journaled == after.coalitions
    assert after.patch_forwards["memo"] == after.patches_in_support * after.folds
    assert measured == [1]                                 # measured once, then read from the cache folder
    timings = json.loads((tmp_path / "cache" / patch_timing.TIMINGS_FILE).read_text())
    assert list(timings.values()) == [before.seconds_per_forward]
