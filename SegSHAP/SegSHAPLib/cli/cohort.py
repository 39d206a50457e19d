"""``segshap cohort run|status|gather``: a study of many explanations, on this machine or on Ray."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from SegSHAPLib import options
from SegSHAPLib.errors import InputError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "cohort", help="run, watch and tabulate a study of many explanations (a manifest of cases)",
        description="A study: every case of a CSV manifest crossed with its unit types and value functions, one "
                    "`segshap explain` output folder each under OUT/explanations/. Rerunning resumes; finished "
                    "explanations are skipped.")
    commands = parser.add_subparsers(dest="cohort_command", required=True, metavar="run|status|gather|report")

    run = commands.add_parser("run", help="run (or resume) every explanation of a manifest")
    run.add_argument("manifest", type=Path, help="CSV: case_id,ct,model,target,roi_point,point_space,roi_mask,"
                                                 "organs,units,values,score_region,budget,seed")
    run.add_argument("--out", required=True, type=Path, help="study folder")
    run.add_argument("--executor", choices=options.EXECUTORS, default=options.EXECUTOR,
                     help="local: worker processes on this machine (default); ray: one Ray task per explanation")
    run.add_argument("--workers", type=int, default=None,
                     help="local: worker processes (default 1 on CPU - torch uses every core - or one per GPU)")
    run.add_argument("--ray-address", help="ray: address of a running cluster (default: start a local Ray)")
    run.add_argument("--gpus", type=float, default=options.GPUS_PER_TASK,
                     help="GPUs per explanation: 0 = CPU (default), 1, or 0.5 to share a GPU between two")
    run.add_argument("--cpus-per-task", type=int, default=options.CPUS_PER_TASK,
                     help=f"ray: CPUs (torch threads) per explanation (default {options.CPUS_PER_TASK})")
    run.add_argument("--max-retries", type=int, default=options.MAX_RETRIES,
                     help="times a crashed or killed explanation is started again; each retry resumes "
                          f"(default {options.MAX_RETRIES})")
    run.add_argument("--part-id", type=int, default=0, help="run only part K of --num-parts (0-based)")
    run.add_argument("--num-parts", type=int, default=1, help="split the study into N independent parts")
    run.add_argument("--restart", action="store_true",
                     help="discard and redo explanations whose folder holds a different request")
    run.add_argument("--evaluate", action="store_true",
                     help="also compute each explanation's faithfulness (faithfulness.json, as `segshap evaluate "
                          "--without-roi-units`); the manifest column `evaluate` asks per case")
    run.add_argument("--dry-run", action="store_true", help="say what would run, resume, skip or be refused")
    run.set_defaults(run=run_command)

    status = commands.add_parser("status", help="one line per explanation: state, progress, tries, reason")
    status.add_argument("out", type=Path, help="study folder")
    status.set_defaults(run=status_command)

    gather = commands.add_parser("gather", help="write OUT/cohort.csv: one row per explanation and unit")
    gather.add_argument("out", type=Path, help="study folder")
    gather.set_defaults(run=gather_command)

    report = commands.add_parser("report", help="write OUT/report.html and OUT/faithfulness_table.csv: faithfulness "
                                                "and cost by unit type and value function over the cases")
    report.add_argument("out", type=Path, help="study folder")
    report.set_defaults(run=report_command)


class StudyProgress:
    """The study's tqdm bar over the coalitions of the explanations to run (so its ETA spans all of them), with
    done/running/failed counts. Reads the status files of the running explanations only."""

    def __init__(self, out: Path, tasks):
        self.out, self.totals = out, {task.task_id: task.request.budget for task in tasks}
        self.bar, self.shown = None, None

    def __call__(self, running: list[str], outcomes) -> None:
        from tqdm import tqdm

        from SegSHAPLib.cohort.state import DONE, read_status

        finished = {o.task_id for o in outcomes}
        done = 0
        for task_id in running:
            status = read_status(self.out, task_id)
            self.totals[task_id] = int(status.get("coalitions_total", self.totals[task_id]))
            done += int(status.get("coalitions_done", 0))
        done += sum(self.totals[task_id] for task_id in finished)
        succeeded = sum(o.state == DONE for o in outcomes)
        shown = (sum(self.totals.values()), done, succeeded, len(running), len(outcomes) - succeeded)
        if shown == self.shown:
            return
        if self.bar is None:
            self.bar = tqdm(unit="coalition", desc="cohort", dynamic_ncols=True)
        self.shown = shown
        self.bar.total, self.bar.n = shown[0], shown[1]
        self.bar.set_postfix(done=f"{succeeded}/{len(self.totals)}", running=shown[3], failed=shown[4])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def make_executor(args: argparse.Namespace):
    """The executor the flags ask for (Ray imported only for --executor ray); InputError for a flag of the
    other executor."""
    if args.executor == "ray":
        if args.workers is not None:
            raise InputError("--workers is for --executor local; Ray runs as many explanations at once as its "
                             "CPUs and GPUs allow (--cpus-per-task, --gpus)")
        from SegSHAPLib.cohort.ray_executor import RayExecutor

        return RayExecutor(args.ray_address, args.max_retries, args.gpus, args.cpus_per_task)
    if args.ray_address or args.cpus_per_task != 1:
        raise InputError("--ray-address and --cpus-per-task need --executor ray; locally, --workers sets how many "
                         "explanations run at once and they share the cores")
    from SegSHAPLib.cohort.local import LocalExecutor

    return LocalExecutor(args.workers, args.max_retries, args.gpus)


def run_command(args: argparse.Namespace) -> int:
    from SegSHAPLib.cohort.run import execute, load_study, prepare_run, triage

    all_tasks, tasks = load_study(args.manifest, args.out, args.part_id, args.num_parts, args.evaluate)
    part = f" (part {args.part_id} of {args.num_parts})" if args.num_parts > 1 else ""
    if args.dry_run:
        plan = triage(tasks, args.restart)
        width = max(len(task.task_id) for task in tasks)
        for task in tasks:
            print(f"{task.task_id:<{width}}  {plan.notes[task.task_id]}")
        print(f"{len(tasks)} explanations{part}: {len(plan.to_run)} to run, {len(plan.done)} done, "
              f"{len(plan.refused)} refused; nothing was run (--dry-run)")
        return 1 if plan.refused else 0
    executor = make_executor(args)
    sorted_tasks = prepare_run(all_tasks, tasks, args.out, args.restart)
    progress = StudyProgress(args.out, sorted_tasks.to_run)
    try:
        study = execute(sorted_tasks, args.out, executor, progress)
    finally:
        progress.close()
    ran = [o for o in study.outcomes if o.state == "done"]
    print(f"segshap cohort: {len(tasks)} explanations{part}: {len(study.triage.done)} already done, {len(ran)} "
          f"finished now, {len(study.failures)} failed -> {args.out}")
    for failure in study.failures:
        print(f"  FAILED {failure.task_id}: {failure.reason}", file=sys.stderr)
    if study.failures:
        print(f"segshap cohort: rerun the same command to retry the failed ones once fixed; "
              f"`segshap cohort status {args.out}` shows every explanation", file=sys.stderr)
    return 1 if study.failures else 0


def status_command(args: argparse.Namespace) -> int:
    from SegSHAPLib.cohort.status import format_table, study_views

    print(format_table(study_views(args.out)))
    return 0


def gather_command(args: argparse.Namespace) -> int:
    from SegSHAPLib.cohort.gather import gather

    path, gathered, unfinished = gather(args.out)
    print(f"wrote {path}: {gathered} explanations")
    _name_unfinished("gather", unfinished, "are not in the table")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from SegSHAPLib.cohort.report import write_study_report

    report = write_study_report(args.out)
    print(f"wrote {report.html} and {', '.join(p.name for p in report.csvs)}: {report.explanations} explanations, "
          f"{report.evaluated} with faithfulness")
    _name_unfinished("report", report.unfinished, "are left out")
    if report.evaluated < report.explanations:
        print(f"segshap cohort report: {report.explanations - report.evaluated} explanations have no faithfulness; "
              "rerun `segshap cohort run MANIFEST --out OUT --evaluate` to add it", file=sys.stderr)
    return 0


def _name_unfinished(command: str, unfinished: list[str], consequence: str) -> None:
    """One stderr line naming (the first ten of) the explanations a command had to leave out."""
    if unfinished:
        print(f"segshap cohort {command}: {len(unfinished)} explanations are not finished and {consequence}: "
              f"{', '.join(unfinished[:10])}{' ...' if len(unfinished) > 10 else ''}", file=sys.stderr)
