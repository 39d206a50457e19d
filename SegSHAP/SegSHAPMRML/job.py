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
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


# in-memory input (run_explain keyword) -> the request field naming its file -> file name in the inputs folder
PERSISTED = (("ct_volume", "ct", "ct.nii.gz"), ("organ_volume", "organs", "organs.nii.gz"),
             ("roi_mask_volume", "roi_mask", "roi_mask.nii.gz"),
             ("prediction_volume", "prediction", "prediction.nii.gz"))


def input_files(request, run_kwargs: dict, folder) -> dict[str, Path]:
    """Request field -> absolute file in ``folder`` for each in-memory input (CT, organ map, ROI mask, given
    prediction) that the request names no file for: where ``persist_inputs`` writes it, and so the paths the run's
    journal spec records."""
    return {field_name: (Path(folder) / file_name).resolve() for kwarg, field_name, file_name in PERSISTED
            if run_kwargs.get(kwarg) is not None and getattr(request, field_name, None) is None}


def persist_inputs(request, run_kwargs: dict, folder):
    """Write the in-memory inputs of ``run_kwargs`` (plain Volumes) to ``folder`` (file names: ``input_files``)
    and return the request pointing at them. The organ map is written with its organ names
    (``run_kwargs["organ_names"]``) as a CaretExtension label table, so a run that reads the file (another
    process, ``segshap evaluate``) groups the same organs."""
    files = input_files(request, run_kwargs, folder)
    if not files:
        return request
    from SegSHAPLib.io.image_io import write_volume
    from SegSHAPLib.units.organ_segmentation import write_named_label_map

    for kwarg, field_name, _ in PERSISTED:
        if field_name not in files:
            continue
        if field_name == "organs" and run_kwargs.get("organ_names"):
            write_named_label_map(run_kwargs[kwarg], run_kwargs["organ_names"], files[field_name])
        else:
            write_volume(run_kwargs[kwarg], files[field_name])
    return dataclasses.replace(request, **files)


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
    run:                the function to run, ``run(request, progress=..., cancel=..., **run_kwargs)``;
                        default ``SegSHAPLib.explain.run.run_explain`` (imported when the job starts).
    run_kwargs:         in-memory inputs for run_explain (ct_volume, organ_volume, prediction_volume,
                        roi_mask_volume, organ_names) - plain Volumes, never MRML nodes.
    faithfulness_steps: when > 0, ``evaluate_output(request.out, steps)`` runs after the explanation (same
                        thread) and its dict comes with the result; ``evaluate`` overrides that function.
    inputs_dir:         where in-memory inputs (CT, organ map, ROI mask) are written as .nii.gz before the run,
                        and the request points at them - so summary.json records real files and the output folder
                        can be re-evaluated (``evaluate_output`` rebuilds the request from summary.json). Default:
                        ``<out>_inputs`` next to the output folder when faithfulness is asked for, else nothing.
                        Written on the worker thread (file names: ``input_files``).
    note:               what the panel keeps showing in front of the progress text (e.g. "resuming: 8 coalitions
                        already computed"); "" for none.
    """

    def __init__(self, request, *, run: Callable | None = None, faithfulness_steps: int = 0,
                 evaluate: Callable | None = None, inputs_dir=None, note: str = "", **run_kwargs):
        self.request = request
        self.inputs_dir = inputs_dir
        self.note = note
        self._run = run
        self._evaluate = evaluate
        self.faithfulness_steps = int(faithfulness_steps)
        self.run_kwargs = run_kwargs
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
        if not dataclasses.is_dataclass(request):
            return request
        return persist_inputs(request, self.run_kwargs, folder)

    def _work(self) -> None:
        from SegSHAPLib.errors import Cancelled

        device = getattr(self.request, "device", "cpu")
        batch = getattr(self.request, "batch_size", 1)
        try:
            self.request = self._persist_inputs(self.request)
            run = self._run or _default_run()
            result = run(self.request, progress=self._progress, cancel=self.cancel_event, **self.run_kwargs)
            faithfulness = None
            if self.faithfulness_steps > 0 and not self.cancel_event.is_set():
                self._progress(_stage_event("faithfulness", 0, 1, "MoRF/LeRF curves"))
                evaluate = self._evaluate or _default_evaluate()
                faithfulness = evaluate(result.out, steps=self.faithfulness_steps)
                self._progress(_stage_event("faithfulness", 1, 1, "done"))
            self.queue.put(JobMessage("result", result=result, faithfulness=faithfulness))
        except (Cancelled, KeyboardInterrupt) as err:
            self.queue.put(JobMessage("cancelled", text=str(err) or "cancelled", error=err))
        except BaseException as err:  # the real error text reaches the message box, never a silent thread death
            self.queue.put(JobMessage("error", text=error_message(err, device=device, batch_size=batch),
                                      error=err, traceback=traceback.format_exc()))


@dataclass
class StageEvent:
    """Same fields as SegSHAPLib.explain.run.ProgressEvent, for the stages the job adds itself."""

    stage: str
    done: int
    total: int
    message: str
    counters: dict = field(default_factory=dict)


def _stage_event(stage: str, done: int, total: int, message: str):
    """A ProgressEvent when the pipeline module is loaded (it is, after run_explain), else a StageEvent."""
    explain = sys.modules.get("SegSHAPLib.explain.run")
    cls = getattr(explain, "ProgressEvent", StageEvent)
    return cls(stage, done, total, message, {})


__all__ = ["ExplainJob", "JobState", "JobMessage", "StageEvent", "PERSISTED", "input_files", "persist_inputs"]
