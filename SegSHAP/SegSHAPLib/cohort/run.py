"""``segshap cohort run``'s logic: manifest -> tasks -> triage by the journals -> an executor -> outcomes.

The unit of scheduling and retry is one explanation. Before anything runs, each task of this part is
triaged from its folder (``cohort.state.classify``): done -> skipped (a finished study reruns in seconds),
resumable or new -> run (resuming its journal), explained but its faithfulness asked for and not current ->
evaluated (the explanation is not rerun), changed (its folder holds a different request) -> refused with
the differences named, unless ``restart`` is given, which discards that folder and starts it over.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from SegSHAPLib.cohort.manifest import CohortTask, read_manifest, select_part
from SegSHAPLib.cohort.state import (CHANGED, DONE, EXPLAINED, FAILED, NEW, TaskOutcome, classify, discard,
                                     write_plan)


@dataclass
class Triage:
    """This part's tasks sorted by what a run will do with them."""

    to_run: list[CohortTask] = field(default_factory=list)
    done: list[CohortTask] = field(default_factory=list)
    restarted: list[CohortTask] = field(default_factory=list)
    refused: list[TaskOutcome] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)       # task id -> what the run does and why


@dataclass
class StudyRun:
    """What one ``cohort run`` did."""

    triage: Triage
    outcomes: list[TaskOutcome]

    @property
    def failures(self) -> list[TaskOutcome]:
        return self.triage.refused + [o for o in self.outcomes if o.state == FAILED]


def load_study(manifest: Path, out: Path, part_id: int = 0, num_parts: int = 1,
               evaluate: bool = False) -> tuple[list[CohortTask], list[CohortTask]]:
    """(every task of the manifest, this part's tasks); ``evaluate`` asks every task for its faithfulness (as
    the manifest column does per case). InputError on a bad manifest or part."""
    tasks = read_manifest(manifest, out)
    for task in tasks:
        task.evaluate = task.evaluate or evaluate
    return tasks, select_part(tasks, part_id, num_parts)


def triage(tasks: list[CohortTask], restart: bool) -> Triage:
    """Sort tasks by their folders' state (nothing is changed on disk)."""
    result = Triage()
    for task in tasks:
        state, detail = classify(task)
        if state == DONE:
            result.done.append(task)
            result.notes[task.task_id] = "done, skipped"
        elif state == CHANGED and restart:
            result.restarted.append(task)
            result.to_run.append(task)
            result.notes[task.task_id] = f"restart: {detail}"
        elif state == CHANGED:
            result.refused.append(TaskOutcome(task.task_id, FAILED, f"refused: {detail}; rerun with --restart to "
                                                                    "discard it and start over", 0))
            result.notes[task.task_id] = result.refused[-1].reason
        else:
            result.to_run.append(task)
            verb = {NEW: "run", EXPLAINED: "evaluate"}.get(state, "resume")
            result.notes[task.task_id] = f"{verb}: {detail}"
    return result


def prepare_run(all_tasks: list[CohortTask], tasks: list[CohortTask], out: Path, restart: bool = False) -> Triage:
    """Record the study's plan in OUT, triage this part's ``tasks`` and, with ``restart``, delete the folders
    of the changed ones."""
    write_plan(out, all_tasks)
    sorted_tasks = triage(tasks, restart)
    for task in sorted_tasks.restarted:
        discard(task)
    return sorted_tasks


def execute(sorted_tasks: Triage, out: Path, executor,
            poll: Callable[[list[str], list[TaskOutcome]], None] | None = None) -> StudyRun:
    """Run the triaged tasks to run on ``executor`` (LocalExecutor or RayExecutor)."""
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    outcomes = []
    if sorted_tasks.to_run:
        outcomes = executor.run(Path(out), [task.task_id for task in sorted_tasks.to_run], run_id,
                                poll or (lambda running, finished: None))
    return StudyRun(sorted_tasks, outcomes)
