"""Coalition games with exact Shapley values for benchmarks/bench_solver.py, pure numpy.

Imported both by bench_solver.py (in .venv-shap, with SegSHAP's solver and shap) and by its shapiq worker
(in .venv-shapiq, Python >= 3.12): a game is rebuilt from its spec (kind, M, generator seed) identically
in both environments, so every solver sees the same game. Exact values (`exact_phi`) are computed only in
the main process.

A game's value takes Z bool (n, M) (True = unit kept) and returns (n,) floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

Value = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GameSpec:
    """What rebuilds a game: its kind (a key of KINDS), number of units M and generator seed."""

    kind: str
    n: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.kind} M={self.n}"


# --- the games: (value, exact phi) from a generator -------------------------------------------------

def additive(n: int, rng: np.random.Generator) -> tuple[Value, Callable[[], np.ndarray]]:
    """v(z) = a . z."""
    a = rng.normal(size=n)
    return (lambda Z: Z @ a), (lambda: a)


def pairwise(n: int, rng: np.random.Generator) -> tuple[Value, Callable[[], np.ndarray]]:
    """v(z) = a . z + sum_{i<j} B_ij z_i z_j; phi = a + (row sums of B) / 2."""
    a, b = rng.normal(size=n), np.triu(rng.normal(size=(n, n)) / n, 1)
    b = b + b.T
    return (lambda Z: Z @ a + 0.5 * ((Z @ b) * Z).sum(axis=1)), (lambda: a + b.sum(axis=1) / 2)


def unanimity(n: int, rng: np.random.Generator, terms: int = 40) -> tuple[Value, Callable[[], np.ndarray]]:
    """a . z + sum_T c_T prod_{j in T} z_j over 40 sets T of orders 3..6; phi_j = a_j + sum_{T ni j} c_T / |T|."""
    a = rng.normal(size=n) * 0.1
    sets = [rng.choice(n, size=rng.integers(3, 7), replace=False) for _ in range(terms)]
    coef = rng.normal(size=terms)

    def phi() -> np.ndarray:
        out = a.copy()
        for members, c in zip(sets, coef):
            out[members] += c / len(members)
        return out

    return (lambda Z: Z @ a + sum(c * Z[:, members].all(axis=1) for members, c in zip(sets, coef))), phi


def majority(n: int, rng: np.random.Generator) -> tuple[Value, Callable[[], np.ndarray]]:
    """Weighted majority (threshold) game, integer weights 1..9, quota just over half the total."""
    weights = rng.integers(1, 10, size=n)
    quota = int(weights.sum()) // 2 + 1
    step = lambda total: (total >= quota).astype(float)  # noqa: E731
    return (lambda Z: step(Z @ weights)), (lambda: weighted_sum_shapley(weights, step))


def soft_threshold(n: int, rng: np.random.Generator) -> tuple[Value, Callable[[], np.ndarray]]:
    """A segmentation-like saturating score: sigmoid((w . z - half of sum(w)) / 3), integer weights 1..9."""
    weights = rng.integers(1, 10, size=n)
    centre = weights.sum() / 2.0
    squash = lambda total: 1.0 / (1.0 + np.exp(-(total - centre) / 3.0))  # noqa: E731
    return (lambda Z: squash(Z @ weights)), (lambda: weighted_sum_shapley(weights, squash))


def sigmoid(n: int, rng: np.random.Generator) -> tuple[Value, Callable[[], np.ndarray]]:
    """sigmoid(8 (a . z + z^T B z / 4 + 3 (number of complete triples)) / sum(a) - 4); exact by enumeration.

    a > 0 gamma(2), B upper triangular N(0, 1), n random triples.
    """
    a = rng.gamma(2.0, size=n)
    b = np.triu(rng.normal(size=(n, n)), 1)
    triples = [rng.choice(n, size=3, replace=False) for _ in range(n)]

    def value(Z: np.ndarray) -> np.ndarray:
        logit = Z @ a + ((Z @ b) * Z).sum(axis=1) / 4 + sum(3 * Z[:, t].all(axis=1) for t in triples)
        return 1.0 / (1.0 + np.exp(-(8.0 * logit / a.sum() - 4.0)))

    return value, (lambda: enumerated_shapley(value, n))


def dice(n: int, rng: np.random.Generator, voxels: int = 400) -> tuple[Value, Callable[[], np.ndarray]]:
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

    return value, (lambda: enumerated_shapley(value, n))


def soft_recall(n: int, rng: np.random.Generator, voxels: int = 600, reach: int = 6) -> tuple[Value, Callable[[], np.ndarray]]:
    """Segmentation-like: soft recall of the full-coalition foreground over voxels with local support.

    Units lie on a line (like neighbouring supervoxels); voxel v sees the `reach` units of a window
    starting at a random unit and is foreground with probability sigmoid(4 (e_v . z - t_v)), e_v >= 0
    gamma evidence, t_v half of the window's evidence. v(z) = sum_v r_v p_v(z) / sum_v r_v with r_v the
    full coalition's p_v: a sum of saturating voxel games, so phi is exact by enumerating the 2^reach
    coalitions of each window (units outside a voxel's window are null players for it).
    """
    start = rng.integers(0, n - reach + 1, size=voxels)
    window = start[:, None] + np.arange(reach)
    evidence = np.zeros((voxels, n))
    np.put_along_axis(evidence, window, rng.gamma(1.0, size=(voxels, reach)), axis=1)
    threshold = evidence.sum(axis=1) / 2.0
    squash = lambda total: 1.0 / (1.0 + np.exp(-4.0 * (total - threshold)))  # noqa: E731 (n, voxels)
    reference = squash(evidence.sum(axis=1))

    def value(Z: np.ndarray) -> np.ndarray:
        return squash(Z.astype(float) @ evidence.T) @ reference / reference.sum()

    def phi() -> np.ndarray:
        local = ((np.arange(1 << reach)[:, None] >> np.arange(reach)) & 1).astype(bool)  # (2^reach, reach)
        out = np.zeros(n)
        for v in range(voxels):
            local_evidence = evidence[v, window[v]]
            voxel = lambda Z, e=local_evidence, t=threshold[v]: 1.0 / (1.0 + np.exp(-4.0 * (Z @ e - t)))  # noqa: E731
            out[window[v]] += reference[v] * enumerated_shapley(voxel, reach, local)
        return out / reference.sum()

    return value, phi


KINDS: dict[str, Callable] = {
    "additive": additive, "pairwise": pairwise, "unanimity": unanimity, "majority": majority,
    "soft-threshold": soft_threshold, "sigmoid": sigmoid, "dice": dice, "soft-recall": soft_recall,
}

# The benchmark's games: (kind, M), each from its own generator seed 100 + its index.
BENCHMARK = [("additive", 24), ("pairwise", 24), ("unanimity", 20), ("unanimity", 32), ("majority", 24),
             ("majority", 32), ("sigmoid", 12), ("sigmoid", 16), ("dice", 12), ("dice", 16),
             ("soft-threshold", 32), ("soft-recall", 24), ("soft-recall", 32)]


def benchmark_specs() -> list[GameSpec]:
    """The benchmark games' specs."""
    return [GameSpec(kind, n, 100 + k) for k, (kind, n) in enumerate(BENCHMARK)]


def game_value(spec: GameSpec) -> Value:
    """The value function of the game `spec`."""
    return KINDS[spec.kind](spec.n, np.random.default_rng(spec.seed))[0]


def exact_phi(spec: GameSpec) -> np.ndarray:
    """Exact Shapley values (M,) of the game `spec` (enumeration up to M = 16, closed forms otherwise)."""
    return KINDS[spec.kind](spec.n, np.random.default_rng(spec.seed))[1]()


# --- exact Shapley values -------------------------------------------------------------------------

def enumerated_shapley(value: Value, n: int, masks: np.ndarray | None = None) -> np.ndarray:
    """Exact Shapley values (n,) from all 2^n coalitions: phi_j = sum_S w(|S|) (v(S + j) - v(S)), n <= 16.

    masks: the 2^n coalitions bool (2^n, n) in binary order (row c has unit j iff bit j of c), if at hand.
    """
    codes = np.arange(1 << n)
    masks = ((codes[:, None] >> np.arange(n)) & 1).astype(bool) if masks is None else masks
    values = value(masks)
    sizes = masks.sum(axis=1)
    weight = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)])
    phi = np.empty(n)
    for j in range(n):
        without = codes[~masks[:, j]]
        phi[j] = weight[sizes[without]] @ (values[without | (1 << j)] - values[without])
    return phi


def weighted_sum_shapley(weights: np.ndarray, score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Exact Shapley values (n,) of v(S) = score(sum_{j in S} weights_j), integer weights >= 1.

    phi_j = sum_k k!(n-k-1)!/n! sum_W #{S not containing j : |S| = k, w(S) = W} (score(W + w_j) - score(W)),
    with the counts by size and weight from a dynamic programme over the other players.
    """
    n, top = len(weights), int(weights.sum())
    levels = score(np.arange(top + 1).astype(float))
    size_weight = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)])
    phi = np.zeros(n)
    for j in range(n):
        counts = np.zeros((n, top + 1))
        counts[0, 0] = 1.0
        for w in np.delete(weights, j):
            counts[1:, w:] += counts[:-1, :top + 1 - w].copy()
        gain = levels[np.minimum(np.arange(top + 1) + weights[j], top)] - levels
        phi[j] = size_weight @ (counts @ gain)
    return phi
