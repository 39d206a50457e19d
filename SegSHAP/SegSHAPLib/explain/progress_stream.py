"""The machine-readable progress stream of ``segshap explain --progress json`` (a contract, docs/architecture.md).

One JSON object per line. The CLI writes them (``JsonLinesProgress``); a process that runs ``segshap explain``
(the Slicer panel's ``SegSHAPMRML.process_job``) reads them back (``parse_line``, ``event_from_record``), so both
sides use this one definition of the keys.

    {"event": "start", "pid": int}
    {"event": "progress", "stage": "prepare" | "coalitions" | "verify" | "write", "done": int, "total": int,
     "forwards": int, "hits": int, "hit_rate": float, "eta_s": float | null, "elapsed_s": float, "message": str,
     "estimate": object (only on the coalitions lines that follow a solver segment)}
    {"event": "end", "status": "finished" | "cancelled" | "terminated" | "output_error" | "error", "out": str,
     "message": str}

``start`` is the first line: ``pid`` is the process that runs the explanation (behind a launcher such as
Slicer's PythonSlicer it is not the launcher's), the one to interrupt.
``forwards``/``hits`` are the run's patch forwards and patch-cache hits so far; ``eta_s`` is the estimated time
left in the coalitions stage (null elsewhere and before the first batch). ``estimate`` is ``ProgressEvent.estimate``,
the solver's current answer (``{"coalitions", "total", "units", "values": {name: {"phi0", "phi", "std_error",
"converged", "coalitions_needed_forecast"}}}``), written once per solver segment (on the first line after it), not
repeated on the engine's lines in between. The ``end`` line is the last line;
its status matches the exit code (cli.main): finished 0, cancelled (Ctrl-C, SIGINT) 130, terminated (SIGTERM,
``errors.Terminated``) 143, output_error (an output not written whole, ``errors.OutputError``) 1, error (bad input
2, anything else 1). Cancelled, terminated and output_error runs keep every journaled coalition: rerun to resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

START, PROGRESS, END = "start", "progress", "end"
END_STATUSES = ("finished", "cancelled", "terminated", "output_error", "error")


def progress_record(event, elapsed_s: float) -> dict:
    """A ``ProgressEvent`` as a stream record."""
    counters = event.counters or {}
    eta = counters.get("eta_s")
    record = {"event": PROGRESS, "stage": event.stage, "done": int(event.done), "total": int(event.total),
            "forwards": int(counters.get("patch_forwards", 0)), "hits": int(counters.get("patch_cache_hits", 0)),
            "hit_rate": float(counters.get("hit_rate", 0.0)),
            "eta_s": None if eta is None else round(float(eta), 3), "elapsed_s": round(elapsed_s, 3),
            "message": event.message}
    if event.estimate is not None:
        record["estimate"] = event.estimate
    return record


def end_record(status: str, out, message: str) -> dict:
    """The last record of a run: how it ended, its output folder and a one-line message."""
    if status not in END_STATUSES:
        raise ValueError(f"status {status!r} is not one of {END_STATUSES}")
    first_line = (message or "").strip().splitlines()
    return {"event": END, "status": status, "out": str(out), "message": first_line[0] if first_line else ""}


def ending_of(error: BaseException) -> tuple[str, str]:
    """(end status, one-line message) of the exception that ended a run."""
    from SegSHAPLib.errors import Cancelled, InputError, OutputError, Terminated

    if isinstance(error, Terminated):
        return "terminated", "terminated (SIGTERM); rerun to resume"
    if isinstance(error, (Cancelled, KeyboardInterrupt)):
        return "cancelled", str(error) or "interrupted"
    if isinstance(error, (InputError, OutputError)):
        return ("output_error" if isinstance(error, OutputError) else "error"), str(error)
    return "error", f"{type(error).__name__}: {error}"


class JsonLinesProgress:
    """A ``run_explain`` progress callback that writes each event as one JSON line to ``stream`` (flushed),
    after the ``start`` line."""

    def __init__(self, stream):
        self.stream = stream
        self.started = time.perf_counter()
        self._last_estimate = None
        self._write({"event": START, "pid": os.getpid()})

    def __call__(self, event) -> None:
        if event.estimate is not None and event.estimate is self._last_estimate:    # written once, when new
            event = dataclasses.replace(event, estimate=None)
        else:
            self._last_estimate = event.estimate
        self._write(progress_record(event, time.perf_counter() - self.started))

    def end(self, status: str, out, message: str) -> None:
        self._write(end_record(status, out, message))

    def _write(self, record: dict) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


def parse_line(line: str) -> dict | None:
    """A stream record from one line, or None for a line that is not one (other output the run printed)."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("event") in (START, PROGRESS, END) else None


def event_from_record(record: dict):
    """A progress record back as a ``ProgressEvent`` (counters under the names run_explain uses, the live estimate
    when the record carries one)."""
    from SegSHAPLib.progress import ProgressEvent

    counters = {"patch_forwards": record["forwards"], "patch_cache_hits": record["hits"],
                "hit_rate": record["hit_rate"]}
    if record["stage"] == "coalitions":
        counters.update(coalitions=record["done"], eta_s=record["eta_s"])
    return ProgressEvent(record["stage"], record["done"], record["total"], record["message"], counters,
                         record.get("estimate"))
