"""One explanation end to end (the Python API behind ``segshap explain`` and the Slicer logic).

    from SegSHAPLib.explain.request import ExplainRequest
    from SegSHAPLib.explain.run import run_explain
    result = run_explain(ExplainRequest(ct=..., model=..., roi_point=(x, y, z), units="hybrid",
                                        organs=..., value="softdice", out=Path("out")))

ROI -> support -> units -> cached engine -> solver -> outputs in ``request.out``: ``attribution.nii.gz``
(float32, phi of the voxel's unit), ``units.nii.gz`` (int32 unit ids), ``roi.nii.gz`` (uint8),
``prediction.nii.gz`` (the label map the ROI was taken from), ``summary.json`` (keys in docs/architecture.md) and the
coalition journal that lets a rerun of the same request resume.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from SegSHAPLib import __version__
from SegSHAPLib.io.atomic_files import output_error, sha256_of, stale_temporaries, write_json_atomic
from SegSHAPLib.errors import Cancelled
from SegSHAPLib.explain.case_inputs import CaseInputs
from SegSHAPLib.explain.context import ExplanationContext, check_request, prepare_context
from SegSHAPLib.io.image_io import Volume, write_volume
from SegSHAPLib.progress import ProgressEvent
from SegSHAPLib.explain.folder import CURVES_FILE, FAITHFULNESS_FILE, IMAGES, SUMMARY_FILE, ExplainResult, ExplanationFolder
from SegSHAPLib.explain.journal import CoalitionJournal, claim_output_folder
from SegSHAPLib.explain.output_check import DIGESTS_KEY
from SegSHAPLib.explain.refine import ParentReuse, resolve_refinement
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.shapley.kernelshap import kernel_shap
from SegSHAPLib.scoring.roi import bbox_ijk, bounding_box
from SegSHAPLib.inference.verify import verify_engine

SOLVER_BATCH = 8


class _CoalitionProgress:
    """Turns solver and engine callbacks into ProgressEvents with an ETA."""

    def __init__(self, callback, context: ExplanationContext, total: int):
        self.callback, self.context, self.total = callback, context, total
        self.started = time.perf_counter()
        self.done = 0

    def solver(self, done: int, total: int) -> None:
        """Solver callback: ``done`` of ``total`` coalitions known."""
        self.done, self.total = done, total
        self._emit()

    def engine(self, _counters) -> None:
        """Engine callback after each network batch: refreshes the cost figures between solver batches."""
        self._emit()

    def _emit(self) -> None:
        if self.callback is None:
            return
        counters = self.context.engine.counters
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        self.callback(ProgressEvent("coalitions", self.done, self.total,
                                    f"{self.done}/{self.total} coalitions",
                                    {"coalitions": self.done, "patch_forwards": counters.patch_forwards,
                                     "patch_cache_hits": counters.patch_cache_hits,
                                     "hit_rate": counters.hit_rate, "eta_s": eta}))


def _attribution_map(units: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """float32 (z, y, x): phi of each voxel's unit, 0 where there is no unit."""
    lookup = np.concatenate([[0.0], phi]).astype(np.float32)
    return lookup[units]


def _summary(request: ExplainRequest, context: ExplanationContext, res, counters: dict, verify: dict | None,
             timings: dict) -> dict:
    units = context.units
    counts = units.voxel_counts()
    support_box = bounding_box(context.support_mask)
    inference = {k: counters[k] for k in ("patches_full_grid", "patches_in_support", "patch_forwards",
                                          "patch_cache_hits", "naive_patch_forwards")}
    inference.update(folds=counters["folds"], hit_rate=counters["hit_rate"], cache=request.cache,
                     batch_size=request.batch_size, tta=request.tta)
    if verify is not None:
        inference["verify"] = verify
    return {
        "version": 1,
        "segshap_version": __version__,
        "inputs": request.resolved_inputs(),
        "roi": {"voxels": int(context.roi.sum()), "bbox_ijk": bbox_ijk(bounding_box(context.roi)),
                "support_bbox_ijk": bbox_ijk(support_box), "target": context.target,
                "point_ijk": None if context.roi_point_ijk is None else [int(v) for v in context.roi_point_ijk],
                "score_region_voxels": int(context.region.sum()), "score_region_bbox_ijk": bbox_ijk(context.box_ct)},
        "units": [{"id": j + 1, "name": units.names[j], "voxels": int(counts[j]), "shap": float(res.phi[j])}
                  for j in range(units.n_units)],
        "base_value": float(res.phi0),
        "full_value": float(res.phi0 + res.phi.sum()),
        "solver": {"method": "exact" if res.exact else "kernelshap", "coalitions": int(res.coalitions),
                   "seed": int(request.seed), "budget": int(request.budget),
                   "resumed_coalitions": int(res.diagnostics.get("resumed_coalitions", 0)),
                   "diagnostics": _jsonable(res.diagnostics)},
        "inference": inference,
        "mask_value": context.mask_value.as_summary(),
        "timings_s": timings,
    }


def _jsonable(value):
    """Diagnostics as plain JSON types (numpy scalars and arrays converted)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    return value


def _same_ranking(summary_path: Path, summary: dict) -> bool:
    """Whether the summary.json at ``summary_path`` holds the same units and phi as ``summary``."""
    try:
        old = json.loads(summary_path.read_text(encoding="utf-8"))
        return [(u["name"], u["shap"]) for u in old["units"]] == [(u["name"], u["shap"]) for u in summary["units"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def remove_stale_outputs(out: Path, summary: dict) -> None:
    """Before new outputs are written: remove the old summary.json (rewritten last, so a kill in between leaves a
    folder that reads as unfinished, not as finished with mixed parts), faithfulness.json and curves.png when
    the ranking changes (they belong to the old phi), and temporary files of a writer killed mid-write."""
    names = [f"{name}.nii.gz" for name in IMAGES] + [SUMMARY_FILE, FAITHFULNESS_FILE, CURVES_FILE]
    stale = [path for name in names for path in stale_temporaries(out, name)]
    if not _same_ranking(out / SUMMARY_FILE, summary):
        stale += [out / FAITHFULNESS_FILE, out / CURVES_FILE]
    for path in stale + [out / SUMMARY_FILE]:
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            raise output_error(path, err) from None


def write_outputs(out: Path, context: ExplanationContext, phi: np.ndarray, summary: dict) -> dict[str, Volume]:
    """Write the output images and then summary.json, which names their SHA-256 (``output_sha256``, checked by
    ``output_check.check_output_folder``); return the volumes written. Each file is written whole or not at all
    (``io.atomic_files``); a failed write raises OutputError and the journal keeps every coalition."""
    ct = context.ct
    volumes = {
        "attribution": ct.with_array(_attribution_map(context.units.labels, phi)),
        "units": ct.with_array(context.units.labels.astype(np.int32)),
        "roi": ct.with_array(context.roi.astype(np.uint8)),
        "prediction": context.prediction,
    }
    folder = ExplanationFolder(out)
    remove_stale_outputs(out, summary)
    digests = {}
    for name in IMAGES:
        path = write_volume(volumes[name], folder.image_path(name))
        digests[path.name] = sha256_of(path)
    summary[DIGESTS_KEY] = digests
    write_json_atomic(out / SUMMARY_FILE, summary)      # last, and whole: its presence marks the run finished
    return volumes


def run_explain(request: ExplainRequest, *, inputs: CaseInputs | None = None,
                progress: Callable[[ProgressEvent], None] | None = None,
                cancel: threading.Event | None = None) -> ExplainResult:
    """Explain one ROI; in-memory ``inputs`` take precedence over the request's paths. Raises InputError on bad
    input and Cancelled on cancel (everything evaluated so far stays journaled in ``request.out``)."""
    started = time.perf_counter()
    out = Path(request.out)
    request = resolve_refinement(request)
    check_request(request, inputs is not None and inputs.roi_mask is not None)   # before touching --out
    spec = request.journal_spec()
    claim_output_folder(out, spec, "segshap explain", create=False)
    if progress is not None:
        progress(ProgressEvent("prepare", 0, 1, "loading the model, predicting and building units"))
    context = prepare_context(request, inputs=inputs)
    claim_output_folder(out, spec, "segshap explain")        # inputs are valid: only now write to --out
    prepared = time.perf_counter()
    with CoalitionJournal(out, context.n_units) as journal:        # holds the folder's lock until the end
        store = journal if request.refine is None else ParentReuse(journal, request, context.parent_unit_of)
        reporter = _CoalitionProgress(progress, context, request.budget)
        network_before = context.engine.counters.network_seconds
        try:
            res = kernel_shap(lambda keep: context.values(keep, cancel=cancel, progress=reporter.engine),
                              context.n_units, request.budget,
                              request.seed, batch_size=SOLVER_BATCH, store=store, cancel=cancel,
                              progress=reporter.solver)
        except Cancelled:
            raise Cancelled(f"cancelled; {len(journal)} coalitions are journaled in {out} - rerun to resume") \
                from None
        solved = time.perf_counter()
        counters = context.engine.counters.as_summary()
        verify = None
        if request.verify > 0:
            if progress is not None:
                progress(ProgressEvent("verify", 0, request.verify + 1, "checking against nnU-Net's own prediction"))
            verify = verify_engine(context, request.verify, request.seed)
        timings = {"total": round(time.perf_counter() - started, 3), "prepare": round(prepared - started, 3),
                   "inference": round(context.engine.counters.network_seconds - network_before, 3),
                   "solver": round(solved - prepared, 3)}
        summary = _summary(request, context, res, counters, verify, timings)
        summary["solver"]["journal_skipped_lines"] = journal.skipped
        if request.refine is not None:
            summary["refine"] = {"parent": str(Path(request.refine).resolve()), "organs": request.refine_organs,
                                 "parent_units": int(context.parent_unit_of.max()), **store.summary()}
        volumes = write_outputs(out, context, res.phi, summary)
    return ExplainResult(out, context.ct, context.prediction, volumes["roi"], volumes["units"],
                         list(context.units.names), volumes["attribution"], res.phi, float(res.phi0),
                         float(res.phi0 + res.phi.sum()), summary)
