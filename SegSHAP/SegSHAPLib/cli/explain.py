"""``segshap explain``: one explanation from the command line, with tqdm progress and resume."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from SegSHAPLib import options
from SegSHAPLib.cli.predict import add_model_arguments
from SegSHAPLib.errors import InputError


REQUIRED_WITHOUT_REFINE = ("ct", "model", "target", "units", "value")


def add_parser(subparsers) -> None:
    """Every request argument defaults to None (= not given): the request's default, or with --refine the
    parent's value (``ExplainRequest.from_args``)."""
    parser = subparsers.add_parser(
        "explain", help="Shapley attributions of interpretable units for one predicted component",
        description="Explain the nnU-Net prediction inside one ROI with KernelSHAP over organs, FCC supervoxels "
                    "or both. Rerunning the same command resumes from the journal in --out. --refine OUT zooms "
                    "into an organ-unit explanation: the chosen organs split into hybrid cells, the other organs "
                    "stay whole, every other argument taken from OUT unless given.")
    add_model_arguments(parser, optional=True)
    parser.add_argument("--target", help="target class: label value or name (e.g. 1 or spleen)")
    roi = parser.add_mutually_exclusive_group()
    roi.add_argument("--roi-point", help="a point on the component to explain, 'x,y,z' (RAS mm by default)")
    roi.add_argument("--roi-mask", type=Path, help="a binary ROI mask on the CT grid instead of a point")
    parser.add_argument("--point-space", choices=options.POINT_SPACES)
    parser.add_argument("--prediction", type=Path,
                        help="a label map on the CT grid to take the ROI from (default: the model's own prediction)")
    parser.add_argument("--score-region",
                        help=f"{' | '.join(options.SCORE_REGIONS)} (default {options.SCORE_REGION})")
    parser.add_argument("--dilate-mm", type=float, help="dilation for --score-region dilated")
    parser.add_argument("--units", help=" | ".join(options.UNIT_TYPES))
    parser.add_argument("--organs", type=Path, help="organ label map (TotalSegmentator) on the CT grid")
    parser.add_argument("--grouping", help=f"organ grouping: '{options.GROUPING_DEFAULT_GROUPS}' or a JSON file "
                                           "{group: [glob, ...]}")
    parser.add_argument("--fcc-scale-mm", type=float,
                        help=f"FCC cell centre spacing in mm (default {options.FCC_SCALE_MM})")
    parser.add_argument("--value", help=" | ".join(options.VALUE_FUNCTIONS))
    parser.add_argument("--budget", type=int, help=f"most coalitions to evaluate (default {options.BUDGET})")
    parser.add_argument("--seed", type=int, help=f"default {options.SEED}")
    parser.add_argument("--mask-value", type=float, help=f"HU given to removed units (default {options.MASK_VALUE})")
    parser.add_argument("--batch-size", type=int,
                        help="network patches per forward (1 reproduces nnU-Net bit for bit)")
    parser.add_argument("--cache", choices=options.CACHE_MODES, help=f"default {options.CACHE}")
    parser.add_argument("--verify", type=int, metavar="N",
                        help="check the baseline and N random coalitions against nnU-Net's own prediction")
    zoom = parser.add_argument_group("zoom (refine an organ-unit explanation)")
    zoom.add_argument("--refine", type=Path, metavar="PARENT_OUT",
                      help="a finished --units organs output folder: explain again with chosen organs split into "
                           "hybrid cells (organ inside FCC cell of --fcc-scale-mm); the parent's coalitions are reused")
    chosen = zoom.add_mutually_exclusive_group()
    chosen.add_argument("--refine-organs", type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
                        metavar="NAME,...", help="the parent's units (names as in its summary.json) to refine")
    chosen.add_argument("--refine-top", type=int, metavar="K", help="refine the parent's top K units by |phi|")
    parser.add_argument("--scene", type=Path, help="also write a Slicer scene (.mrb) with every result node")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.set_defaults(run=run)


def request_from_args(args: argparse.Namespace):
    """The ``ExplainRequest`` of the arguments: with --refine, the parent's request overridden by what was given;
    without, InputError (one line) naming the missing required flags."""
    from SegSHAPLib.explain.refine import parent_request
    from SegSHAPLib.explain.request import ExplainRequest

    if args.refine is not None:
        return ExplainRequest.from_args(args, base=parent_request(args.refine))
    missing = [f"--{name.replace('_', '-')}" for name in REQUIRED_WITHOUT_REFINE if getattr(args, name) is None]
    if args.roi_point is None and args.roi_mask is None:
        missing.append("--roi-point or --roi-mask")
    if missing:
        raise InputError(f"segshap explain needs {', '.join(missing)} (or --refine PARENT_OUT)")
    return ExplainRequest.from_args(args)


class TqdmProgress:
    """ProgressEvents -> a tqdm bar over coalitions with patch forwards and hit rate in the postfix."""

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
        self.bar.set_postfix(forwards=event.counters.get("patch_forwards", 0),
                             hits=f"{100 * event.counters.get('hit_rate', 0):.0f}%", refresh=True)

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
    from SegSHAPLib.explain.run import run_explain

    request = request_from_args(args)
    if args.scene is not None:
        check_scene_path(args.scene)
    progress = TqdmProgress()
    try:
        result = run_explain(request, progress=progress)
    finally:
        progress.close()
    if args.scene is not None:
        from SegSHAPMRML import write_scene_from_output

        write_scene_from_output(result.out, args.scene)
    summary = result.summary
    ranked = sorted(summary["units"], key=lambda u: -abs(u["shap"]))[:5]
    print(f"explained {summary['roi']['voxels']} ROI voxels with {len(summary['units'])} "
          f"{'zoom (organs and cells)' if request.refine else request.units} units "
          f"({summary['solver']['method']}, {summary['solver']['coalitions']} coalitions, "
          f"{summary['inference']['patch_forwards']} patch forwards vs {summary['inference']['naive_patch_forwards']}"
          f" naive) in {summary['timings_s']['total']:.1f} s -> {result.out}")
    if "refine" in summary:
        print(f"zoom into {', '.join(summary['refine']['organs'])}: {summary['refine']['reused_coalitions']} "
              f"coalitions reused from {summary['refine']['parent']}")
    for unit in ranked:
        print(f"  {unit['shap']:+.4f}  {unit['name']}")
    return 0
