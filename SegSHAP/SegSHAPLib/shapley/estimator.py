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
the odd part, so only odd terms can help). Every odd character of order 3 (ODD_ORDERS; order 5 is measured
in the ablation), chi_T(x) = prod_{j in T} x_j, centred as c_T(x) = chi_T(x) - sum(x) / M so that efficiency
keeps holding (0 at the empty and full coalitions), joins the linear features with a Gaussian prior of
equal variance per character: a ridge fit over all C(M, 3) characters at once, solved in the dual as
kernel ridge regression. Its kernel needs no list of characters: sum_T chi_T(x) chi_T(x') is the
elementary symmetric polynomial e_3 of u = x * x' (u in {-1, 1}^M), a polynomial in x . x' by Newton's
identities (e_3 = (p^3 - (3M - 2) p) / 6, p = x . x'), so the fit costs a p x p eigen-decomposition
(p pairs) whatever M; the linear part is its fixed effect (generalised least squares with the kernel's
covariance). The Shapley value of chi_T is 2 / |T| for each member of an odd T, so the fitted f has exact
Shapley values in closed form (sum_{T ni j} chi_T(x) = x_j e_2(x without j)), and
phi = Delta / M + Q beta + Shapley(f). Because the linear part is the regression of the residual game v - f,
phi = Shapley(f) exactly + the regression estimate of Shapley(v - f): the estimate stays exact at full
enumeration whatever the interaction fit. The fit is equal to the primal fit over all triples listed
explicitly (tested). Leave-one-pair-out error (closed form, over the pairs of the sampled strata) chooses
between the linear fit and the interactions with each prior variance of ODD_SHARES (in units of the
residual's, each order's kernel scaled to a mean weighted diagonal of 1); they are tried from
INTERACTION_PAIRS pairs per unit on, up to MAX_KERNEL_PAIRS pairs (memory 8 p^2 bytes, time p^3).
Leave-one-out chooses the linear ridge anew with the interactions, among the linear fit's and the grid
values below it (the interactions explain part of the residual, so the linear part needs less
shrinkage, not more; a larger one cut the left-out error by 1% and made phi four times worse on Dice
M = 12 at budget 2048).

**Heredity** (HEREDITY): the pairs also observe the even part v_even = (v(z) + v(1 - z)) / 2, which phi does
not depend on but which shows who interacts: a unanimity term over T has pair terms on every pair of T.
Its pair terms are fitted by kernel ridge regression (_heredity_weights), each unit weighted by the norm
of its row of pair coefficients, and the odd fit is also tried with each character's prior variance the
product of its members' weights (the kernel of those weighted characters is still a polynomial, in
x diag(w) x'^T and x diag(w^3) x'^T). Leave-one-out must prefer it by HEREDITY_MARGIN over the unweighted
fits, since the weights are one more thing fitted. One strong triple among 32 units is then recovered
(max phi error 0.002 against 0.03 for the unweighted kernel and the linear fit, tested).

**Standard errors** of an interaction fit: the stratified sandwich of its own influences, d phi / d t_k
times the pair's left-out residual e_k / (1 - h_kk) (shapley.fit.fit's `influence`; with the linear fit's
degrees-of-freedom correction p / (p - M + 1)). The linear fit's standard errors overstated the
interaction fit's error up to 58 times (mean SE^2 / MSE on the benchmark games), and the in-sample
residuals of a fit with about as many effective parameters as pairs are shrunk towards zero.

Screened subsets of triples (those correlating most with the linear residual, as OddSHAP screens with a
tree proxy) were measured and dropped earlier: they cut the held-out error on every benchmark game yet
made phi worse on most.

**Tree surrogate as a control variate** (SURROGATE, off by default, measured in the ablation): boosted
regression trees fitted to the evaluated coalitions (shapley.surrogate), whose Shapley values are
exact; phi = Shapley(trees) + this estimator on the residual game v - trees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from SegSHAPLib.shapley.fit import RANK_TOLERANCE, helmert_basis, size_weights
from SegSHAPLib.shapley.plan import pair_count
from SegSHAPLib.shapley.surrogate import Surrogate, boosted_trees

# Module constants so that benchmarks/bench_solver.py --ablation can switch the pieces off.
SHRINKAGE = True                  # ridge towards the equal split, lam by leave-one-out
INTERACTIONS = True               # odd interaction terms (the kernel fit) when leave-one-out error drops
SURROGATE = False                 # boosted-tree control variate always (measured, not used)
ODD_ORDERS = ((3,),)             # the sets of interaction orders tried (every character of each order)
ODD_SHARES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # the interactions' prior variance, per order, tried
INTERACTION_PAIRS = 2.0           # interactions are tried from this many pairs per unit on...
MAX_KERNEL_PAIRS = 2048           # ...up to this many pairs (the kernel is p x p: 8 p^2 bytes, p^3 time)
HEREDITY = True                   # also characters weighted by their units' pair interactions in the even part...
HEREDITY_MARGIN = 0.05            # ...chosen only when their left-out error is this much below the unweighted fits'
HEREDITY_SHARE = 10.0             # the even part's pair terms' prior variance (kernel scaled to a diagonal of 1)
RIDGE_GRID = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)  # the linear ridge, as a prior worth that many pairs
JOINT_RIDGES = RIDGE_GRID         # with the interactions, the linear fit's ridge and those of these below it
NEAR_SQUARE = 2.0                 # designs with fewer pairs than this many per unit are near-square...
NEAR_SQUARE_GRID = (30.0, 100.0)  # ...and may also be shrunk this strongly
JITTER = 1e-9                     # relative diagonal jitter of the leave-one-out eigen-decomposition
LEVERAGE_FLOOR = 1e-3             # 1 - h_kk never taken below this in left-out residuals
EXACT_FIT = 1e-20                 # relative residual below which the linear model is taken as exact


@dataclass(frozen=True)
class Settings:
    """The estimator's data-chosen settings, reused when diagnostics refit on subsets of the pairs.

    Attributes:
        linear_ridge: the ridge on beta as a prior worth that many pairs (one pair's mean contribution to
            the diagonal of the linear Gram matrix times this).
        odd_orders: the orders of the odd interaction characters fitted, each with all its C(M, order)
            characters (() : linear only).
        odd_share: each order's prior variance relative to the residual's (its kernel scaled to a mean
            weighted diagonal of 1).
        odd_terms: how many characters that is, sum of C(M, order) (reported by the diagnostics).
        unit_weights: (M,) or None (all 1): a character's prior variance is the product of its members'
            weights (the heredity weights of _heredity_weights), before the kernel's scaling.
        surrogate: whether a boosted-tree surrogate is the control variate (SURROGATE).
    """

    linear_ridge: float
    odd_orders: tuple[int, ...] = ()
    odd_share: float = 0.0
    odd_terms: int = 0
    unit_weights: np.ndarray | None = None
    surrogate: bool = False


LINEAR = Settings(linear_ridge=0.0)  # plain KernelSHAP


def with_interactions(linear_ridge: float, orders: tuple[int, ...], share: float, n_features: int,
                      unit_weights: np.ndarray | None = None) -> Settings:
    """Settings fitting every odd character of the given orders over M = n_features units."""
    return Settings(linear_ridge, orders, share, sum(math.comb(n_features, order) for order in orders), unit_weights)


@dataclass(frozen=True)
class Estimate:
    """phi (M,) and the pieces the diagnostics need.

    Attributes:
        phi: (M,) attributions, sum(phi) = Delta.
        odd_linear: (M,): the fitted odd part of the game is
            v_odd(x) ~ x . odd_linear + sum_k dual_k K(support_k, x) (x = 2z - 1; K the centred kernel of
            the settings' orders, each order's scaled by kernel_scales).
        support: (p, M) the pairs' first members in {-1, 1}, dual: (p,) their coefficients, kernel_scales:
            one factor per order of settings.odd_orders (support and dual empty for a linear fit).
        row_residual: (n,) residual of each interior row, +e_k and -e_k for the two members of pair k with
            e_k the paired residual (the only part of the rows' residuals the standard errors use; the
            left-out residual e_k / (1 - h_kk) with interactions).
        parameters: effective number of fitted parameters (trace of the hat matrix).
        influence: (p, M) with interactions, each pair's influence on phi for the standard errors
            (shapley.fit.fit): its row of d phi / d t times its left-out residual; None for a linear fit
            (its standard errors are the regression's own, from row_residual and parameters).
        settings: the chosen Settings.
        trees: the surrogate (shapley.surrogate.Surrogate) when settings.surrogate, else None; the rest of
            the fields then describe the residual game v - trees.
    """

    phi: np.ndarray
    odd_linear: np.ndarray
    support: np.ndarray
    dual: np.ndarray
    kernel_scales: tuple[float, ...]
    row_residual: np.ndarray
    parameters: float
    influence: np.ndarray | None
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
        interactions = _kernel(x, self.support, self.settings.odd_orders, self.kernel_scales,
                               _weights(self.settings, masks.shape[1])) @ self.dual
        return offset + delta / 2.0 + x @ self.odd_linear + interactions


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
                        support=np.zeros((0, n_features)), dual=np.zeros(0), kernel_scales=(), row_residual=np.zeros(0),
                        parameters=0.0, influence=None, settings=LINEAR)
    x, target, weight = _paired(masks, gains, delta)
    if settings is None:
        even = (gains[0::2] + gains[1::2]) / 2.0
        settings, model = _choose(x, target, weight, _unseen_strata(masks[0::2]), even)
    else:
        model = _Model(x, target, weight, settings)
    solution = model.solve(settings.odd_share, settings.linear_ridge)
    basis = helmert_basis(n_features)
    linear = delta / n_features + basis @ solution.beta
    if not settings.odd_orders:
        return Estimate(phi=linear, odd_linear=linear / 2.0, support=x[:0], dual=np.zeros(0), kernel_scales=(),
                        row_residual=np.repeat(solution.residual, 2) * np.tile([1.0, -1.0], len(x)),
                        parameters=solution.parameters, influence=None, settings=settings)
    scales = model.scales(settings.odd_share)
    shapley_rows = _interaction_shapley_rows(x, settings.odd_orders, scales, _weights(settings, n_features))
    left_out = solution.residual / np.maximum(solution.left_out, LEVERAGE_FLOOR)
    return Estimate(phi=linear + solution.dual @ shapley_rows, odd_linear=linear / 2.0, support=x,
                    dual=solution.dual, kernel_scales=scales,
                    row_residual=np.repeat(left_out, 2) * np.tile([1.0, -1.0], len(x)), parameters=solution.parameters,
                    influence=model.sensitivity(settings.odd_share, solution, basis, shapley_rows) * left_out[:, None],
                    settings=settings)


def _with_trees(masks: np.ndarray, gains: np.ndarray, delta: float, settings: Settings | None) -> Estimate:
    """Shapley(trees) + the estimate of the residual game, trees fitted to every evaluated coalition."""
    n_features = masks.shape[1]
    ends = np.array([np.zeros(n_features, dtype=bool), np.ones(n_features, dtype=bool)])
    trees = boosted_trees(np.vstack([ends, masks]), np.concatenate([[0.0, delta], gains]))
    empty, full = trees.predict(ends)
    inner = _regression(masks, gains - (trees.predict(masks) - empty), delta - (full - empty),
                        None if settings is None else replace(settings, surrogate=False))
    return replace(inner, phi=inner.phi + trees.shapley(), settings=replace(inner.settings, surrogate=True), trees=trees)


def _unseen_strata(lower: np.ndarray) -> np.ndarray:
    """bool (p,): pairs (first members lower bool (p, M)) of strata the plan does not enumerate in full,
    the only ones whose neighbours are unseen (all pairs when every stratum is complete)."""
    n_features = lower.shape[1]
    stratum = np.minimum(lower.sum(axis=1), n_features - lower.sum(axis=1))
    counts = np.bincount(stratum, minlength=n_features // 2 + 1)
    totals = np.array([pair_count(n_features, s) if s else 1 for s in range(n_features // 2 + 1)])
    unseen = counts[stratum] < totals[stratum]
    return unseen if unseen.any() else np.ones(len(lower), dtype=bool)


def _paired(masks: np.ndarray, gains: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (p, M) in {-1, 1} of the pairs' first members, targets t (p,), pair weights (p,) of mean 1)."""
    n_features = masks.shape[1]
    x = 2.0 * masks[0::2] - 1.0
    odd = (gains[0::2] - gains[1::2]) / 2.0
    weight = size_weights(masks)[0::2]
    return x, odd - delta / (2.0 * n_features) * x.sum(axis=1), weight / weight.mean()


# --- odd characters of one order, summed in closed form ----------------------------------------------

def _elementary(power_sum: Callable[[int], np.ndarray | float], order: int) -> np.ndarray | float:
    """e_order from the power sums p_i = power_sum(i), i = 1..order, by Newton's identities. For values
    w_j x_j with x in {-1, 1}: p_i = x . w^i for odd i and sum(w^i) for even i. Exact in float64 for unit
    weights while the values stay below 2^53."""
    e = [1.0]
    for k in range(1, order + 1):
        e.append(sum((-1.0) ** (i - 1) * e[k - i] * power_sum(i) for i in range(1, k + 1)) / k)
    return e[order]


def _weights(settings: Settings, n_features: int) -> np.ndarray:
    """(M,) the per-unit weights of the characters (a character's weight is the product over its members)."""
    return np.ones(n_features) if settings.unit_weights is None else np.asarray(settings.unit_weights)


def _kernel(x: np.ndarray, y: np.ndarray, orders: tuple[int, ...], scales: tuple[float, ...],
            weights: np.ndarray) -> np.ndarray:
    """(n, p) sum over the orders o of scale_o sum_{|T| = o} w_T c_T(x) c_T(y) for x (n, M), y (p, M) in {-1, 1},
    w_T = prod_{j in T} weights_j, with the centred characters c_T(x) = prod_{j in T} x_j - sum(x) / M (0 at
    the empty and full coalitions).

    sum_T w_T prod_T x_j y_j is e_o of the values weights_j u_j, u = x * y; sum_T w_T prod_T x_j = e_o of
    weights_j x_j; sum_T w_T = e_o(weights)."""
    n_features = x.shape[1]
    out = np.zeros((len(x), len(y)))
    if not orders or not len(x) or not len(y):
        return out
    even = [float((weights ** i).sum()) for i in range(max(orders) + 1)]
    products = {i: (x * weights ** i) @ y.T for i in range(1, max(orders) + 1, 2)}
    sx, sy = x.sum(axis=1), y.sum(axis=1)
    for order, scale in zip(orders, scales):
        inner = _elementary(lambda i: products[i] if i % 2 else even[i], order)
        ex = _elementary(lambda i: x @ weights ** i if i % 2 else even[i], order)
        ey = _elementary(lambda i: y @ weights ** i if i % 2 else even[i], order)
        total = _elementary(lambda i: even[i], order)
        out += scale * (inner - np.outer(ex, sy) / n_features - np.outer(sx, ey) / n_features
                        + total * np.outer(sx, sy) / n_features ** 2)
    return out


def _kernel_diagonal(x: np.ndarray, order: int, weights: np.ndarray) -> np.ndarray:
    """(p,) the order's centred kernel of each row of x (p, M) with itself: sum_T w_T c_T(x)^2."""
    n_features, sx = x.shape[1], x.sum(axis=1)
    total = _elementary(lambda i: float((weights ** i).sum()), order)
    ex = _elementary(lambda i: x @ weights ** i if i % 2 else float((weights ** i).sum()), order)
    return total - 2.0 * sx * ex / n_features + total * sx ** 2 / n_features ** 2


def _interaction_shapley_rows(x: np.ndarray, orders: tuple[int, ...], scales: tuple[float, ...],
                              weights: np.ndarray) -> np.ndarray:
    """(p, M): row k is the Shapley value (exact) of the function K(x_k, 2z - 1) of z (the kernel of _kernel),
    so that f(z) = sum_k dual_k K(x_k, 2z - 1) has Shapley values dual @ rows.

    K(x_k, .) = sum_T a_T c_T with a_T = scale_o w_T c_T(x_k); the Shapley value of prod_{j in T} x_j is
    2 / |T| for each member of an odd T and that of sum(x) / M is 2 / M each, so unit j gets
    sum_o scale_o (2 / o sum_{T ni j} w_T c_T(x_k) - 2 / M sum_T w_T c_T(x_k)), where
    sum_{T ni j} w_T prod_T x = w_j x_j e_{o-1}(the values w_i x_i, i != j)."""
    n_features = x.shape[1]
    rows = np.zeros(x.shape)
    total = x.sum(axis=1)
    for order, scale in zip(orders, scales):
        def others(i):
            return (x @ weights ** i)[:, None] - x * weights ** i if i % 2 else float((weights ** i).sum()) - weights ** i
        containing = weights * _elementary(lambda i: float((weights ** i).sum()) - weights ** i, order - 1)
        members = weights * x * _elementary(others, order - 1) - containing * total[:, None] / n_features
        every = _elementary(lambda i: float((weights ** i).sum()), order)
        everything = _elementary(lambda i: x @ weights ** i if i % 2 else float((weights ** i).sum()), order) \
            - every * total / n_features
        rows += scale * (2.0 / order * members - 2.0 / n_features * everything[:, None])
    return rows


# --- the penalised fit: linear part and kernel part --------------------------------------------------

@dataclass(frozen=True)
class _Solution:
    """beta (M - 1,), dual (p,) kernel coefficients, residual (p,) paired residuals, left_out (p,) 1 - h_kk,
    parameters: trace of the hat matrix, v_linear (p, M - 1) V^-1 L~, gram_inverse (M - 1, M - 1)
    (L~^T V^-1 L~ + P)^+."""

    beta: np.ndarray
    dual: np.ndarray
    residual: np.ndarray
    left_out: np.ndarray
    parameters: float
    v_linear: np.ndarray
    gram_inverse: np.ndarray


class _Model:
    """The penalised weighted fit of t on the linear features L = x Q / 2 (ridge linear_ridge) plus a function
    f with the Gaussian prior of covariance share * Kn (Kn: the centred kernel of the orders, each order
    scaled to a mean weighted diagonal of 1), as kernel ridge regression: with A = diag(sqrt(w)) and
    V = I + share A Kn A = U diag(1 + share d) U^T, beta = (L~^T V^-1 L~ + P)^-1 L~^T V^-1 t~ (L~ = A L,
    t~ = A t), the residual of the whole fit is V^-1 (t~ - L~ beta) and the dual coefficients of f are A
    times it. One eigen-decomposition serves every share."""

    def __init__(self, x: np.ndarray, target: np.ndarray, weight: np.ndarray, settings: Settings):
        n_pairs, n_features = x.shape
        self.root = np.sqrt(weight)
        self.target = self.root * target
        self.linear = self.root[:, None] * (x @ helmert_basis(n_features) / 2.0)
        diagonal = (self.linear ** 2).sum(axis=0)
        unit = diagonal.mean() / n_pairs if n_features > 1 else 1.0
        self.unit = unit                                  # the same for every linear coefficient
        self.ridge = settings.linear_ridge
        self.applied = self.inverse = (None,)
        self.orders = settings.odd_orders
        if not self.orders:
            return
        weights = _weights(settings, n_features)
        self.norms = []
        for order in self.orders:
            mean = float(weight @ _kernel_diagonal(x, order, weights)) / n_pairs
            self.norms.append(1.0 / mean if mean > 0.0 else 0.0)
        self.gram = _kernel(x, x, self.orders, tuple(self.norms), weights) * np.outer(self.root, self.root)
        self.eigenvectors = None

    def decompose(self) -> _Model:
        """Eigen-decompose A Kn A once, so that every share's solve costs O(p^2 M) (else each inverts V)."""
        if self.orders and self.eigenvectors is None:
            eigenvalues, self.eigenvectors = np.linalg.eigh(self.gram)
            self.eigenvalues = np.maximum(eigenvalues, 0.0)
            self.projected = self.eigenvectors.T @ np.column_stack([self.linear, self.target])   # (p, M)
            self.squares = self.eigenvectors ** 2
        return self

    def scales(self, share: float) -> tuple[float, ...]:
        """The factor of each order's centred kernel in the prior covariance."""
        return tuple(share * norm for norm in self.norms) if self.orders else ()

    def _inverse(self, share: float) -> tuple:
        """(apply: matrix (p, k) -> V^-1 matrix, diagonal of V^-1 (p,)) for the interactions' prior variance
        share (V^-1 formed once per share without the eigen-decomposition)."""
        if not self.orders:
            return (lambda matrix: matrix), np.ones(len(self.root))
        if self.eigenvectors is not None:
            shrink = 1.0 / (1.0 + share * self.eigenvalues)
            return (lambda matrix: self.eigenvectors @ (shrink[:, None] * (self.eigenvectors.T @ matrix))), self.squares @ shrink
        if self.inverse[0] != share:
            self.inverse = share, np.linalg.inv(np.eye(len(self.root)) + share * self.gram)
        inverse = self.inverse[1]
        return (lambda matrix: inverse @ matrix), np.diag(inverse).copy()

    def solve(self, share: float, linear_ridge: float | None = None) -> _Solution:
        """The fit with the interactions' prior variance `share` (0: linear only) and the linear ridge of
        the settings (or `linear_ridge`); V^-1 is applied once per share."""
        t = self.target
        if self.applied[0] != share:
            if self.orders and self.eigenvectors is not None:
                shrink = 1.0 / (1.0 + share * self.eigenvalues)
                v_both, v_diagonal = self.eigenvectors @ (shrink[:, None] * self.projected), self.squares @ shrink
            else:
                apply, v_diagonal = self._inverse(share)
                v_both = apply(np.column_stack([self.linear, t]))
            v_linear = v_both[:, :-1]
            eigenvalues, eigenvectors = np.linalg.eigh(self.linear.T @ v_linear)   # one per share, every ridge
            self.applied = share, v_linear, v_both[:, -1], v_diagonal, eigenvalues, eigenvectors
        _, v_linear, v_target, v_diagonal, eigenvalues, eigenvectors = self.applied
        penalised = eigenvalues + self.unit * (self.ridge if linear_ridge is None else linear_ridge)
        keep = penalised > penalised.max(initial=0.0) * RANK_TOLERANCE
        inverse = (eigenvectors[:, keep] / penalised[keep]) @ eigenvectors[:, keep].T   # the pseudo-inverse
        beta = inverse @ (v_linear.T @ t)
        residual = v_target - v_linear @ beta
        left_out = v_diagonal - np.einsum("ij,ij->i", v_linear @ inverse, v_linear)
        return _Solution(beta=beta, dual=self.root * residual, residual=residual / self.root, left_out=left_out,
                         parameters=float(len(t) - left_out.sum()), v_linear=v_linear, gram_inverse=inverse)

    def sensitivity(self, share: float, solution: _Solution, basis: np.ndarray, shapley_rows: np.ndarray) -> np.ndarray:
        """(p, M) d phi / d t, row k how phi moves with pair k's target: with G = (L~^T V^-1 L~ + P)^+ (V^-1 L~)^T
        and S (p, M) the Shapley rows of the kernel, phi = Delta / M + Q G t~ + S^T A V^-1 (t~ - L~ G t~)."""
        apply, _ = self._inverse(share)
        weighted_rows = self.root[:, None] * shapley_rows
        g = solution.v_linear @ solution.gram_inverse                      # G^T (p, M - 1)
        interactions = apply(weighted_rows) - g @ (solution.v_linear.T @ weighted_rows)
        return self.root[:, None] * (g @ basis.T + interactions)

    def left_out_error(self, share: float, scored: np.ndarray, linear_ridge: float | None = None) -> float:
        """Weighted leave-one-pair-out squared error over the scored pairs (inf when a scored pair is
        interpolated)."""
        solution = self.solve(share, linear_ridge)
        left_out = solution.left_out[scored]
        if left_out.min() <= 1e-9:
            return math.inf
        return float((((self.root * solution.residual)[scored] / left_out) ** 2).sum())


def _choose(x: np.ndarray, target: np.ndarray, weight: np.ndarray, sampled: np.ndarray,
            even: np.ndarray) -> tuple[Settings, _Model]:
    """(Settings, the model that fits them) from the data: the linear ridge by leave-one-out, then the
    interactions (orders, unit weights, share and the linear ridge again) if their leave-one-out error is
    below the linear fit's; even (p,) are the pairs' even parts (v(z) + v(1 - z)) / 2 - v(empty).

    Errors are scored on the pairs of incompletely enumerated strata only (`sampled` bool (p,)): the
    coalitions the plan did not evaluate are all in those strata, and the complete strata's few heavy
    pairs would otherwise dominate (their leverage is close to 1). Characters weighted by heredity must
    beat the best unweighted fit by HEREDITY_MARGIN: their weights are themselves fitted, one more choice.
    """
    n_pairs, n_features = x.shape
    if n_pairs > n_features - 1 and _fits_exactly(x, target, weight):
        return LINEAR, _Model(x, target, weight, LINEAR)
    linear = x @ helmert_basis(n_features) / 2.0
    unit = (weight @ linear ** 2).mean() / n_pairs * np.ones(n_features - 1)
    grid = RIDGE_GRID + NEAR_SQUARE_GRID if n_pairs < NEAR_SQUARE * n_features else RIDGE_GRID
    ridge = _loo_ridge(linear, target, weight, np.zeros(n_features - 1), unit, sampled, grid) if SHRINKAGE else 0.0
    best = (math.nan, Settings(ridge), _Model(x, target, weight, Settings(ridge)))
    best = (best[2].left_out_error(0.0, sampled), *best[1:])
    if not INTERACTIONS or not INTERACTION_PAIRS * n_features <= n_pairs <= MAX_KERNEL_PAIRS:
        return best[1], best[2]
    weightings = [None] + ([_heredity_weights(x, even, weight)] if HEREDITY else [])
    for unit_weights in weightings:
        chosen = best
        for orders in (orders for orders in ODD_ORDERS if max(orders) <= n_features):
            settings = with_interactions(ridge, orders, 1.0, n_features, unit_weights)
            model = _Model(x, target, weight, settings).decompose()
            for share in ODD_SHARES:
                for linear_ridge in [g for g in JOINT_RIDGES if g < ridge] + [ridge]:
                    error = model.left_out_error(share, sampled, linear_ridge)
                    if error < chosen[0]:
                        chosen = (error, with_interactions(linear_ridge, orders, share, n_features, unit_weights), model)
        if unit_weights is None or chosen[0] < (1.0 - HEREDITY_MARGIN) * best[0]:
            best = chosen
    return best[1], best[2]


def _heredity_weights(x: np.ndarray, even: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(M,) each unit's pair-interaction strength in the game's even part, mean 1 (all 1 when there is none).

    The pairs observe v_even(x) = (v(z) + v(1 - z)) / 2 too, which the odd fit does not use. Its pair terms
    sum_{a<b} g_ab x_a x_b are fitted by kernel ridge regression (kernel e_2(x * x') = ((x . x')^2 - M) / 2,
    prior variance HEREDITY_SHARE, pair weights as the odd fit's) after removing the weighted mean, and
    unit j's weight is ||g_j.||_2: a unit that interacts with others in the even part (a unanimity term
    over T has pair terms on every pair of T) is likely a member of odd interactions too (heredity)."""
    n_pairs, n_features = x.shape
    root = np.sqrt(weight)
    centred = even - weight @ even / weight.sum()
    gram = ((x @ x.T) ** 2 - n_features) / (n_features * (n_features - 1))     # diagonal 1
    system = np.eye(n_pairs) + HEREDITY_SHARE * gram * np.outer(root, root)
    dual = root * np.linalg.solve(system, root * centred)
    pairs = x.T @ (dual[:, None] * x)                                          # (M, M): g_ab up to a factor
    np.fill_diagonal(pairs, 0.0)
    strength = np.sqrt((pairs ** 2).sum(axis=1))
    return strength / strength.mean() if strength.mean() > 0.0 else np.ones(n_features)


def _fits_exactly(x: np.ndarray, target: np.ndarray, weight: np.ndarray) -> bool:
    """True when the unpenalised linear model leaves no residual (an additive odd part, to rounding)."""
    residual = _Model(x, target, weight, LINEAR).solve(0.0).residual
    return float(weight @ residual ** 2) <= EXACT_FIT * max(float(weight @ target ** 2), 1e-300)


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
