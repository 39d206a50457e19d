"""``segshap explain``: one explanation from the command line, with tqdm progress and resume."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from SegSHAPLib import options
from SegSHAPLib.cli.predict import add_model_arguments
from SegSHAPLib.errors import InputError

TOP_UNITS = 3


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain", help="Shapley attributions of interpretable units for one predicted component",
        description="Explain the nnU-Net prediction inside one ROI with KernelSHAP over organs, FCC supervoxels "
                    "or both. Rerunning the same command resumes from the journal in --out.")
    add_model_arguments(parser)
    parser.add_argument("--target", required=True, help="target class: label value or name (e.g. 1 or spleen)")
    roi = parser.add_mutually_exclusive_group(required=True)
    roi.add_argument("--roi-point", help="a point on the component to explain, 'x,y,z' (RAS mm by default)")
    roi.add_argument("--roi-mask", type=Path, help="a binary ROI mask on the CT grid instead of a point")
    parser.add_argument("--point-space", choices=options.POINT_SPACES, default=options.POINT_SPACE)
    parser.add_argument("--prediction", type=Path,
                        help="a label map on the CT grid to take the ROI from (default: the model's own prediction)")
    parser.add_argument("--score-region", default=options.SCORE_REGION,
                        help=f"{' | '.join(options.SCORE_REGIONS)} (default {options.SCORE_REGION})")
    parser.add_argument("--dilate-mm", type=float, default=options.DILATE_MM,
                        help="dilation for --score-region dilated")
    parser.add_argument("--units", required=True, help=" | ".join(options.UNIT_TYPES))
    parser.add_argument("--organs", type=Path, help="organ label map (TotalSegmentator) on the CT grid")
    parser.add_argument("--grouping", help=f"organ grouping: '{options.GROUPING_DEFAULT_GROUPS}' or a JSON file "
                                           "{group: [glob, ...]}")
    parser.add_argument("--fcc-scale-mm", type=float, default=options.FCC_SCALE_MM,
                        help="FCC cell centre spacing in mm")
    parser.add_argument("--value", default=options.VALUE,
                        help=f"value function(s): {' | '.join(options.VALUE_FUNCTIONS)}, a comma-separated list (the "
                             f"first is shown first), or {options.ALL_VALUES} (default: every one defined for the "
                             "scoring region, softdice first; they share every coalition, so this costs no more "
                             "forwards than one)")
    parser.add_argument("--budget", type=_budget, default=options.BUDGET,
                        help=f"most coalitions to evaluate (default {options.BUDGET}), or {options.BUDGET_AUTO}: stop "
                             "when every unit's standard error is below --tolerance x |v(full) - v(empty)|, or at --cap")
    parser.add_argument("--cap", type=int, default=options.AUTO_CAP,
                        help=f"with --budget {options.BUDGET_AUTO}: most coalitions to evaluate (default "
                             f"{options.AUTO_CAP})")
    parser.add_argument("--tolerance", type=float, default=options.TOLERANCE,
                        help=f"with --budget {options.BUDGET_AUTO}: the standard-error goal relative to "
                             f"|v(full) - v(empty)| (default {options.TOLERANCE})")
    parser.add_argument("--seed", type=int, default=options.SEED)
    parser.add_argument("--mask-value", type=float, default=options.MASK_VALUE,
                        help="HU given to removed units (air)")
    parser.add_argument("--batch-size", type=int, default=options.BATCH_SIZE,
                        help="network patches per forward (1 reproduces nnU-Net bit for bit)")
    parser.add_argument("--cache", choices=options.CACHE_MODES, default=options.CACHE)
    parser.add_argument("--verify", type=int, default=options.VERIFY, metavar="N",
                        help="check the baseline and N random coalitions against nnU-Net's own prediction")
    parser.add_argument("--scene", type=Path, help="also write a Slicer scene (.mrb) with every result node")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.set_defaults(run=run)


def _budget(text: str):
    """--budget: a whole number or 'auto'."""
    if text == options.BUDGET_AUTO:
        return options.BUDGET_AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a whole number of coalitions or {options.BUDGET_AUTO}, "
                                         f"got {text!r}") from None


def top_units(estimate: dict, count: int = TOP_UNITS) -> str:
    """The first value function's largest |phi| units of a live estimate (ProgressEvent.estimate), e.g.
    "softdice: liver +0.120, spleen -0.031?", where '?' marks a sign not yet settled (|phi| < 2 standard errors,
    or no standard error yet)."""
    name, first = next(iter(estimate["values"].items()))
    ranked = sorted(range(len(first["phi"])), key=lambda j: -abs(first["phi"][j]))[:count]
    shown = []
    for j in ranked:
        phi, error = first["phi"][j], first["std_error"][j]
        settled = error is not None and abs(phi) >= 2.0 * error
        shown.append(f"{estimate['units'][j]} {phi:+.3f}{'' if settled else '?'}")
    return f"{name}: " + ", ".join(shown)


class TqdmProgress:
    """ProgressEvents -> a tqdm bar over coalitions with patch forwards, hit rate and the current top units (of
    the first value function, from the live estimate) in the postfix."""

    def __init__(self):
        self.bar = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if event.stage != "coalitions":
            if self.bar is None:
                tqdm.write(f"segshap: {event.message}")
            return
        if self.bar is None:
            self.bar = tqdm(total=event.total, unit="coalition", desc="explain", dynamic_ncols=True)
        self.bar.n = event.done
        postfix = {"forwards": event.counters.get("patch_forwards", 0),
                   "hits": f"{100 * event.counters.get('hit_rate', 0):.0f}%"}
        if event.estimate is not None:
            postfix["top"] = top_units(event.estimate)
        self.bar.set_postfix(postfix, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_scene_path(scene: Path) -> None:
    """Refuse a --scene that could not be written, before the run rather than after it."""
    if not str(scene).lower().endswith(".mrb"):
        raise InputError(f"--scene {scene}: give a .mrb file name")
    folder = Path(scene).absolute().parent
    if scene.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        why = "it is a folder" if scene.is_dir() else f"{folder} is not a writable folder"
        raise InputError(f"--scene {scene}: cannot be written ({why}); give a .mrb path in a writable folder")


def run(args: argparse.Namespace) -> int:
    from SegSHAPLib.explain.request import ExplainRequest
    from SegSHAPLib.explain.run import run_explain

    request = ExplainRequest.from_args(args)
    if args.scene is not None:
        check_scene_path(args.scene)
    progress = TqdmProgress()
    auto = args.budget == options.BUDGET_AUTO
    if auto and args.cap < 2:
        raise InputError(f"--cap must be at least 2 (the empty and the full coalition), got {args.cap}")
    try:
        result = run_explain(request, progress=progress, tolerance=args.tolerance if auto else None)
    finally:
        progress.close()
    if args.scene is not None:
        from SegSHAPMRML import write_scene_from_output

        write_scene_from_output(result.out, args.scene)
    summary = result.summary
    ranked = sorted(summary["units"], key=lambda u: -abs(u["shap"]))[:5]
    print(f"explained {summary['roi']['voxels']} ROI voxels with {len(summary['units'])} {request.units} units "
          f"({summary['solver']['method']}, {summary['solver']['coalitions']} coalitions, stop: "
          f"{summary['solver']['stop']}, "
          f"{summary['inference']['patch_forwards']} patch forwards vs {summary['inference']['naive_patch_forwards']}"
          f" naive) in {summary['timings_s']['total']:.1f} s -> {result.out}")
    print(f"value functions: {', '.join(summary['value_functions'])}; top units by |phi| of "
          f"{summary['value_functions'][0]}:")
    for unit in ranked:
        print(f"  {unit['shap']:+.4f}  {unit['name']}")
    return 0
