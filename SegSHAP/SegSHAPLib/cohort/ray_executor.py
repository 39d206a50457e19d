"""The ``ray`` cohort executor: one Ray task per explanation, for studies larger than one machine.

Ray (``pip install -e '.[ray]'``) is imported only when this executor is chosen. Each explanation is one task
running ``cohort.worker.run_task`` with ``num_cpus`` and, on GPU clusters, ``num_gpus`` (Ray then sets
``CUDA_VISIBLE_DEVICES`` for the task). Ray re-runs a task whose worker process or node died, and one that
raised (``max_retries``, ``retry_exceptions``); bad input is returned as a failure, not raised, so it is not
retried. Every attempt resumes from the explanation's journal, which is why ``OUT`` must be on a file system
that every node sees (the same path on each). Without ``--ray-address`` (and no Ray already initialised in
this process) a local Ray is started with this machine's CPUs and GPUs, and stopped at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from SegSHAPLib import options
from SegSHAPLib.cohort.state import DONE, FAILED, TaskOutcome, read_status
from SegSHAPLib.cohort.worker import run_task
from SegSHAPLib.errors import InputError

WAIT_INTERVAL_S = 0.5


def import_ray():
    """The ray module, or InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[default]'), "
                         "or use --executor local") from None
    return ray


class RayExecutor:
    """Runs the study's explanations as Ray tasks (see the module doc)."""


    def __init__(self, address: str | None = None, max_retries: int = options.MAX_RETRIES,
                 gpus_per_task: float = options.GPUS_PER_TASK, cpus_per_task: int = options.CPUS_PER_TASK):
        if max_retries < 0:
            raise InputError(f"--max-retries {max_retries}: need 0 or more")
        if gpus_per_task < 0 or cpus_per_task < 1:
            raise InputError(f"--gpus {gpus_per_task} / --cpus-per-task {cpus_per_task}: need gpus >= 0 and "
                             "cpus >= 1")
        self.ray = import_ray()
        self.address, self.max_retries = address, max_retries
        self.gpus_per_task, self.cpus_per_task = gpus_per_task, cpus_per_task

    def run(self, out: Path, task_ids: list[str], run_id: str,
            poll: Callable[[list[str], list[TaskOutcome]], None]) -> list[TaskOutcome]:
        """Submit every task and collect the outcomes; ``poll(running task ids, outcomes so far)`` is called
        twice a second. Ctrl-C or SIGTERM cancels the tasks (journals keep what they computed) and is raised
        again."""
        ray = self.ray
        started_here = self._connect()
        device = "cuda" if self.gpus_per_task > 0 else "cpu"
        remote = ray.remote(run_task).options(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                                              max_retries=self.max_retries, retry_exceptions=True,
                                              name="segshap-explain")
        refs = {remote.remote(str(Path(out).resolve()), task_id, run_id, device, self.cpus_per_task): task_id
                for task_id in task_ids}
        outcomes = []
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=WAIT_INTERVAL_S)
                for ref in ready:
                    outcomes.append(self._outcome(out, refs.pop(ref), ref))
                running = [t for t in refs.values() if read_status(out, t).get("run_id") == run_id]
                poll(running, outcomes)
        except KeyboardInterrupt:                          # Ctrl-C or SIGTERM (errors.Terminated)
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()
        return outcomes

    def _connect(self) -> bool:
        """Join the given cluster, reuse this process's Ray, or start a local one; True when started here."""
        ray = self.ray
        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address)
            else:
                ray.init(num_cpus=os.cpu_count() or 1)
        except ConnectionError as err:
            raise InputError(f"--ray-address {self.address}: cannot connect to a Ray cluster ({err})") from None
        return True

    def _outcome(self, out: Path, task_id: str, ref) -> TaskOutcome:
        attempts = int(read_status(out, task_id).get("attempt", 1))
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            reported = read_status(out, task_id).get("reason")
            reason = reported or f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            return TaskOutcome(task_id, FAILED, f"{reason} (gave up after {attempts} attempts)", attempts)
        if result["state"] == DONE:
            return TaskOutcome(task_id, DONE, attempts=attempts)
        return TaskOutcome(task_id, FAILED, result["reason"], attempts)
