"""One explanation end to end (the Python API behind ``segshap explain`` and the Slicer logic).

    from SegSHAPLib.explain.run import ExplainRequest, run_explain
    result = run_explain(ExplainRequest(ct=..., model=..., roi_point=(x, y, z), units="hybrid",
                                        organs=..., value="softdice", out=Path("out")))

ROI -> support -> units -> cached engine -> solver -> outputs in ``request.out``: ``attribution.nii.gz``
(float32, phi of the voxel's unit), ``units.nii.gz`` (int32 unit ids), ``roi.nii.gz`` (uint8),
``prediction.nii.gz`` (the label map the ROI was taken from), ``summary.json`` (DESIGN.md's keys) and the
coalition journal that lets a rerun of the same request resume.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from SegSHAPLib import __version__
from SegSHAPLib.io.atomic_files import write_json_atomic
from SegSHAPLib.errors import Cancelled
from SegSHAPLib.explain.context import ExplanationContext, check_request, prepare_context, resolve_path
from SegSHAPLib.io.image_io import Volume, write_volume
from SegSHAPLib.explain.journal import CoalitionJournal, claim_output_folder
from SegSHAPLib.shapley.kernelshap import Cancelled as SolverCancelled
from SegSHAPLib.shapley.kernelshap import kernel_shap
from SegSHAPLib.scoring.roi import bbox_ijk, bounding_box
from SegSHAPLib.inference.model import DEFAULT_CHECKPOINT
from SegSHAPLib.inference.verify import verify_engine

SOLVER_BATCH = 8


@dataclass
class ExplainRequest:
    """Every ``segshap explain`` argument; field names are the flag names with '-' -> '_'."""

    model: Path
    out: Path
    ct: Path | None = None
    target: str = "1"
    roi_point: tuple[float, float, float] | None = None
    point_space: str = "ras"
    roi_mask: Path | None = None
    prediction: Path | None = None
    score_region: str = "box"
    dilate_mm: float = 6.0
    units: str = "hybrid"
    organs: Path | None = None
    fcc_scale_mm: float = 30.0
    grouping: str | None = None
    value: str = "softdice"
    budget: int = 256
    seed: int = 0
    mask_value: float = -1024.0
    batch_size: int = 1
    device: str = "cpu"
    cache: str = "memo"
    tta: bool = False
    tile_step: float = 0.5
    fold: list[str] | None = None
    checkpoint: str = DEFAULT_CHECKPOINT
    verify: int = 0

    def resolved_inputs(self) -> dict:
        """summary.json's "inputs": every argument under its flag name, paths absolute."""
        inputs = asdict(self)
        for key in ("model", "out", "ct", "roi_mask", "prediction", "organs"):
            inputs[key] = resolve_path(inputs[key])
        inputs["roi_point"] = None if self.roi_point is None else [float(v) for v in self.roi_point]
        inputs["grouping"] = self.grouping if self.grouping is None or not Path(self.grouping).is_file() \
            else resolve_path(self.grouping)
        return inputs

    def journal_spec(self) -> dict:
        """What the coalition values depend on: every input but budget, seed, verify and out, and but the
        settings this request does not use (the FCC scale for organ units, the organ map and grouping for FCC
        units, the dilation unless the score region is dilated)."""
        spec = self.resolved_inputs()
        unused = {"organs": ("fcc_scale_mm",), "fcc": ("organs", "grouping")}.get(self.units, ())
        if self.score_region != "dilated":
            unused += ("dilate_mm",)
        for key in ("budget", "seed", "verify", "out") + unused:
            spec.pop(key)
        spec["segshap_version"] = __version__
        return spec

    def is_answered_by(self, summary: dict) -> bool:
        """Whether a summary.json (as a dict) is this request's finished explanation: the same journal spec (the
        version aside) and the same budget, seed and verify."""
        wanted = self.journal_spec()
        wanted.pop("segshap_version")
        wanted.update(budget=self.budget, seed=self.seed, verify=self.verify)
        inputs = summary.get("inputs", {})
        return json.loads(json.dumps(wanted)) == {key: inputs.get(key) for key in wanted}


@dataclass
class ProgressEvent:
    """A progress report: stage ('prepare', 'coalitions', 'verify', 'write'), done/total in that stage."""

    stage: str
    done: int
    total: int
    message: str
    counters: dict = field(default_factory=dict)


@dataclass
class ExplainResult:
    """Everything an explanation produced (arrays of the volumes are (z, y, x) on the CT grid). Also what an
    output folder reads back as (SegSHAPMRML.load_output_dir), where ct/prediction are None if their files
    are gone."""

    out: Path
    ct: Volume | None
    prediction: Volume | None
    roi: Volume
    units: Volume
    unit_names: list[str]
    attribution: Volume
    phi: np.ndarray
    phi0: float
    full_value: float
    summary: dict


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


def write_outputs(out: Path, context: ExplanationContext, phi: np.ndarray, summary: dict) -> dict[str, Volume]:
    """Write the output images and summary.json; return the volumes written."""
    ct = context.ct
    volumes = {
        "attribution": ct.with_array(_attribution_map(context.units.labels, phi)),
        "units": ct.with_array(context.units.labels.astype(np.int32)),
        "roi": ct.with_array(context.roi.astype(np.uint8)),
        "prediction": context.prediction,
    }
    for name, volume in volumes.items():
        write_volume(volume, out / f"{name}.nii.gz")
    write_json_atomic(out / "summary.json", summary)      # last, and whole: its presence marks the run finished
    return volumes


def run_explain(request: ExplainRequest, *, ct_volume: Volume | None = None, organ_volume: Volume | None = None,
                prediction_volume: Volume | None = None, roi_mask_volume: Volume | None = None,
                organ_names: dict[int, str] | None = None,
                progress: Callable[[ProgressEvent], None] | None = None,
                cancel: threading.Event | None = None) -> ExplainResult:
    """Explain one ROI; in-memory volumes take precedence over the request's paths. Raises InputError on bad
    input and Cancelled on cancel (everything evaluated so far stays journaled in ``request.out``)."""
    started = time.perf_counter()
    out = Path(request.out)
    check_request(request, roi_mask_volume is not None)      # refuse bad arguments before touching --out
    spec = request.journal_spec()
    claim_output_folder(out, spec, "segshap explain", create=False)
    if progress is not None:
        progress(ProgressEvent("prepare", 0, 1, "loading the model, predicting and building units"))
    context = prepare_context(request, ct_volume=ct_volume, organ_volume=organ_volume,
                              prediction_volume=prediction_volume, roi_mask_volume=roi_mask_volume,
                              organ_names=organ_names)
    claim_output_folder(out, spec, "segshap explain")        # inputs are valid: only now write to --out
    prepared = time.perf_counter()
    journal = CoalitionJournal(out, context.n_units)
    reporter = _CoalitionProgress(progress, context, request.budget)
    network_before = context.engine.counters.network_seconds
    try:
        res = kernel_shap(lambda keep: context.values(keep, cancel=cancel, progress=reporter.engine),
                          context.n_units, request.budget,
                          request.seed, batch_size=SOLVER_BATCH, store=journal, cancel=cancel,
                          progress=reporter.solver)
    except (SolverCancelled, Cancelled):
        raise Cancelled(f"cancelled; {len(journal)} coalitions are journaled in {out} - rerun to resume") from None
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
    volumes = write_outputs(out, context, res.phi, summary)
    return ExplainResult(out, context.ct, context.prediction, volumes["roi"], volumes["units"],
                         list(context.units.names), volumes["attribution"], res.phi, float(res.phi0),
                         float(res.phi0 + res.phi.sum()), summary)
