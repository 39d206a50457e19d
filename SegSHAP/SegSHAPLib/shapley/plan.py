"""Coalition plans for KernelSHAP: every coalition a run needs, fixed by (M, budget, seed) alone.

A plan never depends on a coalition's value, so an interrupted run can be resumed from a store of the
values evaluated so far and gives exactly the result of an uninterrupted run.

Sampling design (method "kernelshap"), each element chosen by measurement (benchmarks/bench_solver.py):

1. Paired (antithetic) coalitions: every coalition z comes with its complement 1 - z
   (Covert & Lee, "Improving KernelSHAP: Practical Shapley Value Estimation Using Linear Regression",
   AISTATS 2021). With pairs, the part of the game that is even under complementation drops out of the
   regression, so games with at most pairwise interactions are recovered exactly.
2. Coalitions are stratified by size. A pair stratum s (1 <= s <= M/2) holds the sizes s and M - s.
   Each size is worth the same in the KernelSHAP normal equations (its kernel-weighted Gram matrix is
   (I - 11^T/M)/M for every size), which is why the leverage scores are flat over sizes
   (Musco & Witter, "Provably Accurate Shapley Value Estimation via Leverage Score Sampling", ICLR 2025),
   and pairs are allocated accordingly: the same number of coalitions to every size. Measured against
   the alternatives (per-size allocation ~ (s (M - s))^-a): a = 0 (this) beat a = 1/2 (Neyman
   allocation for strata of equal spread) by 4% and a = 1 (shap's kernel-proportional allocation) by 18%
   in mean error ratio.
3. Strata are enumerated in full from the outside in (s = 1, 2, ...) while the allocation covers the
   whole stratum, as shap.KernelExplainer does; what is left is sampled.
4. Within a sampled stratum, pairs are drawn without replacement and balanced, stratum by stratum in
   round-robin order. Each new coalition first takes the units used least often so far in its stratum
   (every unit then appears equally often, which removes the error from the part of the game that
   depends on the coalition size alone: saturating, segmentation-like games), and among those it
   herds the weighted second moments of all pairs drawn so far towards their expectation (Chen, Welling
   & Smola, "Super-Samples from Kernel Herding", UAI 2010), which keeps the regression well
   conditioned even with barely more pairs than units. The draw is invariant under relabelling the
   units (ties are broken at random), so every coalition of a size has the same inclusion probability
   and equal weights within a stratum stay correct (shapley.fit).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

# Module constants rather than arguments so that benchmarks/bench_solver.py --ablation can measure the
# alternatives: the per-size allocation ~ (s (M - s))^-ALLOCATION_EXPONENT (item 2 of the docstring) and
# the two balancing rules of item 4 (both off: uniform draws without replacement).
ALLOCATION_EXPONENT = 0.0
BALANCE_USAGE = True
HERD_MOMENTS = True


@dataclass(frozen=True)
class CoalitionPlan:
    """The coalitions one KernelSHAP run evaluates, in evaluation order.

    Attributes:
        masks: bool (n, M). Row 0 is the empty coalition, row 1 the full one; rows 2 + 2k and 3 + 2k are
            a coalition and its complement (pair k).
        position: int (n,). Index of the row's pair in the sequence (-1 for empty and full); the sequence
            visits the strata in round-robin order, so any prefix or residue class of positions is spread
            evenly over the strata.
        complete: bool (n,). True where every coalition of the row's size is in the plan (also for
            empty and full).
    """

    masks: np.ndarray
    position: np.ndarray
    complete: np.ndarray

    @property
    def exact(self) -> bool:
        """True when the plan holds all 2^M coalitions (the result is then the exact Shapley value)."""
        return len(self.masks) == 1 << self.masks.shape[1]

    def prefix(self, n: int) -> "CoalitionPlan":
        """The plan of its first n rows (n even, or n = len): the plan of budget n for the same (M, seed)."""
        masks = self.masks[:n]
        sizes = masks[2:].sum(axis=1)
        strata = np.minimum(sizes, masks.shape[1] - sizes)
        counts = np.bincount(strata[0::2], minlength=masks.shape[1] // 2 + 1)
        complete = [counts[s] == pair_count(masks.shape[1], s) for s in strata]
        return CoalitionPlan(masks=masks, position=self.position[:n],
                             complete=np.concatenate([[True, True][:n], complete]).astype(bool))


def pair_count(n_features: int, s: int) -> int:
    """Number of coalition pairs {z, 1 - z} with min(|z|, M - |z|) = s (1 <= s <= M/2)."""
    total = math.comb(n_features, s)
    return total // 2 if 2 * s == n_features else total


def exact_plan(n_features: int, rng: np.random.Generator) -> CoalitionPlan:
    """All 2^M coalitions: the whole coalition sequence of (M, rng)."""
    return _plan(n_features, (1 << (n_features - 1)) - 1, rng)


def sampled_plan(n_features: int, budget: int, rng: np.random.Generator) -> CoalitionPlan:
    """The first (budget - 2) // 2 pairs of the sequence of (M, rng) after empty and full: at most `budget`
    coalitions with the design in the module docstring (all 2^M when the budget covers them)."""
    return _plan(n_features, min((budget - 2) // 2, (1 << (n_features - 1)) - 1), rng)


def _stratum_weight(n_features: int, s: int) -> float:
    """Share of the pairs for stratum s: (s (M - s))^-ALLOCATION_EXPONENT coalitions per size, where a pair
    is one coalition of each of the sizes s and M - s, or two of size M/2."""
    per_size = (s * (n_features - s)) ** -ALLOCATION_EXPONENT
    return per_size / 2 if 2 * s == n_features else per_size


def _schedule(n_features: int, pairs: int) -> np.ndarray:
    """Stratum (pairs,) of each of the sequence's first `pairs` pairs: weighted round-robin (docstring item 3)."""
    times, strata = [], []
    for s in range(1, n_features // 2 + 1):
        count = min(pair_count(n_features, s), pairs)
        times.append((np.arange(count) + 0.5) / _stratum_weight(n_features, s))
        strata.append(np.full(count, s))
    if not times:
        return np.zeros(0, dtype=int)
    times, strata = np.concatenate(times), np.concatenate(strata)
    return strata[np.lexsort((strata, times))][:pairs]


def _herding_weight(n_features: int, s: int) -> float:
    """Herding weight of one pair of stratum s (both members): the stratum's kernel mass over its share."""
    mass = (n_features - 1) / (s * (n_features - s))
    return (mass if 2 * s == n_features else 2.0 * mass) / _stratum_weight(n_features, s)


def _plan(n_features: int, pairs: int, rng: np.random.Generator) -> CoalitionPlan:
    """Empty, full, then the first `pairs` pairs of the sequence of (M, rng), each member and its complement."""
    strata = _schedule(n_features, pairs)
    lower = _sequence(n_features, strata, rng)
    counts = np.bincount(strata, minlength=n_features // 2 + 1)
    complete = np.array([counts[s] == pair_count(n_features, s) for s in strata], dtype=bool)
    masks = np.empty((2 + 2 * len(lower), n_features), dtype=bool)
    masks[0], masks[1] = False, True
    masks[2::2], masks[3::2] = lower, ~lower
    return CoalitionPlan(
        masks=masks,
        position=np.concatenate([[-1, -1], np.repeat(np.arange(len(lower)), 2)]).astype(int),
        complete=np.concatenate([[True, True], np.repeat(complete, 2)]).astype(bool),
    )


def _sequence(n_features: int, strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The size-s members bool (len(strata), M) of the pairs of the given strata, in order (docstring item 4).

    Each new coalition z of stratum s minimises, lexicographically,
    1. the use of its units so far in stratum s (when BALANCE_USAGE), then
    2. a^T R a with a = z - s/M, R the gap between the weighted second moments of all pairs drawn so
       far (this one included) and their expectation under uniform sampling (when HERD_MOMENTS),
    ties broken at random: greedily unit by unit while fewer than half of the stratum's pairs are drawn
    (a repeat is redrawn with growing random jitter), then over the stratum's unused pairs (_Pool).
    Every draw depends only on the draws before it, so a longer sequence starts with a shorter one.
    """
    basis = np.eye(n_features) - 1.0 / n_features
    moments = np.zeros((n_features, n_features))
    usage = {s: np.zeros(n_features) for s in np.unique(strata)}
    seen: dict[int, set[bytes]] = {s: set() for s in usage}
    pools: dict[int, _Pool] = {}
    drawn = np.zeros((len(strata), n_features), dtype=bool)
    for index, s in enumerate(strata.tolist()):
        weight = _herding_weight(n_features, s)
        spread = s * (n_features - s) / (n_features * (n_features - 1))
        moments -= weight * spread * basis
        balance = usage[s] if BALANCE_USAGE else np.zeros(n_features)
        if s not in pools and 2 * len(seen[s]) >= pair_count(n_features, s):
            pools[s] = _Pool(n_features, s, seen[s], moments)
        if s in pools:
            z = pools[s].draw(balance, rng)
        else:
            gap = moments / weight if HERD_MOMENTS else np.zeros_like(moments)
            z = _herded_coalition(gap, balance, s, seen[s], rng)
        drawn[index] = z
        seen[s].add(np.packbits(z).tobytes())
        if 2 * s != n_features:
            usage[s][z] += 1.0
        centred = z - s / n_features
        moments += weight * np.outer(centred, centred)
        for pool in pools.values():
            pool.add_moment(weight, centred)
    return drawn


class _Pool:
    """The unused pairs of one stratum (members bool (r, M)) with their herding criteria kept up to date.

    quadratic (r,) is z^T R z up to a constant shared by the stratum (R's expectation part is the same for
    every coalition of a size), updated by one rank-one term per draw of any stratum.
    """

    def __init__(self, n_features: int, s: int, seen: set[bytes], moments: np.ndarray):
        everything = _all_pairs(n_features, s)
        self.members = everything[[key not in seen for key in _row_keys(everything)]]
        self.alive = np.ones(len(self.members), dtype=bool)
        rows = self.members.astype(float)
        self.quadratic = ((rows @ moments) * rows).sum(axis=1) if HERD_MOMENTS else np.zeros(len(rows))

    def add_moment(self, weight: float, centred: np.ndarray) -> None:
        """Account for a drawn pair with centred member a (M,): R += weight a a^T."""
        if HERD_MOMENTS:
            self.quadratic += weight * (self.members @ centred) ** 2

    def draw(self, usage: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The unused pair of least usage (M,), then least z^T R z, ties at random; removed from the pool."""
        candidates = np.flatnonzero(self.alive)
        use = self.members[candidates] @ usage
        candidates = candidates[use == use.min()]
        quadratic = self.quadratic[candidates]
        tolerance = 1e-9 * (np.abs(quadratic).max() + 1.0)
        candidates = candidates[quadratic <= quadratic.min() + tolerance]
        chosen = candidates[rng.integers(len(candidates))]
        self.alive[chosen] = False
        return self.members[chosen].copy()


def _all_pairs(n_features: int, s: int) -> np.ndarray:
    """Every pair of stratum s as its size-s member, bool (pair_count, M); for s = M/2 the member with unit 0."""
    units = range(1, n_features) if 2 * s == n_features else range(n_features)
    lead = [0] if 2 * s == n_features else []
    members = np.array([lead + list(c) for c in itertools.combinations(units, s - len(lead))], dtype=np.intp)
    masks = np.zeros((len(members), n_features), dtype=bool)
    masks[np.arange(len(members))[:, None], members] = True
    return masks


def _herded_coalition(gap: np.ndarray, usage: np.ndarray, s: int, seen: set[bytes],
                      rng: np.random.Generator) -> np.ndarray:
    """A size-s coalition bool (M,) not in `seen` (for s = M/2 the member with unit 0), see _herded_pairs.

    gap (M, M) is R; as the centred coalitions sum to zero, a^T R a = z^T R z + const. The coalition
    is built unit by unit, each time adding the unit of least usage (M,), then least increase of
    z^T R z. Random jitter breaks ties; after a repeat it grows fourfold per attempt until the draw is
    uniform; at most half of a stratum is ever drawn this way (then _Pool takes over), so a new
    coalition comes up quickly.
    """
    n_features = len(usage)
    scale = np.abs(gap).max() + 1.0
    priority = (4.0 * s * scale) * usage
    for attempt in itertools.count():
        jitter = scale * (1e-9 if attempt == 0 else 4.0 ** attempt)
        gain = np.diag(gap) + priority + jitter * rng.random(n_features)
        z = np.zeros(n_features, dtype=bool)
        for _ in range(s):
            j = int(np.argmin(gain))
            z[j] = True
            gain += 2.0 * gap[j]
            gain[j] = np.inf
        if 2 * s == n_features and not z[0]:
            z = ~z
        if np.packbits(z).tobytes() not in seen:
            return z


def _row_keys(rows: np.ndarray) -> list[bytes]:
    """Packed-bit keys of bool rows (k, M)."""
    return [r.tobytes() for r in np.packbits(rows, axis=1)]
