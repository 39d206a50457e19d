"""What an explanation will cost, before it runs: support patches, coalitions, patch forwards (counted on the
request's own coalition plan and cache mode, none run) and an estimated time from a measured patch forward.

    preview = cost_preview(request, inputs=CaseInputs(ct=...))       # the same inputs as run_explain
    preview.estimated_s, preview.warnings

Preparing the request (model load, the CT's preprocessing and, for a clicked point without a given prediction,
the model's full-volume prediction) is real work, but it goes to the case cache, so the run that follows does
not repeat it. The time per patch forward is measured once per model and device and kept in the case cache
folder (``inference.patch_timing``). The estimate is forwards x that time; it leaves out the model load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from SegSHAPLib.explain.case_inputs import CaseInputs
from SegSHAPLib.explain.context import model_settings, prepare_context
from SegSHAPLib.explain.journal import journal_entries, read_spec
from SegSHAPLib.inference.case_store import cache_folder, model_digest
from SegSHAPLib.inference.patch_timing import patch_seconds
from SegSHAPLib.shapley.kernelshap import coalition_keys, coalition_plan


@dataclass
class CostPreview:
    """units: M; coalitions: the plan's size (``method`` exact when 2^M <= budget); journaled: of those, already
    in ``request.out``'s journal; patches_full_grid / patches_in_support / folds: the engine's; patch_forwards:
    what the run will compute (the baseline and the coalitions not journaled, with the request's cache mode);
    naive_patch_forwards: one full nnU-Net prediction for each of those, as summary.json counts it;
    seconds_per_forward: measured;
    estimated_s: patch_forwards x seconds_per_forward; device: torch device type; warnings: for the user."""

    units: int
    coalitions: int
    method: str
    journaled: int
    patches_full_grid: int
    patches_in_support: int
    folds: int
    patch_forwards: int
    naive_patch_forwards: int
    seconds_per_forward: float
    estimated_s: float
    device: str
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def cost_preview(request, inputs: CaseInputs | None = None) -> CostPreview:
    """The cost of ``run_explain(request, inputs=inputs)`` (the same in-memory ``CaseInputs``)."""
    context = prepare_context(request, inputs=inputs, with_baseline=False)
    engine = context.engine
    plan = coalition_plan(context.n_units, request.budget, request.seed)
    known = _journaled(request, plan.masks)
    pending = np.concatenate([np.ones((1, context.n_units), dtype=bool), plan.masks[~known]])
    forwards = engine.planned_forwards(pending)
    device = context.predictor.device.type
    seconds = patch_seconds(context.predictor, cache_folder(request.case_cache),
                            model_digest(**model_settings(request, context.predictor)))
    counters = engine.counters
    preview = CostPreview(units=context.n_units, coalitions=len(plan.masks),
                          method="exact" if plan.exact else "kernelshap", journaled=int(known.sum()),
                          patches_full_grid=counters.patches_full_grid,
                          patches_in_support=counters.patches_in_support, folds=counters.folds,
                          patch_forwards=forwards,
                          naive_patch_forwards=len(pending) * counters.patches_full_grid * counters.folds,
                          seconds_per_forward=seconds, estimated_s=forwards * seconds, device=device)
    if device == "cpu":
        preview.warnings.append(f"running on the CPU: about {forwards} patch forwards at {seconds:.2f} s each; a "
                                "CUDA GPU, if this computer has one, is usually many times faster")
    return preview


def _journaled(request, masks: np.ndarray) -> np.ndarray:
    """bool (n,): which of the plan's coalitions ``request.out``'s journal already holds (read only)."""
    if read_spec(request.out) != request.journal_spec():
        return np.zeros(len(masks), dtype=bool)
    entries = journal_entries(request.out)
    return np.array([key.hex() in entries for key in coalition_keys(masks)], dtype=bool)
