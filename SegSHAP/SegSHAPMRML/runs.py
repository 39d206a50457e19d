"""Where a panel run goes: a new run folder, the unfinished run it resumes, or the finished run it shows again.

Layout under the panel's base folder (Slicer's temporary folder / SegSHAP):

    run-<YYYYmmdd-HHMMSS>-<n>/explanation/   an explain output folder (journal, summary.json, images)
    inputs/<digest>/                          the in-memory inputs as files (ct.nii.gz, organs.nii.gz,
                                              roi_mask.nii.gz), the folder named by a digest of their content

The journal spec records the input files' paths, and those paths name the content, so two runs have the same
spec exactly when their inputs (CT, organ map and names, ROI, prediction, grouping file) and settings are the
same; budget, seed and value function are not part of it (the journal holds every value function).
``plan_run`` applies this rule:

1. a finished run with the same spec, budget, seed and value function(s) is shown again: nothing is recomputed;
2. else the unfinished run with the same spec and at least one journaled coalition (cancelled, crashed or
   failed), the most recently journaled one, is resumed in its own folder, whatever its budget or seed;
3. else a new run folder; if a finished run with the same spec exists (another budget, seed or value), its journal is
   copied in first, so no coalition it computed is computed again.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.folder import ExplanationFolder
from SegSHAPLib.explain.journal import JOURNAL_FILE, SPEC_FILE, journaled_coalitions, read_spec

EXPLANATION = "explanation"


@dataclass
class RunPlan:
    """What Apply does. ``action``: "new" | "resume" | "show". ``request``: the ExplainRequest with ``out`` set to
    the chosen ``<run folder>/explanation``. ``inputs_dir``: where the job writes the in-memory inputs (None when
    the request has none).
    ``journaled``: coalitions already in the output folder's journal. ``source``: the run folder whose journal
    seeded a new one (None otherwise)."""

    action: str
    request: object
    inputs_dir: Path | None
    journaled: int = 0
    source: Path | None = None

    @property
    def folder(self) -> Path:
        return Path(self.request.out).parent

    @property
    def note(self) -> str:
        """The status text for the user ("" for a plain new run)."""
        if self.action == "show":
            return (f"same inputs, budget and seed as the finished run {self.folder.name}: showing its results "
                    "again (nothing recomputed)")
        if self.journaled:
            origin = self.source.name if self.source is not None else self.folder.name
            return f"resuming: {self.journaled} coalitions already computed ({origin})"
        return ""


def plan_run(base, request, inputs=None, *, create: bool = True) -> RunPlan:
    """Choose the folder for ``request`` (its ``out`` is ignored) by the module's rule. ``inputs``: the
    in-memory inputs (a ``CaseInputs``) as ExplainJob takes them, or None for a request whose inputs are files
    already (a zoom into an earlier run: its parent's files). Creates the new run folder (and seeds its journal)
    when that is the choice; writes nothing otherwise. ``create=False`` (a cost preview) writes nothing at all: a
    new run's ``out`` is then the finished folder whose journal would seed it, or a folder that does not exist."""
    base = Path(base)
    if inputs is None:
        inputs_dir, spec = None, request.journal_spec()
    else:
        inputs_dir = base / "inputs" / inputs.digest(request.grouping)[:16]
        spec = dataclasses.replace(request, **inputs.files(request, inputs_dir)).journal_spec()
    matching = _explanations_with_spec(base, spec)
    finished = [out for out in matching if ExplanationFolder(out).finished()]
    for out in finished:
        inputs = ExplanationFolder(out).summary().get("inputs", {})
        if (inputs.get("budget"), inputs.get("seed"), inputs.get("value")) == (request.budget, request.seed,
                                                                             request.value):
            return RunPlan("show", dataclasses.replace(request, out=out), inputs_dir)
    unfinished = [out for out in matching if out not in finished and journaled_coalitions(out)]
    if unfinished:
        out = max(unfinished, key=lambda o: (o / JOURNAL_FILE).stat().st_mtime)
        return RunPlan("resume", dataclasses.replace(request, out=out), inputs_dir, journaled_coalitions(out))
    seed_from = max(finished, key=journaled_coalitions, default=None)
    if not create:
        out = seed_from if seed_from is not None else base / "run-next" / EXPLANATION
        return RunPlan("new", dataclasses.replace(request, out=out), inputs_dir)
    return _new_run(base, request, inputs_dir, seed_from=seed_from)


def _new_run(base: Path, request, inputs_dir: Path, seed_from: Path | None) -> RunPlan:
    """A new run folder; with ``seed_from`` (a finished same-spec output folder) its journal and spec are copied
    into the new output folder first, so run_explain resumes from them."""
    out = new_run_folder(base) / EXPLANATION
    if seed_from is None:
        return RunPlan("new", dataclasses.replace(request, out=out), inputs_dir)
    out.mkdir()
    for name in (SPEC_FILE, JOURNAL_FILE):
        shutil.copy2(seed_from / name, out / name)
    return RunPlan("new", dataclasses.replace(request, out=out), inputs_dir, journaled_coalitions(out),
                   seed_from.parent)


def _explanations_with_spec(base: Path, spec: dict) -> list[Path]:
    """The ``run-*/explanation`` folders under ``base`` whose journal spec equals ``spec``."""
    found = []
    for spec_path in sorted(base.glob(f"run-*/{EXPLANATION}/{SPEC_FILE}")):
        try:
            if read_spec(spec_path.parent) == spec:
                found.append(spec_path.parent)
        except (OSError, InputError):
            continue                          # a damaged folder is never reused
    return found


def new_run_folder(base) -> Path:
    """A new, empty ``run-<YYYYmmdd-HHMMSS>-<n>`` folder under ``base`` (created)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    index = 1
    while (base / f"run-{stamp}-{index}").exists():
        index += 1
    folder = base / f"run-{stamp}-{index}"
    folder.mkdir()
    return folder


def replay_finished(request, **_ignored):
    """The ``run`` of a job that shows a finished run again (same signature as run_explain): its output folder
    read back, nothing computed."""
    return ExplanationFolder(request.out).load()


def stored_or_new_faithfulness(out_dir, steps: int) -> dict:
    """The ``evaluate`` of such a job: faithfulness.json when it has ``steps`` steps, else computed anew (its
    coalitions come from the journal where they are in it)."""
    stored = ExplanationFolder(out_dir).faithfulness()
    if stored is not None and stored.get("steps") == steps:
        return stored
    from SegSHAPLib.explain.faithfulness import evaluate_output

    return evaluate_output(out_dir, steps=steps)


__all__ = ["RunPlan", "plan_run", "new_run_folder", "replay_finished", "stored_or_new_faithfulness"]
