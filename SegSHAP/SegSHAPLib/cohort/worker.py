"""One explanation of a study, run by a worker: a local worker process or a Ray task.

``run_task`` resumes from the explanation's journal (``segshap explain``'s own resume), then, when the task
asks for it, computes its faithfulness (``faithfulness.json``; its coalitions journaled too, so it resumes as
well), reports progress in ``OUT/status/<task_id>.json`` and ends in one of three ways:
- returns ``{"state": "done"}``;
- returns ``{"state": "failed", "reason": ...}`` for bad input (an InputError: retrying cannot help);
- raises for anything else (a crash, an out-of-memory error), so the executor retries it; a worker killed
  outright is retried the same way. Either retry resumes from the journal.

``serve`` is the loop of a local worker process (``cohort.local``): it runs one task after another, so the
imports and set-up of torch and nnU-Net are paid once per worker, not once per explanation.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from SegSHAPLib.cohort.state import (classify, is_explained, log_path, read_plan, read_status, this_worker,
                                     write_status)
from SegSHAPLib.errors import Cancelled, InputError, handle_sigterm

STATUS_INTERVAL_S = 1.0


class StatusReporter:
    """ProgressEvents -> the task's status file, at most once per STATUS_INTERVAL_S (stage changes at once)."""

    def __init__(self, out: Path, task_id: str):
        self.out, self.task_id = out, task_id
        self.stage, self.last = None, 0.0

    def __call__(self, event) -> None:
        now = time.monotonic()
        if event.stage == self.stage and now - self.last < STATUS_INTERVAL_S and event.done < event.total:
            return
        self.stage, self.last = event.stage, now
        fields = {"stage": event.stage, "message": event.message}
        if event.stage == "coalitions":
            fields.update(coalitions_done=event.done, coalitions_total=event.total,
                          patch_forwards=event.counters.get("patch_forwards", 0))
        write_status(self.out, self.task_id, **fields)


def run_task(out: str | Path, task_id: str, run_id: str, device: str = "cpu", threads: int | None = None) -> dict:
    """Run (or resume) the explanation ``task_id`` of the study in ``out`` in this process, then its
    faithfulness when the task asks for it; see the module doc."""
    out = Path(out)
    tasks = {task.task_id: task for task in read_plan(out)}
    if task_id not in tasks:
        raise InputError(f"{task_id} is not a task of the study in {out}")
    task = tasks[task_id]
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    previous = read_status(out, task_id)
    attempt = previous.get("attempt", 0) + 1 if previous.get("run_id") == run_id else 1
    started = time.time()
    write_status(out, task_id, state="running", run_id=run_id, attempt=attempt, started=started, reason=None,
                 stage="prepare", **this_worker())
    try:
        summary = _explained_summary(out, task, device)
        if task.evaluate:
            _evaluate(out, task)
    except InputError as err:
        write_status(out, task_id, state="failed", reason=str(err))
        return {"task_id": task_id, "state": "failed", "reason": str(err)}
    except (KeyboardInterrupt, Cancelled):
        _write_despite_interrupts(out, task_id, state="interrupted",
                                  reason="interrupted; rerun to resume from the journal")
        raise
    except BaseException as err:
        write_status(out, task_id, state="error", reason=f"{type(err).__name__}: {err}")
        raise
    solver = summary["solver"]
    write_status(out, task_id, state="done", seconds=round(time.time() - started, 3),
                 coalitions_done=solver["coalitions"], coalitions_total=solver["coalitions"],
                 resumed_coalitions=solver["resumed_coalitions"])
    return {"task_id": task_id, "state": "done"}


def _explained_summary(out: Path, task, device: str) -> dict:
    """The task's summary.json: read when the explanation is finished already, else from running (or resuming)
    it here with its progress in the status file."""
    folder_state, _ = classify(task)
    if is_explained(folder_state):
        summary = json.loads((Path(task.request.out) / "summary.json").read_text())
        write_status(out, task.task_id, coalitions_done=summary["solver"]["coalitions"],
                     coalitions_total=summary["solver"]["coalitions"])
        return summary
    from SegSHAPLib.explain.run import run_explain

    write_status(out, task.task_id, coalitions_done=0, coalitions_total=task.request.budget)
    return run_explain(replace(task.request, device=device), progress=StatusReporter(out, task.task_id)).summary


def _evaluate(out: Path, task) -> None:
    """Write the task's faithfulness.json unless it is current (its curves' coalitions are journaled batch by
    batch, so an interrupted evaluation resumes); the counts of this evaluation go to the status file."""
    from SegSHAPLib.explain.faithfulness import DEFAULT_STEPS, evaluate_output, is_evaluated

    folder = Path(task.request.out)
    if is_evaluated(folder, DEFAULT_STEPS, without_roi_units=True):
        return
    write_status(out, task.task_id, stage="faithfulness", message="faithfulness: preparing")

    def report(done: int, total: int) -> None:
        write_status(out, task.task_id, stage="faithfulness",
                     message=f"faithfulness: {done}/{total} curve coalitions computed")

    result = evaluate_output(folder, DEFAULT_STEPS, progress=report, without_roi_units=True)
    write_status(out, task.task_id, evaluation=result["evaluation"])


def _write_despite_interrupts(out: Path, task_id: str, **fields) -> None:
    """write_status, tried again when a second interrupt arrives while it writes (Ctrl-C reaches a worker twice:
    from the terminal's process group and from its coordinator)."""
    for _ in range(3):
        try:
            write_status(out, task_id, **fields)
            return
        except KeyboardInterrupt:
            continue


def serve(connection, out: str, run_id: str, slot: dict) -> None:
    """A local worker process's loop: receive a task id, run it with its output in the task's log, send back
    ("done" | "failed" | "error", reason); None ends the loop. ``slot`` = {"device", "gpu", "threads"}
    (``cohort.local.worker_slots``); the GPU is pinned before torch starts."""
    if slot["gpu"] is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot["gpu"]
    os.environ["OMP_NUM_THREADS"] = str(slot["threads"])
    signal.signal(signal.SIGINT, signal.default_int_handler)   # the coordinator's stop request, also when this
    handle_sigterm()                                           # process inherited SIGINT ignored (a study run in
                                                               # the background by a script: `cohort run ... &`)
    _stop_with_coordinator()
    try:
        while True:
            task_id = connection.recv()
            if task_id is None:
                return
            connection.send(_run_logged(out, task_id, run_id, slot))
    except (KeyboardInterrupt, Cancelled, EOFError, BrokenPipeError):   # Ctrl-C, SIGTERM, or the coordinator is gone
        return


def _stop_with_coordinator() -> None:
    """Send this worker SIGTERM (handled like Ctrl-C: journal kept, status "interrupted") as soon as the process
    that started it ends, however it ends, so no worker computes on as an orphan."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="segshap-coordinator-watch", daemon=True).start()


def _run_logged(out: str, task_id: str, run_id: str, slot: dict) -> tuple[str, str]:
    """Run one task with this process's output in its log; (state, reason) for the coordinator."""
    with _output_to(log_path(Path(out), task_id), f"run {run_id}, {slot}"):
        try:
            outcome = run_task(out, task_id, run_id, slot["device"], slot["threads"])
            return outcome["state"], outcome.get("reason", "")
        except InputError as err:                        # not a task of this study: retrying cannot help
            return "failed", str(err)
        except (KeyboardInterrupt, Cancelled):
            raise
        except Exception as err:
            traceback.print_exc()
            return "error", f"{type(err).__name__}: {err}"


@contextmanager
def _output_to(log: Path, header: str):
    """Send this process's stdout and stderr (Python's and the C libraries') to ``log`` (appended)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} {header} ===\n")
        handle.flush()
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
