"""Benchmark: SegSHAP's KernelSHAP solver against shap.KernelExplainer and every shapiq Shapley approximator.

Games with exact Shapley values (benchmarks/solver_games.py), M = 12..32, budgets 64..2048, 10 seeds, in
one run. shap must never be installed into .venv (it pulls in an unrelated PyPI package named `slicer`
that overwrites slicer-core's `slicer`) and shapiq 1.8 needs Python >= 3.12, so each has its own
environment: this script runs in .venv-shap (our solver and shap) and starts the shapiq worker
(bench_shapiq_worker.py) in .venv-shapiq as subprocesses, which rebuild the same games from their specs.
From the repo root:

    python3 benchmarks/bench_solver.py --setup            # creates .venv-shap and .venv-shapiq
    .venv-shap/bin/python benchmarks/bench_solver.py      # the tables
    .venv-shap/bin/python benchmarks/bench_solver.py --ablation   # plus the estimator variants and uniform draws
    .venv-shap/bin/python benchmarks/bench_solver.py --sampler-ablation   # plus the sampler's other variants

Without shap, or without .venv-shapiq, the script prints the one line to run and exits with status 2.

Every solver gets the same budget per game, budget and seed: ours `budget` distinct coalitions (empty and
full included); shapiq's approximators `approximate(budget, game)` (their budget counts the empty and full
coalitions too); shap `nsamples=budget` (it evaluates the empty and full coalitions on top, so it gets 2
more), `l1_reg=False`, one all-zeros background row and the model game(X > 0.5) explained at the all-ones
row. The score is the MSE against the exact Shapley values, averaged over units and seeds; ratios are
ours / theirs, below 1 means ours is more accurate. Cells where both recover the Shapley values to
rounding are marked and left out of the counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")  # one BLAS thread: the machine is shared, and threads only contend here

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAP_VENV = REPO / ".venv-shap"
SHAPIQ_VENV = REPO / ".venv-shapiq"
PYTHON312 = os.environ.get("PYTHON312", "python3.12")
sys.path.insert(0, str(REPO / "SegSHAP"))
sys.path.insert(0, str(REPO / "benchmarks"))

from SegSHAPLib.shapley import estimator as shapley_estimator  # noqa: E402
from SegSHAPLib.shapley import plan as shapley_plan  # noqa: E402
from SegSHAPLib.shapley.kernelshap import kernel_shap  # noqa: E402
from solver_games import GameSpec, benchmark_specs, exact_phi, game_value  # noqa: E402

BUDGETS = (64, 128, 256, 512, 1024, 2048)
EXACT_MSE = 1e-20
SETUP = (f"python3 -m venv {SHAP_VENV} && {SHAP_VENV}/bin/pip install numpy scipy shap "
         f"&& {SHAP_VENV}/bin/pip install --no-deps -e {REPO} && {PYTHON312} -m venv {SHAPIQ_VENV} "
         f"&& {SHAPIQ_VENV}/bin/pip install 'shapiq==1.8.*' xgboost lightgbm")
TIMING = ((24, 2048), (32, 2048))  # M and budget of the timing lines


@dataclass(frozen=True)
class Game:
    """A benchmark game: its spec (rebuilds it in any environment), value(Z bool (n, M)) -> (n,), exact phi (M,)."""

    spec: GameSpec
    value: Callable[[np.ndarray], np.ndarray]
    phi: np.ndarray

    @property
    def name(self) -> str:
        return self.spec.name


def games() -> list[Game]:
    """The benchmark games (solver_games.BENCHMARK), each from its own fixed generator."""
    return [Game(spec, game_value(spec), exact_phi(spec)) for spec in benchmark_specs()]


# --- solvers --------------------------------------------------------------------------------------

def ours(game: Game, budget: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(phi (M,), reported standard errors (M,), NaN where not estimable) from SegSHAP's kernel_shap."""
    result = kernel_shap(game.value, n_features=len(game.phi), budget=budget, seed=seed, batch_size=budget)
    errors = result.diagnostics["phi_std_error"]
    return result.phi, np.array([np.nan if e is None else e for e in errors])


def shap_kernel(game: Game, budget: int, seed: int) -> np.ndarray:
    """phi (M,) from shap.KernelExplainer: no L1, nsamples=budget, all-zeros background, all-ones instance."""
    import shap

    n = len(game.phi)
    np.random.seed(seed)
    explainer = shap.KernelExplainer(lambda X: game.value(X > 0.5), np.zeros((1, n)))
    return np.asarray(explainer.shap_values(np.ones((1, n)), nsamples=budget, l1_reg=False, silent=True)).reshape(n)


def measure_ours(all_games: list[Game], seeds: int) -> tuple[dict, dict]:
    """({(game, budget): MSE}, {(game, budget): mean reported SE^2 (NaN when not estimable)}) of our solver."""
    mse, variance = {}, {}
    for game in all_games:
        for budget in BUDGETS:
            runs = [ours(game, budget, seed) for seed in range(seeds)]
            mse[(game.name, budget)] = float(np.mean([np.mean((phi - game.phi) ** 2) for phi, _ in runs]))
            variance[(game.name, budget)] = float(np.mean([np.mean(se ** 2) for _, se in runs]))
    return mse, variance


def measure_shap(all_games: list[Game], seeds: int) -> dict:
    """{(game, budget): MSE} of shap.KernelExplainer."""
    return {(g.name, b): float(np.mean([np.mean((shap_kernel(g, b, s) - g.phi) ** 2) for s in range(seeds)]))
            for g in all_games for b in BUDGETS}


def start_shapiq(all_games: list[Game], seeds: int, workers: int, folder: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Start the shapiq worker in .venv-shapiq on `workers` interleaved shares of the games (single-threaded BLAS)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = []
    for k in range(workers):
        share = [[g.spec.kind, g.spec.n, g.spec.seed] for g in all_games[k::workers]]
        request, result = folder / f"request-{k}.json", folder / f"result-{k}.json"
        request.write_text(json.dumps({"games": share, "budgets": list(BUDGETS), "seeds": seeds}))
        command = [str(SHAPIQ_VENV / "bin" / "python"), str(REPO / "benchmarks" / "bench_shapiq_worker.py"),
                   str(request), str(result)]
        started.append((subprocess.Popen(command, env=environment), result))
    return started


def shapiq_mse(all_games: list[Game], results: list[dict]) -> tuple[dict, dict]:
    """({approximator: {(game, budget): MSE}} over the cells it could do, {approximator: CPU seconds})."""
    merged: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for result in results:
        for name, record in result.items():
            merged.setdefault(name, {}).update(record["phi"])
            seconds[name] = seconds.get(name, 0.0) + record["seconds"]
    table = {name: {} for name in merged}
    for name, cells in merged.items():
        for game in all_games:
            for budget in BUDGETS:
                runs = cells.get(f"{game.name}|{budget}")
                if runs:
                    table[name][(game.name, budget)] = float(np.mean([np.mean((np.array(p) - game.phi) ** 2) for p in runs]))
    return table, seconds


def best_per_cell(table: dict) -> dict:
    """{(game, budget): (MSE, approximator)} of the most accurate shapiq approximator of each cell."""
    cells = {key for results in table.values() for key in results}
    return {key: min((results[key], name) for name, results in table.items() if key in results) for key in cells}


# --- report ---------------------------------------------------------------------------------------

def cell(mine: float, theirs: float, label: str = "") -> str:
    """One table cell: the ratio (and the label of theirs), or which side recovers the game to rounding."""
    if max(mine, theirs) < EXACT_MSE:
        return "exact"
    if mine < EXACT_MSE:
        return "ours ex"
    return "them ex" if theirs < EXACT_MSE else f"{mine / theirs:.3f}{label}"


def ratio_table(all_games: list[Game], mine: dict, theirs: dict, labels: dict | None = None) -> str:
    """Ratio table (games x budgets) of ours / theirs."""
    head = f"{'game':22s}" + "".join(f"{b:>10d}" for b in BUDGETS)
    rows = [f"{g.name:22s}" + "".join(
        f"{cell(mine[(g.name, b)], theirs[(g.name, b)], (labels or {}).get((g.name, b), '')):>10s}" for b in BUDGETS)
        for g in all_games]
    return "\n".join([head, *rows])


def summary(mine: dict, theirs: dict, versus: str) -> str:
    """One line: how many cells ours wins, the geometric mean and the worst ratio, cells worse than 1.5x."""
    both = [k for k in mine if k in theirs and max(mine[k], theirs[k]) >= EXACT_MSE]
    ratio = np.array([mine[k] / theirs[k] if theirs[k] >= EXACT_MSE else np.inf for k in both])
    inexact = np.array([mine[k] >= EXACT_MSE and theirs[k] >= EXACT_MSE for k in both], dtype=bool)
    return (f"ours / {versus}: ahead in {(ratio < 1).sum()}/{len(ratio)} cells, geometric mean "
            f"{np.exp(np.log(ratio[inexact]).mean()):.3f} (cells neither side is exact in), worst {ratio.max():.3f}, "
            f"{(ratio > 1.5).sum()} cells worse than 1.5x")


ABBREVIATIONS = {"KernelSHAP": "K", "kADD-SHAP": "A", "LeverageSHAP": "L", "PolySHAP-3": "P", "OddSHAP": "O",
                 "RegressionMSR": "R", "ProxySHAP": "X", "SVARM": "S", "UnbiasedKernelSHAP": "U",
                 "Permutation": "p", "Stratified": "s", "Owen": "w"}


def report_shapiq(all_games: list[Game], mine: dict, table: dict, seconds: dict) -> dict:
    """Print the table against the best shapiq approximator per cell and each approximator's standing."""
    best = best_per_cell(table)
    theirs = {key: mse for key, (mse, _) in best.items()}
    labels = {key: ABBREVIATIONS.get(name, "?") for key, (_, name) in best.items()}
    print("\nratio MSE(ours) / MSE(best shapiq approximator of the cell), its initial after the ratio: "
          + ", ".join(f"{v}={k}" for k, v in ABBREVIATIONS.items()))
    print(ratio_table(all_games, mine, theirs, labels))
    print(summary(mine, theirs, "best shapiq"))
    print("\nper approximator: cells it is best in, ours / it (geometric mean over cells), CPU seconds for all cells")
    for name, results in table.items():
        wins = sum(1 for _, (_, who) in best.items() if who == name)
        keys = [k for k in results if min(mine[k], results[k]) >= EXACT_MSE]
        mean = np.exp(np.mean([np.log(mine[k] / results[k]) for k in keys])) if keys else float("nan")
        print(f"  {name:20s} best in {wins:3d}  ours/it {mean:8.3f}  {seconds.get(name, 0.0):8.1f} s")
    return theirs


def report_honesty(all_games: list[Game], mine: dict, variance: dict) -> None:
    """Mean reported SE^2 / MSE per cell (>= 1: the standard errors are conservative)."""
    print("\nreported standard errors: mean SE^2 / MSE per cell ('-': not estimable, fewer pairs than units)")
    head = f"{'game':22s}" + "".join(f"{b:>10d}" for b in BUDGETS)
    rows, ratios = [], []
    for g in all_games:
        row = f"{g.name:22s}"
        for b in BUDGETS:
            key = (g.name, b)
            if not np.isfinite(variance[key]) or mine[key] < EXACT_MSE:
                row += f"{'-' if not np.isfinite(variance[key]) else 'exact':>10s}"
                continue
            ratios.append(variance[key] / mine[key])
            row += f"{ratios[-1]:10.2f}"
        rows.append(row)
    print("\n".join([head, *rows]))
    ratios = np.array(ratios)
    print(f"SE^2/MSE: {(ratios >= 1).sum()}/{len(ratios)} cells >= 1, min {ratios.min():.2f}, "
          f"geometric mean {np.exp(np.log(ratios).mean()):.2f}")


def timing(seeds: int) -> str:
    """Seconds per kernel_shap call (plan, fit, diagnostics; the game is a cheap unanimity game) at TIMING."""
    lines = []
    for n, budget in TIMING:
        value = game_value(GameSpec("unanimity", n, 0))
        started = time.process_time()
        for seed in range(seeds):
            kernel_shap(value, n_features=n, budget=budget, seed=seed, batch_size=budget)
        lines.append(f"our solver at M = {n}, budget {budget}: {(time.process_time() - started) / seeds:.2f} s CPU per call")
    return "\n".join(lines)


def ablation(all_games: list[Game], seeds: int, shap_mse: dict, best_shapiq: dict, chosen: dict) -> None:
    """Summary lines of the estimator's and the sampler's variants against shap and the best shapiq method
    (the chosen solver's lines first, from the main measurement)."""
    print(f"{'chosen':50s} {summary(chosen, shap_mse, 'shap')}\n{'':50s} {summary(chosen, best_shapiq, 'best shapiq')}")
    variants = [({"SHRINKAGE": False, "INTERACTIONS": False}, {}, "plain paired regression (no shrinkage, no interactions)"),
                ({"INTERACTIONS": False}, {}, "shrinkage only"),
                ({"SHRINKAGE": False}, {}, "odd interactions only"),
                ({"NEAR_SQUARE_GRID": ()}, {}, "no strong priors for near-square designs"),
                ({"JOINT_RIDGES": ()}, {}, "interactions with the linear fit's ridge"),
                ({"HEREDITY": False}, {}, "no heredity-weighted characters"),
                ({"ODD_ORDERS": ((3,), (3, 5))}, {}, "order-5 characters also tried"),
                ({"SURROGATE": True}, {}, "plus the boosted-tree control variate"),
                ({}, {"BALANCE_USAGE": False, "HERD_MOMENTS": False}, "uniform draws (stratified Leverage SHAP)")]
    for estimator_settings, plan_settings, label in variants:
        saved = [(module, name, getattr(module, name))
                 for module, settings in ((shapley_estimator, estimator_settings), (shapley_plan, plan_settings))
                 for name in settings]
        for module, settings in ((shapley_estimator, estimator_settings), (shapley_plan, plan_settings)):
            for name, value in settings.items():
                setattr(module, name, value)
        mine, _ = measure_ours(all_games, seeds)
        print(f"{label:50s} {summary(mine, shap_mse, 'shap')}\n{'':50s} {summary(mine, best_shapiq, 'best shapiq')}",
              flush=True)
        for module, name, value in saved:
            setattr(module, name, value)


def sampler_ablation(all_games: list[Game], seeds: int, shap_mse: dict, best_shapiq: dict) -> None:
    """Summary lines of the sampler's variants (shapley.plan's constants: allocation exponent, usage balance,
    moment herding) with the chosen estimator."""
    settings = ("ALLOCATION_EXPONENT", "BALANCE_USAGE", "HERD_MOMENTS")
    chosen = tuple(getattr(shapley_plan, name) for name in settings)
    variants = [((0.5, True, True), "sqrt allocation (Neyman, equal spreads)"),
                ((1.0, True, True), "kernel-proportional allocation (as shap)"),
                ((0.0, True, False), "usage balance only (no moment herding)"),
                ((0.0, False, True), "moment herding only (no usage balance)"),
                ((1.0, False, False), "kernel allocation, uniform draws")]
    for values, label in variants:
        for name, value in zip(settings, values):
            setattr(shapley_plan, name, value)
        mine, _ = measure_ours(all_games, seeds)
        print(f"{label:50s} {summary(mine, shap_mse, 'shap')}\n{'':50s} {summary(mine, best_shapiq, 'best shapiq')}",
              flush=True)
    for name, value in zip(settings, chosen):
        setattr(shapley_plan, name, value)


def ensure_environments() -> None:
    """Exit with status 2 and the set-up command when shap cannot be imported here or .venv-shapiq is missing."""
    try:
        import shap  # noqa: F401
    except ImportError:
        print(f"shap is missing: run `{SETUP}` then `{SHAP_VENV}/bin/python {Path(__file__)}`", file=sys.stderr)
        raise SystemExit(2)
    if not (SHAPIQ_VENV / "bin" / "python").exists():
        print(f"{SHAPIQ_VENV} is missing: run `python3 {Path(__file__)} --setup`", file=sys.stderr)
        raise SystemExit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="solver seeds per game and budget")
    parser.add_argument("--ablation", action="store_true", help="also measure the estimator variants and uniform draws")
    parser.add_argument("--sampler-ablation", action="store_true", help="also measure the sampler's variants")
    parser.add_argument("--workers", type=int, default=3, help="shapiq worker processes")
    parser.add_argument("--setup", action="store_true", help=f"create {SHAP_VENV} and {SHAPIQ_VENV} and exit")
    args = parser.parse_args()
    if args.setup:
        raise SystemExit(subprocess.call(SETUP, shell=True))
    ensure_environments()
    logging.getLogger("shap").setLevel(logging.ERROR)
    started = time.time()
    all_games = games()
    compared = [g for g in all_games if g.spec.kind not in ("additive", "pairwise")]  # exact for every regression
    with tempfile.TemporaryDirectory() as folder:
        workers = start_shapiq(compared, args.seeds, args.workers, Path(folder))
        print(f"MSE against exact Shapley values, averaged over units and {args.seeds} seeds", flush=True)
        mine, variance = measure_ours(all_games, args.seeds)
        shap_mse = measure_shap(all_games, args.seeds)
        for process, _ in workers:
            if process.wait() != 0:
                raise SystemExit(f"the shapiq worker failed (exit {process.returncode}); see its messages above")
        table, seconds = shapiq_mse(compared, [json.loads(path.read_text()) for _, path in workers])
    print("\nratio MSE(ours) / MSE(shap.KernelExplainer); 'exact': both recover the game to rounding, "
          "'ours ex': only ours does")
    print(ratio_table(all_games, mine, shap_mse))
    print(summary(mine, shap_mse, "shap"))
    best_shapiq = report_shapiq(compared, mine, table, seconds)
    report_honesty(all_games, mine, variance)
    print("\n" + timing(min(args.seeds, 5)))
    if args.ablation:
        print()
        ablation(compared, args.seeds, shap_mse, best_shapiq, mine)
    if args.sampler_ablation:
        print()
        sampler_ablation(compared, args.seeds, shap_mse, best_shapiq)
    print(f"total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
