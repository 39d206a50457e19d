"""``segshap evaluate DIR``: faithfulness (MoRF/LeRF/random curves, AOPC, ABPC, normalised) of an explanation."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="faithfulness curves and AOPC/ABPC of an explain output folder",
        description="Remove units in order of attribution (most relevant first: MoRF; least: LeRF; random as a "
                    "reference), recompute the value with the same operator, and write faithfulness.json and "
                    "curves.png into DIR.")
    parser.add_argument("dir", type=Path, help="an output folder of segshap explain")
    parser.add_argument("--steps", type=int, default=10, help="removal steps K (default 10, at most M)")
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

        result = evaluate_output(args.dir, steps=args.steps, progress=show)
    print(f"{args.dir}: AOPC {result['aopc']:+.4f}  ABPC {result['abpc']:+.4f}  nAOPC {result['naopc']:+.4f}  "
          f"nABPC {result['nabpc']:+.4f}  ({result['steps']} steps) -> faithfulness.json, curves.png")
    return 0
