"""``segshap evaluate DIR``: faithfulness (MoRF/LeRF/random curves, AOPC, ABPC, normalised) of an explanation."""

from __future__ import annotations

import argparse
from pathlib import Path

from SegSHAPLib import options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="faithfulness curves and AOPC/ABPC of an explain output folder",
        description="Remove units in order of attribution (most relevant first: MoRF; least: LeRF; random as a "
                    "reference), recompute the value with the same operator, and write faithfulness.json and "
                    "curves.png into DIR.")
    parser.add_argument("dir", type=Path, help="an output folder of segshap explain")
    parser.add_argument("--steps", type=int, default=options.FAITHFULNESS_STEPS,
                        help=f"removal steps K (default {options.FAITHFULNESS_STEPS}, at most M)")
    parser.add_argument("--without-roi-units", action="store_true",
                        help="also compute the curves with the units that overlap the ROI kept in place and left "
                             "out of the ranking (faithfulness.json: without_roi_units)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from SegSHAPLib.explain.faithfulness import evaluate_output
    from SegSHAPLib.explain.output_check import check_output_folder

    check_output_folder(args.dir, faithfulness=False)       # a damaged folder is one line, before any progress bar
    with tqdm(unit="coalition", desc="evaluate", dynamic_ncols=True) as bar:
        def show(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        result = evaluate_output(args.dir, steps=args.steps, progress=show,
                                 without_roi_units=args.without_roi_units)
    print(f"{args.dir}: AOPC {result['aopc']:+.4f}  ABPC {result['abpc']:+.4f}  nAOPC {result['naopc']:+.4f}  "
          f"nABPC {result['nabpc']:+.4f}  ({result['steps']} steps) -> faithfulness.json, curves.png")
    if result.get("without_roi_units"):
        print(f"  without the {len(result['roi_units'])} units that overlap the ROI: "
              f"nAOPC {result['without_roi_units']['naopc']:+.4f}  nABPC {result['without_roi_units']['nabpc']:+.4f}")
    return 0
