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
        position: int (n,). Round-robin rank of the row's pair (-1 for empty and full): pairs sorted by
            their rank inside their stratum, then by stratum, so any prefix or residue class of positions
            is spread evenly over the strata.
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


def pair_count(n_features: int, s: int) -> int:
    """Number of coalition pairs {z, 1 - z} with min(|z|, M - |z|) = s (1 <= s <= M/2)."""
    total = math.comb(n_features, s)
    return total // 2 if 2 * s == n_features else total


def exact_plan(n_features: int, rng: np.random.Generator) -> CoalitionPlan:
    """All 2^M coalitions, every stratum complete, pairs shuffled within their stratum by rng."""
    strata = [(s, _shuffled(_all_pairs(n_features, s), rng)) for s in range(1, n_features // 2 + 1)]
    return _assemble(n_features, strata)


def sampled_plan(n_features: int, budget: int, rng: np.random.Generator) -> CoalitionPlan:
    """At most `budget` coalitions (empty and full included) with the design in the module docstring."""
    complete, sampled = _allocate(n_features, (budget - 2) // 2)
    strata = [(s, _shuffled(_all_pairs(n_features, s), rng)) for s in complete]
    dense = {s: k for s, k in sampled.items() if 2 * k > pair_count(n_features, s)}
    strata += [(s, _dense_pairs(n_features, s, k, rng)) for s, k in dense.items()]
    sparse = _herded_pairs(n_features, {s: k for s, k in sampled.items() if s not in dense}, rng)
    return _assemble(n_features, strata + list(sparse.items()))


def _stratum_weight(n_features: int, s: int) -> float:
    """Relative number of pairs for stratum s: (s (M - s))^-ALLOCATION_EXPONENT coalitions per size, where
    a pair is one coalition of each of the sizes s and M - s, or two of size M/2."""
    per_size = (s * (n_features - s)) ** -ALLOCATION_EXPONENT
    return per_size / 2 if 2 * s == n_features else per_size


def _allocate(n_features: int, pairs: int) -> tuple[list[int], dict[int, int]]:
    """Split `pairs` coalition pairs over the strata 1..M/2.

    Returns the strata enumerated in full (outermost first, each while its share of the pairs left
    covers it and leaves a pair for the strata after it) and {stratum: pairs} for the sampled ones
    (largest-remainder rounding, capped at the stratum's size; strata given no pair are left out).
    """
    strata = list(range(1, n_features // 2 + 1))
    weights = {s: _stratum_weight(n_features, s) for s in strata}
    complete: list[int] = []
    while strata:
        s = strata[0]
        share = pairs * weights[s] / sum(weights[t] for t in strata)
        if share + 1e-9 < pair_count(n_features, s) or (pairs == pair_count(n_features, s) and len(strata) > 1):
            break
        complete.append(s)
        pairs -= pair_count(n_features, s)
        strata.pop(0)
    return complete, _round_shares(n_features, strata, weights, pairs)


def _round_shares(n_features: int, strata: list[int], weights: dict[int, float], pairs: int) -> dict[int, int]:
    """Largest-remainder rounding of `pairs` split over `strata` by `weights`, capped at pair_count."""
    if not strata or pairs <= 0:
        return {}
    total = sum(weights[s] for s in strata)
    exact = {s: pairs * weights[s] / total for s in strata}
    counts = {s: min(int(exact[s]), pair_count(n_features, s)) for s in strata}
    for s in sorted(strata, key=lambda t: int(exact[t]) - exact[t]):
        if sum(counts.values()) >= pairs:
            break
        if counts[s] < pair_count(n_features, s):
            counts[s] += 1
    return {s: k for s, k in counts.items() if k > 0}


def _all_pairs(n_features: int, s: int) -> np.ndarray:
    """Every pair of stratum s as its size-s member, bool (pair_count, M); for s = M/2 the member with unit 0."""
    units = range(1, n_features) if 2 * s == n_features else range(n_features)
    lead = [0] if 2 * s == n_features else []
    members = np.array([lead + list(c) for c in itertools.combinations(units, s - len(lead))], dtype=np.intp)
    masks = np.zeros((len(members), n_features), dtype=bool)
    masks[np.arange(len(members))[:, None], members] = True
    return masks


def _shuffled(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The rows (k, M) in a random order drawn from rng."""
    return rows[rng.permutation(len(rows))]


def _dense_pairs(n_features: int, s: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` > half of the pairs of stratum s, bool (count, M): all of them but a herded draw of the rest.

    Leaving out a balanced set keeps a balanced set, and the draw never hunts for the last unused pairs.
    """
    everything = _all_pairs(n_features, s)
    left_out = set(_row_keys(_herded_pairs(n_features, {s: pair_count(n_features, s) - count}, rng)[s]))
    kept = np.array([key not in left_out for key in _row_keys(everything)], dtype=bool)
    return _shuffled(everything[kept], rng)


def _herded_pairs(n_features: int, counts: dict[int, int], rng: np.random.Generator) -> dict[int, np.ndarray]:
    """{s: bool (counts[s], M)} distinct size-s members of pairs, drawn stratum by stratum in round-robin order.

    Each new coalition z of stratum s minimises, lexicographically,
    1. the use of its units so far in stratum s (when BALANCE_USAGE), then
    2. a^T R a with a = z - s/M, R the gap between the weighted second moments of all pairs drawn so
       far (this one included) and their expectation under uniform sampling (when HERD_MOMENTS),
    greedily unit by unit, ties broken at random. A repeat is redrawn with growing random jitter.
    """
    basis = np.eye(n_features) - 1.0 / n_features
    moments = np.zeros((n_features, n_features))
    usage = {s: np.zeros(n_features) for s in counts}
    seen: dict[int, set[bytes]] = {s: set() for s in counts}
    drawn = {s: np.zeros((k, n_features), dtype=bool) for s, k in counts.items()}
    for rank, s in sorted((r, s) for s, k in counts.items() for r in range(k)):
        weight = _pair_weight(n_features, s, counts[s])
        spread = s * (n_features - s) / (n_features * (n_features - 1))
        moments -= weight * spread * basis
        gap = moments / weight if HERD_MOMENTS else np.zeros_like(moments)
        z = _herded_coalition(gap, usage[s] if BALANCE_USAGE else np.zeros(n_features), s, seen[s], rng)
        drawn[s][rank] = z
        seen[s].add(np.packbits(z).tobytes())
        if 2 * s != n_features:
            usage[s][z] += 1.0
        centred = z - s / n_features
        moments += weight * np.outer(centred, centred)
    return drawn


def _pair_weight(n_features: int, s: int, count: int) -> float:
    """Regression weight of one pair of stratum s when `count` pairs are drawn (both members together)."""
    mass = (n_features - 1) / (s * (n_features - s))
    return mass / count if 2 * s == n_features else 2.0 * mass / count


def _herded_coalition(gap: np.ndarray, usage: np.ndarray, s: int, seen: set[bytes],
                      rng: np.random.Generator) -> np.ndarray:
    """A size-s coalition bool (M,) not in `seen` (for s = M/2 the member with unit 0), see _herded_pairs.

    gap (M, M) is R; as the centred coalitions sum to zero, a^T R a = z^T R z + const. The coalition
    is built unit by unit, each time adding the unit of least usage (M,), then least increase of
    z^T R z. Random jitter breaks ties; after a repeat it grows fourfold per attempt until the draw is
    uniform, so at most half of a stratum is ever drawn this way (see _dense_pairs) and a new
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


def _assemble(n_features: int, strata: list[tuple[int, np.ndarray]]) -> CoalitionPlan:
    """Plan from [(stratum s, size-s members bool (k, M))]: empty, full, then each member and its complement."""
    lower = np.zeros((0, n_features), dtype=bool)
    rank, stratum, complete = (np.zeros(0, dtype=int),) * 3
    if strata:
        lower = np.concatenate([rows for _, rows in strata])
        rank = np.concatenate([np.arange(len(rows)) for _, rows in strata])
        stratum = np.concatenate([np.full(len(rows), s) for s, rows in strata])
        complete = np.concatenate([np.full(len(rows), len(rows) == pair_count(n_features, s)) for s, rows in strata])
    position = np.empty(len(lower), dtype=int)
    position[np.lexsort((stratum, rank))] = np.arange(len(lower))
    masks = np.empty((2 + 2 * len(lower), n_features), dtype=bool)
    masks[0], masks[1] = False, True
    masks[2::2], masks[3::2] = lower, ~lower
    return CoalitionPlan(
        masks=masks,
        position=np.concatenate([[-1, -1], np.repeat(position, 2)]).astype(int),
        complete=np.concatenate([[True, True], np.repeat(complete, 2)]).astype(bool),
    )

