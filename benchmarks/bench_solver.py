"""Benchmark: SegSHAP's KernelSHAP solver against shap.KernelExplainer on games with known Shapley values.

shap must never be installed into .venv (shap pulls in an unrelated PyPI package named `slicer` that
overwrites slicer-core's `slicer`), so the comparison runs in its own environment. From the repo root:

    python3 -m venv .venv-shap
    .venv-shap/bin/pip install numpy scipy shap
    .venv-shap/bin/pip install --no-deps -e .
    .venv-shap/bin/python benchmarks/bench_solver.py                 # the table (about 3 min, 2 cores)
    .venv-shap/bin/python benchmarks/bench_solver.py --ablation      # also the sampler variants

`python3 benchmarks/bench_solver.py --setup` runs the three set-up commands. Without shap the script
prints the one line to run and exits with status 2.

For every game, budget and seed both solvers get the same budget: ours `budget` distinct coalitions
(empty and full included), shap `nsamples=budget` (shap evaluates the empty and full coalition on top,
so it gets 2 more), `l1_reg=False` (no feature selection), one all-zeros background row and the model
game(X > 0.5) explained at the all-ones row. The score is the MSE against the exact Shapley values,
averaged over units and seeds; the ratio is ours / shap, below 1 means ours is more accurate.
Cells where a solver recovers the Shapley values to rounding are marked and left out of the average
ratio: additive games (both exact) and pairwise games (ours exact thanks to complete pairing; shap
leaves the middle size unpaired).
"""

from __future__ import annotations

import argparse
import logging
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHAP_VENV = REPO / ".venv-shap"
sys.path.insert(0, str(REPO / "SegSHAP"))

from SegSHAPLib.shapley import plan as shapley_plan  # noqa: E402
from SegSHAPLib.shapley.kernelshap import kernel_shap  # noqa: E402

BUDGETS = (64, 128, 256, 512, 1024, 2048)
EXACT_MSE = 1e-20
SETUP = (f"python3 -m venv {SHAP_VENV} && {SHAP_VENV}/bin/pip install numpy scipy shap "
         f"&& {SHAP_VENV}/bin/pip install --no-deps -e {REPO}")


@dataclass(frozen=True)
class Game:
    """A coalition game: value(Z bool (n, M)) -> (n,), with its exact Shapley values phi (M,)."""

    name: str
    value: Callable[[np.ndarray], np.ndarray]
    phi: np.ndarray


# --- exact Shapley values -------------------------------------------------------------------------

def enumerated_shapley(value: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """Exact Shapley values (n,) from all 2^n coalitions: phi_j = sum_S w(|S|) (v(S + j) - v(S)), n <= 16."""
    codes = np.arange(1 << n)
    masks = ((codes[:, None] >> np.arange(n)) & 1).astype(bool)
    values = value(masks)
    sizes = masks.sum(axis=1)
    weight = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)])
    phi = np.empty(n)
    for j in range(n):
        without = codes[~masks[:, j]]
        phi[j] = weight[sizes[without]] @ (values[without | (1 << j)] - values[without])
    return phi


def weighted_majority_shapley(weights: np.ndarray, quota: int) -> np.ndarray:
    """Exact Shapley values (n,) of v(S) = 1[sum_{j in S} weights_j >= quota], integer weights.

    phi_j = sum_k k!(n-k-1)!/n! #{S not containing j : |S| = k, quota - w_j <= w(S) < quota}, with the
    counts by size and weight from a dynamic programme over the other players.
    """
    n, top = len(weights), int(weights.sum())
    phi = np.zeros(n)
    for j in range(n):
        counts = np.zeros((n, top + 1))
        counts[0, 0] = 1.0
        for w in np.delete(weights, j):
            counts[1:, w:] += counts[:-1, :top + 1 - w].copy()
        swing = counts[:, max(quota - weights[j], 0):quota].sum(axis=1)
        phi[j] = sum(swing[k] * math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n))
    return phi


# --- games ----------------------------------------------------------------------------------------

def additive(n: int, rng: np.random.Generator) -> Game:
    """v(z) = a . z."""
    a = rng.normal(size=n)
    return Game(f"additive M={n}", lambda Z: Z @ a, a)


def pairwise(n: int, rng: np.random.Generator) -> Game:
    """v(z) = a . z + sum_{i<j} B_ij z_i z_j; phi = a + (row sums of B) / 2."""
    a, b = rng.normal(size=n), np.triu(rng.normal(size=(n, n)) / n, 1)
    b = b + b.T
    return Game(f"pairwise M={n}", lambda Z: Z @ a + 0.5 * ((Z @ b) * Z).sum(axis=1), a + b.sum(axis=1) / 2)


def unanimity(n: int, rng: np.random.Generator, terms: int = 40) -> Game:
    """Sum of unanimity games of orders 3..6, v(z) = a . z + sum_T c_T prod_{j in T} z_j; phi_j = a_j + sum_{T ni j} c_T/|T|."""
    a = rng.normal(size=n) * 0.1
    sets = [rng.choice(n, size=rng.integers(3, 7), replace=False) for _ in range(terms)]
    coef = rng.normal(size=terms)
    phi = a.copy()
    for members, c in zip(sets, coef):
        phi[members] += c / len(members)
    return Game(f"unanimity o3-6 M={n}",
                lambda Z: Z @ a + sum(c * Z[:, members].all(axis=1) for members, c in zip(sets, coef)), phi)


def majority(n: int, rng: np.random.Generator) -> Game:
    """Weighted majority (threshold) game, integer weights 1..9, quota just over half the total."""
    weights = rng.integers(1, 10, size=n)
    quota = int(weights.sum()) // 2 + 1
    return Game(f"weighted majority M={n}", lambda Z: (Z @ weights >= quota).astype(float),
                weighted_majority_shapley(weights, quota))


def sigmoid(n: int, rng: np.random.Generator) -> Game:
    """Saturating logit: v(z) = sigmoid(8 (a . z + z^T B z / 4 + 3 (number of complete triples)) / sum(a) - 4).

    Exact by enumeration; a > 0, B upper triangular N(0, 1), n random triples.
    """
    a = rng.gamma(2.0, size=n)
    b = np.triu(rng.normal(size=(n, n)), 1)
    triples = [rng.choice(n, size=3, replace=False) for _ in range(n)]

    def value(Z: np.ndarray) -> np.ndarray:
        logit = Z @ a + ((Z @ b) * Z).sum(axis=1) / 4 + sum(3 * Z[:, t].all(axis=1) for t in triples)
        return 1.0 / (1.0 + np.exp(-(8.0 * logit / a.sum() - 4.0)))

    return Game(f"sigmoid M={n}", value, enumerated_shapley(value, n))


def dice(n: int, rng: np.random.Generator, voxels: int = 400) -> Game:
    """Dice of a thresholded evidence map against the full-coalition map, exact by enumeration.

    Each unit adds nonnegative evidence to a patch of voxels; a voxel is foreground when its evidence
    exceeds a threshold, so units interact through the threshold and the Dice ratio.
    """
    evidence = rng.gamma(1.0, size=(n, voxels)) * (rng.random((n, voxels)) < 0.3)
    threshold = np.quantile(evidence.sum(axis=0), 0.5)
    reference = evidence.sum(axis=0) > threshold

    def value(Z: np.ndarray) -> np.ndarray:
        out = np.empty(len(Z))
        for start in range(0, len(Z), 4096):
            pred = Z[start:start + 4096].astype(float) @ evidence > threshold
            out[start:start + 4096] = 2.0 * (pred & reference).sum(axis=1) / (pred.sum(axis=1) + reference.sum())
        return out

    return Game(f"dice M={n}", value, enumerated_shapley(value, n))


def games() -> list[Game]:
    """The benchmark games, each from its own fixed generator."""
    makers = [(additive, 24), (pairwise, 24), (unanimity, 20), (unanimity, 24), (majority, 20), (majority, 24),
              (sigmoid, 12), (sigmoid, 16), (dice, 12), (dice, 16)]
    return [make(n, np.random.default_rng(100 + k)) for k, (make, n) in enumerate(makers)]


# --- solvers --------------------------------------------------------------------------------------

def ours(game: Game, budget: int, seed: int) -> np.ndarray:
    """phi (M,) from SegSHAP's kernel_shap."""
    return kernel_shap(game.value, n_features=len(game.phi), budget=budget, seed=seed, batch_size=budget).phi


def shap_kernel(game: Game, budget: int, seed: int) -> np.ndarray:
    """phi (M,) from shap.KernelExplainer: no L1, nsamples=budget, all-zeros background, all-ones instance."""
    import shap

    n = len(game.phi)
    np.random.seed(seed)
    explainer = shap.KernelExplainer(lambda X: game.value(X > 0.5), np.zeros((1, n)))
    return np.asarray(explainer.shap_values(np.ones((1, n)), nsamples=budget, l1_reg=False, silent=True)).reshape(n)


def mse(solver: Callable[[Game, int, int], np.ndarray], game: Game, budget: int, seeds: int) -> float:
    """MSE of the solver's phi against the exact one, averaged over units and seeds 0..seeds-1."""
    return float(np.mean([np.mean((solver(game, budget, seed) - game.phi) ** 2) for seed in range(seeds)]))


# --- report ---------------------------------------------------------------------------------------

def measure(all_games: list[Game], solver: Callable[[Game, int, int], np.ndarray], seeds: int) -> dict:
    """{(game name, budget): MSE} of one solver over every game and budget."""
    return {(game.name, budget): mse(solver, game, budget, seeds) for game in all_games for budget in BUDGETS}


def ratios(mine: dict, theirs: dict) -> dict:
    """{(game, budget): ours/shap} for the cells where neither solver is exact (an MSE of 0 up to rounding)."""
    return {key: mine[key] / theirs[key] for key in mine if min(mine[key], theirs[key]) >= EXACT_MSE}


def cell(mine: float, theirs: float) -> str:
    """One table cell: the ratio, or which solver recovers the game to rounding."""
    if max(mine, theirs) < EXACT_MSE:
        return "exact"
    if mine < EXACT_MSE:
        return "ours ex"
    return "shap ex" if theirs < EXACT_MSE else f"{mine / theirs:.3f}"


def table(all_games: list[Game], mine: dict, theirs: dict) -> str:
    """Ratio table (games x budgets) followed by the MSEs behind it."""
    head = f"{'game':24s}" + "".join(f"{b:>8d}" for b in BUDGETS)
    rows = [f"{g.name:24s}" + "".join(f"{cell(mine[(g.name, b)], theirs[(g.name, b)]):>8s}" for b in BUDGETS)
            for g in all_games]
    detail = [f"{g.name:24s} {b:5d}  {mine[(g.name, b)]:9.3e}  {theirs[(g.name, b)]:9.3e}"
              for g in all_games for b in BUDGETS]
    legend = ("ratio MSE(ours) / MSE(shap); 'exact': both recover the game to rounding (MSE < 1e-20), "
              "'ours ex': only ours does")
    return "\n".join([legend, head, *rows, "",
                      f"{'game':24s} {'budget':>5s}  {'MSE ours':>9s}  {'MSE shap':>9s}", *detail])


def summary(ratio: dict) -> str:
    """One line: average, geometric mean and worst of the ratios, and how many cells ours wins."""
    values = np.array(list(ratio.values()))
    return (f"average ratio ours/shap {values.mean():.3f}, geometric mean {np.exp(np.log(values).mean()):.3f}, "
            f"worst {values.max():.3f}, ours better in {(values < 1).sum()}/{len(values)} cells")


def ablation(all_games: list[Game], seeds: int, theirs: dict) -> None:
    """Summary line of each sampler variant: allocation exponent and the two balancing rules."""
    settings = ("ALLOCATION_EXPONENT", "BALANCE_USAGE", "HERD_MOMENTS")
    chosen = tuple(getattr(shapley_plan, name) for name in settings)
    variants = [((0.5, True, True), "sqrt allocation (Neyman, equal spreads)"),
                ((1.0, True, True), "kernel-proportional allocation (as shap)"),
                ((0.0, True, False), "usage balance only (no moment herding)"),
                ((0.0, False, True), "moment herding only (no usage balance)"),
                ((0.0, False, False), "uniform draws (stratified Leverage SHAP)"),
                ((1.0, False, False), "kernel allocation, uniform draws"),
                (chosen, "chosen (flat allocation, both rules)")]
    for values, label in variants:
        for name, value in zip(settings, values):
            setattr(shapley_plan, name, value)
        print(f"{label:42s} {summary(ratios(measure(all_games, ours, seeds), theirs))}", flush=True)
    for name, value in zip(settings, chosen):
        setattr(shapley_plan, name, value)


def ensure_shap() -> None:
    """Exit with status 2 and the set-up command when shap cannot be imported here."""
    try:
        import shap  # noqa: F401
    except ImportError:
        print(f"shap is missing: run `{SETUP}` then `{SHAP_VENV}/bin/python {Path(__file__)}`", file=sys.stderr)
        raise SystemExit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="solver seeds per game and budget")
    parser.add_argument("--ablation", action="store_true", help="also measure the sampler variants")
    parser.add_argument("--setup", action="store_true", help=f"create {SHAP_VENV} with shap and exit")
    args = parser.parse_args()
    if args.setup:
        raise SystemExit(subprocess.call(SETUP, shell=True))
    ensure_shap()
    logging.getLogger("shap").setLevel(logging.ERROR)
    started = time.time()
    all_games = games()
    print(f"MSE against exact Shapley values, averaged over units and {args.seeds} seeds", flush=True)
    theirs = measure(all_games, shap_kernel, args.seeds)
    mine = measure(all_games, ours, args.seeds)
    print(table(all_games, mine, theirs))
    print(summary(ratios(mine, theirs)))
    if args.ablation:
        ablation(all_games, args.seeds, theirs)
    print(f"total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
