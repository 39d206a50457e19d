"""The panel's cost preview (``SegSHAPMRML.cost_estimate``): a real ``segshap explain --dry-run`` child process on a
cropped case of the sample CT with the demo model, its JSON object read back and shown as one line, and the
stop rule carried to the child's arguments (``process_job.explain_arguments``)."""

from __future__ import annotations

import json

import pytest

from conftest import CROPPED_CASES, DEMO_MODEL
from SegSHAPLib import options
from SegSHAPLib.cli.main import build_parser
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPMRML.cost_estimate import ESTIMATE_KEYS, CostEstimateJob, format_estimate
from SegSHAPMRML.process_job import explain_arguments


def request_for(cropped_cases, out, **changes) -> ExplainRequest:
    _, point, space = CROPPED_CASES["spleen"]
    fields = dict(ct=cropped_cases / "spleen_ct.nii.gz", model=DEMO_MODEL, target="spleen",
                  roi_point=tuple(float(v) for v in point.split(",")), point_space=space, units="organs",
                  organs=cropped_cases / "spleen_organs.nii.gz", budget=16, batch_size=8, out=out)
    return ExplainRequest(**{**fields, **changes})


def test_the_stop_rule_reaches_the_child_as_budget_auto_with_the_budget_as_cap(tmp_path):
    request = ExplainRequest(model=DEMO_MODEL, out=tmp_path / "out", ct=tmp_path / "ct.nii.gz", budget=96)
    fixed = explain_arguments(request)
    auto = explain_arguments(request, tolerance=0.02)
    assert fixed[fixed.index("--budget") + 1] == "96" and "--tolerance" not in fixed
    assert auto[auto.index("--budget"):auto.index("--budget") + 6] == ["--budget", options.BUDGET_AUTO, "--cap", "96",
                                                                      "--tolerance", "0.02"]
    args = build_parser().parse_args(["explain", *auto])
    assert args.budget == options.BUDGET_AUTO and args.cap == 96 and args.tolerance == 0.02
    assert ExplainRequest.from_args(args) == request                       # the cap is the request's budget


@pytest.mark.slow
def test_the_estimate_comes_from_a_dry_run_child_and_writes_no_output_folder(cropped_cases, tmp_path):
    out = tmp_path / "run" / "explanation"
    job = CostEstimateJob(request_for(cropped_cases, out), folder=tmp_path / "estimates", tolerance=0.01).start()
    assert job.wait(600), "the dry run did not end"
    assert job.error_text == "", job.error_text
    estimate = job.estimate
    assert set(ESTIMATE_KEYS) <= set(estimate) and estimate["coalitions"] <= 16
    assert set(estimate["patch_forwards"]) >= {"memo", "baseline", "none"}
    assert estimate["patch_forwards"]["memo"] <= estimate["patch_forwards"]["baseline"] <= \
        estimate["patch_forwards"]["none"]
    assert json.loads(job.stdout_path.read_text().splitlines()[-1]) == estimate
    assert not out.exists()                                                # nothing written to --out
    line = format_estimate(estimate)
    assert line.startswith(f"Estimate: {estimate['n_units']} units, {estimate['coalitions']} coalitions")
    assert f"{estimate['patch_forwards']['memo']:,} patch forwards" in line


@pytest.mark.slow
def test_a_bad_request_gives_the_childs_one_line_error(cropped_cases, tmp_path):
    job = CostEstimateJob(request_for(cropped_cases, tmp_path / "out", target="kidney"),
                          folder=tmp_path / "estimates").start()
    assert job.wait(600)
    assert job.estimate is None and "not a foreground class" in job.error_text
    assert "\n" not in job.error_text and "Traceback" not in job.error_text
