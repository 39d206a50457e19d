"""``segshap cohort``: a real study on crops of the sample CT with the demo nnU-Net model.

Two cases (the spleen, and a false-positive component in the liver) x 2 unit types x 2 value functions,
each crop 16 x 48 x 64 voxels (two sliding-window patches) so the eight explanations take seconds. Checked:
the local executor and Ray (a local Ray started here with num_cpus=2) give the same phi as single
``segshap explain`` runs; a worker killed with SIGKILL mid-explanation is retried and resumes its journal; a
finished study reruns without work; Ctrl-C stops a run that then resumes; a changed request is refused unless --restart; a case with bad input is
recorded as failed while the others finish and the command exits 1; ``gather`` writes the table.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from SegSHAPLib.cli.main import main
from SegSHAPLib.cohort.gather import COLUMNS
from SegSHAPLib.cohort.manifest import read_manifest
from SegSHAPLib.explain.run import run_explain

from conftest import CROPPED_CASES, DEMO_MODEL

CASES = tuple((case_id, point, space) for case_id, (_, point, space) in CROPPED_CASES.items())
HEADER = "case_id,ct,model,target,roi_point,point_space,organs,units,values,budget,seed,batch_size,fcc_scale_mm\n"
BUDGET = 8


def manifest_row(case_id: str, point: str, space: str, budget: int = BUDGET, units: str = "organs;fcc",
                 values: str = "softdice;dice", extra: str = "") -> str:
    return (f'{case_id},{case_id}_ct.nii.gz,{DEMO_MODEL},spleen,"{point}",{space},{case_id}_organs.nii.gz,'
            f"{units},{values},{budget},0,8,60{extra}\n")


@pytest.fixture(scope="module")
def cases(cropped_cases) -> Path:
    """The cropped cases' folder with the study's manifest in it."""
    (cropped_cases / "study.csv").write_text(HEADER + "".join(manifest_row(c, p, s) for c, p, s in CASES))
    return cropped_cases


@pytest.fixture(scope="module")
def single_runs(cases, tmp_path_factory) -> dict[str, np.ndarray]:
    """phi of every explanation of the study from its own `segshap explain` run (in this process)."""
    out = tmp_path_factory.mktemp("singles")
    phis = {}
    for task in read_manifest(cases / "study.csv", out):
        r = task.request
        point = ",".join(str(v) for v in r.roi_point)
        argv = ["explain", "--ct", str(r.ct), "--model", str(r.model), "--target", r.target, "--roi-point", point,
                "--point-space", r.point_space, "--organs", str(r.organs), "--units", r.units, "--value", r.value,
                "--budget", str(r.budget), "--seed", str(r.seed), "--batch-size", str(r.batch_size),
                "--fcc-scale-mm", str(r.fcc_scale_mm), "--out", str(out / task.task_id)]
        assert main(argv) == 0
        phis[task.task_id] = explanation_phi(out / task.task_id)
    return phis


def explanation_phi(folder: Path) -> np.ndarray:
    """phi of every value function of the explanation, one after the other."""
    summary = json.loads((folder / "summary.json").read_text())
    return np.array([unit["shap"] for value in summary["value_functions"]
                     for unit in summary["by_value"][value]["units"]])


def study_phis(out: Path) -> dict[str, np.ndarray]:
    return {folder.name: explanation_phi(folder) for folder in sorted((out / "explanations").iterdir())}


def assert_same_phi(study: dict[str, np.ndarray], singles: dict[str, np.ndarray]) -> None:
    assert sorted(study) == sorted(singles)
    for task_id, phi in singles.items():
        # Workers run torch with fewer threads than this process; convolution sums may then round differently.
        np.testing.assert_allclose(study[task_id], phi, rtol=0, atol=1e-6, err_msg=task_id)
        assert np.abs(phi).sum() > 0, f"{task_id}: phi is all zero, the comparison would prove nothing"


@pytest.fixture(scope="module")
def local_study(cases, tmp_path_factory):
    """The study run with the local executor (2 workers), plus a third case whose ROI point is not on the
    target: that explanation must fail with its reason while the others finish, and the command exit 1."""
    out = tmp_path_factory.mktemp("local") / "study"
    manifest = cases / "with_bad_case.csv"
    manifest.write_text((cases / "study.csv").read_text()
                        + manifest_row("off_target", "63 2 2", "ijk", units="organs", values="softdice")
                        .replace("off_target_ct", "spleen_ct").replace("off_target_organs", "spleen_organs"))
    code = main(["cohort", "run", str(manifest), "--out", str(out), "--workers", "2"])
    return out, code


def copy_of_study(local_study, tmp_path: Path) -> Path:
    """A copy of the local study for a test that reruns it: a rerun rewrites the plan (and may change folders),
    so the shared study stays as the first run left it and the tests do not depend on their order."""
    copy = tmp_path / "study"
    shutil.copytree(local_study[0], copy)
    return copy


@pytest.mark.slow
def test_local_study_matches_single_explains_and_records_the_failure(local_study, single_runs, capsys):
    out, code = local_study
    assert code == 1
    phis = study_phis(out)
    assert "off_target__organs" not in phis or not (
        out / "explanations" / "off_target__organs" / "summary.json").exists()
    assert_same_phi({k: v for k, v in phis.items() if not k.startswith("off_target")}, single_runs)
    status = json.loads((out / "status" / "off_target__organs.json").read_text())
    assert status["state"] == "failed" and "not the target" in status["reason"]
    assert main(["cohort", "status", str(out)]) == 0
    table = capsys.readouterr().out
    assert "4 done, 1 failed" in table and "not the target" in table


@pytest.mark.slow
def test_rerunning_a_finished_study_does_no_work(local_study, cases, tmp_path, capsys):
    out = copy_of_study(local_study, tmp_path)
    journals = {p: p.stat().st_mtime_ns for p in (out / "explanations").glob("*/journal.tsv")}
    summaries = {p: p.read_bytes() for p in (out / "explanations").glob("*/summary.json")}
    worker_files = {p: p.read_bytes() for p in [*(out / "status").iterdir(), *(out / "logs").iterdir()]}
    assert main(["cohort", "run", str(cases / "study.csv"), "--out", str(out)]) == 0
    assert "4 already done, 0 finished now, 0 failed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in journals} == journals
    assert {p: p.read_bytes() for p in summaries} == summaries
    assert {p: p.read_bytes() for p in worker_files} == worker_files     # no worker started, none logged


@pytest.mark.slow
def test_gather_writes_one_row_per_explanation_and_unit(local_study):
    out, _ = local_study
    assert main(["cohort", "gather", str(out)]) == 0
    with open(out / "cohort.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    for folder in (out / "explanations").iterdir():
        summary_path = folder / "summary.json"
        if not summary_path.exists():
            continue
        case_id, units = folder.name.split("__")
        summary = json.loads(summary_path.read_text())
        assert summary["value_functions"] == ["softdice", "dice"]
        for value in summary["value_functions"]:
            mine = [r for r in rows if (r["case_id"], r["units"], r["value"]) == (case_id, units, value)]
            answer = summary["by_value"][value]
            assert [float(r["shap"]) for r in mine] == [u["shap"] for u in answer["units"]]
            assert [r["name"] for r in mine] == [u["name"] for u in answer["units"]]
            assert {float(r["base_value"]) for r in mine} == {answer["base_value"]}
            assert {int(r["patch_forwards"]) for r in mine} == {summary["inference"]["patch_forwards"]}
    assert not any(r["case_id"] == "off_target" for r in rows)
    assert any(r["name"] == "spleen" for r in rows)                # names come from the organ map's label table


@pytest.mark.slow
def test_changed_request_is_refused_unless_restart(local_study, cases, tmp_path, capsys):
    out = copy_of_study(local_study, tmp_path)
    changed = cases / "changed.csv"
    changed.write_text((cases / "study.csv").read_text().replace(",8,0,8,60", ",8,0,8,45", 1))   # spleen: fcc 45 mm
    assert main(["cohort", "run", str(changed), "--out", str(out), "--dry-run"]) == 1
    dry = capsys.readouterr().out
    refused = [line for line in dry.splitlines() if "refused: " in line]
    assert [line.split()[0] for line in refused] == ["spleen__fcc"]
    assert "fcc_scale_mm" in refused[0] and "--restart" in refused[0]
    assert "spleen__organs" in dry and "3 done, 1 refused" in dry      # organ units do not use the scale
    assert main(["cohort", "run", str(changed), "--out", str(out), "--restart", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("restart: ") == 1
    before = {p: p.read_bytes() for p in (out / "explanations").glob("spleen__*/summary.json")}
    assert main(["cohort", "run", str(changed), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("FAILED spleen__fcc") == 1 and "fcc_scale_mm" in err
    assert {p: p.read_bytes() for p in before} == before            # refused folders are untouched


def wait_for_journal(journal: Path, lines: int, process: subprocess.Popen) -> int:
    """Poll until the journal holds at least ``lines`` coalitions; return how many (0 if the run ended first)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        found = journal.read_text().count("\n") if journal.exists() else 0
        if found >= lines:
            return found
        time.sleep(0.02)
    return 0


SIGNALLED_BUDGET = 512


def _as_a_terminal_starts_it() -> None:
    """SIGINT at its default in the child, as a terminal's foreground job has it (a test run started in the
    background by a non-interactive shell has SIGINT ignored, and the child would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_killed_worker_and_ctrl_c_both_resume_from_the_journal(cases, tmp_path, capsys):
    """SIGKILL the worker once 16 coalitions are journaled: it is retried and goes on from its journal. Then
    Ctrl-C the whole run (SIGINT to its process group, as a terminal does): it stops with exit 130, and the
    rerun finishes from the journal with the phi of an uninterrupted run."""
    manifest = tmp_path / "one.csv"
    # long enough to be signalled twice on an idle machine: 512 coalitions (M = 22) and cache none, so every one
    # runs its 2 patches (about 9 s of forwards at batch 8; 64 coalitions with the memo took one second, closing
    # the window); values are the same in every cache mode
    manifest.write_text(HEADER.replace("\n", ",cache\n") + manifest_row(
        "spleen", CASES[0][1], "ras", budget=SIGNALLED_BUDGET, units="organs", values="softdice",
        extra=",none").replace("spleen_", str(cases / "spleen_")))
    out = tmp_path / "study"
    task = "spleen__organs"
    journal, status_file = out / "explanations" / task / "journal.tsv", out / "status" / f"{task}.json"
    process = subprocess.Popen([sys.executable, "-m", "SegSHAPLib.cli.main", "cohort", "run", str(manifest),
                                "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, preexec_fn=_as_a_terminal_starts_it)
    killed_after = wait_for_journal(journal, 16, process)
    if killed_after:
        os.kill(json.loads(status_file.read_text())["pid"], signal.SIGKILL)
    interrupted_after = wait_for_journal(journal, killed_after + 16, process)
    if interrupted_after:
        os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=300)[0]
    assert 16 <= killed_after < interrupted_after < SIGNALLED_BUDGET, f"not stopped mid-explanation\n{output}"
    assert process.returncode == 130 and "rerun the same command to resume" in output, output
    status = json.loads(status_file.read_text())
    assert (status["attempt"], status["state"]) == (2, "interrupted")     # the kill was retried once
    assert main(["cohort", "status", str(out)]) == 0
    assert "interrupted" in capsys.readouterr().out

    assert main(["cohort", "run", str(manifest), "--out", str(out)]) == 0
    summary = json.loads((out / "explanations" / task / "summary.json").read_text())
    assert summary["solver"]["resumed_coalitions"] >= interrupted_after
    single = tmp_path / "single"
    assert main(["explain", "--ct", str(cases / "spleen_ct.nii.gz"), "--model", str(DEMO_MODEL), "--target",
                 "spleen", "--roi-point", CASES[0][1], "--organs", str(cases / "spleen_organs.nii.gz"), "--units",
                 "organs", "--value", "softdice", "--budget", str(SIGNALLED_BUDGET), "--batch-size", "8",
                 "--cache", "none", "--out", str(single)]) == 0
    uninterrupted = json.loads((single / "summary.json").read_text())
    assert summary["inference"]["patch_forwards"] < uninterrupted["inference"]["patch_forwards"]
    np.testing.assert_allclose(explanation_phi(out / "explanations" / task), explanation_phi(single), atol=1e-6)


@pytest.mark.slow
def test_ray_study_matches_single_explains(cases, single_runs, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is the optional `ray` extra; `make test` installs it")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "study"
        assert main(["cohort", "run", str(cases / "study.csv"), "--out", str(out), "--executor", "ray"]) == 0
        assert ray.is_initialized()                           # a Ray the caller started is left running
    finally:
        ray.shutdown()
    assert_same_phi(study_phis(out), single_runs)


@pytest.mark.slow
def test_one_case_one_unit_type_four_values_costs_one_explanation(cases, tmp_path):
    """The issue's count: 1 case x 1 unit type x 4 value functions is one task and the forwards of one run."""
    _, point, space = CROPPED_CASES["liver_fp"]
    manifest = tmp_path / "four.csv"
    manifest.write_text(HEADER + manifest_row("liver_fp", point, space, budget=16, units="organs",
                                              values="tp;fp;dice;softdice").replace("liver_fp_", str(cases / "liver_fp_")))
    out = tmp_path / "study"
    assert main(["cohort", "run", str(manifest), "--out", str(out), "--workers", "1"]) == 0
    assert [folder.name for folder in (out / "explanations").iterdir()] == ["liver_fp__organs"]
    summary = json.loads((out / "explanations" / "liver_fp__organs" / "summary.json").read_text())
    assert summary["value_functions"] == ["tp", "fp", "dice", "softdice"]
    (task,) = read_manifest(manifest, tmp_path / "single")
    single = run_explain(replace(task.request, value="softdice"))
    assert summary["inference"]["patch_forwards"] == single.summary["inference"]["patch_forwards"] > 0
    np.testing.assert_allclose([u["shap"] for u in summary["by_value"]["softdice"]["units"]], single.phi,
                               rtol=0, atol=1e-6)   # the worker runs torch with other thread counts
