"""The ``local`` cohort executor: a pool of worker processes on this machine, no extra packages.

Each worker is a process of its own (``cohort.worker.serve``) running one explanation after another, so a
crash, an out-of-memory kill or a ``kill -9`` takes down one attempt only: the worker is started again and the
task retried (up to ``max_retries`` more times), resuming from the explanation's journal. An explanation that
raised is retried the same way; one that reports bad input is not. On a GPU machine each worker is pinned to
one GPU through ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from SegSHAPLib import options
from SegSHAPLib.cohort.state import DONE, FAILED, TaskOutcome, log_path
from SegSHAPLib.cohort.worker import serve
from SegSHAPLib.errors import InputError

POLL_INTERVAL_S = 0.25
STOP_GRACE_S = 20.0


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_slots(workers: int | None, gpus_per_task: float, gpu_ids: list[str], cpus: int) -> list[dict]:
    """One dict per worker: {"device": "cpu" | "cuda", "gpu": id or None, "threads": torch threads}.

    CPU (gpus_per_task = 0): ``workers`` processes (default 1: torch already uses every core) sharing the cores.
    GPU: 1/gpus_per_task workers per visible GPU (gpus_per_task 1, 0.5, 0.25, ...); ``workers`` caps the total.
    """
    if gpus_per_task < 0:
        raise InputError(f"--gpus {gpus_per_task}: give the GPUs one explanation uses (0 = CPU, 1, 0.5, ...)")
    if gpus_per_task == 0:
        count = workers or 1
        if count < 1:
            raise InputError(f"--workers {workers}: need at least 1")
        return [{"device": "cpu", "gpu": None, "threads": max(1, cpus // count)} for _ in range(count)]
    per_gpu = 1 / gpus_per_task
    if gpus_per_task > 1 or abs(per_gpu - round(per_gpu)) > 1e-9:
        raise InputError(f"--gpus {gpus_per_task}: an explanation runs on one GPU; give 1 or a fraction 1/n "
                         "(0.5 puts two explanations on each GPU)")
    if not gpu_ids:
        raise InputError(f"--gpus {gpus_per_task} but no CUDA device is visible here; use --gpus 0 for the CPU")
    slots = [{"device": "cuda", "gpu": gpu, "threads": 1} for gpu in gpu_ids for _ in range(round(per_gpu))]
    return slots[:workers] if workers else slots


def describe_exit(code: int) -> str:
    """A worker's exit code in words."""
    if code < 0:
        try:
            return f"the worker was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the worker was killed by signal {-code}"
    return f"the worker exited with code {code}"


class _Worker:
    """One worker process (started on first use and again after it died) and the task it is running."""

    def __init__(self, slot: dict):
        self.slot, self.process, self.connection, self.task_id = slot, None, None, None

    def start_task(self, out: Path, run_id: str, task_id: str) -> None:
        if self.process is None or not self.process.is_alive():
            context = multiprocessing.get_context("spawn")     # a fresh interpreter: safe with torch's threads
            self.connection, child_end = context.Pipe()
            self.process = context.Process(target=serve, args=(child_end, str(out), run_id, self.slot),
                                           name="segshap-cohort-worker", daemon=True)
            self.process.start()
            child_end.close()
        self.connection.send(task_id)
        self.task_id = task_id

    def reply(self) -> tuple[str, str] | None:
        """(state, reason) once the running task ended; a dead process -> ("died", how); None while it runs."""
        try:
            if self.connection.poll():
                return self.connection.recv()
        except (EOFError, OSError):
            pass
        if self.process.is_alive():
            return None
        self.process.join()
        return "died", describe_exit(self.process.exitcode)

    def stop(self) -> None:
        """End the worker's loop and wait for the process to exit."""
        if self.process is not None and self.process.is_alive():
            self.connection.send(None)
            self.process.join(STOP_GRACE_S)


class LocalExecutor:
    """Runs the study's explanations in worker processes on this machine (see the module doc)."""


    def __init__(self, workers: int | None = None, max_retries: int = options.MAX_RETRIES,
                 gpus_per_task: float = options.GPUS_PER_TASK):
        if max_retries < 0:
            raise InputError(f"--max-retries {max_retries}: need 0 or more")
        self.max_retries = max_retries
        self.slots = worker_slots(workers, gpus_per_task, visible_gpus() if gpus_per_task else [],
                                  os.cpu_count() or 1)

    def run(self, out: Path, task_ids: list[str], run_id: str,
            poll: Callable[[list[str], list[TaskOutcome]], None]) -> list[TaskOutcome]:
        """Run every task; ``poll(running task ids, outcomes so far)`` is called a few times a second.
        Ctrl-C or SIGTERM stops the workers (their journals keep what they computed) and is raised again."""
        workers = [_Worker(slot) for slot in self.slots]
        pending, outcomes = deque(task_ids), []
        attempts = dict.fromkeys(task_ids, 0)
        try:
            while pending or any(w.task_id for w in workers):
                for worker in workers:
                    if worker.task_id is None and pending:
                        task_id = pending.popleft()
                        attempts[task_id] += 1
                        worker.start_task(out, run_id, task_id)
                for worker in workers:
                    reply = worker.reply() if worker.task_id else None
                    if reply is None:
                        continue
                    task_id, worker.task_id = worker.task_id, None
                    outcome = self._outcome(out, task_id, reply, attempts[task_id])
                    if outcome is None:
                        pending.appendleft(task_id)                 # retried first: it resumes its journal
                    else:
                        outcomes.append(outcome)
                poll([w.task_id for w in workers if w.task_id], outcomes)
                time.sleep(POLL_INTERVAL_S)
        except KeyboardInterrupt:                          # Ctrl-C or SIGTERM (errors.Terminated)
            self._interrupt(workers)
            raise
        for worker in workers:
            worker.stop()
        return outcomes

    def _outcome(self, out: Path, task_id: str, reply: tuple[str, str], attempts: int) -> TaskOutcome | None:
        """The outcome of an ended task, or None when it is to be retried (an error or a dead worker)."""
        state, reason = reply
        if state in (DONE, FAILED):
            return TaskOutcome(task_id, state, reason, attempts)
        if attempts <= self.max_retries:
            return None
        return TaskOutcome(task_id, FAILED, f"{reason} (gave up after {attempts} attempts; see "
                                            f"{log_path(out, task_id)})", attempts)

    @staticmethod
    def _interrupt(workers: list[_Worker]) -> None:
        """Interrupt the workers (they journal as they go) and wait; kill those that do not stop."""
        processes = [w.process for w in workers if w.process is not None and w.process.is_alive()]
        for process in processes:
            os.kill(process.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
