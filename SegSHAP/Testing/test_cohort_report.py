"""``segshap cohort run --evaluate`` and ``segshap cohort report`` on a real study.

Two cases cropped from the sample CT (conftest CROPPED_CASES) x organs/fcc units x the softdice value, budget 8,
with the demo nnU-Net model. The manifest's ``evaluate`` column asks for the spleen's faithfulness only, so the
first run evaluates two explanations; one evaluation of the other case is then interrupted after its first
journaled batch, and ``--evaluate`` finishes the study, resuming it. Checked: the counts of coalitions computed
(faithfulness.json's ``evaluation``), that a rerun of the finished study computes nothing, that the table's
numbers are those of the folders' faithfulness.json, that ``without_roi_units`` and the region coverage are
what docs/method.md says, and that the HTML needs nothing outside itself.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from SegSHAPLib.cli.main import main
from SegSHAPLib.cohort.report import METRICS, TABLE_COLUMNS
from SegSHAPLib.cohort.run import load_study, triage
from SegSHAPLib.cohort.status import format_table, study_views
from SegSHAPLib.explain.faithfulness import DEFAULT_STEPS, curve_plan, evaluate_output
from SegSHAPLib.explain.journal import CoalitionJournal
from SegSHAPLib.explain.run import SOLVER_BATCH
from SegSHAPLib.io.image_io import read_volume
from SegSHAPLib.scoring.roi import scoring_region
from SegSHAPLib.report.statistics import bootstrap_mean_interval, paired_wilcoxon

from conftest import CROPPED_CASES, DEMO_MODEL

HEADER = "case_id,ct,model,target,roi_point,point_space,organs,units,values,budget,seed,batch_size,fcc_scale_mm,evaluate\n"
INTERRUPTED = "liver_fp__organs__softdice"


def manifest_text() -> str:
    rows = [f'{case_id},{case_id}_ct.nii.gz,{DEMO_MODEL},spleen,"{point}",{space},{case_id}_organs.nii.gz,'
            f"organs;fcc,softdice,8,0,8,60,{'true' if case_id == 'spleen' else ''}\n"
            for case_id, (_, point, space) in CROPPED_CASES.items()]
    return HEADER + "".join(rows)


def snapshot(out: Path) -> dict[Path, bytes]:
    """Every file of the study folder."""
    return {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def study(cropped_cases, tmp_path_factory):
    """The study as the tests find it, with what happened on the way: the first run's exit code and folders
    evaluated, the interrupted evaluation's first progress report, the dry run's lines before the resume."""
    manifest = cropped_cases / "report_study.csv"
    manifest.write_text(manifest_text())
    out = tmp_path_factory.mktemp("report") / "study"
    facts = {"manifest": manifest, "out": out}
    facts["first_code"] = main(["cohort", "run", str(manifest), "--out", str(out), "--workers", "2"])
    facts["evaluated_first"] = sorted(p.parent.name for p in (out / "explanations").glob("*/faithfulness.json"))

    reports = []

    def interrupt(done, total):
        reports.append((done, total))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_output(out / "explanations" / INTERRUPTED, DEFAULT_STEPS, progress=interrupt, without_roi_units=True)
    facts["interrupted_report"] = reports[0]
    return facts


@pytest.fixture(scope="module")
def evaluated_study(study):
    """The study after `cohort run --evaluate` (with what its dry run says first), then `cohort report`."""
    manifest, out = study["manifest"], study["out"]
    _, tasks = load_study(manifest, out, evaluate=True)
    study["dry_run"] = triage(tasks, restart=False).notes
    study["evaluate_code"] = main(["cohort", "run", str(manifest), "--out", str(out), "--evaluate"])
    study["status"] = format_table(study_views(out))
    assert main(["cohort", "report", str(out)]) == 0
    return study


def faithfulness_of(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "explanations").glob("*/faithfulness.json")}


@pytest.mark.slow
def test_manifest_column_evaluates_its_cases_only(study):
    assert study["first_code"] == 0
    assert study["evaluated_first"] == ["spleen__fcc__softdice", "spleen__organs__softdice"]


@pytest.mark.slow
def test_interrupted_evaluation_resumes_and_status_shows_the_evaluation(evaluated_study):
    out = evaluated_study["out"]
    dry = evaluated_study["dry_run"]
    assert dry["spleen__organs__softdice"] == "done, skipped"
    assert dry[INTERRUPTED] == dry["liver_fp__fcc__softdice"] == "evaluate: explained; faithfulness to evaluate"
    assert evaluated_study["evaluate_code"] == 0
    _, missing_then = evaluated_study["interrupted_report"]
    resumed = faithfulness_of(out)[INTERRUPTED]["evaluation"]
    assert resumed["computed"] == missing_then - SOLVER_BATCH            # the first batch came from the journal
    assert resumed["computed"] > 0
    assert evaluated_study["status"].count("finished; faithfulness evaluated") == 4
    assert "4 explanations: 4 done" in evaluated_study["status"]


@pytest.mark.slow
def test_rerun_with_evaluate_on_a_finished_study_computes_nothing(evaluated_study, capsys):
    out = evaluated_study["out"]
    before = snapshot(out)
    counts = {task: f["evaluation"] for task, f in faithfulness_of(out).items()}
    assert main(["cohort", "run", str(evaluated_study["manifest"]), "--out", str(out), "--evaluate"]) == 0
    assert "4 already done, 0 finished now, 0 failed" in capsys.readouterr().out
    after = snapshot(out)
    assert after == before          # no journal line, no faithfulness.json, status or log written: no worker ran
    assert {task: f["evaluation"] for task, f in faithfulness_of(out).items()} == counts


@pytest.mark.slow
def test_table_equals_the_folders_faithfulness(evaluated_study):
    out = evaluated_study["out"]
    with open(out / "faithfulness_table.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == TABLE_COLUMNS
    folders = faithfulness_of(out)
    assert len(rows) == 2 * len(METRICS)                  # organs, fcc x one value function
    for row in rows:
        values = [f[row["metric"]] for task, f in folders.items() if task.split("__")[1:] == [row["units"], row["value"]]]
        assert int(row["n"]) == len(values) == 2
        assert float(row["mean"]) == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15)
        assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])
        assert min(values) <= float(row["ci_low"]) and float(row["ci_high"]) <= max(values)


@pytest.mark.slow
def test_report_writes_its_tables_and_needs_nothing_outside_itself(evaluated_study):
    out = evaluated_study["out"]
    html = (out / "report.html").read_text()
    for name in ("curves.csv", "cost.csv", "paired_tests.csv", "roi_caveat.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "<script" not in html and "<link" not in html and "@import" not in html
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html) + re.findall(r"url\(([^)]*)\)", html)
    assert references and all(r.startswith("data:image/png;base64,") for r in references), references
    assert "Table I layout" in html and "Cost by unit type" in html and "Paired comparisons" in html
    with open(out / "paired_tests.csv", newline="") as handle:
        paired = list(csv.DictReader(handle))
    assert [(r["first"], r["second"], r["pairs"], r["p_value"]) for r in paired] == [("organs", "fcc", "2", "")]
    assert "too few pairs" in paired[0]["note"]
    with open(out / "cost.csv", newline="") as handle:
        cost = {r["units"]: r for r in csv.DictReader(handle)}
    summaries = [json.loads(p.read_text()) for p in (out / "explanations").glob("*__organs__*/summary.json")]
    assert int(cost["organs"]["patch_forwards"]) == sum(s["inference"]["patch_forwards"] for s in summaries)
    assert int(cost["organs"]["coalitions"]) == sum(s["solver"]["coalitions"] for s in summaries)


@pytest.mark.slow
def test_without_roi_units_and_region_coverage_are_what_the_method_says(evaluated_study):
    """The ROI-excluded curves are the journaled values of removal coalitions that never remove a unit touching
    the ROI; the coverage is the share of the scoring region (the ROI's bounding box, explain's default) inside
    the units removed by the first MoRF step."""
    folder = evaluated_study["out"] / "explanations" / "spleen__fcc__softdice"
    result = json.loads((folder / "faithfulness.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    phi = np.array([u["shap"] for u in summary["units"]])
    units = read_volume(folder / "units.nii.gz").array.astype(int)
    roi_volume = read_volume(folder / "roi.nii.gz")
    roi = roi_volume.array > 0
    assert summary["inputs"]["score_region"] == "box"
    region = scoring_region(roi, "box", roi_volume.spacing_zyx)
    touching = np.zeros(len(phi), dtype=bool)
    touching[np.unique(units[roi & (units > 0)]) - 1] = True
    assert result["roi_units"] == [int(i) + 1 for i in np.flatnonzero(touching)]
    assert 0 < touching.sum() < len(phi), "the check needs units on both sides of the ROI"
    plan = curve_plan(phi, DEFAULT_STEPS, summary["solver"]["seed"], always_kept=touching)
    assert plan.rows[:, touching].all()
    values, known = CoalitionJournal(folder, len(phi)).lookup(plan.rows)
    assert known.all()
    without = result["without_roi_units"]
    steps = without["steps"]
    assert without["morf"] == list(values[:steps + 1]) and without["s_min"] == values[-1]
    assert without["fraction_removed"][-1] == 1.0
    order = np.argsort(-phi, kind="stable")
    removed_first = order[:round(len(phi) / result["steps"])]
    covered = np.isin(units[region], removed_first + 1).sum() / region.sum()
    assert result["region_coverage_morf"][1] == pytest.approx(covered)


def test_bootstrap_interval_holds_the_mean_and_repeats_with_its_seed():
    values = np.array([0.12, 0.31, 0.05, 0.44, 0.27, 0.18, 0.39])
    mean, low, high = bootstrap_mean_interval(values, resamples=2000, seed=3)
    assert mean == values.mean() and low < mean < high
    assert bootstrap_mean_interval(values, resamples=2000, seed=3) == (mean, low, high)
    assert bootstrap_mean_interval(values, resamples=2000, seed=4) != (mean, low, high)
    assert bootstrap_mean_interval([0.2]) == (0.2, 0.2, 0.2)


def test_paired_test_runs_only_when_a_small_p_is_possible():
    from scipy import stats

    a = np.array([0.5, 0.6, 0.55, 0.7, 0.65, 0.58, 0.62, 0.71])
    b = a - np.array([0.05, 0.02, 0.08, 0.01, 0.04, 0.03, 0.06, 0.07])
    test = paired_wilcoxon(a, b)
    assert (test.pairs, test.p_value) == (8, stats.wilcoxon(a, b).pvalue) and test.p_value < 0.05
    few = paired_wilcoxon(a[:5], b[:5])
    assert few.p_value is None and few.pairs == 5 and "too few pairs" in few.note
    assert paired_wilcoxon(a, a).note.startswith("every difference is 0")


def test_curves_without_roi_units_rank_and_remove_only_the_other_units():
    """On an additive game v(keep) = keep . phi the curves are known in closed form."""
    phi = np.array([5.0, -1.0, 3.0, 0.5, 2.0])
    roi_units = np.array([True, False, False, False, True])
    plan = curve_plan(phi, DEFAULT_STEPS, seed=0, always_kept=roi_units)
    assert plan.steps == 3 and plan.rows[:, roi_units].all()
    assert plan.orders["morf"].tolist() == [2, 3, 1] and plan.orders["lerf"].tolist() == [1, 3, 2]
    result = plan.result(plan.rows.astype(float) @ phi)
    assert result["fraction_removed"] == [0.0, 1 / 3, 2 / 3, 1.0]
    assert result["morf"] == [9.5, 6.5, 6.0, 7.0] and result["s_min"] == 7.0
    assert result["lerf"] == [9.5, 10.5, 10.0, 7.0]
    assert result["abpc"] == pytest.approx(((10.5 - 6.5) + (10.0 - 6.0) + 0.0) / 3)
