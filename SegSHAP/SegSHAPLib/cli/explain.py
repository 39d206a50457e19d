"""``segshap explain``: one explanation from the command line, with progress (a tqdm bar, or JSON lines for a
program that runs it: ``--progress json``, schema in ``explain.progress_stream``) and resume.

An interrupt (SIGINT, Ctrl-C; on Windows also CTRL_BREAK) asks the run to stop at the next network batch, so
every coalition evaluated so far is journaled; a second interrupt stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from SegSHAPLib import options
from SegSHAPLib.cli.predict import add_model_arguments
from SegSHAPLib.errors import InputError
from SegSHAPLib.units.grouping import BUILTIN_GROUPINGS

TOP_UNITS = 3


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
    parser.add_argument("--grouping", help=f"organ grouping: {' | '.join(BUILTIN_GROUPINGS)} (built in; "
                                           "systems is the coarsest) or a JSON file {group: [glob, ...]}")
    parser.add_argument("--fcc-scale-mm", type=float,
                        help=f"FCC cell centre spacing in mm (default {options.FCC_SCALE_MM})")
    parser.add_argument("--slic-size-mm", type=float,
                        help=f"--units {' / '.join(options.SLIC_UNIT_TYPES)}: mean supervoxel volume that of an FCC "
                             f"cell of this scale, mm (default {options.SLIC_SIZE_MM})")
    parser.add_argument("--slic-compactness", type=float,
                        help="--units slic / slic-hybrid: small follows intensity edges, large gives near-cubic cells "
                             f"(default {options.SLIC_COMPACTNESS})")
    parser.add_argument("--value",
                        help=f"value function(s): {' | '.join(options.VALUE_FUNCTIONS)}, a comma-separated list (the "
                             f"first is shown first), or {options.ALL_VALUES} (default: every one defined for the "
                             "scoring region, softdice first; they share every coalition, so this costs no more "
                             "forwards than one)")
    parser.add_argument("--budget", type=_budget,
                        help=f"most coalitions to evaluate (default {options.BUDGET}), or {options.BUDGET_AUTO}: stop "
                             "when every unit's standard error is below --tolerance x |v(full) - v(empty)|, or at --cap")
    parser.add_argument("--cap", type=int, default=options.AUTO_CAP,
                        help=f"with --budget {options.BUDGET_AUTO}: most coalitions to evaluate (default "
                             f"{options.AUTO_CAP})")
    parser.add_argument("--tolerance", type=float, default=options.TOLERANCE,
                        help=f"with --budget {options.BUDGET_AUTO}: the standard-error goal relative to "
                             f"|v(full) - v(empty)| (default {options.TOLERANCE})")
    parser.add_argument("--seed", type=int, help=f"default {options.SEED}")
    parser.add_argument("--mask-value", type=float,
                        help=f"--removal constant: HU given to removed units (default {options.MASK_VALUE}, air)")
    parser.add_argument("--removal", choices=options.REMOVALS,
                        help=f"what removed units become: constant (--mask-value), blur (a Gaussian-blurred copy of "
                             f"the CT) or mean (each unit's own mean intensity) (default {options.REMOVAL})")
    parser.add_argument("--blur-sigma-mm", type=float,
                        help=f"--removal blur: the Gaussian's sigma in mm (default {options.BLUR_SIGMA_MM})")
    parser.add_argument("--batch-size", type=int,
                        help="network patches per forward (1 reproduces nnU-Net bit for bit)")
    parser.add_argument("--cache", choices=options.CACHE_MODES, help=f"default {options.CACHE}")
    parser.add_argument("--case-cache", metavar="DIR|none",
                        help="folder of the on-disk case cache (the CT's preprocessing and the model's full "
                             "prediction, kept for the next run): default $SEGSHAP_CACHE_DIR, else the user's "
                             "cache folder (~/.cache/segshap); 'none' turns it off")
    parser.add_argument("--verify", type=int, metavar="N",
                        help="check the baseline and N random coalitions against nnU-Net's own prediction")
    parser.add_argument("--progress", choices=options.PROGRESS_FORMATS, default=options.PROGRESS_FORMAT,
                        help="bar: a tqdm bar (default); json: one JSON object per line on stdout for each batch "
                             "and stage, then an 'end' line with the status (all other output goes to stderr)")
    zoom = parser.add_argument_group("zoom (refine an organ-unit explanation)")
    zoom.add_argument("--refine", type=Path, metavar="PARENT_OUT",
                      help="a finished --units organs output folder: explain again with chosen organs split into "
                           "hybrid cells (organ inside FCC cell of --fcc-scale-mm); the parent's coalitions are reused")
    chosen = zoom.add_mutually_exclusive_group()
    chosen.add_argument("--refine-organs", type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
                        metavar="NAME,...", help="the parent's units (names as in its summary.json) to refine")
    chosen.add_argument("--refine-top", type=int, metavar="K", help="refine the parent's top K units by |phi|")
    parser.add_argument("--scene", type=Path, help="also write a Slicer scene (.mrb) with every result node")
    parser.add_argument("--dry-run", action="store_true",
                        help="run no coalition and write nothing to --out: print the cost (units, coalitions, support "
                             "patches, patch forwards per cache mode, memo memory, estimated time) as one JSON object "
                             "on stdout, and for a person on stderr")
    parser.add_argument("--patch-seconds", type=float, metavar="S",
                        help="with --dry-run: seconds of one patch forward for the estimate (default: measured once "
                             "per model and device, kept in the case cache folder)")
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
    "softdice: liver +0.120, spleen -0.031?", where '?' marks a sign not yet settled (``abs_phi_lower_bound`` is
    0: its 95% interval reaches 0, or there is no standard error yet)."""
    from SegSHAPLib.shapley.diagnostics import abs_phi_lower_bound

    name, first = next(iter(estimate["values"].items()))
    settled = abs_phi_lower_bound(first["phi"], first["std_error"]) > 0
    ranked = sorted(range(len(first["phi"])), key=lambda j: -abs(first["phi"][j]))[:count]
    shown = [f"{estimate['units'][j]} {first['phi'][j]:+.3f}{'' if settled[j] else '?'}" for j in ranked]
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


def print_verdict(summary: dict, shown: int = 5) -> None:
    """The last lines of a run: the verdict on the first value function (``report.verdict``) and its top units,
    ranked by |phi| when converged, else by the lower 95% bound of |phi| ('?': sign not settled), then the fixes."""
    from SegSHAPLib.report.verdict import verdict

    judged = verdict(summary)
    print(f"value functions: {', '.join(summary.get('value_functions') or [judged.value])}; verdict on "
          f"{judged.value}: {judged.headline}")
    print(f"top units by {judged.ranked_by}:")
    for unit in judged.ranked[:shown]:
        bound = "" if judged.converged else f"  (|phi| >= {unit.lower_bound:.3g} at 95%)"
        print(f"  {unit.phi:+.4f}{'' if judged.converged or unit.sign_settled else '?'}  {unit.name}{bound}")
    for action in judged.actions:
        print(f"fix: {action.text}")


def check_scene_path(scene: Path) -> None:
    """Refuse a --scene that could not be written, before the run rather than after it."""
    if not str(scene).lower().endswith(".mrb"):
        raise InputError(f"--scene {scene}: give a .mrb file name")
    folder = Path(scene).absolute().parent
    if scene.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        why = "it is a folder" if scene.is_dir() else f"{folder} is not a writable folder"
        raise InputError(f"--scene {scene}: cannot be written ({why}); give a .mrb path in a writable folder")


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run(args)
    if args.patch_seconds is not None:
        raise InputError("--patch-seconds is for --dry-run's estimate; add --dry-run or drop it")
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


def _budget_auto(args: argparse.Namespace) -> bool:
    """Whether --budget is auto (then --cap, checked here, is the request's budget)."""
    auto = args.budget == options.BUDGET_AUTO
    if auto and args.cap < 2:
        raise InputError(f"--cap must be at least 2 (the empty and the full coalition), got {args.cap}")
    return auto


def _dry_run(args: argparse.Namespace) -> int:
    """--dry-run: the cost preview as one JSON object on stdout (keys in docs/architecture.md), for a person on
    stderr; everything else the preparation prints goes to stderr too, so a parent process reads stdout as JSON."""
    from SegSHAPLib.explain.cost import cost_preview

    request = request_from_args(args)
    auto = _budget_auto(args)
    with contextlib.redirect_stdout(sys.stderr):
        preview = cost_preview(request, seconds_per_forward=args.patch_seconds,
                               budget_rule=options.BUDGET_AUTO if auto else "fixed")
    for line in preview.lines():
        print(f"segshap explain --dry-run: {line}", file=sys.stderr)
    print(json.dumps(preview.as_dict()), flush=True)
    return 0


def _explain(args: argparse.Namespace, progress):
    """Run the explanation (and write --scene); print the result's summary; return the ExplainResult."""
    from SegSHAPLib.explain.run import run_explain

    request = request_from_args(args)
    if args.scene is not None:
        check_scene_path(args.scene)
    auto = _budget_auto(args)
    with interrupt_sets(threading.Event()) as cancel:
        result = run_explain(request, progress=progress, cancel=cancel, tolerance=args.tolerance if auto else None)
    if isinstance(progress, TqdmProgress):
        progress.close()                                  # the bar ends before the summary lines
    if args.scene is not None:
        from SegSHAPMRML import write_scene_from_output

        write_scene_from_output(result.out, args.scene)
    summary = result.summary
    print(f"explained {summary['roi']['voxels']} ROI voxels with {len(summary['units'])} "
          f"{'zoom (organs and cells)' if request.refine else request.units} units "
          f"({summary['solver']['method']}, {summary['solver']['coalitions']} coalitions, stop: "
          f"{summary['solver']['stop']}, "
          f"{summary['inference']['patch_forwards']} patch forwards vs {summary['inference']['naive_patch_forwards']}"
          f" naive) in {summary['timings_s']['total']:.1f} s -> {result.out}")
    if "refine" in summary:
        print(f"zoom into {', '.join(summary['refine']['organs'])}: {summary['refine']['reused_coalitions']} "
              f"coalitions reused from {summary['refine']['parent']}")
    print_verdict(summary)
    return result
