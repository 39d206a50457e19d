"""One explanation end to end (the Python API behind ``segshap explain`` and the Slicer logic).

    from SegSHAPLib.explain.request import ExplainRequest
    from SegSHAPLib.explain.run import run_explain
    result = run_explain(ExplainRequest(ct=..., model=..., roi_point=(x, y, z), units="hybrid",
                                        organs=..., value="all", out=Path("out")))

ROI -> support -> units -> cached engine -> solver -> outputs in ``request.out`` (``units.nii.gz`` as soon as the
units are built, for live views of the estimate; rewritten with the rest): ``attribution_<value>.nii.gz``
for every value function asked for (float32, phi of the voxel's unit) and ``attribution.nii.gz`` (the first
one's), ``units.nii.gz`` (int32 unit ids), ``roi.nii.gz`` (uint8), ``prediction.nii.gz`` (the label map the ROI
was taken from), ``summary.json`` (keys in docs/architecture.md; ``value_functions`` and ``by_value`` per value function) and
the coalition journal that lets a rerun of the same request resume. Every coalition is evaluated once for all
value functions (the journal keeps them all, so another ``--value`` on the same folder costs no forward).
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
from SegSHAPLib.errors import Cancelled, InputError, OutputError
from SegSHAPLib.explain.case_inputs import CaseInputs
from SegSHAPLib.explain.context import ExplanationContext, check_request, prepare_context
from SegSHAPLib.io.image_io import Volume, write_volume
from SegSHAPLib.progress import ProgressEvent
from SegSHAPLib.explain.folder import (CURVES_FILE, FAITHFULNESS_FILE, IMAGES, SUMMARY_FILE, ExplainResult,
                                       ExplanationFolder, ValueAttribution, attribution_file)
from SegSHAPLib.explain.journal import CoalitionJournal, claim_output_folder
from SegSHAPLib.explain.output_check import DIGESTS_KEY
from SegSHAPLib.explain.refine import ParentReuse, resolve_refinement
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.explain.zoom_control import measure_zoom_control
from SegSHAPLib.shapley.kernelshap import kernel_shap_many
from SegSHAPLib.scoring.roi import bbox_ijk, bounding_box
from SegSHAPLib.inference.verify import verify_engine

SOLVER_BATCH = 8


class _CoalitionProgress:
    """Turns solver and engine callbacks into ProgressEvents with an ETA and the live estimate."""

    def __init__(self, callback, context: ExplanationContext, total: int):
        self.callback, self.context, self.total = callback, context, total
        self.started = time.perf_counter()
        self.done = 0
        self.latest = None

    def solver(self, done: int, total: int) -> None:
        """Solver callback: ``done`` of ``total`` coalitions known (the estimate that follows is emitted)."""
        self.done, self.total = done, total

    def estimate(self, live) -> None:
        """Solver callback after each segment of the plan: the LiveEstimate of every value function solved."""
        self.latest = live.to_json(self.context.requested)
        self.latest["units"] = list(self.context.units.names)
        self.done = max(self.done, live.coalitions)
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
                                     "hit_rate": counters.hit_rate, "eta_s": eta}, self.latest))


def _attribution_map(units: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """float32 (z, y, x): phi of each voxel's unit, 0 where there is no unit."""
    lookup = np.concatenate([[0.0], phi]).astype(np.float32)
    return lookup[units]


def _value_summary(context: ExplanationContext, res, request: ExplainRequest, tolerance: float | None,
                   journal_skipped: dict) -> dict:
    """One value function's summary keys: units (with shap and std_error), base_value, full_value, solver
    (``journal_skipped_lines``: the journal lines skipped on opening, by reason; the same for every value)."""
    counts = context.units.voxel_counts()
    errors = res.diagnostics["phi_std_error"]
    return {
        "units": [{"id": j + 1, "name": context.units.names[j], "voxels": int(counts[j]), "shap": float(res.phi[j]),
                   "std_error": None if errors[j] is None else float(errors[j])}
                  for j in range(context.units.n_units)],
        "base_value": float(res.phi0),
        "full_value": float(res.phi0 + res.phi.sum()),
        "solver": {"method": "exact" if res.exact else "kernelshap", "coalitions": int(res.coalitions),
                   "seed": int(request.seed), "budget": int(request.budget),
                   "budget_rule": "fixed" if tolerance is None else "auto",
                   "tolerance": float(res.diagnostics["tolerance"]),
                   "stop": res.diagnostics["stop"],
                   "resumed_coalitions": int(res.diagnostics.get("resumed_coalitions", 0)),
                   "journal_skipped_lines": dict(journal_skipped),
                   "diagnostics": _jsonable(res.diagnostics)},
    }


def _summary(request: ExplainRequest, context: ExplanationContext, results: dict, counters: dict,
             verify: dict | None, timings: dict, tolerance: float | None, journal_skipped: dict) -> dict:
    """summary.json: the first value function's keys at the top level, every one's under by_value."""
    support_box = bounding_box(context.support_mask)
    inference = {k: counters[k] for k in ("patches_full_grid", "patches_in_support", "patch_forwards",
                                          "patch_cache_hits", "naive_patch_forwards")}
    inference.update(folds=counters["folds"], hit_rate=counters["hit_rate"], cache=request.cache,
                     batch_size=request.batch_size, tta=request.tta, full_predictions=context.full_predictions,
                     case_cache=context.case_source)
    if verify is not None:
        inference["verify"] = verify
    by_value = {name: _value_summary(context, res, request, tolerance, journal_skipped)
                for name, res in results.items()}
    first = by_value[next(iter(by_value))]
    return {
        "version": 1,
        "segshap_version": __version__,
        "inputs": request.resolved_inputs(),
        "roi": {"voxels": int(context.roi.sum()), "bbox_ijk": bbox_ijk(bounding_box(context.roi)),
                "support_bbox_ijk": bbox_ijk(support_box), "target": context.target,
                "point_ijk": None if context.roi_point_ijk is None else [int(v) for v in context.roi_point_ijk],
                "score_region_voxels": int(context.region.sum()), "score_region_bbox_ijk": bbox_ijk(context.box_ct)},
        **first,
        "value_functions": list(by_value),
        "by_value": by_value,
        "inference": inference,
        "mask_value": context.mask_value.as_summary(),
        "removal": context.removal.as_summary(),
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
    names = [f"{name}.nii.gz" for name in IMAGES] + [attribution_file(value) for value in summary["value_functions"]]
    names += [SUMMARY_FILE, FAITHFULNESS_FILE, CURVES_FILE]
    stale = [path for name in names for path in stale_temporaries(out, name)]
    if not _same_ranking(out / SUMMARY_FILE, summary):
        stale += [out / FAITHFULNESS_FILE, out / CURVES_FILE]
    for path in stale + [out / SUMMARY_FILE]:
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            raise output_error(path, err) from None


def write_outputs(out: Path, context: ExplanationContext, phis: dict[str, np.ndarray],
                  summary: dict) -> dict[str, Volume]:
    """Write the output images (an attribution map per value function of ``phis``, the first also as
    attribution.nii.gz) and then summary.json, which names their SHA-256 (``output_sha256``, checked by
    ``output_check.check_output_folder``); return the volumes written ("attribution" = the first value's,
    "attribution_<value>" each). Each file is written whole or not at all
    (``io.atomic_files``); a failed write raises OutputError and the journal keeps every coalition."""
    ct = context.ct
    maps = {f"attribution_{name}": ct.with_array(_attribution_map(context.units.labels, phi))
            for name, phi in phis.items()}
    volumes = {
        "attribution": next(iter(maps.values())),
        **maps,
        "units": ct.with_array(context.units.labels.astype(np.int32)),
        "roi": ct.with_array(context.roi.astype(np.uint8)),
        "prediction": context.prediction,
    }
    folder = ExplanationFolder(out)
    remove_stale_outputs(out, summary)
    paths = {name: folder.image_path(name) for name in IMAGES}
    paths.update({f"attribution_{name}": folder.attribution_path(name) for name in phis})
    digests = {}
    for name, path in paths.items():
        write_volume(volumes[name], path)
        digests[path.name] = sha256_of(path)
    summary[DIGESTS_KEY] = digests
    write_json_atomic(out / SUMMARY_FILE, summary)      # last, and whole: its presence marks the run finished
    return volumes


def _write_unit_map_early(out: Path, context: ExplanationContext) -> None:
    """units.nii.gz as soon as the units are built, so that a live view can paint each estimate. Only an aid: a
    folder that cannot take it now (full disk, quota) does not stop the run; the outputs at the end are written,
    or fail with one line, as always, and every coalition is journaled before them."""
    try:
        write_volume(context.ct.with_array(context.units.labels.astype(np.int32)),
                     ExplanationFolder(out).image_path("units"))
    except OutputError:
        pass


def run_explain(request: ExplainRequest, *, inputs: CaseInputs | None = None,
                progress: Callable[[ProgressEvent], None] | None = None,
                cancel: threading.Event | None = None, finish: threading.Event | None = None,
                tolerance: float | None = None) -> ExplainResult:
    """Explain one ROI; in-memory ``inputs`` take precedence over the request's paths. Raises InputError on bad
    input and Cancelled on cancel (everything evaluated so far stays journaled in ``request.out``).

    ``tolerance`` (``--budget auto``): run until every requested value function's standard errors are below
    tolerance x |v(full) - v(empty)|, with ``request.budget`` as the cap (summary solver.stop "converged" or
    "budget"). ``finish``: when set, end after the current batch with the estimate so far (stop "cancelled";
    such a summary does not count as a finished explanation, so a rerun resumes)."""
    started = time.perf_counter()
    out = Path(request.out)
    request = resolve_refinement(request)
    check_request(request, inputs is not None and inputs.roi_mask is not None)   # before touching --out
    if tolerance is not None and not tolerance > 0:
        raise InputError(f"--tolerance must be > 0, got {tolerance}")
    spec = request.journal_spec()
    claim_output_folder(out, spec, "segshap explain", create=False)
    if progress is not None:
        progress(ProgressEvent("prepare", 0, 1, "loading the model, predicting and building units"))
    context = prepare_context(request, inputs=inputs)
    claim_output_folder(out, spec, "segshap explain")        # inputs are valid: only now write to --out
    _write_unit_map_early(out, context)
    prepared = time.perf_counter()
    if progress is not None:
        progress(ProgressEvent("prepare", 1, 1, f"prepared {context.n_units} units"))
    with CoalitionJournal(out, context.n_units, context.value_names) as journal:   # holds the folder's lock
        store = journal if request.refine is None else ParentReuse(journal, request, context.parent_unit_of)
        network_before = context.engine.counters.network_seconds
        options = {} if tolerance is None else {"until_converged": True, "tolerance": tolerance}
        try:
            control = None if request.refine is None else measure_zoom_control(
                context, store, ExplanationFolder(request.refine).unit_names(), request.budget, progress, cancel,
                SOLVER_BATCH)
            budget = request.budget - (control.coalitions if control is not None else 0)
            reporter = _CoalitionProgress(progress, context, budget)
            solved_all = kernel_shap_many(
                lambda keep: context.values(keep, cancel=cancel, progress=reporter.engine),
                context.n_units, budget, request.seed, batch_size=SOLVER_BATCH, store=store,
                cancel=cancel, finish=finish, progress=reporter.solver,
                estimate=reporter.estimate if progress is not None else None,
                converge_on=range(len(context.requested)), controls=control.games if control is not None else None,
                **options)
        except Cancelled:
            raise Cancelled(f"cancelled; {len(journal)} coalitions are journaled in {out} - rerun to resume") \
                from None
        results = dict(zip(context.value_names, solved_all))
        results = {name: results[name] for name in context.requested}
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
        summary = _summary(request, context, results, counters, verify, timings, tolerance, journal.skipped)
        if request.refine is not None:
            summary["refine"] = {"parent": str(Path(request.refine).resolve()), "organs": request.refine_organs,
                                 "parent_units": int(context.parent_unit_of.max()), **store.summary(),
                                 "control": control.summary()}
        if progress is not None:
            progress(ProgressEvent("write", 0, 1, f"writing the outputs to {out}"))
        volumes = write_outputs(out, context, {name: res.phi for name, res in results.items()}, summary)
    by_value = {name: ValueAttribution(res.phi, np.array([np.nan if e is None else e
                                                          for e in res.diagnostics["phi_std_error"]]),
                                       float(res.phi0), float(res.phi0 + res.phi.sum()), volumes[f"attribution_{name}"])
                for name, res in results.items()}
    first = by_value[context.requested[0]]
    return ExplainResult(out, context.ct, context.prediction, volumes["roi"], volumes["units"],
                         list(context.units.names), first.attribution, first.phi, first.phi0, first.full_value,
                         summary, by_value)
