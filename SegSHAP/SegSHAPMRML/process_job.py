"""The panel's explanation in a separate process: ``segshap explain --progress json`` run by a given Python
(in Slicer: PythonSlicer), with the ``poll()``/``cancel()`` messages of ``job.ExplainJob`` (Qt-free, so CI tests it).

    job = ProcessExplainJob(request, python=shutil.which("PythonSlicer"), inputs_dir=plan.inputs_dir,
                            note=plan.note, faithfulness_steps=steps, inputs=case_inputs).start()
    ... every ~200 ms on the main thread: for message in job.poll(): ...     (kinds as in job.py)
    job.cancel()

Why a process: a crash or out-of-memory in torch ends the child, never Slicer; the GPU memory is freed when it
exits; and no Python thread competes with Slicer's main thread for the interpreter lock.

How the stream is read - no thread at all. The child's stdout (the JSON lines, ``explain.progress_stream``) goes
to the file ``<out>.progress.jsonl`` and its stderr to ``<out>.log`` (``segshap evaluate``'s output to
``<out>.evaluate.log``), all next to the output folder; ``poll()``
reads the bytes added since its last call on the caller's thread. In Slicer, PythonQt holds the interpreter lock
on the main thread (SLICER-NOTES.md), so a reader thread would only run while the main thread runs Python, and a
pipe that is not drained in time blocks the child once its buffer is full; a regular file never blocks the child,
needs no thread, reads the same on Windows, and stays as the run's record.

Cancel: on POSIX, SIGINT to the process that runs the explanation - the pid of the stream's ``start`` line,
because PythonSlicer is a launcher that starts the real interpreter as its child and does not pass signals on
(SlicerMONAIAuto3DSeg notes the same for kill); the launcher exits when its child does. On Windows,
CTRL_BREAK_EVENT to the child's process group (it is started in its own group, with its console window hidden
as ``slicer.util.launchConsoleProcess`` does), which the CLI handles as SIGBREAK like SIGINT; that path is not
exercised by CI, and a launcher that exits on CTRL_BREAK before its child would end the job early. The CLI stops
at the next network batch with every evaluated coalition journaled; if the child is still alive
``cancel_grace_s`` later, ``poll()`` terminates it (at most the batch in flight is lost). A rerun of the same
request resumes from the journal.

In-memory inputs (``inputs``, a ``CaseInputs`` as ExplainJob takes it) are written as files first
(``CaseInputs.persist``: CT, organ map with its names, ROI mask and a given prediction; on the caller's thread in
``start()``), to ``inputs_dir`` or ``<out>_inputs``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from SegSHAPLib.progress import ProgressEvent

from .job import JobMessage, JobState
from .panel import is_out_of_memory_text, with_out_of_memory_advice

CANCEL_GRACE_S = 30.0
PROGRESS_SUFFIX = ".progress.jsonl"
LOG_SUFFIX = ".log"


def library_root() -> Path:
    """The folder that holds the SegSHAPLib package the caller imported (put on the child's PYTHONPATH)."""
    import SegSHAPLib

    return Path(SegSHAPLib.__file__).resolve().parents[1]


def start_segshap(python: str, arguments: list[str], stdout, stderr, own_group: bool = False) -> subprocess.Popen:
    """``python -m SegSHAPLib.cli.main ARGUMENTS`` as a child process: the caller's SegSHAPLib first on its
    PYTHONPATH, UTF-8 output, no stdin; on Windows its console window hidden and, with ``own_group``, its own
    process group (for CTRL_BREAK_EVENT), as ``slicer.util.launchConsoleProcess`` starts one."""
    environment = dict(os.environ, PYTHONIOENCODING="utf-8")
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(library_root())] + ([environment["PYTHONPATH"]] if environment.get("PYTHONPATH") else []))
    windows = {}
    if os.name == "nt":
        startup = subprocess.STARTUPINFO()
        startup.dwFlags, startup.wShowWindow = subprocess.STARTF_USESHOWWINDOW, 0
        windows = {"startupinfo": startup}
        if own_group:
            windows["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    return subprocess.Popen([python, "-m", "SegSHAPLib.cli.main", *arguments], stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=stderr, env=environment, **windows)


def explain_arguments(request, tolerance: float | None = None) -> list[str]:
    """``segshap explain``'s arguments for ``request``; with a ``tolerance``, the budget becomes the cap of
    ``--budget auto``."""
    from SegSHAPLib import options

    arguments = request.command_line()
    if tolerance is None:
        return arguments
    at = arguments.index("--budget")
    return arguments[:at] + ["--budget", options.BUDGET_AUTO, "--cap", arguments[at + 1],
                             "--tolerance", repr(float(tolerance))] + arguments[at + 2:]


class ProcessExplainJob(JobState):
    """One ``segshap explain`` (then, with ``faithfulness_steps``, one ``segshap evaluate``) in a child process.

    request:            ExplainRequest (its ``out`` is the output folder; its parent receives the stream files).
    python:             the interpreter that runs ``-m SegSHAPLib.cli.main``; default ``sys.executable``.
    inputs_dir:         where in-memory inputs are written (default ``<out>_inputs``).
    note:               the panel's status prefix (as ExplainJob's).
    faithfulness_steps: > 0 runs ``segshap evaluate OUT --steps N`` after the explanation unless the output
                        folder already holds a faithfulness.json with N steps.
    cancel_grace_s:     seconds between the interrupt and terminate().
    inputs:             the in-memory inputs (``SegSHAPLib.explain.case_inputs.CaseInputs``), or None.
    tolerance:          the stop rule: ``--budget auto --cap <request.budget> --tolerance T``; None: the fixed
                        budget.
    """

    def __init__(self, request, *, python: str | os.PathLike | None = None, inputs_dir=None, note: str = "",
                 faithfulness_steps: int = 0, cancel_grace_s: float = CANCEL_GRACE_S, inputs=None,
                 tolerance: float | None = None):
        self.request = request
        self.tolerance = tolerance
        self.python = str(python or sys.executable)
        self.inputs_dir = inputs_dir
        self.note = note
        self.faithfulness_steps = int(faithfulness_steps)
        self.cancel_grace_s = float(cancel_grace_s)
        self.inputs = inputs
        self.process: subprocess.Popen | None = None
        self.log_path = self._log_path_for("explain")  # the running (or last) child's stderr
        self.phase = ""                                # "explain" | "evaluate" while a child runs
        self.end_record: dict | None = None            # the explain stream's "end" line
        self.worker_pid: int | None = None             # its "start" line's pid (the real interpreter)
        self.cancel_requested_at: float | None = None
        self._stream_offset = 0
        self._partial = b""
        self._log_offset = 0
        self._unreported: list[JobMessage] = []        # read by cancel(), returned by the next poll()
        self._reset_state()

    # ---------------------------------------------------------------------------------------------- files
    @property
    def out(self) -> Path:
        return Path(self.request.out)

    @property
    def progress_path(self) -> Path:
        return self.out.parent / (self.out.name + PROGRESS_SUFFIX)

    def _log_path_for(self, phase: str) -> Path:
        """``<out>.log`` for the explanation's stderr, ``<out>.evaluate.log`` for the evaluation's output."""
        return self.out.parent / (self.out.name + ("" if phase == "explain" else f".{phase}") + LOG_SUFFIX)

    # ------------------------------------------------------------------------------------- caller's API
    def start(self) -> "ProcessExplainJob":
        if self.state != "new":
            raise RuntimeError("this job was already started; make a new ProcessExplainJob for another run")
        self.started_at = time.time()
        self.state = "running"
        folder = self.inputs_dir if self.inputs_dir is not None else self.out.parent / f"{self.out.name}_inputs"
        if self.inputs is not None and dataclasses.is_dataclass(self.request):
            self.request = self.inputs.persist(self.request, folder)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._launch("explain", [*explain_arguments(self.request, self.tolerance), "--progress", "json"])
        return self

    def cancel(self) -> None:
        """Interrupt the child (it stops at the next batch, everything evaluated stays journaled)."""
        if not self.running or self.cancel_requested_at is not None:
            return
        self.cancel_requested_at = time.monotonic()
        self._unreported += self._read_stream()        # the worker's pid, if it started since the last poll
        self._signal(signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGINT)

    def _signal(self, number) -> None:
        """Send ``number`` to the worker (the launcher's group on Windows) while the child runs."""
        if self.process is None or self.process.poll() is not None:
            return
        if os.name == "nt" or self.worker_pid is None:
            self.process.send_signal(number)
            return
        try:
            os.kill(self.worker_pid, number)
        except ProcessLookupError:
            pass

    def poll(self) -> list[JobMessage]:
        """The messages since the last call (never blocks); updates the state as ExplainJob.poll does."""
        if self.process is None or self.finished:
            return []
        messages, self._unreported = self._unreported + self._read_stream(), []
        code = self.process.poll()
        if code is None:
            if self.cancel_requested_at is not None \
                    and time.monotonic() - self.cancel_requested_at > self.cancel_grace_s:
                self._signal(signal.SIGTERM)
                self.process.terminate()
            return self._apply(messages)
        messages += self._read_stream()
        messages += self._phase_ended(code)
        return self._apply(messages)

    def wait(self, timeout: float | None = None, interval_s: float = 0.2) -> list[JobMessage]:
        """Poll until the job ends or ``timeout`` seconds pass (scripts and tests); all messages seen."""
        deadline = None if timeout is None else time.monotonic() + timeout
        messages = self.poll()
        while not self.finished and (deadline is None or time.monotonic() < deadline):
            time.sleep(interval_s)
            messages += self.poll()
        return messages

    def new_log_lines(self) -> list[str]:
        """Lines the child wrote to stderr since the last call (for a log box)."""
        if not self.log_path.is_file():
            return []
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            data = log.read()
        complete = data[:data.rfind(b"\n") + 1]
        self._log_offset += len(complete)
        return complete.decode("utf-8", errors="replace").splitlines()

    # ---------------------------------------------------------------------------------------- internals
    def _launch(self, phase: str, arguments: list[str]) -> None:
        self._stream_offset, self._partial, self._log_offset, self.worker_pid = 0, b"", 0, None
        self.log_path = self._log_path_for(phase)
        with open(self.log_path, "wb") as stderr, \
                open(self.progress_path, "wb") if phase == "explain" else contextlib.nullcontext(stderr) as stdout:
            self.process = start_segshap(self.python, [phase, *arguments], stdout, stderr, own_group=True)
        self.phase = phase

    def _read_stream(self) -> list[JobMessage]:
        """Progress messages from the stream file's new complete lines (an explain phase's only)."""
        from SegSHAPLib.explain.progress_stream import END, PROGRESS, START, event_from_record, parse_line

        if self.phase != "explain" or not self.progress_path.is_file():
            return []
        with open(self.progress_path, "rb") as stream:
            stream.seek(self._stream_offset)
            data = self._partial + stream.read()
        self._stream_offset += len(data) - len(self._partial)
        *lines, self._partial = data.split(b"\n")
        messages = []
        for line in lines:
            record = parse_line(line.decode("utf-8", errors="replace"))
            if record is None:
                continue
            if record["event"] == START:
                self.worker_pid = int(record["pid"])
            elif record["event"] == PROGRESS:
                messages.append(JobMessage("progress", event=event_from_record(record)))
            elif record["event"] == END:
                self.end_record = record
        return messages

    def _phase_ended(self, code: int) -> list[JobMessage]:
        """The messages that end a child: the next phase's start, the result, cancelled or error."""
        end = self.end_record or {}
        if self.phase == "explain" and code == 0 and end.get("status") == "finished":
            if self.faithfulness_steps > 0 and not self._stored_faithfulness():
                self._launch("evaluate", [str(self.out), "--steps", str(self.faithfulness_steps)])
                return [JobMessage("progress", event=ProgressEvent("faithfulness", 0, 1, "MoRF/LeRF curves"))]
            return [self._result()]
        if self.phase == "evaluate" and code == 0:
            return [JobMessage("progress", event=ProgressEvent("faithfulness", 1, 1, "done")), self._result()]
        if self.cancel_requested_at is not None or end.get("status") in ("cancelled", "terminated") \
                or code in (130, 143):
            self.phase = ""
            return [JobMessage("cancelled", text=end.get("message") or
                               f"cancelled; the coalitions evaluated so far are journaled in {self.out} - "
                               "run again to resume")]
        return [self._error(self._failure_text(code, end))]

    def _failure_text(self, code: int, end: dict) -> str:
        """The child's one-line error: its end line's message, else its last stderr line, with how it ended."""
        if end.get("status") in ("error", "output_error") and end.get("message"):
            text = end["message"]
            if end["status"] == "output_error":
                text += "; everything computed so far is kept - free space or fix the folder and run again"
        else:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
                else f"exit code {code}"
            last = next((line.strip() for line in reversed(self._log_tail()) if line.strip()), "")
            text = f"segshap {self.phase} ended unexpectedly ({how})" + (f"; its last output: {last}" if last else "")
        if is_out_of_memory_text(text):
            return with_out_of_memory_advice(text, device=getattr(self.request, "device", "cpu"),
                                             batch_size=getattr(self.request, "batch_size", 1))
        return text

    def _log_tail(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines() \
            if self.log_path.is_file() else []

    def _stored_faithfulness(self) -> bool:
        from SegSHAPLib.explain.folder import ExplanationFolder

        stored = ExplanationFolder(self.out).faithfulness()
        return stored is not None and stored.get("steps") == self.faithfulness_steps

    def _result(self) -> JobMessage:
        from SegSHAPLib.errors import InputError

        from SegSHAPLib.explain.folder import ExplanationFolder

        self.phase = ""
        folder = ExplanationFolder(self.out)
        try:
            result = folder.load()
        except (InputError, OSError, ValueError, json.JSONDecodeError) as err:
            return self._error(f"the run finished but its output folder cannot be read: {err}")
        faithfulness = folder.faithfulness() if self.faithfulness_steps > 0 else None
        return JobMessage("result", result=result, faithfulness=faithfulness)

    def _error(self, text: str) -> JobMessage:
        self.phase = ""
        return JobMessage("error", text=text, traceback="\n".join(self._log_tail()[-40:]))


__all__ = ["ProcessExplainJob", "CANCEL_GRACE_S", "explain_arguments", "library_root", "start_segshap"]
