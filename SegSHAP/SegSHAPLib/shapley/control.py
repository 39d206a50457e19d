"""The control variate of a zoom: the exactly known coarser game, each refined unit entering through its measured
within-unit game (numpy only).

A zoom refines units r in R of an exactly explained parent game P over Mp units (the values of all 2^Mp parent
coalitions known) into cells, and explains the child game v over M units. The known game

    u(z) = sum_{K subset R} P(o(z) + K) prod_{r in K} g_r(z_r) prod_{r in R - K} (1 - g_r(z_r))

(o(z): the unrefined parent units kept; z_r: the pattern of r's cells kept) is P's multilinear extension in the
refined coordinates at g_r(z_r), the share of r's effect that a pattern of its cells realises. g_r is measured
on v itself: the 2^K_r coalitions that keep every other unit and pattern r's cells give

    g_r(pattern) = (v - P(N - r)) / (P(N) - P(N - r)),     g_r(none) = 0, g_r(all) = 1,

so u equals v on every parent coalition (refined units kept or removed whole) and on every measured coalition,
and differs from v only as far as the cells' effect depends on the other units by more than one factor.

The estimate is phi = Shapley(u) + the KernelSHAP estimate of Shapley(v - u) (shapley.kernelshap's
``controls``): exact at full enumeration whatever u, and with the variance of the residual game v - u instead
of v's (regression-adjusted estimation with a known control, as in the control-variate literature for Shapley
values; docs/method.md, "Zoom").

Shapley(u) is closed-form. With P's Moebius dividends m_T and g_r's d^r_S (S nonempty as g_r(none) = 0),
u = sum_T m_T prod_{j in T - R} z_j prod_{r in T & R} sum_S d^r_S [S subset z]: a sum of unanimity games on
(T - R) + union_r S_r with coefficient m_T prod_r d^r_{S_r}, each of whose members gets coefficient / size. Only
sizes matter, so the sums over the S_r are convolutions of per-size totals (``shapley``).

Coalition tables are indexed by bitmask: bit j set = unit j kept (parent units for P, a refined unit's cells in
the order given for g_r).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CONTROL_SHARE = 0.5     # the within-unit coalitions may take at most this share of the budget
FLAT_EFFECT = 1e-9      # |P(N) - P(N - r)| below this times max |P|: r's cells get g_r = share of cells kept


@dataclass(frozen=True)
class RefinedParentGame:
    """The known game u above.

    Attributes:
        parent_values: (2^Mp,) P by bitmask of parent units.
        parent_of: int (M,) the parent unit (0-based) of each child unit.
        refined: the refined parent units (0-based), in the order of ``cells`` and ``within``.
        cells: per refined unit, int (K_r,) its child units, in bit order of its ``within`` table.
        within: per refined unit, (2^K_r,) g_r by bitmask of its cells.
    """

    parent_values: np.ndarray
    parent_of: np.ndarray
    refined: tuple[int, ...]
    cells: tuple[np.ndarray, ...]
    within: tuple[np.ndarray, ...]
    _phi: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_phi", _closed_form_shapley(self))

    @property
    def n_units(self) -> int:
        return len(self.parent_of)

    def values(self, masks: np.ndarray) -> np.ndarray:
        """u (n,) of child coalitions masks bool (n, M)."""
        masks = np.asarray(masks, dtype=bool)
        unrefined = ~np.isin(self.parent_of, self.refined)
        weights = np.left_shift(1, self.parent_of[unrefined]).astype(np.int64)
        base = masks[:, unrefined].astype(np.int64) @ weights
        shares = [g[masks[:, cells].astype(np.int64) @ np.left_shift(1, np.arange(len(cells))).astype(np.int64)]
                  for cells, g in zip(self.cells, self.within)]
        total = np.zeros(len(masks))
        for corner in range(1 << len(self.refined)):
            index, weight = base.copy(), np.ones(len(masks))
            for k, r in enumerate(self.refined):
                if corner >> k & 1:
                    index |= 1 << r
                    weight = weight * shares[k]
                else:
                    weight = weight * (1.0 - shares[k])
            total += weight * self.parent_values[index]
        return total

    def shapley(self) -> np.ndarray:
        """Exact Shapley values (M,) of u."""
        return self._phi.copy()


def within_unit_coalitions(parent_of: np.ndarray, refined: tuple[int, ...]) -> np.ndarray:
    """bool (sum_r 2^K_r, M): for each refined unit r in turn, every pattern of its cells (bitmask order of
    ``cells_of``) with every other child unit kept."""
    rows = []
    for r in refined:
        cells = cells_of(parent_of, r)
        patterns = (np.arange(1 << len(cells))[:, None] >> np.arange(len(cells))) & 1
        block = np.ones((len(patterns), len(parent_of)), dtype=bool)
        block[:, cells] = patterns.astype(bool)
        rows.append(block)
    return np.vstack(rows) if rows else np.ones((0, len(parent_of)), dtype=bool)


def cells_of(parent_of: np.ndarray, r: int) -> np.ndarray:
    """int (K_r,): the child units of parent unit r, in increasing order (their bit order in g_r)."""
    return np.flatnonzero(np.asarray(parent_of) == r)


def within_coalition_count(parent_of: np.ndarray, refined: tuple[int, ...]) -> int:
    """Coalitions of ``within_unit_coalitions`` that are neither the full coalition nor a parent coalition (the
    ones a zoom evaluates on top of what the parent already has): sum_r 2^K_r - 2, counted without listing them."""
    return int(sum((1 << len(cells_of(parent_of, r))) - 2 for r in refined))


def new_within_coalitions(parent_of: np.ndarray, refined: tuple[int, ...]) -> np.ndarray:
    """bool (within_coalition_count, M): ``within_unit_coalitions`` without each block's first and last pattern
    (no cell kept: a parent coalition; every cell kept: the full coalition)."""
    masks = within_unit_coalitions(parent_of, refined)
    ends = np.cumsum([1 << len(cells_of(parent_of, r)) for r in refined])
    return np.delete(masks, np.concatenate([ends - 1, np.concatenate([[0], ends[:-1]])]), axis=0)


def refined_parent_game(parent_values: np.ndarray, parent_of: np.ndarray, refined: tuple[int, ...],
                        measured: np.ndarray) -> RefinedParentGame:
    """u from the parent's values (2^Mp,) and v measured (n,) on ``within_unit_coalitions(parent_of, refined)``."""
    parent_values = np.asarray(parent_values, dtype=float)
    parent_of = np.asarray(parent_of, dtype=np.int64)
    counts = np.bincount(parent_of, minlength=int(parent_values.size).bit_length() - 1)
    if (counts[[j for j in range(len(counts)) if j not in refined]] != 1).any():
        raise ValueError("every parent unit that is not refined must be exactly one child unit")
    full = (1 << int(parent_values.size).bit_length() - 1) - 1
    scale = float(np.abs(parent_values).max()) or 1.0
    cells, within, start = [], [], 0
    for r in refined:
        own = cells_of(parent_of, r)
        count = 1 << len(own)
        effect = parent_values[full] - parent_values[full & ~(1 << r)]
        if abs(effect) > FLAT_EFFECT * scale:
            g = (np.asarray(measured[start:start + count], dtype=float) - parent_values[full & ~(1 << r)]) / effect
        else:                                  # r does nothing with every other unit kept: no share to measure
            g = np.array([bin(p).count("1") / len(own) for p in range(count)])
        g[0], g[-1] = 0.0, 1.0                 # the parent coalitions, exactly
        cells.append(own)
        within.append(g)
        start += count
    return RefinedParentGame(parent_values, parent_of, tuple(int(r) for r in refined), tuple(cells), tuple(within))


def moebius(table: np.ndarray) -> np.ndarray:
    """Moebius dividends (2^n,) of a set function given by bitmask (2^n,): table(S) = sum_{T subset S} m_T."""
    m = np.array(table, dtype=float)
    n = int(m.size).bit_length() - 1
    for j in range(n):
        view = m.reshape(-1, 2, 1 << j)
        view[:, 1, :] -= view[:, 0, :]
    return m


def _popcounts(n: int) -> np.ndarray:
    """int (2^n,): set bits of 0 .. 2^n - 1."""
    return ((np.arange(1 << n)[:, None] >> np.arange(max(n, 1))) & 1).sum(axis=1) if n else np.zeros(1, dtype=int)


def _closed_form_shapley(game: RefinedParentGame) -> np.ndarray:
    """Shapley values (M,) of u (module docstring): unanimity games grouped by the sizes of their parts."""
    n_parent = int(game.parent_values.size).bit_length() - 1
    dividends = moebius(game.parent_values)
    bits = (np.arange(1 << n_parent)[:, None] >> np.arange(n_parent)) & 1          # (2^Mp, Mp)
    refined = list(game.refined)
    unrefined_bits = bits.copy()
    unrefined_bits[:, refined] = 0
    plain_size = unrefined_bits.sum(axis=1)                                        # |T - R|
    corner = (bits[:, refined] * (1 << np.arange(len(refined)))).sum(axis=1) if refined else np.zeros(len(bits), int)
    sizes, members = [], []                          # per refined unit: D^r[s], and D^r_i[s] for its cells (K_r, s)
    for own, g in zip(game.cells, game.within):
        d = moebius(g)
        count = _popcounts(len(own))
        sizes.append(np.bincount(count, weights=d, minlength=len(own) + 1))
        inside = (np.arange(len(d))[:, None] >> np.arange(len(own))) & 1           # (2^K, K)
        members.append(np.stack([np.bincount(count, weights=d * inside[:, i], minlength=len(own) + 1)
                                 for i in range(len(own))]))
    phi = np.zeros(game.n_units)
    parent_unit_phi = np.zeros(n_parent)           # unrefined parent units' values, spread to their child unit after
    max_plain = n_parent + 1
    for c in range(1 << len(refined)):
        inside_c = [k for k in range(len(refined)) if c >> k & 1]
        rows = corner == c
        if not rows.any():
            continue
        convolved = _convolve([sizes[k] for k in inside_c])                      # size distribution of union S_r
        for t in range(max_plain):
            sel = rows & (plain_size == t)
            if not sel.any():
                continue
            mass = dividends[sel]
            per_member = (convolved / np.maximum(t + np.arange(len(convolved)), 1)).sum()   # size 0: T empty, no members
            parent_unit_phi += (unrefined_bits[sel].T @ mass) * per_member
            total = mass.sum()
            for k in inside_c:
                rest = _convolve([sizes[q] for q in inside_c if q != k])
                for i, cell in enumerate(game.cells[k]):
                    spread = np.convolve(members[k][i], rest)
                    phi[cell] += total * (spread / np.maximum(t + np.arange(len(spread)), 1)).sum()
    unrefined = ~np.isin(game.parent_of, refined)
    phi[unrefined] += parent_unit_phi[game.parent_of[unrefined]]
    return phi


def _convolve(distributions: list[np.ndarray]) -> np.ndarray:
    """Size distribution of a disjoint union: the convolution of the parts' (the empty union: [1])."""
    out = np.array([1.0])
    for d in distributions:
        out = np.convolve(out, d)
    return out
