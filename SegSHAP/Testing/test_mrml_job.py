"""The background runner: progress, result, error and cancel through the queue, the thread never blocking the
main thread.

The runs here are stand-ins for ``run_explain`` (plain functions with its signature) so that the queue protocol,
cancellation and error paths are tested in milliseconds and deterministically; the real pipeline through the
same job is ``test_mrml_end_to_end.py`` (marked slow).
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from SegSHAPLib.explain.case_inputs import CaseInputs
from SegSHAPMRML.job import ExplainJob

pytestmark = pytest.mark.mrml


def _event(done, total):
    return SimpleNamespace(stage="coalitions", done=done, total=total, message=f"{done}/{total}",
                           counters={"coalitions": done, "patch_forwards": 10 * done, "hit_rate": 0.5, "eta_s": 1.0})


def _request(**kw):
    return SimpleNamespace(**{"out": "out", "device": "cpu", "batch_size": 1, **kw})


def fake_run_explain(request, *, inputs=None, progress=None, cancel=None):
    """Stand-in for run_explain: reports 4 batches, returns a result object, sees the in-memory inputs."""
    for done in range(1, 5):
        if cancel is not None and cancel.is_set():
            from SegSHAPLib.errors import Cancelled

            raise Cancelled(f"cancelled; {done - 1} coalitions are journaled")
        progress(_event(done, 4))
    return SimpleNamespace(out=request.out, ct=inputs and inputs.ct, thread=threading.current_thread().name)


def test_progress_then_result():
    job = ExplainJob(_request(), run=fake_run_explain, inputs=CaseInputs(ct="CT volume")).start()
    messages = job.wait(10)
    kinds = [m.kind for m in messages]
    assert kinds == ["progress"] * 4 + ["result"]
    assert [m.event.done for m in messages[:4]] == [1, 2, 3, 4]
    assert job.state == "done" and job.finished and not job.running
    assert job.result.ct == "CT volume"                                    # in-memory inputs reach the run
    assert job.result.thread == "SegSHAP explain"                          # ran on the worker thread
    assert job.last_progress.done == 4
    assert job.poll() == []                                                 # the queue is drained


def test_error_carries_the_real_text_and_traceback():
    def failing(request, **kwargs):
        raise KeyError("plans.json has no 'configurations'")

    job = ExplainJob(_request(), run=failing).start()
    messages = job.wait(10)
    assert [m.kind for m in messages] == ["error"]
    assert job.state == "failed"
    assert job.error_text == "KeyError: \"plans.json has no 'configurations'\""
    assert isinstance(job.error, KeyError)
    assert "failing" in job.error_traceback and "KeyError" in job.error_traceback


def test_out_of_memory_error_gets_a_suggestion():
    class OutOfMemoryError(RuntimeError):
        pass

    def oom(request, **kwargs):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    job = ExplainJob(_request(device="cuda:0", batch_size=2), run=oom).start()
    job.wait(10)
    assert job.state == "failed"
    assert job.error_text.startswith("Out of memory on cuda:0")
    assert "Suggestion:" in job.error_text and "batch size" in job.error_text


def test_cancel_is_honoured():
    started, release = threading.Event(), threading.Event()

    def slow(request, *, progress=None, cancel=None, **kwargs):
        """Stand-in for run_explain's solver loop: checks the cancel event between batches."""
        from SegSHAPLib.errors import Cancelled

        for done in range(1, 1000):
            if done == 2:
                started.set()
                release.wait(5)
            if cancel.is_set():
                raise Cancelled(f"cancelled; {done - 1} coalitions are journaled in out - rerun to resume")
            progress(_event(done, 1000))
        return SimpleNamespace(out="out")

    job = ExplainJob(_request(), run=slow).start()
    assert started.wait(5)
    assert job.running
    job.cancel()
    release.set()
    messages = job.wait(10)
    assert messages[-1].kind == "cancelled"
    assert job.state == "cancelled" and job.result is None
    assert "rerun to resume" in job.error_text


def test_poll_does_not_block_while_running():
    release = threading.Event()

    def waiting(request, *, progress=None, cancel=None, **kwargs):
        progress(_event(1, 2))
        release.wait(5)
        return SimpleNamespace(out="out")

    job = ExplainJob(_request(), run=waiting).start()
    deadline = time.time() + 5
    seen = []
    while not seen and time.time() < deadline:
        seen = job.poll()
        time.sleep(0.01)
    assert job.poll() == [] and job.running      # a blocking poll would return only after the run ended
    release.set()
    job.wait(5)
    assert job.state == "done"


def test_faithfulness_runs_after_the_explanation():
    calls = []

    def evaluate(out_dir, steps=10):
        """Stand-in for SegSHAPLib.explain.faithfulness.evaluate_output."""
        calls.append((out_dir, steps))
        return {"steps": steps, "aopc": 0.1}

    job = ExplainJob(_request(), run=fake_run_explain, faithfulness_steps=3, evaluate=evaluate).start()
    messages = job.wait(10)
    assert calls == [("out", 3)]
    assert job.faithfulness == {"steps": 3, "aopc": 0.1}
    stages = [m.event.stage for m in messages if m.kind == "progress"]
    assert stages[-2:] == ["faithfulness", "faithfulness"]


def test_a_job_starts_once():
    job = ExplainJob(_request(), run=fake_run_explain).start()
    with pytest.raises(RuntimeError):
        job.start()
    job.wait(10)


def test_in_memory_inputs_are_written_for_re_evaluation(tmp_path):
    """With faithfulness asked for, the CT/organs given in memory are written next to the output folder and
    the request names them (evaluate_output rebuilds the request from summary.json)."""
    import numpy as np

    from SegSHAPLib.io.image_io import Volume, read_volume

    explain = pytest.importorskip("SegSHAPLib.explain.request")
    ct = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    request = explain.ExplainRequest(model=tmp_path / "model", out=tmp_path / "run" / "explanation",
                                     roi_point=(0.0, 0.0, 0.0))
    seen = {}

    def record(request, **kwargs):
        """Stand-in for run_explain: records the request it gets."""
        seen["request"] = request
        return SimpleNamespace(out=request.out)

    job = ExplainJob(request, run=record, faithfulness_steps=2, evaluate=lambda out, steps: {},
                     inputs=CaseInputs(ct=ct))
    job.start().wait(10)
    assert job.state == "done"
    written = tmp_path / "run" / "explanation_inputs" / "ct.nii.gz"
    assert seen["request"].ct == written.resolve() and seen["request"].organs is None
    np.testing.assert_array_equal(read_volume(written).array, ct.array)
    assert request.ct is None                                   # the caller's request is not mutated
    no_faith = ExplainJob(request, run=record, inputs=CaseInputs(ct=ct)).start()
    no_faith.wait(10)
    assert seen["request"].ct is None                           # nothing written without faithfulness
