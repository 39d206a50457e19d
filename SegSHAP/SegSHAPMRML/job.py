"""The background runner behind the panel's Apply/Cancel button (Qt-free, so CI tests it).

``ExplainJob`` runs ``run_explain`` (and optionally the faithfulness evaluation) on a ``threading.Thread``.
The thread never touches MRML or Qt: the inputs are plain ``Volume`` objects made on the main thread, and all it
does is put messages into a ``queue.Queue``:

    JobMessage("progress", event=ProgressEvent)
    JobMessage("result",   result=ExplainResult, faithfulness=dict | None)
    JobMessage("error",    text=<the real error text, with advice for out-of-memory>, error=exc, traceback=str)
    JobMessage("cancelled", text=...)

The main thread drains the queue with ``poll()`` (in Slicer from a ``qt.QTimer``) and turns messages into
nodes and widget updates. ``cancel()`` sets the ``threading.Event`` the solver checks between batches.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from SegSHAPLib.progress import ProgressEvent

from .panel import error_message


@dataclass
class JobMessage:
    kind: str                                # "progress" | "result" | "error" | "cancelled"
    event: object = None                     # ProgressEvent for "progress"
    result: object = None                    # ExplainResult for "result"
    faithfulness: dict | None = None
    text: str = ""
    error: BaseException | None = None
    traceback: str = ""
    time: float = field(default_factory=time.time)


def _default_run():
    from SegSHAPLib.explain.run import run_explain

    return run_explain


def _default_evaluate():
    from SegSHAPLib.explain.faithfulness import evaluate_output

    return evaluate_output


class JobState:
    """What a job's ``poll()`` messages tell the caller, kept on the job (shared by ``ExplainJob`` and
    ``process_job.ProcessExplainJob``): ``state`` new -> running -> done | failed | cancelled, ``result``,
    ``faithfulness``, ``error``/``error_text``/``error_traceback``, ``last_progress``, start and end times."""

    def _reset_state(self) -> None:
        self.state = "new"
        self.result = None
        self.faithfulness = None
        self.error: BaseException | None = None
        self.error_text = ""
        self.error_traceback = ""
        self.last_progress = None
        self.started_at: float | None = None
        self.finished_at: float | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def _apply(self, messages: list[JobMessage]) -> list[JobMessage]:
        """Update the state from ``messages`` (in order); return them."""
        for message in messages:
            if message.kind == "progress":
                self.last_progress = message.event
            elif message.kind == "result":
                self.result, self.faithfulness, self.state = message.result, message.faithfulness, "done"
            elif message.kind == "error":
                self.error, self.error_text, self.state = message.error, message.text, "failed"
                self.error_traceback = message.traceback
            elif message.kind == "cancelled":
                self.error_text, self.state = message.text, "cancelled"
            if self.finished and self.finished_at is None:
                self.finished_at = time.time()
        return messages


class ExplainJob(JobState):
    """One explanation on a worker thread.

    request:            ExplainRequest.
    run:                the function to run, ``run(request, inputs=..., progress=..., cancel=...)``;
                        default ``SegSHAPLib.explain.run.run_explain`` (imported when the job starts).
    inputs:             the in-memory inputs (``SegSHAPLib.explain.case_inputs.CaseInputs``: plain Volumes,
                        never MRML nodes), or None.
    faithfulness_steps: when > 0, ``evaluate_output(request.out, steps)`` runs after the explanation (same
                        thread) and its dict comes with the result; ``evaluate`` overrides that function.
    inputs_dir:         where in-memory inputs (CT, organ map, ROI mask) are written as .nii.gz before the run,
                        and the request points at them - so summary.json records real files and the output folder
                        can be re-evaluated (``evaluate_output`` rebuilds the request from summary.json). Default:
                        ``<out>_inputs`` next to the output folder when faithfulness is asked for, else nothing.
                        Written on the worker thread (``CaseInputs.persist``).
    note:               what the panel keeps showing in front of the progress text (e.g. "resuming: 8 coalitions
                        already computed"); "" for none.
    tolerance:          the stop rule of ``--budget auto`` (``run_explain``'s ``tolerance``; the request's budget
                        is then the cap), passed to ``run`` only when set; None: the fixed budget.
    """

    def __init__(self, request, *, run: Callable | None = None, faithfulness_steps: int = 0,
                 evaluate: Callable | None = None, inputs_dir=None, note: str = "", inputs=None,
                 tolerance: float | None = None):
        self.request = request
        self.tolerance = tolerance
        self.inputs_dir = inputs_dir
        self.note = note
        self._run = run
        self._evaluate = evaluate
        self.faithfulness_steps = int(faithfulness_steps)
        self.inputs = inputs
        self.queue: queue.Queue[JobMessage] = queue.Queue()
        self.cancel_event = threading.Event()
        self.thread: threading.Thread | None = None
        self._reset_state()

    # ----------------------------------------------------------------------------- main-thread API
    def start(self) -> "ExplainJob":
        if self.thread is not None:
            raise RuntimeError("this job was already started; make a new ExplainJob for another run")
        self.state = "running"
        self.started_at = time.time()
        self.thread = threading.Thread(target=self._work, name="SegSHAP explain", daemon=True)
        self.thread.start()
        return self

    def cancel(self) -> None:
        """Ask the run to stop at the next batch boundary (what it evaluated so far stays journaled)."""
        self.cancel_event.set()

    def poll(self) -> list[JobMessage]:
        """Drain the queue (call on the main thread); updates ``state``/``result``/``error``; returns the
        messages in order."""
        messages = []
        while True:
            try:
                messages.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return self._apply(messages)

    def wait(self, timeout: float | None = None) -> list[JobMessage]:
        """Block until the thread ends (scripts, tests, the self-test), then ``poll()``."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.poll()

    # ------------------------------------------------------------------------------- worker thread
    def _progress(self, event) -> None:
        self.queue.put(JobMessage("progress", event=event))

    def _persist_inputs(self, request):
        """Write in-memory CT / organ map / ROI mask to ``inputs_dir`` and point the request at them."""
        folder = self.inputs_dir
        if folder is None:
            if self.faithfulness_steps <= 0 or getattr(request, "out", None) is None:
                return request
            out = Path(request.out)
            folder = out.parent / f"{out.name}_inputs"
        if self.inputs is None or not dataclasses.is_dataclass(request):
            return request
        return self.inputs.persist(request, folder)

    def _work(self) -> None:
        from SegSHAPLib.errors import Cancelled

        device = getattr(self.request, "device", "cpu")
        batch = getattr(self.request, "batch_size", 1)
        try:
            self.request = self._persist_inputs(self.request)
            run = self._run or _default_run()
            stop_rule = {} if self.tolerance is None else {"tolerance": self.tolerance}
            result = run(self.request, inputs=self.inputs, progress=self._progress, cancel=self.cancel_event,
                         **stop_rule)
            faithfulness = None
            if self.faithfulness_steps > 0 and not self.cancel_event.is_set():
                self._progress(ProgressEvent("faithfulness", 0, 1, "MoRF/LeRF curves"))
                evaluate = self._evaluate or _default_evaluate()
                faithfulness = evaluate(result.out, steps=self.faithfulness_steps)
                self._progress(ProgressEvent("faithfulness", 1, 1, "done"))
            self.queue.put(JobMessage("result", result=result, faithfulness=faithfulness))
        except (Cancelled, KeyboardInterrupt) as err:
            self.queue.put(JobMessage("cancelled", text=str(err) or "cancelled", error=err))
        except BaseException as err:  # the real error text reaches the message box, never a silent thread death
            self.queue.put(JobMessage("error", text=error_message(err, device=device, batch_size=batch),
                                      error=err, traceback=traceback.format_exc()))


__all__ = ["ExplainJob", "JobMessage", "JobState"]
