"""`segshap evaluate` journals its coalitions batch by batch: interrupted, it resumes where it stopped and ends
with the curves of an uninterrupted evaluation (real model, on a crop of the sample CT)."""

from __future__ import annotations

import shutil

import pytest

from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.explain.run import SOLVER_BATCH, run_explain
from SegSHAPLib.explain.faithfulness import evaluate_output
from SegSHAPLib.explain.journal import JOURNAL_FILE, journaled_coalitions

from conftest import CROPPED_CASES, DEMO_MODEL


def test_interrupted_evaluation_resumes_from_the_journal(cropped_cases, tmp_path):
    _, point, space = CROPPED_CASES["spleen"]
    out = tmp_path / "explained"
    run_explain(ExplainRequest(model=DEMO_MODEL, out=out, ct=cropped_cases / "spleen_ct.nii.gz", target="spleen",
                               roi_point=tuple(float(v) for v in point.split(",")), point_space=space,
                               units="organs", organs=cropped_cases / "spleen_organs.nii.gz", value="softdice",
                               budget=8, batch_size=8))
    untouched = tmp_path / "untouched"
    shutil.copytree(out, untouched)
    before = journaled_coalitions(out)

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_output(out, steps=10, progress=interrupt)
    assert journaled_coalitions(out) == before + SOLVER_BATCH            # the first batch was kept

    reported = []
    resumed = evaluate_output(out, steps=10, progress=lambda done, total: reported.append((done, total)))
    uninterrupted_reports = []
    uninterrupted = evaluate_output(untouched, steps=10,
                                    progress=lambda done, total: uninterrupted_reports.append((done, total)))
    assert reported[-1][1] == uninterrupted_reports[-1][1] - SOLVER_BATCH  # only the rest was computed
    assert reported[-1][0] == reported[-1][1]
    for key in ("morf", "lerf", "random", "aopc", "abpc", "naopc", "nabpc"):
        assert resumed[key] == uninterrupted[key], key
    assert (out / JOURNAL_FILE).read_text().count("\n") == (untouched / JOURNAL_FILE).read_text().count("\n")
