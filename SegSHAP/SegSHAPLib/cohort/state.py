"""Where a study keeps its state, and what state each explanation is in.

Layout of a study folder OUT (the only shared state: every worker, part and executor reads and writes here,
so on a cluster OUT lives on a shared file system):
- ``cohort_plan.json``: every task of the manifest (``CohortTask.to_json``), rewritten by each ``cohort run``.
- ``explanations/<task_id>/``: a ``segshap explain`` output folder, journal included. What is done is decided
  from it alone: finished (``explain.folder.ExplanationFolder.finished``) with the task's own inputs means
  "finished"; ``journal_spec.json`` + ``journal.tsv`` mean "started, resumable". A task that asks for
  its faithfulness is done only once ``faithfulness.json`` is current (``explain.faithfulness.is_evaluated``);
  its curves' coalitions go to the same journal, so an interrupted evaluation resumes too.
- ``status/<task_id>.json``: the last thing a worker said about the task (state, attempt, pid, host,
  coalitions done/total, failure reason), rewritten atomically; informative only.
- ``logs/<task_id>.log``: the worker's output, every attempt appended.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from SegSHAPLib.io.atomic_files import read_json_or_none, write_json_atomic
from SegSHAPLib.cohort.manifest import CohortTask
from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.faithfulness import DEFAULT_STEPS, is_evaluated
from SegSHAPLib.explain.folder import ExplanationFolder
from SegSHAPLib.explain.journal import differing_keys
from SegSHAPLib.explain.output_check import check_output_folder

PLAN_FILE = "cohort_plan.json"
STATUS_FOLDER = "status"
LOGS_FOLDER = "logs"

DONE, RESUMABLE, NEW, CHANGED = "done", "resumable", "new", "changed"
EXPLAINED = "explained"            # summary.json is there, the faithfulness the task asks for is not (yet)
FAILED = "failed"


@dataclass
class TaskOutcome:
    """How one explanation ended in this run: DONE, or FAILED with the reason; attempts = worker starts."""

    task_id: str
    state: str
    reason: str = ""
    attempts: int = 1


def write_plan(out: Path, tasks: list[CohortTask]) -> None:
    """Record every task of the study in ``OUT/cohort_plan.json`` (atomically: parts may write it at once)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / PLAN_FILE, {"version": 1, "tasks": [task.to_json() for task in tasks]})


def read_plan(out: Path) -> list[CohortTask]:
    """The tasks recorded by ``cohort run``; InputError when OUT is not a study folder."""
    path = Path(out) / PLAN_FILE
    if not path.is_file():
        raise InputError(f"{out} is not a cohort study folder (no {PLAN_FILE}); run `segshap cohort run MANIFEST "
                         f"--out {out}` first")
    try:
        return [CohortTask.from_json(item) for item in json.loads(path.read_text())["tasks"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError(f"{path} is damaged ({err}); rerun `segshap cohort run` to rewrite it") from None


def classify(task: CohortTask) -> tuple[str, str]:
    """(state, detail) of one explanation from its folder: DONE, EXPLAINED (finished, but the faithfulness it
    asks for is missing or stale), RESUMABLE (n journaled; also a finished folder whose parts disagree: its
    outputs are rewritten from the journal), NEW, or CHANGED (its folder holds a different request: detail names
    what differs)."""
    folder = ExplanationFolder(task.request.out)
    damaged = None
    if folder.answers(task.request):
        try:
            check_output_folder(folder.path, faithfulness=False)
        except InputError as err:
            damaged = str(err)
        else:
            evaluated = is_evaluated(folder.path, DEFAULT_STEPS, without_roi_units=True)
            if task.evaluate and not evaluated:
                return EXPLAINED, "explained; faithfulness to evaluate"
            return DONE, "finished; faithfulness evaluated" if evaluated else "finished"
    existing = folder.spec()
    if existing is None:
        return NEW, "not started"
    spec = task.request.journal_spec()
    if existing != spec:
        return CHANGED, "its folder holds a different request (differs in: " \
                        f"{', '.join(differing_keys(existing, spec))})"
    if damaged is not None:
        return RESUMABLE, f"outputs rewritten from the journal ({damaged})"
    return RESUMABLE, f"{folder.journaled()} coalitions journaled"


def is_explained(state: str) -> bool:
    """Whether a task in this state has its summary.json (finished, whatever its faithfulness)."""
    return state in (DONE, EXPLAINED)


def discard(task: CohortTask) -> None:
    """Delete an explanation's folder (``cohort run --restart`` on a changed request)."""
    shutil.rmtree(task.request.out, ignore_errors=True)


def status_path(out: Path, task_id: str) -> Path:
    return Path(out) / STATUS_FOLDER / f"{task_id}.json"


def log_path(out: Path, task_id: str) -> Path:
    return Path(out) / LOGS_FOLDER / f"{task_id}.log"


def read_status(out: Path, task_id: str) -> dict:
    """The task's last status ({} when no worker has reported)."""
    return read_json_or_none(status_path(out, task_id)) or {}


def write_status(out: Path, task_id: str, **fields) -> dict:
    """Merge ``fields`` into the task's status (with this process's pid and host and the time) atomically."""
    path = status_path(out, task_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    status = read_status(out, task_id)
    status.update(fields, updated=time.time())
    write_json_atomic(path, status)
    return status


def this_worker() -> dict:
    """Identity fields of the calling process for a status file."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def worker_alive(status: dict) -> bool | None:
    """Whether the process a status names still runs (None when it ran on another host: unknown)."""
    if status.get("host") != socket.gethostname() or not status.get("pid"):
        return None
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

