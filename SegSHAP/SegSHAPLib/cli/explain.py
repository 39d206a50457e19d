"""``segshap explain``: one explanation from the command line, with tqdm progress and resume."""

from __future__ import annotations

import argparse
from pathlib import Path

from SegSHAPLib.cli.predict import add_model_arguments
from SegSHAPLib.errors import InputError
from SegSHAPLib.scoring.roi import parse_point


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
    parser.add_argument("--point-space", choices=("ras", "ijk"), default="ras")
    parser.add_argument("--prediction", type=Path,
                        help="a label map on the CT grid to take the ROI from (default: the model's own prediction)")
    parser.add_argument("--score-region", default="box", help="component | box (default) | dilated")
    parser.add_argument("--dilate-mm", type=float, default=6.0, help="dilation for --score-region dilated")
    parser.add_argument("--units", required=True, help="organs | fcc | hybrid")
    parser.add_argument("--organs", type=Path, help="organ label map (TotalSegmentator) on the CT grid")
    parser.add_argument("--grouping", help="organ grouping: 'default' or a JSON file {group: [glob, ...]}")
    parser.add_argument("--fcc-scale-mm", type=float, default=30.0, help="FCC cell centre spacing in mm")
    parser.add_argument("--value", required=True, help="tp | fp | dice | softdice")
    parser.add_argument("--budget", type=int, default=256, help="most coalitions to evaluate (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask-value", type=float, default=-1024.0, help="HU given to removed units (air)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="network patches per forward (1 reproduces nnU-Net bit for bit)")
    parser.add_argument("--cache", choices=("memo", "baseline", "none"), default="memo")
    parser.add_argument("--verify", type=int, default=0, metavar="N",
                        help="check the baseline and N random coalitions against nnU-Net's own prediction")
    parser.add_argument("--scene", type=Path, help="also write a Slicer scene (.mrb) with every result node")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.set_defaults(run=run)


def request_from_args(args: argparse.Namespace):
    from SegSHAPLib.explain.run import ExplainRequest

    return ExplainRequest(
        model=args.model, out=args.out, ct=args.ct, target=args.target,
        roi_point=parse_point(args.roi_point) if args.roi_point is not None else None,
        point_space=args.point_space, roi_mask=args.roi_mask, prediction=args.prediction,
        score_region=args.score_region, dilate_mm=args.dilate_mm, units=args.units, organs=args.organs,
        fcc_scale_mm=args.fcc_scale_mm, grouping=args.grouping, value=args.value, budget=args.budget,
        seed=args.seed, mask_value=args.mask_value, batch_size=args.batch_size, device=args.device,
        cache=args.cache, tta=args.tta, tile_step=args.tile_step, fold=args.fold,
        checkpoint=args.checkpoint, verify=args.verify)


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


def run(args: argparse.Namespace) -> int:
    from SegSHAPLib.explain.run import run_explain

    request = request_from_args(args)
    if args.scene is not None and not str(args.scene).lower().endswith(".mrb"):
        raise InputError(f"--scene {args.scene}: give a .mrb file name")
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
    print(f"explained {summary['roi']['voxels']} ROI voxels with {len(summary['units'])} {request.units} units "
          f"({summary['solver']['method']}, {summary['solver']['coalitions']} coalitions, "
          f"{summary['inference']['patch_forwards']} patch forwards vs {summary['inference']['naive_patch_forwards']}"
          f" naive) in {summary['timings_s']['total']:.1f} s -> {result.out}")
    for unit in ranked:
        print(f"  {unit['shap']:+.4f}  {unit['name']}")
    return 0
