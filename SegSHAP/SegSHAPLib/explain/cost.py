"""What an explanation will cost, before it runs: support patches, coalitions, patch forwards in every cache mode
(counted on the request's own coalition plan, none run), the memo's memory and an estimated time.

    preview = cost_preview(request, inputs=CaseInputs(ct=...))       # the same inputs as run_explain
    preview.as_dict()          # the JSON object of `segshap explain ... --dry-run` (keys in docs/architecture.md)
    preview.lines()            # the same for a person

Preparing the request (model load, the CT's preprocessing and, for a clicked point without a given prediction,
the model's full-volume prediction) is real work, but it goes to the case cache, so the run that follows does
not repeat it. The time per patch forward is given, or measured once per model and device and kept in the case
cache folder (``inference.patch_timing``). The estimate is forwards x that time; it leaves out the model load.
Nothing is written to ``request.out``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.case_inputs import CaseInputs
from SegSHAPLib.explain.context import model_settings, prepare_context
from SegSHAPLib.explain.journal import journal_entries, read_spec
from SegSHAPLib.explain.folder import ExplanationFolder
from SegSHAPLib.explain.refine import resolve_refinement
from SegSHAPLib.explain.zoom_control import control_plan
from SegSHAPLib.inference.case_store import cache_folder, model_digest
from SegSHAPLib.inference.patch_timing import patch_seconds
from SegSHAPLib.shapley.control import new_within_coalitions
from SegSHAPLib.shapley.kernelshap import coalition_keys, coalition_plan


@dataclass
class CostPreview:
    """n_units: M; coalitions: the plan's size (``method`` exact when 2^M <= budget); budget_rule: fixed, or auto
    (the run may stop before the plan's end, so every count is an upper bound); journaled: of the plan, already
    in ``request.out``'s journal; patches_full_grid / patches_in_support / folds: the engine's; units_per_patch:
    |U_p|, the units inside each support patch (a patch costs at most 2^|U_p| forwards per fold in mode memo);
    patch_forwards: cache mode -> the forwards the run will compute (the baseline and the coalitions not
    journaled); hit_rate: cache mode -> the share of patch look-ups answered without a forward;
    naive_patch_forwards: one full nnU-Net prediction for each of those, as summary.json counts it;
    memo_peak_bytes: what the memo holds at the end in mode memo (memo_bound_bytes: its bound on evictable
    entries; above it the memo evicts and the memo count is a lower bound); cache: the request's mode;
    seconds_per_forward: measured or given (seconds_source); seconds_estimate: patch_forwards[cache] x
    seconds_per_forward; upper_bound: True when the run may compute fewer forwards (budget auto, or a zoom that
    reuses its parent's coalitions); device: torch device type; warnings: for the user."""

    n_units: int
    coalitions: int
    method: str
    budget_rule: str
    journaled: int
    patches_full_grid: int
    patches_in_support: int
    folds: int
    units_per_patch: list[int]
    cache: str
    patch_forwards: dict[str, int]
    hit_rate: dict[str, float]
    naive_patch_forwards: int
    memo_peak_bytes: int
    memo_bound_bytes: int
    seconds_per_forward: float
    seconds_source: str
    seconds_estimate: float
    upper_bound: bool
    device: str
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The ``--dry-run`` JSON object (plain JSON types)."""
        return asdict(self)

    def lines(self) -> list[str]:
        """The preview for a person, one figure per line (``--dry-run`` prints them on stderr)."""
        bound = "at most " if self.upper_bound else ""
        forwards = ", ".join(f"{mode} {count:,} ({100 * self.hit_rate[mode]:.1f}% hits)"
                             for mode, count in self.patch_forwards.items())
        lines = [f"{self.n_units} units, {self.coalitions} coalitions ({self.method}, budget {self.budget_rule}), "
                 f"{self.journaled} already journaled",
                 f"{self.patches_in_support} of {self.patches_full_grid} patches in the support, {self.folds} fold(s)",
                 f"patch forwards: {forwards}; naive {self.naive_patch_forwards:,}",
                 f"memo: {self.memo_peak_bytes / 2 ** 20:,.1f} MiB at the end (bound {self.memo_bound_bytes / 2 ** 20:,.0f}"
                 " MiB)",
                 f"estimate ({self.cache}): {bound}{self.patch_forwards[self.cache]:,} forwards x "
                 f"{self.seconds_per_forward:.3g} s ({self.seconds_source}) = {bound}{_duration(self.seconds_estimate)}"]
        return lines + [f"warning: {warning}" for warning in self.warnings]


def cost_preview(request, inputs: CaseInputs | None = None, seconds_per_forward: float | None = None,
                 budget_rule: str = "fixed") -> CostPreview:
    """The cost of ``run_explain(request, inputs=inputs)`` (the same in-memory ``CaseInputs``); with
    ``budget_rule`` "auto" ``request.budget`` is the cap. ``seconds_per_forward``: use this figure instead of the
    measured one. No network forward runs unless the patch time has to be measured."""
    if seconds_per_forward is not None and not (np.isfinite(seconds_per_forward) and seconds_per_forward > 0):
        raise InputError(f"--patch-seconds must be a positive number of seconds, got {seconds_per_forward}")
    request = resolve_refinement(request)
    context = prepare_context(request, inputs=inputs, with_baseline=False)
    engine = context.engine
    control = _zoom_control_coalitions(request, context)
    plan = coalition_plan(context.n_units, request.budget - len(control), request.seed)
    planned = np.concatenate([control, plan.masks])
    known = _journaled(request, planned)
    pending = np.concatenate([np.ones((1, context.n_units), dtype=bool), planned[~known]])
    count = engine.planned_forwards(pending)
    device = context.predictor.device.type
    source = "given"
    if seconds_per_forward is None:
        source = "measured"
        seconds_per_forward = patch_seconds(context.predictor, cache_folder(request.case_cache),
                                            model_digest(**model_settings(request, context.predictor)))
    counters = engine.counters
    preview = CostPreview(
        n_units=context.n_units, coalitions=len(planned), method="exact" if plan.exact else "kernelshap",
        budget_rule=budget_rule, journaled=int(known.sum()), patches_full_grid=counters.patches_full_grid,
        patches_in_support=counters.patches_in_support, folds=counters.folds,
        units_per_patch=[int(sp.units.size) for sp in engine.support], cache=request.cache,
        patch_forwards=dict(count.forwards), hit_rate={mode: round(count.hit_rate(mode), 6) for mode in count.forwards},
        naive_patch_forwards=len(pending) * counters.patches_full_grid * counters.folds,
        memo_peak_bytes=count.memo_peak_bytes, memo_bound_bytes=count.memo_bound_bytes,
        seconds_per_forward=float(seconds_per_forward), seconds_source=source,
        seconds_estimate=count.forwards[request.cache] * float(seconds_per_forward),
        upper_bound=budget_rule == options.BUDGET_AUTO or request.refine is not None, device=device)
    if request.cache == "memo" and count.evicts:
        preview.warnings.append(f"the memo needs {count.memo_peak_bytes / 2 ** 30:.1f} GiB, more than its bound of "
                                f"{count.memo_bound_bytes / 2 ** 30:.1f} GiB: it will evict, and the run compute "
                                "more forwards than counted")
    if request.verify > 0:
        preview.warnings.append(f"--verify {request.verify} adds {request.verify + 1} full nnU-Net predictions, not "
                                "counted here")
    if device == "cpu":
        preview.warnings.append(f"running on the CPU: about {count.forwards[request.cache]} patch forwards at "
                                f"{seconds_per_forward:.2f} s each; a CUDA GPU, if this computer has one, is usually "
                                "many times faster")
    return preview


def _zoom_control_coalitions(request, context) -> np.ndarray:
    """bool (n, M): the cell patterns a zoom measures for its control before the plan (``explain.zoom_control``),
    none unless the parent was enumerated exactly (judged from its summary: nothing is read into a journal here)."""
    if request.refine is None:
        return np.zeros((0, context.n_units), dtype=bool)
    parent_of = np.asarray(context.parent_unit_of, dtype=np.int64) - 1
    parent = ExplanationFolder(request.refine).summary() or {}
    exact = parent.get("solver", {}).get("method") == "exact"
    refused = "--removal mean" if request.removal == "mean" else None
    refined, needed, reason = control_plan(parent_of, request.budget, exact, refused)
    if reason is not None:
        return np.zeros((0, context.n_units), dtype=bool)
    return new_within_coalitions(parent_of, refined)


def _journaled(request, masks: np.ndarray) -> np.ndarray:
    """bool (n,): which of the plan's coalitions ``request.out``'s journal already holds (read only)."""
    if read_spec(request.out) != request.journal_spec():
        return np.zeros(len(masks), dtype=bool)
    entries = journal_entries(request.out)
    return np.array([key.hex() in entries for key in coalition_keys(masks)], dtype=bool)


def _duration(seconds: float) -> str:
    """'42 s', '12.5 min' or '3.2 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
