"""Qt-free helpers behind the SegSHAP panel: input validation, the request, progress text, device choice and
error messages. Nothing here imports slicer, qt, torch or the pipeline at import time, so CI tests it all.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from SegSHAPLib import options

log = logging.getLogger(__name__)

UNIT_TYPES = options.UNIT_TYPES
VALUE_FUNCTIONS = options.VALUE_CHOICES          # "all" (every value function, the first shown) or one
SCORE_REGIONS = options.SCORE_REGIONS
ORGAN_UNIT_TYPES = options.ORGAN_UNIT_TYPES
GROUPING_FROM_FILE = options.GROUPING_FROM_FILE
BUILTIN_GROUPING_OF_CHOICE = options.BUILTIN_GROUPING_OF_CHOICE
GROUPING_CHOICES = options.GROUPING_CHOICES
DEVICE_CHOICES_FIXED = options.DEVICE_CHOICES_FIXED
MIN_BUDGET = options.MIN_BUDGET


@dataclass
class PanelValues:
    """What the panel holds, as plain values (the widget copies its parameter node into this).

    Node selections appear as booleans (``has_*``) or the name of what is selected; the logic reads the nodes
    themselves. ``roi_mode`` is "point" (a markups point) or "segment" (a segment of a segmentation)."""

    has_ct: bool = False
    model_dir: str = ""
    run_model: bool = True                     # the model's own prediction; False = use the selected one
    has_prediction: bool = False
    has_organs: bool = False
    run_totalsegmentator: bool = False         # the organ map will come from TotalSegmentator
    target: str = options.TARGET
    roi_mode: str = options.ROI_MODE
    roi_point_ras: tuple[float, float, float] | None = None
    has_roi_segment: bool = False
    units: str = options.UNITS
    fcc_scale_mm: float = options.FCC_SCALE_MM
    grouping: str = options.GROUPING_CHOICE       # one of GROUPING_CHOICES (organs/hybrid units only)
    grouping_file: str = ""                    # the JSON file when grouping is "from file"
    value: str = options.VALUE
    score_region: str = options.SCORE_REGION
    dilate_mm: float = options.DILATE_MM
    budget: int = options.BUDGET                 # with budget_auto: the cap
    budget_auto: bool = options.PANEL_BUDGET_AUTO  # stop when converged (--budget auto --tolerance)
    tolerance: float = options.TOLERANCE
    seed: int = options.SEED
    mask_value: float = options.MASK_VALUE
    slic_size_mm: float = options.SLIC_SIZE_MM
    slic_compactness: float = options.SLIC_COMPACTNESS
    removal: str = options.REMOVAL
    blur_sigma_mm: float = options.BLUR_SIGMA_MM
    device: str = options.PANEL_DEVICE
    batch_size: int = options.BATCH_SIZE
    tta: bool = options.TTA
    checkpoint: str = options.CHECKPOINT         # the checkpoint in each fold_X (nnU-Net's -chk)
    faithfulness_steps: int = options.FAITHFULNESS_STEPS
    extra: dict = field(default_factory=dict)


def _sentence(text: str) -> str:
    """'model folder x does not exist' -> 'Model folder x does not exist.'"""
    return text[0].upper() + text[1:] + "."


def model_folder_problem(model_dir: str, checkpoint: str = options.CHECKPOINT) -> str | None:
    """Why a folder is not an nnU-Net v2 trained-model folder with ``checkpoint`` (None when it looks like one)."""
    if not model_dir:
        return "choose the nnU-Net model folder (it holds dataset.json, plans.json and fold_X/)"
    path = Path(model_dir)
    if not path.is_dir():
        return f"model folder {path} does not exist"
    missing = [n for n in ("dataset.json", "plans.json") if not (path / n).is_file()]
    if missing:
        return f"model folder {path} has no {' or '.join(missing)}; choose an nnU-Net v2 trained-model folder"
    if not any(p.is_file() for p in path.glob(f"fold_*/{checkpoint}")):
        others = checkpoint_choices(model_dir)
        if others:
            return f"model folder {path} has no fold_X/{checkpoint}; its folds hold {', '.join(others)}: choose one " \
                   "as the checkpoint"
        return f"model folder {path} has no fold_X/{checkpoint} (the model is not trained or not unpacked)"
    return None


def checkpoint_name(values: PanelValues) -> str:
    """The checkpoint to load: the panel's text, stripped; an emptied combo means the default."""
    return str(values.checkpoint).strip() or options.CHECKPOINT


def checkpoint_choices(model_dir: str) -> list[str]:
    """The checkpoint file names (``*.pth``) in the model folder's fold_X folders, sorted ([] when none)."""
    return sorted({p.name for p in Path(model_dir).glob("fold_*/*.pth") if p.is_file()})


def model_labels(model_dir: str) -> dict[str, int]:
    """Class name -> label value from the model's dataset.json ({} when unreadable); for the target combo."""
    try:
        labels = json.loads((Path(model_dir) / "dataset.json").read_text())["labels"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {str(k): int(v) for k, v in labels.items() if isinstance(v, int)}


def validate_panel(values: PanelValues) -> list[str]:
    """Everything wrong with the panel's inputs, one clear sentence each (empty list: ready to run)."""
    problems = []
    if not values.has_ct:
        problems.append("Select the CT volume to explain.")
    model_problem = model_folder_problem(values.model_dir, checkpoint_name(values))
    if model_problem:
        problems.append(_sentence(model_problem))
    if not values.run_model and not values.has_prediction:
        problems.append("Select a prediction (segmentation or label map), or tick 'Run the nnU-Net model'.")
    target = str(values.target).strip()
    if not target:
        problems.append("Enter the target class (label value or class name, e.g. 1 or spleen).")
    elif values.model_dir and not model_problem:
        labels = model_labels(values.model_dir)
        by_name = {k.lower(): v for k, v in labels.items()}
        value = by_name.get(target.lower(), int(target) if target.isdigit() else None)
        if labels and (value is None or value == 0 or value not in labels.values()):
            choices = ", ".join(f"{v}={k}" for k, v in sorted(labels.items(), key=lambda kv: kv[1]) if v)
            problems.append(f"Target '{target}' is not a foreground class of the model; choose one of {choices}.")
    if values.roi_mode == "point":
        if values.roi_point_ras is None:
            problems.append("Place a point on the structure to explain (ROI point).")
    elif values.roi_mode == "segment":
        if not values.has_roi_segment:
            problems.append("Select the segment that defines the ROI.")
    else:
        problems.append(f"Unknown ROI mode '{values.roi_mode}' (use point or segment).")
    if values.units not in UNIT_TYPES:
        problems.append(f"Unknown unit type '{values.units}'; choose one of {', '.join(UNIT_TYPES)}.")
    elif values.units in ORGAN_UNIT_TYPES:
        if not (values.has_organs or values.run_totalsegmentator):
            problems.append(f"'{values.units}' units need an organ segmentation: select one or run TotalSegmentator.")
        grouping_problem = organ_grouping_problem(values.grouping, values.grouping_file)
        if grouping_problem:
            problems.append(grouping_problem)
    if values.units in ("fcc", "hybrid") and not values.fcc_scale_mm > 0:
        problems.append("The FCC cell scale must be a positive size in mm.")
    if values.value not in VALUE_FUNCTIONS:
        problems.append(f"Unknown value function '{values.value}'; choose one of {', '.join(VALUE_FUNCTIONS)}.")
    if values.units in options.SLIC_UNIT_TYPES and not (values.slic_size_mm > 0 and values.slic_compactness > 0):
        problems.append("The SLIC supervoxel size (mm) and compactness must be positive.")
    if values.removal not in options.REMOVALS:
        problems.append(f"Unknown removal '{values.removal}'; choose one of {', '.join(options.REMOVALS)}.")
    elif values.removal == "blur" and not values.blur_sigma_mm > 0:
        problems.append("The blur's sigma must be a positive size in mm.")
    if values.score_region not in SCORE_REGIONS:
        problems.append(f"Unknown scoring region '{values.score_region}'; choose box, component or dilated.")
    elif values.value == "fp" and values.score_region == "component":
        problems.append("The 'fp' value is identically 0 when scored on the clicked component itself (every "
                        "voxel there is predicted); score it on the box or a dilated region.")
    if values.score_region == "dilated" and not values.dilate_mm > 0:
        problems.append("The dilation of the scoring region must be positive (mm).")
    if int(values.budget) < MIN_BUDGET:
        problems.append(f"The budget must be at least {MIN_BUDGET} coalitions.")
    if values.budget_auto and not 0 < float(values.tolerance) < 1:
        problems.append("The tolerance of 'until converged' must lie between 0 and 1 (a fraction of the effect).")
    if int(values.seed) < 0:
        problems.append("The seed must be 0 or positive.")
    if int(values.batch_size) < 1:
        problems.append("The batch size must be at least 1.")
    if parse_device(values.device) is None:
        problems.append(f"Unknown device '{values.device}'; choose Auto, CPU or cuda:N.")
    return problems


def organ_grouping_problem(choice: str, grouping_file: str) -> str | None:
    """Why the organ grouping cannot be used, one sentence (None when it can): an unknown choice, or for
    "from file" a missing, unreadable, non-JSON or malformed file (read here, before any run starts)."""
    if choice not in GROUPING_CHOICES:
        return f"Unknown organ grouping '{choice}'; choose one of {', '.join(GROUPING_CHOICES)}."
    if choice != GROUPING_FROM_FILE:
        return None
    path = grouping_file.strip()
    if not path:
        return "Choose the organ grouping JSON file, or another organ grouping."
    if not Path(path).is_file():
        return f"The organ grouping file {path} does not exist."
    from SegSHAPLib.errors import InputError
    from SegSHAPLib.units.grouping import load_grouping

    try:
        load_grouping(Path(path).resolve())
    except InputError as err:
        return _sentence(str(err))
    return None


def grouping_argument(values: PanelValues) -> str | None:
    """The request's ``grouping`` (``--grouping``): None for individual organs and for fcc units, "default", or
    the grouping file as an absolute path."""
    if values.units not in ORGAN_UNIT_TYPES:
        return None
    if values.grouping == GROUPING_FROM_FILE:
        return str(Path(values.grouping_file.strip()).resolve())
    return BUILTIN_GROUPING_OF_CHOICE[values.grouping]


def build_request_kwargs(values: PanelValues, out: str | Path, *, device: str | None = None,
                         roi_point_ras=None) -> dict:
    """The ``ExplainRequest`` keyword arguments for the panel's values (paths for in-memory inputs stay None:
    the logic passes the volumes to ``run_explain`` directly). ``device`` overrides the panel's choice with the
    resolved device; ``roi_point_ras`` the point in the CT's own frame."""
    point = roi_point_ras if roi_point_ras is not None else values.roi_point_ras
    return dict(
        model=Path(values.model_dir), out=Path(out), ct=None, target=str(values.target).strip(),
        roi_point=tuple(float(v) for v in point) if values.roi_mode == "point" and point is not None else None,
        point_space="ras", roi_mask=None, prediction=None,
        score_region=values.score_region, dilate_mm=float(values.dilate_mm),
        units=values.units, organs=None, fcc_scale_mm=float(values.fcc_scale_mm),
        grouping=grouping_argument(values), value=values.value, budget=int(values.budget), seed=int(values.seed),
        mask_value=float(values.mask_value), batch_size=int(values.batch_size),
        device=device or device_request_name(values.device), tta=bool(values.tta),
        checkpoint=checkpoint_name(values), slic_size_mm=float(values.slic_size_mm),
        slic_compactness=float(values.slic_compactness), removal=values.removal,
        blur_sigma_mm=float(values.blur_sigma_mm),
    )


def stop_tolerance(values: PanelValues) -> float | None:
    """The run's stop rule: the tolerance of ``--budget auto`` when the panel asks to run until converged (the
    budget is then the cap), else None (the fixed budget)."""
    return float(values.tolerance) if values.budget_auto else None


def build_request(values: PanelValues, out: str | Path, **kwargs):
    """An ``SegSHAPLib.explain.request.ExplainRequest`` for the panel's values (see ``build_request_kwargs``)."""
    from SegSHAPLib.explain.request import ExplainRequest

    return ExplainRequest(**build_request_kwargs(values, out, **kwargs))


# --------------------------------------------------------------------------------------------- progress
def format_duration(seconds: float | None) -> str:
    """42 -> '0:42', 3725 -> '1:02:05'; None/negative -> '?'."""
    if seconds is None or not seconds >= 0 or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(event) -> str:
    """ProgressEvent -> 'coalitions 120/256 - patch forwards 1,234 - hit rate 87% - ETA 0:42'.

    Stages without coalition counters show their message ('preparing: loading the model ...')."""
    counters = getattr(event, "counters", None) or {}
    if event.stage == "coalitions" or "coalitions" in counters:
        done = counters.get("coalitions", event.done)
        parts = [f"coalitions {done:,}/{event.total:,}"]
        if counters.get("patch_forwards") is not None:
            parts.append(f"patch forwards {int(counters['patch_forwards']):,}")
        if counters.get("hit_rate") is not None:
            parts.append(f"hit rate {100.0 * float(counters['hit_rate']):.0f}%")
        if "eta_s" in counters:
            parts.append(f"ETA {format_duration(counters['eta_s'])}")
        return " - ".join(parts)
    label = {"prepare": "preparing", "verify": "verifying", "write": "writing", "faithfulness": "faithfulness"}.get(
        event.stage, event.stage)
    text = f"{label}: {event.message}" if event.message else label
    if event.total and event.total > 1:
        text += f" ({event.done}/{event.total})"
    return text


def format_status(event, note: str = "") -> str:
    """The status line during a run: the job's note (e.g. 'resuming: 8 coalitions already computed') in front of
    ``format_progress(event)``."""
    progress = format_progress(event)
    return f"{note} - {progress}" if note else progress


def format_cost(summary: dict) -> str:
    """summary.json -> '256 coalitions (kernelshap, 64 resumed) - 1,234 patch forwards (87% cache hits) - 42 s'.

    "N resumed": values taken from the journal of an earlier, interrupted attempt (not computed by this run)."""
    solver, inference = summary.get("solver") or {}, summary.get("inference") or {}
    method = solver.get("method", "?")
    if solver.get("resumed_coalitions"):
        method += f", {int(solver['resumed_coalitions']):,} resumed"
    return (f"{solver.get('coalitions', '?')} coalitions ({method}) - "
            f"{int(inference.get('patch_forwards', 0)):,} patch forwards "
            f"({float(inference.get('hit_rate', 0.0) or 0.0):.0%} cache hits) - "
            f"{float((summary.get('timings_s') or {}).get('total', 0.0)):.0f} s")


def progress_percent(event) -> int:
    """0..100 for the progress bar: coalitions fill 5..95%, preparation 0..5%, the rest 95..100%."""
    fraction = (event.done / event.total) if event.total else 0.0
    fraction = min(max(fraction, 0.0), 1.0)
    if event.stage == "prepare":
        return int(5 * fraction)
    if event.stage == "coalitions":
        return int(5 + 90 * fraction)
    return int(95 + 5 * fraction)


# ----------------------------------------------------------------------------------------------- verdicts
def live_verdict(estimate: dict, value: str | None = None) -> str:
    """The line above the live table: which estimate is shown and whether it can be trusted yet, e.g.
    'Live estimate (softdice), 96/2,048 coalitions: not converged yet - 3 of 19 units have a settled sign;
    about 1,200 coalitions forecast to converge.'"""
    from SegSHAPLib.shapley.diagnostics import abs_phi_lower_bound

    values = estimate["values"]
    name = value if value in values else next(iter(values))
    answer = values[name]
    head = f"Live estimate ({name}), {int(estimate['coalitions']):,}/{int(estimate['total']):,} coalitions: "
    if answer.get("converged"):
        return head + "converged (every standard error is within the tolerance); the run ends soon."
    settled = int((abs_phi_lower_bound(answer["phi"], answer["std_error"]) > 0).sum())
    return (head + f"not converged yet - {settled} of {len(answer['phi'])} units have a settled sign (ranked by "
            f"the |phi| lower bound); about {int(answer['coalitions_needed_forecast']):,} coalitions forecast to "
            "converge.")


def result_verdict(summary: dict, value: str) -> str:
    """The line that leads a finished run's results for value function ``value``: the value's name, then
    ``report.verdict``'s headline (the same words as the report and the CLI) and, when not converged, its cheapest
    fixes with their cost."""
    from SegSHAPLib.report.verdict import verdict

    found = verdict(summary, value)
    fixes = "; ".join(action.text for action in found.actions[:2])
    return f"{found.value}: {found.headline}" + (f" To fix it: {fixes}." if fixes else "")


# ----------------------------------------------------------------------------------------------- devices
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def parse_device(choice: str) -> str | None:
    """Panel text -> 'auto' | 'cpu' | 'cuda' | 'cuda:N'; None when not understood."""
    text = (choice or "").strip().lower()
    if text in ("auto", "cpu"):
        return text
    match = _CUDA.match(text)
    return text if match else None


def device_request_name(choice: str) -> str:
    return parse_device(choice) or "cpu"


def device_choices(cuda_count: int | None = None) -> list[str]:
    """Items of the device combo: Auto, CPU, cuda:0..N-1 (N from torch when importable, else 0)."""
    if cuda_count is None:
        cuda_count = _cuda_count()
    return list(DEVICE_CHOICES_FIXED) + [f"cuda:{i}" for i in range(cuda_count)]


def _cuda_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install must not break the panel
        return 0


def choose_device(choice: str, cuda_count: int | None = None, logger: logging.Logger | None = None) -> tuple[str, str]:
    """(device to run on, note for the user). Auto picks cuda:0 when there is a GPU, else CPU; a GPU that is not
    there falls back to CPU with a logged warning (never an error)."""
    logger = logger or log
    parsed = parse_device(choice)
    if parsed is None:
        raise ValueError(f"unknown device {choice!r}; choose Auto, CPU or cuda:N")
    if cuda_count is None:
        cuda_count = _cuda_count()
    if parsed == "cpu":
        return "cpu", "running on the CPU"
    if parsed == "auto":
        if cuda_count > 0:
            return "cuda:0", "running on GPU cuda:0"
        note = "no CUDA GPU found; running on the CPU (slower)"
        logger.info("SegSHAP device Auto: %s", note)
        return "cpu", note
    index = int(_CUDA.match(parsed).group(1) or 0)
    if index < cuda_count:
        return f"cuda:{index}", f"running on GPU cuda:{index}"
    note = (f"GPU cuda:{index} is not available ({cuda_count} GPU(s) seen by PyTorch); falling back to the CPU "
            "(slower)")
    logger.warning("SegSHAP device: %s", note)
    return "cpu", note


# ------------------------------------------------------------------------------------------------ errors
_OOM_PATTERNS = ("out of memory", "cuda error: out of memory", "cublas_status_alloc_failed",
                 "cannot allocate memory", "std::bad_alloc", "defaultcpuallocator: can't allocate memory",
                 "mps backend out of memory")


def is_out_of_memory(error: BaseException) -> bool:
    """True for a GPU/CPU out-of-memory error (torch.cuda.OutOfMemoryError, MemoryError, allocator messages)."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ in ("OutOfMemoryError", "OutOfMemory"):
        return True
    return is_out_of_memory_text(str(error))


def is_out_of_memory_text(text: str) -> bool:
    """True for an error's text that reports running out of memory (e.g. the one line of a child process)."""
    lowered = text.lower()
    return "memoryerror" in lowered or any(p in lowered for p in _OOM_PATTERNS)


def with_out_of_memory_advice(text: str, *, device: str = "cpu", batch_size: int = 1) -> str:
    """An out-of-memory error's text with what to change."""
    return f"Out of memory on {device}: {text}\n\nSuggestion: {out_of_memory_advice(device, batch_size)}."


def out_of_memory_advice(device: str, batch_size: int = 1) -> str:
    tips = []
    if batch_size > 1:
        tips.append(f"lower the batch size (now {batch_size}) to 1")
    if str(device).startswith("cuda"):
        tips.append("close other programs using the GPU, or choose CPU as the device (slower, but uses system RAM)")
    else:
        tips.append("close other programs, or use a machine with more RAM")
    tips.append("use fewer units (organ units, a larger FCC scale, or a grouping)")
    return "; ".join(tips)


def error_message(error: BaseException, *, device: str = "cpu", batch_size: int = 1) -> str:
    """The text for the error box: the real error, and for out-of-memory what to change."""
    from SegSHAPLib.errors import Cancelled, InputError

    if isinstance(error, Cancelled):
        return f"Cancelled. {error}".strip()
    if is_out_of_memory(error):
        return with_out_of_memory_advice(f"{type(error).__name__}: {error}", device=device, batch_size=batch_size)
    if isinstance(error, InputError):
        return str(error)
    return f"{type(error).__name__}: {error}"


__all__ = ["PanelValues", "UNIT_TYPES", "VALUE_FUNCTIONS", "SCORE_REGIONS", "GROUPING_CHOICES", "model_folder_problem",
           "model_labels", "validate_panel", "organ_grouping_problem", "grouping_argument", "build_request_kwargs",
           "build_request", "stop_tolerance", "live_verdict", "result_verdict", "format_duration", "format_progress",
           "format_status", "format_cost",
           "progress_percent", "parse_device", "device_request_name", "device_choices", "choose_device",
           "is_out_of_memory", "is_out_of_memory_text", "with_out_of_memory_advice", "out_of_memory_advice",
           "error_message"]
