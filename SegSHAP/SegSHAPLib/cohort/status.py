"""What a study looks like right now: one row per explanation, totals and an ETA (``segshap cohort status``).

A task's state combines its folder (``cohort.state.classify``: done / changed / resumable / new) with the
last status its worker wrote: ``running`` while that worker lives (or lives on another host), ``failed`` with
the reason when bad input ended it, ``interrupted`` when it stopped or died before finishing (resumable).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from SegSHAPLib.cohort.manifest import CohortTask
from SegSHAPLib.cohort.state import (CHANGED, DONE, EXPLAINED, FAILED, NEW, RESUMABLE, classify, is_explained,
                                     read_plan, read_status, worker_alive)

RUNNING, INTERRUPTED = "running", "interrupted"
STATE_ORDER = (DONE, RUNNING, FAILED, INTERRUPTED, CHANGED, EXPLAINED, RESUMABLE, NEW)


@dataclass
class TaskView:
    """One explanation's row in the study table."""

    task_id: str
    state: str
    coalitions_done: int
    coalitions_total: int
    attempts: int
    seconds: float | None
    detail: str


def task_view(out: Path, task: CohortTask) -> TaskView:
    """The current row of one task."""
    folder_state, detail = classify(task)
    status = read_status(out, task.task_id)
    done = int(status.get("coalitions_done", 0))
    total = int(status.get("coalitions_total", task.request.budget))
    if is_explained(folder_state):
        done = total = int(status.get("coalitions_total", total))
    state = folder_state
    if folder_state != DONE:
        state, detail = _with_worker_status(folder_state, detail, status)
    return TaskView(task.task_id, state, done, total, int(status.get("attempt", 0)),
                    status.get("seconds"), detail)


def _with_worker_status(folder_state: str, detail: str, status: dict) -> tuple[str, str]:
    """(state, detail) of an unfinished task once its worker's last status is taken into account."""
    if folder_state != CHANGED and status.get("state") == "running" and worker_alive(status) is not False:
        return RUNNING, status.get("message") or status.get("stage", "")
    if status.get("state") == FAILED:
        return FAILED, status.get("reason", "")
    if status.get("state") in ("running", "interrupted", "error"):
        return INTERRUPTED, f"{detail}; last attempt: {status.get('reason') or 'the worker stopped'}"
    return folder_state, detail


def study_views(out: Path, tasks: list[CohortTask] | None = None) -> list[TaskView]:
    """Rows of every task in the study (from its plan unless ``tasks`` is given)."""
    return [task_view(out, task) for task in (read_plan(out) if tasks is None else tasks)]


def study_totals(views: list[TaskView]) -> dict:
    """Counts per state, coalitions done/total, and an ETA in seconds (None until an explanation finished).

    ETA = coalitions still to evaluate x seconds per coalition of the finished explanations / explanations
    running at once (at least 1). Rough by nature: explanations differ in size.
    """
    counts = {state: sum(v.state == state for v in views) for state in STATE_ORDER}
    finished = [v for v in views if v.state == DONE and v.seconds and v.coalitions_total]
    remaining = sum(max(0, v.coalitions_total - v.coalitions_done) for v in views if v.state not in (DONE, FAILED))
    eta = None
    if finished:
        per_coalition = sum(v.seconds for v in finished) / sum(v.coalitions_total for v in finished)
        eta = remaining * per_coalition / max(1, counts[RUNNING])
    return {"tasks": len(views), **counts, "coalitions_done": sum(v.coalitions_done for v in views),
            "coalitions_total": sum(v.coalitions_total for v in views), "eta_s": eta}


def format_table(views: list[TaskView]) -> str:
    """A fixed-width table of the rows, then one line of totals."""
    width = max([len("explanation")] + [len(v.task_id) for v in views])
    lines = [f"{'explanation':<{width}}  {'state':<11}  {'coalitions':>11}  {'tries':>5}  detail"]
    for v in views:
        lines.append(f"{v.task_id:<{width}}  {v.state:<11}  {f'{v.coalitions_done}/{v.coalitions_total}':>11}  "
                     f"{v.attempts:>5}  {v.detail}")
    totals = study_totals(views)
    counts = ", ".join(f"{totals[s]} {s}" for s in STATE_ORDER if totals[s])
    eta = "" if not totals["eta_s"] else f"; about {format_duration(totals['eta_s'])} left"
    lines.append(f"{totals['tasks']} explanations: {counts}{eta}")
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """12 s, 3 min 5 s, 2 h 10 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
