"""The sampled-mode estimator: the paired regression with data-chosen shrinkage and odd interaction terms.

**Paired reduction.** With x = 2z - 1 in {-1, 1}^M, a game splits into an odd part
v_odd(z) = (v(z) - v(1 - z)) / 2 and an even part; the even part has Shapley value 0 (its marginal
contributions cancel between S and N - S - j), so phi is the Shapley value of v_odd, which the plan's
complementary pairs observe exactly: y_k = (v(z_k) - v(1 - z_k)) / 2 for pair k. The constrained KernelSHAP
regression of shapley.fit is the weighted least-squares fit of y on the odd linear model x . phi / 2 with
sum(phi) = Delta (its row residuals r, r' of a pair satisfy r - r' = 2 (y - x . phi / 2)), so with
phi = Delta / M + Q beta (Q the Helmert basis of shapley.fit) it is the fit of
t = y - Delta / (2M) sum(x) on the features L = x Q / 2 with the pair weights of shapley.fit.size_weights.

**Shrinkage towards the equal split** (near-square designs, pairs barely above M). beta is fitted by ridge
regression, penalty lam ||beta||^2, i.e. shrunk towards beta = 0, the efficiency-consistent equal split
phi = Delta / M. lam is chosen by exact leave-one-pair-out cross-validation over a grid that includes 0
(the closed form of a linear smoother: loo_k = e_k / (1 - h_kk)); it is chosen because it needs no
noise model (the game is deterministic, the "noise" is the part of v_odd the model cannot represent) and
it measures the one thing that matters, prediction of unseen pairs. The data term grows with the
number of pairs while the candidates are fixed multiples of the mean diagonal of one pair's Gram
matrix, so the shrinkage vanishes as pairs grow; an interpolating fit (pairs <= M - 1) has
h_kk = 1 and infinite leave-one-out error, so lam = 0 is never chosen there. Near-square designs
(fewer than NEAR_SQUARE pairs per unit) may also take the priors of NEAR_SQUARE_GRID (30 and 100
pairs' worth): with barely more pairs than units the fit has nothing left to average, and on
threshold-like games the equal split plus a small step along the data is far closer than the fit
(benchmarks/README.md); from NEAR_SQUARE * M pairs on those priors are not offered, as they shrank too
much there.

**Odd interactions** (high budgets; PolySHAP, Fumagalli et al. 2026, and OddSHAP: paired sampling sees only
the odd part, so only odd terms can help). Order-3 characters chi_T(x) = x_a x_b x_c, centred as
chi_T(x) - sum(x) / M so that efficiency keeps holding (the surrogate's value at the full coalition stays
Delta / 2), join the linear features with their own ridge (one of TRIPLE_RIDGES). The Shapley value of
chi_T is 2/3 for each of its members, so phi = Delta / M + Q beta + sum_T c_T (2/3 1_T - 2/M 1). Because
the linear part is the regression of the residual game v - h, h = sum_T c_T chi_T, phi = Shapley(h)
exactly + the regression estimate of Shapley(v - h), the estimate stays exact at full enumeration
whatever the triples. All C(M, 3) of them are tried when they are at most TRIPLE_FRACTION per pair
(more triples than pairs is fine: their ridge keeps the fit determined) and at most MAX_TRIPLES (cost);
the error on held-out pairs (every HOLDOUT_EVERY-th sampled pair, fitted on the others) chooses between
no triples and each of the triples' ridges. Screened subsets (the triples whose characters correlate most with
the linear residual, as OddSHAP screens with a tree proxy) were measured and dropped: they cut the
held-out error on every benchmark game yet made phi worse on most (benchmarks/README.md).

**Tree surrogate as a control variate** (SURROGATE, off by default, measured in the ablation): boosted
regression trees fitted to the evaluated coalitions (shapley.surrogate), whose Shapley values are
exact; phi = Shapley(trees) + this estimator on the residual game v - trees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from SegSHAPLib.shapley.fit import RANK_TOLERANCE, helmert_basis, size_weights
from SegSHAPLib.shapley.plan import pair_count
from SegSHAPLib.shapley.surrogate import Surrogate, boosted_trees

# Module constants so that benchmarks/bench_solver.py --ablation can switch the pieces off.
SHRINKAGE = True                  # ridge towards the equal split, lam by leave-one-out
TRIPLES = True                    # odd order-3 terms when they all fit and held-out error drops
SURROGATE = False                 # boosted-tree control variate always (measured, not used)
TRIPLE_FRACTION = 2.5             # all C(M, 3) triples are tried when they are at most this many per pair...
MAX_TRIPLES = 1140                # ...and at most C(20, 3) (the fit's cost grows as their number cubed)
TRIPLE_RIDGES = (1e-2, 1e-1, 1.0)  # the triples' ridges tried, relative to their mean Gram diagonal
HOLDOUT_EVERY = 5                 # every 5th sampled pair held out to decide on the triples
RIDGE_GRID = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)  # the linear ridge, as a prior worth that many pairs
NEAR_SQUARE = 2.0                 # designs with fewer pairs than this many per unit are near-square...
NEAR_SQUARE_GRID = (30.0, 100.0)  # ...and may also be shrunk this strongly
LEVERAGE_FLOOR = 1e-3             # 1 - h_kk never taken below this in left-out residuals
JITTER = 1e-9                     # relative diagonal jitter of the leave-one-out eigen-decomposition
EXACT_FIT = 1e-20                 # relative residual below which the linear model is taken as exact


@dataclass(frozen=True)
class Settings:
    """The estimator's data-chosen settings, reused when diagnostics refit on subsets of the pairs.

    Attributes:
        linear_ridge: the ridge on beta as a prior worth that many pairs (one pair's mean contribution to
            the diagonal of the linear Gram matrix times this).
        triples: int (K, 3) unit triples of the odd interaction terms (K = 0: linear only).
        triple_ridge: the triples' ridge, relative to the mean diagonal of their Gram matrix.
        surrogate: whether a boosted-tree surrogate is the control variate (SURROGATE).
    """

    linear_ridge: float
    triples: np.ndarray
    triple_ridge: float
    surrogate: bool = False


LINEAR = Settings(linear_ridge=0.0, triples=np.zeros((0, 3), dtype=int), triple_ridge=0.0)  # plain KernelSHAP


@dataclass(frozen=True)
class Estimate:
    """phi (M,) and the pieces the diagnostics need.

    Attributes:
        phi: (M,) attributions, sum(phi) = Delta.
        odd_linear: (M,) and triple_coefficients (K,): the fitted odd part of the game,
            v_odd(x) ~ x . odd_linear + sum_T c_T chi_T(x) (x = 2z - 1, T = settings.triples).
        row_residual: (n,) residual of each interior row, +e_k and -e_k for the two members of pair k with
            e_k the paired residual (the only part of the rows' residuals the standard errors use).
        parameters: effective number of fitted parameters (trace of the hat matrix).
        settings: the chosen Settings.
        trees: the surrogate (shapley.surrogate.Surrogate) when settings.surrogate, else None; the rest of
            the fields then describe the residual game v - trees.
    """

    phi: np.ndarray
    odd_linear: np.ndarray
    triple_coefficients: np.ndarray
    row_residual: np.ndarray
    parameters: float
    settings: Settings
    trees: Surrogate | None = None

    def predict(self, masks: np.ndarray, delta: float) -> np.ndarray:
        """Gains v(z) - v(empty) (n,) predicted for coalitions masks bool (n, M): the fitted odd part plus
        the even part's mean Delta / 2 (what the linear model z . phi predicts too), plus the trees."""
        x = 2.0 * masks - 1.0
        if self.trees is not None:
            offset = self.trees.predict(masks) - self.trees.predict(np.zeros((1, masks.shape[1]), dtype=bool))
            delta -= float(self.trees.predict(np.ones((1, masks.shape[1]), dtype=bool))[0]
                           - self.trees.predict(np.zeros((1, masks.shape[1]), dtype=bool))[0])
        else:
            offset = 0.0
        return offset + delta / 2.0 + x @ self.odd_linear + _characters(x, self.settings.triples) @ self.triple_coefficients


def estimate(masks: np.ndarray, gains: np.ndarray, delta: float, settings: Settings | None = None) -> Estimate:
    """phi (M,) from paired interior coalitions masks bool (n, M) (rows 2k, 2k+1 complementary), gains (n,)
    v(z) - v(empty) and Delta = v(full) - v(empty); settings chosen from the data when None."""
    if len(masks) and (settings.surrogate if settings is not None else SURROGATE):
        return _with_trees(masks, gains, delta, settings)
    return _regression(masks, gains, delta, settings)


def _regression(masks: np.ndarray, gains: np.ndarray, delta: float, settings: Settings | None) -> Estimate:
    """estimate() without the tree surrogate."""
    n_features = masks.shape[1]
    if not len(masks):
        return Estimate(phi=np.full(n_features, delta / n_features), odd_linear=np.full(n_features, delta / (2 * n_features)),
                        triple_coefficients=np.zeros(0), row_residual=np.zeros(0), parameters=0.0, settings=LINEAR)
    x, target, weight = _paired(masks, gains, delta)
    if settings is None:
        settings = _choose(x, target, weight, _unseen_strata(masks[0::2]))
    coefficients, residual, parameters = _fit(x, target, weight, settings)
    if len(settings.triples):
        residual = _left_out_residual(x, residual, weight, settings)
    c = coefficients[n_features - 1:]
    phi = _phi(coefficients, settings.triples, delta, n_features)
    linear = phi - _member_sums(settings.triples, 2.0 * c / 3.0, n_features)
    return Estimate(phi=phi, odd_linear=linear / 2.0, triple_coefficients=c,
                    row_residual=np.repeat(residual, 2) * np.tile([1.0, -1.0], len(residual)),
                    parameters=parameters, settings=settings)


def _with_trees(masks: np.ndarray, gains: np.ndarray, delta: float, settings: Settings | None) -> Estimate:
    """Shapley(trees) + the estimate of the residual game, trees fitted to every evaluated coalition."""
    n_features = masks.shape[1]
    ends = np.array([np.zeros(n_features, dtype=bool), np.ones(n_features, dtype=bool)])
    trees = boosted_trees(np.vstack([ends, masks]), np.concatenate([[0.0, delta], gains]))
    empty, full = trees.predict(ends)
    inner = _regression(masks, gains - (trees.predict(masks) - empty), delta - (full - empty),
                     None if settings is None else replace(settings, surrogate=False))
    return replace(inner, phi=inner.phi + trees.shapley(), settings=replace(inner.settings, surrogate=True), trees=trees)


def _phi(coefficients: np.ndarray, triples: np.ndarray, delta: float, n_features: int) -> np.ndarray:
    """phi (M,) = Delta / M + Q beta + sum_T c_T (2/3 1_T - 2/M 1) from coefficients (beta (M-1,), c (K,))."""
    beta, c = coefficients[:n_features - 1], coefficients[n_features - 1:]
    linear = delta / n_features + helmert_basis(n_features) @ beta - 2.0 * c.sum() / n_features
    return linear + _member_sums(triples, 2.0 * c / 3.0, n_features)


def _member_sums(triples: np.ndarray, amounts: np.ndarray, n_features: int) -> np.ndarray:
    """(M,): each unit's sum of the amounts (K,) of the triples (K, 3) it belongs to."""
    return np.bincount(triples.reshape(-1), weights=np.repeat(amounts, 3), minlength=n_features)


def _unseen_strata(lower: np.ndarray) -> np.ndarray:
    """bool (p,): pairs (first members lower bool (p, M)) of strata the plan does not enumerate in full,
    the only ones whose neighbours are unseen (all pairs when every stratum is complete)."""
    n_features = lower.shape[1]
    stratum = np.minimum(lower.sum(axis=1), n_features - lower.sum(axis=1))
    counts = np.bincount(stratum, minlength=n_features // 2 + 1)
    totals = np.array([pair_count(n_features, s) if s else 1 for s in range(n_features // 2 + 1)])
    unseen = counts[stratum] < totals[stratum]
    return unseen if unseen.any() else np.ones(len(lower), dtype=bool)


def _characters(x: np.ndarray, triples: np.ndarray) -> np.ndarray:
    """chi_T(x) = x_a x_b x_c (p, K) for x (p, M) in {-1, 1} and triples int (K, 3)."""
    return x[:, triples[:, 0]] * x[:, triples[:, 1]] * x[:, triples[:, 2]]


def _paired(masks: np.ndarray, gains: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (p, M) in {-1, 1} of the pairs' first members, targets t (p,), pair weights (p,) of mean 1)."""
    n_features = masks.shape[1]
    x = 2.0 * masks[0::2] - 1.0
    odd = (gains[0::2] - gains[1::2]) / 2.0
    weight = size_weights(masks)[0::2]
    return x, odd - delta / (2.0 * n_features) * x.sum(axis=1), weight / weight.mean()


def _features(x: np.ndarray, triples: np.ndarray) -> np.ndarray:
    """Design (p, M - 1 + K): the linear features x Q / 2, then the centred triple characters."""
    linear = x @ helmert_basis(x.shape[1]) / 2.0
    return np.hstack([linear, _characters(x, triples) - x.sum(axis=1, keepdims=True) / x.shape[1]])


def _choose(x: np.ndarray, target: np.ndarray, weight: np.ndarray, sampled: np.ndarray) -> Settings:
    """Settings from the data: the linear ridge by leave-one-out, then the triples if held-out error drops.

    Errors are scored on the pairs of incompletely enumerated strata only (`sampled` bool (p,)): the
    coalitions the plan did not evaluate are all in those strata, and the complete strata's few heavy
    pairs would otherwise dominate (their leverage is close to 1).
    """
    n_pairs, n_features = x.shape
    if n_pairs > n_features - 1 and _fits_exactly(x, target, weight):
        return LINEAR
    linear = _features(x, LINEAR.triples)
    _, unit = _penalties(linear, weight, n_features - 1, 0.0, 0.0)
    grid = RIDGE_GRID + NEAR_SQUARE_GRID if n_pairs < NEAR_SQUARE * n_features else RIDGE_GRID
    ridge = _loo_ridge(linear, target, weight, np.zeros(n_features - 1), unit, sampled, grid) if SHRINKAGE else 0.0
    settings = Settings(ridge, LINEAR.triples, 0.0)
    count = math.comb(n_features, 3)                 # counted first: C(M, 3) is ~1 GiB of indices at M = 650
    if not TRIPLES or not count or count > min(TRIPLE_FRACTION * n_pairs, MAX_TRIPLES):
        return settings
    triples = np.array(list(_triples(n_features)), dtype=int).reshape(-1, 3)
    held = sampled & (np.cumsum(sampled) % HOLDOUT_EVERY == 0)
    models = [settings] + [Settings(ridge, triples, triple_ridge) for triple_ridge in TRIPLE_RIDGES]
    errors = []
    for model in models:
        coefficients, _, _ = _fit(x[~held], target[~held], weight[~held], model)
        error = target[held] - _features(x[held], model.triples) @ coefficients
        errors.append(float(weight[held] @ error ** 2))
    return models[int(np.argmin(errors))]


def _fits_exactly(x: np.ndarray, target: np.ndarray, weight: np.ndarray) -> bool:
    """True when the unpenalised linear model leaves no residual (an additive odd part, to rounding)."""
    _, residual, _ = _fit(x, target, weight, LINEAR)
    return float(weight @ residual ** 2) <= EXACT_FIT * max(float(weight @ target ** 2), 1e-300)


def _triples(n_features: int):
    """All a < b < c."""
    for a in range(n_features):
        for b in range(a + 1, n_features):
            for c in range(b + 1, n_features):
                yield a, b, c


def _penalties(design: np.ndarray, weight: np.ndarray, linear: int, linear_ridge: float,
               triple_ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """(penalty (d,) for the given ridges, unit penalty (d,)): the linear ridge is in units of one pair's
    mean contribution to the diagonal of the linear block of the Gram matrix (a prior worth that many
    pairs, so its weight against the data falls as 1 / pairs), the triples' ridge in units of their
    block's mean diagonal."""
    diagonal = weight @ design ** 2
    is_linear = np.arange(design.shape[1]) < linear
    unit = np.where(is_linear, diagonal[is_linear].mean() / len(design) if linear else 1.0,
                    diagonal[~is_linear].mean() if (~is_linear).any() else 1.0)
    return unit * np.where(is_linear, linear_ridge, triple_ridge), unit


def _fit(x: np.ndarray, target: np.ndarray, weight: np.ndarray,
         settings: Settings) -> tuple[np.ndarray, np.ndarray, float]:
    """(coefficients (M - 1 + K,), paired residuals (p,), trace of the hat matrix) of the penalised fit."""
    design, inverse = _penalised_inverse(x, weight, settings)
    coefficients = inverse @ (design.T @ (weight * target))
    parameters = float(np.einsum("ij,ji->", inverse, design.T @ (weight[:, None] * design)))
    return coefficients, target - design @ coefficients, parameters


def _penalised_inverse(x: np.ndarray, weight: np.ndarray, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """(design (p, d), (X^T W X + penalty)^+ (d, d)) of the penalised fit."""
    design = _features(x, settings.triples)
    penalty, _ = _penalties(design, weight, x.shape[1] - 1, settings.linear_ridge, settings.triple_ridge)
    gram = design.T @ (weight[:, None] * design) + np.diag(penalty)
    return design, np.linalg.pinv(gram, rcond=RANK_TOLERANCE, hermitian=True)


def _left_out_residual(x: np.ndarray, residual: np.ndarray, weight: np.ndarray, settings: Settings) -> np.ndarray:
    """Leave-one-pair-out residuals e_k / (1 - h_kk) (p,) of the penalised fit with triples, for its standard
    errors (with the degrees-of-freedom correction on top): with as many triples as pairs the in-sample
    residuals are shrunk towards zero far more than the correction alone undoes (mean SE^2 / MSE down to
    0.16 on the benchmark games; 0.89 with the left-out residuals)."""
    design, inverse = _penalised_inverse(x, weight, settings)
    leverage = weight * np.einsum("ij,ij->i", design @ inverse, design)
    return residual / np.maximum(1.0 - leverage, LEVERAGE_FLOOR)


def _loo_ridge(design: np.ndarray, target: np.ndarray, weight: np.ndarray, fixed: np.ndarray,
               direction: np.ndarray, scored: np.ndarray, grid=RIDGE_GRID) -> float:
    """The grid value g of RIDGE_GRID minimising the weighted leave-one-pair-out
    error, over the pairs where scored (p,) is True, of the fit penalised by diag(fixed + g direction).

    With B = X^T W X + diag(fixed) = R^T R and R^-T diag(direction) R^-1 = V diag(mu) V^T, the penalised
    inverse is T diag(1 / (1 + g mu)) T^T with T = R^-1 V, so every grid value costs O(p d).
    """
    gram = design.T @ (weight[:, None] * design) + np.diag(fixed)
    gram += np.eye(len(gram)) * JITTER * max(np.trace(gram) / len(gram), 1e-300)
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    eigenvalues = np.maximum(eigenvalues, eigenvalues.max() * 1e-15)
    root_inverse = eigenvectors / np.sqrt(eigenvalues)                   # B^-1/2 (d, d), B^-1 = S S^T
    mu, v = np.linalg.eigh(root_inverse.T @ (direction[:, None] * root_inverse))
    transform = root_inverse @ v
    projected = design @ transform                                      # (p, d)
    moments = transform.T @ (design.T @ (weight * target))              # (d,)
    best, best_error = 0.0, math.inf
    for g in grid:
        shrink = 1.0 / (1.0 + g * np.maximum(mu, 0.0))
        fitted = projected @ (shrink * moments)
        leverage = (weight * ((projected ** 2) @ shrink))[scored]
        if leverage.max() >= 1.0 - 1e-9:
            continue
        error = float(weight[scored] @ ((target - fitted)[scored] / (1.0 - leverage)) ** 2)
        if error < best_error:
            best, best_error = g, error
    return best

