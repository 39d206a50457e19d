"""The panel's out-of-process runner (``SegSHAPMRML.process_job.ProcessExplainJob``) with the real
``segshap explain`` child process on a cropped case of the sample CT and the demo model: progress, result,
cancel and resume, a killed child, and the child's one-line error. Nothing is faked; the child is started with
this interpreter as Slicer would start it with PythonSlicer."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys

import numpy as np
import pytest

from conftest import CROPPED_CASES, DEMO_MODEL
from SegSHAPLib.explain.journal import journaled_coalitions
from SegSHAPLib.explain.case_inputs import CaseInputs
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.io.image_io import read_volume
from SegSHAPLib.units.organs import organ_class_names
from SegSHAPMRML.process_job import ProcessExplainJob

pytestmark = [pytest.mark.mrml, pytest.mark.slow]

TIMEOUT_S = 600


def request(folder, out, **changes) -> ExplainRequest:
    """A 24-coalition explanation over the 22 organ units of the cropped spleen case (three solver batches of 8,
    so it can be interrupted mid-run)."""
    _, point, space = CROPPED_CASES["spleen"]
    base = ExplainRequest(model=DEMO_MODEL, out=out, ct=folder / "spleen_ct.nii.gz", target="spleen",
                          roi_point=tuple(float(v) for v in point.split(",")), point_space=space, units="organs",
                          organs=folder / "spleen_organs.nii.gz", value="softdice", budget=24, batch_size=1)
    return dataclasses.replace(base, **changes)


def run_until(job: ProcessExplainJob, condition) -> list:
    """Poll until a progress message satisfies ``condition`` (or the job ends); the messages seen."""
    messages = []
    while not job.finished:
        batch = job.wait(timeout=0.5, interval_s=0.05)
        messages += batch
        if any(m.kind == "progress" and condition(m.event) for m in batch):
            break
    return messages


def summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def fresh(cropped_cases, tmp_path_factory):
    """An uninterrupted run of ``request``: its messages and summary (the reference for resumed runs)."""
    out = tmp_path_factory.mktemp("fresh") / "explanation"
    job = ProcessExplainJob(request(cropped_cases, out), python=sys.executable).start()
    messages = job.wait(TIMEOUT_S)
    assert job.state == "done", job.error_text
    return messages, summary(out), job


def test_progress_messages_then_the_result_loaded_from_the_output_folder(fresh):
    messages, finished, job = fresh
    kinds = [m.kind for m in messages]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"progress"}
    stages = [m.event.stage for m in messages[:-1]]
    assert stages[0] == "prepare" and stages[-1] == "write"
    coalitions = [m.event for m in messages[:-1] if m.event.stage == "coalitions"]
    assert [e.done for e in coalitions] == sorted(e.done for e in coalitions)
    assert coalitions[-1].done == finished["solver"]["coalitions"]
    assert coalitions[-1].counters["patch_forwards"] == finished["inference"]["patch_forwards"]
    np.testing.assert_array_equal(job.result.phi, [u["shap"] for u in finished["units"]])
    assert job.process.returncode == 0 and job.log_path.is_file() and job.progress_path.is_file()


def test_in_memory_inputs_are_written_first_with_their_organ_names(cropped_cases, tmp_path):
    organs_file = cropped_cases / "spleen_organs.nii.gz"
    names = organ_class_names(organs_file)
    out = tmp_path / "run" / "explanation"
    job = ProcessExplainJob(request(cropped_cases, out, ct=None, organs=None, budget=8, batch_size=8),
                            python=sys.executable, inputs_dir=tmp_path / "inputs",
                            inputs=CaseInputs(ct=read_volume(cropped_cases / "spleen_ct.nii.gz"),
                                              organs=read_volume(organs_file), organ_names=names)).start()
    job.wait(TIMEOUT_S)
    assert job.state == "done", job.error_text
    inputs = summary(out)["inputs"]
    assert inputs["ct"] == str((tmp_path / "inputs" / "ct.nii.gz").resolve())
    assert organ_class_names(inputs["organs"]) == names                 # the child saw the same organ names
    assert {u["name"] for u in summary(out)["units"]} <= set(names.values())


@pytest.fixture
def launcher(tmp_path) -> str:
    """An interpreter behind a launcher, as PythonSlicer is: it runs the real interpreter as its child, passes no
    signal on (an interrupt would end the launcher alone) and exits with the child's exit code."""
    path = tmp_path / "launcher"
    path.write_text(f"#!{sys.executable}\nimport signal, subprocess, sys\n"
                    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
                    "sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))\n")
    path.chmod(0o755)
    return str(path)


def test_cancel_mid_run_keeps_every_coalition_and_a_rerun_resumes(cropped_cases, tmp_path, fresh, launcher):
    _, finished, _ = fresh
    out = tmp_path / "explanation"
    job = ProcessExplainJob(request(cropped_cases, out), python=launcher).start()
    run_until(job, lambda e: e.stage == "coalitions" and e.done >= 8)
    seen = job.last_progress.done
    job.cancel()
    messages = job.wait(TIMEOUT_S)
    assert job.state == "cancelled" and [m.kind for m in messages if m.kind != "progress"] == ["cancelled"]
    assert job.worker_pid != job.process.pid and job.process.returncode == 130     # the worker was interrupted
    journaled = journaled_coalitions(out)
    assert seen <= journaled < finished["solver"]["coalitions"]
    assert f"{journaled} coalitions are journaled" in job.error_text
    assert not (out / "summary.json").exists()

    again = ProcessExplainJob(request(cropped_cases, out), python=sys.executable).start()
    again.wait(TIMEOUT_S)
    assert again.state == "done", again.error_text
    resumed = summary(out)
    assert resumed["solver"]["resumed_coalitions"] == journaled > 0
    assert resumed["inference"]["patch_forwards"] < finished["inference"]["patch_forwards"]
    np.testing.assert_array_equal(again.result.phi, [u["shap"] for u in finished["units"]])


def test_a_killed_child_is_one_error_and_a_rerun_resumes(cropped_cases, tmp_path, fresh):
    _, finished, _ = fresh
    out = tmp_path / "explanation"
    job = ProcessExplainJob(request(cropped_cases, out), python=sys.executable).start()
    run_until(job, lambda e: e.stage == "coalitions" and e.done >= 8)
    os.kill(job.process.pid, signal.SIGKILL)
    messages = job.wait(TIMEOUT_S)
    assert [m.kind for m in messages if m.kind != "progress"] == ["error"]
    assert job.state == "failed" and "ended unexpectedly (killed by SIGKILL)" in job.error_text
    assert job.poll() == [] and job.state == "failed"                     # the caller's state stays as it was
    journaled = journaled_coalitions(out)

    again = ProcessExplainJob(request(cropped_cases, out), python=sys.executable).start()
    again.wait(TIMEOUT_S)
    assert again.state == "done", again.error_text
    assert summary(out)["solver"]["resumed_coalitions"] == journaled >= 8
    np.testing.assert_array_equal(again.result.phi, [u["shap"] for u in finished["units"]])


def test_the_childs_one_line_error_is_the_error_text(cropped_cases, tmp_path):
    job = ProcessExplainJob(request(cropped_cases, tmp_path / "explanation", target="kidney"),
                            python=sys.executable).start()
    messages = job.wait(TIMEOUT_S)
    assert [m.kind for m in messages if m.kind != "progress"] == ["error"]
    assert job.error_text.startswith("target 'kidney' is not a foreground class of this model")
    assert job.process.returncode == 2
    assert job.error_text in job.log_path.read_text()                        # the same line the CLI printed


def test_faithfulness_runs_in_a_second_child_after_the_explanation(fresh):
    _, _, first = fresh
    job = ProcessExplainJob(first.request, python=sys.executable, faithfulness_steps=2).start()
    messages = job.wait(TIMEOUT_S)
    assert job.state == "done", job.error_text
    assert [(m.event.stage, m.event.done) for m in messages if m.kind == "progress"][-2:] == \
        [("faithfulness", 0), ("faithfulness", 1)]
    assert job.faithfulness["steps"] == 2
    assert job.faithfulness == json.loads((job.out / "faithfulness.json").read_text())
    assert summary(job.out)["solver"]["resumed_coalitions"] == summary(job.out)["solver"]["coalitions"]
