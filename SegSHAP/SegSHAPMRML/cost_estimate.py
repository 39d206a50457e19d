"""The panel's cost preview before Apply: ``segshap explain <the run's arguments> --dry-run`` in a child process
(Qt-free, so CI tests it), read back from its one JSON line (the ``--dry-run`` contract, docs/architecture.md).

    job = CostEstimateJob(request, python=python_for_runs(), folder=runs_folder / "estimates",
                          tolerance=None).start()
    ... every ~200 ms on the main thread: job.poll() -> True once it ended; job.estimate (dict) or job.error_text

Why a child process, like the run itself: preparing the estimate loads the model and, for a clicked point, runs
nnU-Net's full-volume prediction once (it goes to the case cache, so the run that follows does not repeat it);
that must not freeze Slicer. The dry run writes nothing to the request's output folder; its stdout and stderr go
to ``<folder>/<stamp>.json`` and ``.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .process_job import explain_arguments, start_segshap

ESTIMATE_KEYS = ("n_units", "coalitions", "patches_in_support", "patches_full_grid", "folds", "patch_forwards",
                 "memo_peak_bytes", "seconds_estimate")     # what the panel reads of the --dry-run object


class CostEstimateJob:
    """One ``--dry-run`` child. request: the ExplainRequest the run would use (its inputs as files); python: the
    interpreter (PythonSlicer in Slicer); folder: where its output files go; tolerance: the stop rule of
    ``--budget auto`` (None: the fixed budget). State: ``running`` until ``poll()`` sees the child end, then
    ``estimate`` (the JSON object) or ``error_text`` (its last stderr line)."""

    def __init__(self, request, *, python: str | os.PathLike | None = None, folder, tolerance: float | None = None):
        self.request = request
        self.python = str(python or sys.executable)
        self.folder = Path(folder)
        self.tolerance = tolerance
        self.process: subprocess.Popen | None = None
        self.estimate: dict | None = None
        self.error_text = ""
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{id(self) % 10000}"
        self.stdout_path = self.folder / f"{stamp}.json"
        self.log_path = self.folder / f"{stamp}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.estimate is None and not self.error_text

    def start(self) -> "CostEstimateJob":
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as stdout, open(self.log_path, "wb") as stderr:
            self.process = start_segshap(self.python, ["explain", *explain_arguments(self.request, self.tolerance),
                                                       "--dry-run"], stdout, stderr)
        return self

    def poll(self) -> bool:
        """True once the child has ended (then ``estimate`` or ``error_text`` is set); never blocks."""
        if self.process is None:
            return False
        if not self.running:
            return True
        code = self.process.poll()
        if code is None:
            return False
        text = self.stdout_path.read_text(encoding="utf-8", errors="replace").strip()
        if code == 0:
            try:
                record = json.loads(text.splitlines()[-1])
                missing = [key for key in ESTIMATE_KEYS if key not in record]
                if not missing:
                    self.estimate = record
                    return True
                self.error_text = f"the cost estimate lacks {', '.join(missing)}"
            except (ValueError, IndexError):
                self.error_text = "the cost estimate printed no JSON object"
            return True
        lines = [line for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
        self.error_text = (lines[-1].strip() if lines else f"segshap explain --dry-run ended with exit code {code}")
        return True

    def wait(self, timeout: float | None = None, interval_s: float = 0.2) -> bool:
        """Poll until the child ends or ``timeout`` seconds pass (scripts, tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(interval_s)
        return True

    def cancel(self) -> None:
        """End the child (a preview has nothing to keep)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
            self.error_text = self.error_text or "cancelled"


def format_estimate(estimate: dict) -> str:
    """The panel's line for a ``--dry-run`` object, e.g. 'Estimate: 19 units, 1,024 coalitions - 1,452 patch
    forwards of 28 support patches (5,820 without the cache) - about 12 min (memo 0.4 GB)'."""
    from .panel import format_duration

    forwards = estimate["patch_forwards"]
    parts = [f"Estimate: {int(estimate['n_units']):,} units, {int(estimate['coalitions']):,} coalitions",
             f"{int(forwards['memo']):,} patch forwards of {int(estimate['patches_in_support']):,} support patches "
             f"({int(forwards['none']):,} without the cache)",
             f"about {format_duration(estimate['seconds_estimate'])} (memo "
             f"{float(estimate['memo_peak_bytes']) / 1e9:.2g} GB)"]
    return " - ".join(parts)


__all__ = ["CostEstimateJob", "ESTIMATE_KEYS", "format_estimate"]
