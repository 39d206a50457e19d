"""``segshap explain``: one explanation from the command line, with progress (a tqdm bar, or JSON lines for a
program that runs it: ``--progress json``, schema in ``explain.progress_stream``) and resume.

An interrupt (SIGINT, Ctrl-C; on Windows also CTRL_BREAK) asks the run to stop at the next network batch, so
every coalition evaluated so far is journaled; a second interrupt stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from SegSHAPLib import options
from SegSHAPLib.cli.predict import add_model_arguments
from SegSHAPLib.errors import InputError


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
    parser.add_argument("--value", required=True, help=" | ".join(options.VALUE_FUNCTIONS))
    parser.add_argument("--budget", type=int, default=options.BUDGET,
                        help=f"most coalitions to evaluate (default {options.BUDGET})")
    parser.add_argument("--seed", type=int, default=options.SEED)
    parser.add_argument("--mask-value", type=float, default=options.MASK_VALUE,
                        help="HU given to removed units (air)")
    parser.add_argument("--batch-size", type=int, default=options.BATCH_SIZE,
                        help="network patches per forward (1 reproduces nnU-Net bit for bit)")
    parser.add_argument("--cache", choices=options.CACHE_MODES, default=options.CACHE)
    parser.add_argument("--case-cache", metavar="DIR|none", default=options.CASE_CACHE,
                        help="folder of the on-disk case cache (the CT's preprocessing and the model's full "
                             "prediction, kept for the next run): default $SEGSHAP_CACHE_DIR, else the user's "
                             "cache folder (~/.cache/segshap); 'none' turns it off")
    parser.add_argument("--verify", type=int, default=options.VERIFY, metavar="N",
                        help="check the baseline and N random coalitions against nnU-Net's own prediction")
    parser.add_argument("--progress", choices=options.PROGRESS_FORMATS, default=options.PROGRESS_FORMAT,
                        help="bar: a tqdm bar (default); json: one JSON object per line on stdout for each batch "
                             "and stage, then an 'end' line with the status (all other output goes to stderr)")
    parser.add_argument("--scene", type=Path, help="also write a Slicer scene (.mrb) with every result node")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.set_defaults(run=run)


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
            self.bar = None


@contextlib.contextmanager
def interrupt_sets(cancel: threading.Event):
    """While inside: the first SIGINT (and SIGBREAK on Windows) sets ``cancel`` (the run stops at the next batch),
    the next one raises KeyboardInterrupt. Only the main thread can install handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def on_interrupt(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("segshap explain: stopping after the current batch (interrupt again to stop now)", file=sys.stderr)

    signals = [signal.SIGINT] + ([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])
    previous = {number: signal.signal(number, on_interrupt) for number in signals}
    try:
        yield cancel
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def check_scene_path(scene: Path) -> None:
    """Refuse a --scene that could not be written, before the run rather than after it."""
    if not str(scene).lower().endswith(".mrb"):
        raise InputError(f"--scene {scene}: give a .mrb file name")
    folder = Path(scene).absolute().parent
    if scene.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        why = "it is a folder" if scene.is_dir() else f"{folder} is not a writable folder"
        raise InputError(f"--scene {scene}: cannot be written ({why}); give a .mrb path in a writable folder")


def run(args: argparse.Namespace) -> int:
    if args.progress == "json":
        from SegSHAPLib.explain.progress_stream import JsonLinesProgress, ending_of

        stream = JsonLinesProgress(sys.stdout)
        try:
            with contextlib.redirect_stdout(sys.stderr):          # stdout carries the JSON lines only
                result = _explain(args, stream)
        except BaseException as err:
            status, message = ending_of(err)
            stream.end(status, args.out, message)
            raise
        stream.end("finished", result.out, f"explained {len(result.unit_names)} units")
        return 0
    progress = TqdmProgress()
    try:
        _explain(args, progress)
    finally:
        progress.close()
    return 0


def _explain(args: argparse.Namespace, progress):
    """Run the explanation (and write --scene); print the result's summary; return the ExplainResult."""
    from SegSHAPLib.explain.request import ExplainRequest
    from SegSHAPLib.explain.run import run_explain

    request = ExplainRequest.from_args(args)
    if args.scene is not None:
        check_scene_path(args.scene)
    with interrupt_sets(threading.Event()) as cancel:
        result = run_explain(request, progress=progress, cancel=cancel)
    if isinstance(progress, TqdmProgress):
        progress.close()                                  # the bar ends before the summary lines
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
    return result
