"""A cheap surrogate of the game for the control variate: boosted regression trees on the coalitions, numpy only.

A regression tree on binary inputs z (M,) is a sum over its leaves of value * [R subset of z, L disjoint
from z], R the units its path requires kept and L the ones it requires removed. The Shapley value of one
such leaf game is closed-form: only orders of R + L matter, and a unit a of R adds the value exactly
when it comes after the rest of R and before all of L, a unit b of L removes it exactly when it comes
after all of R and before the rest of L:

    phi_a = value (r - 1)! l! / (r + l)!,     phi_b = -value r! (l - 1)! / (r + l)!     (r = |R|, l = |L|)

so the surrogate's Shapley values are exact and cost nothing (as TreeSHAP for the interventional game,
Lundberg et al., Nature Machine Intelligence 2020). The trees are fitted by least-squares boosting
(Friedman, Annals of Statistics 2001): ROUNDS trees of depth DEPTH, each on the residual of the
previous ones, shrunk by RATE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ROUNDS = 60
DEPTH = 3
RATE = 0.2
MIN_LEAF = 4


@dataclass(frozen=True)
class Leaf:
    """One leaf: value added when every unit of `kept` is in the coalition and none of `removed` is."""

    kept: tuple[int, ...]
    removed: tuple[int, ...]
    value: float


@dataclass(frozen=True)
class Surrogate:
    """Boosted trees as a flat list of leaves; predict(Z bool (n, M)) -> (n,), shapley() -> (M,)."""

    leaves: list[Leaf]
    n_features: int

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """Surrogate values (n,) of the coalitions masks bool (n, M)."""
        out = np.zeros(len(masks))
        for leaf in self.leaves:
            inside = masks[:, list(leaf.kept)].all(axis=1) & ~masks[:, list(leaf.removed)].any(axis=1)
            out += leaf.value * inside
        return out

    def shapley(self) -> np.ndarray:
        """Exact Shapley values (M,) of the game z -> predict(z) (leaf formula in the module docstring)."""
        phi = np.zeros(self.n_features)
        for leaf in self.leaves:
            r, l = len(leaf.kept), len(leaf.removed)
            if r + l == 0:
                continue
            total = math.factorial(r + l)
            if r:
                phi[list(leaf.kept)] += leaf.value * math.factorial(r - 1) * math.factorial(l) / total
            if l:
                phi[list(leaf.removed)] -= leaf.value * math.factorial(r) * math.factorial(l - 1) / total
        return phi


def boosted_trees(masks: np.ndarray, values: np.ndarray) -> Surrogate:
    """Fit ROUNDS depth-DEPTH regression trees to values (n,) of coalitions masks bool (n, M), unweighted."""
    residual = values - values.mean()
    leaves = [Leaf((), (), float(values.mean()))]
    columns = masks.astype(float)
    for _ in range(ROUNDS):
        tree = _grow(columns, residual, np.ones(len(masks), dtype=bool), (), (), DEPTH)
        for leaf in tree:
            scaled = Leaf(leaf.kept, leaf.removed, RATE * leaf.value)
            leaves.append(scaled)
            inside = masks[:, list(leaf.kept)].all(axis=1) & ~masks[:, list(leaf.removed)].any(axis=1)
            residual = residual - scaled.value * inside
    return Surrogate(leaves, masks.shape[1])


def _grow(columns: np.ndarray, residual: np.ndarray, rows: np.ndarray, kept: tuple, removed: tuple,
          depth: int) -> list[Leaf]:
    """Leaves of the least-squares tree on the rows (bool (n,)) below the path (kept, removed)."""
    target = residual[rows]
    count = len(target)
    if depth == 0 or count < 2 * MIN_LEAF:
        return [Leaf(kept, removed, float(target.mean()) if count else 0.0)]
    design = columns[rows]
    ones = design.sum(axis=0)
    sums = target @ design
    total = target.sum()
    valid = (ones >= MIN_LEAF) & (count - ones >= MIN_LEAF)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = sums ** 2 / ones + (total - sums) ** 2 / (count - ones)
    gain = np.where(valid, gain, -np.inf)
    j = int(np.argmax(gain))
    if not np.isfinite(gain[j]) or gain[j] <= total ** 2 / count * (1 + 1e-12):
        return [Leaf(kept, removed, float(target.mean()))]
    split = columns[:, j] > 0.5
    return (_grow(columns, residual, rows & split, kept + (j,), removed, depth - 1)
            + _grow(columns, residual, rows & ~split, kept, removed + (j,), depth - 1))
