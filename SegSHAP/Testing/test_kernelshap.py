"""Tests of SegSHAPLib.shapley.kernelshap: exactness, efficiency, determinism, budgets, batching, resume, imports."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import threading

import numpy as np
import pytest

from SegSHAPLib.errors import Cancelled
from SegSHAPLib.shapley.kernelshap import CoalitionStore, coalition_keys, kernel_shap, kernel_shap_many


# --- games and reference Shapley values -----------------------------------------------------------

def table_game(n: int, seed: int):
    """A game with an independent random value for every one of the 2^n coalitions (the general case)."""
    table = np.random.default_rng(seed).normal(size=1 << n)
    return lambda Z: table[np.asarray(Z, dtype=np.int64) @ (1 << np.arange(n))]


def sigmoid_game(n: int, seed: int):
    """A saturating game with pairwise and triple interactions (segmentation-like)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1)
    triple = rng.choice(n, size=min(3, n), replace=False)
    return lambda Z: 1.0 / (1.0 + np.exp(-(Z @ a + ((Z @ b) * Z).sum(axis=1) + 2.0 * Z[:, triple].all(axis=1) - 1.0)))


def additive_game(n: int, seed: int):
    """v(z) = 3 + a . z, with Shapley values a."""
    a = np.random.default_rng(seed).normal(size=n)
    return (lambda Z: 3.0 + Z @ a), a


def pairwise_game(n: int, seed: int):
    """v(z) = a . z + sum_{i<j} B_ij z_i z_j, with Shapley values a + (row sums of B) / 2."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1)
    b = b + b.T
    return (lambda Z: Z @ a + 0.5 * ((Z @ b) * Z).sum(axis=1)), a + b.sum(axis=1) / 2


def value_of(game, n: int, members) -> float:
    """v of the coalition holding `members`."""
    z = np.zeros((1, n), dtype=bool)
    z[0, list(members)] = True
    return float(game(z)[0])


def permutation_shapley(game, n: int) -> np.ndarray:
    """Shapley values by averaging marginal contributions over all n! orders (n <= 8).

    The game is evaluated once per coalition (indexed by its bit code), then every order is walked.
    """
    codes = np.arange(1 << n)
    values = game(((codes[:, None] >> np.arange(n)) & 1).astype(bool))
    phi = np.zeros(n)
    for order in itertools.permutations(range(n)):
        code = 0
        for unit in order:
            phi[unit] += values[code | (1 << unit)] - values[code]
            code |= 1 << unit
    return phi / math.factorial(n)


def subset_shapley(game, n: int) -> np.ndarray:
    """Shapley values by the subset formula sum_S |S|!(n-|S|-1)!/n! (v(S+j) - v(S)), looping over subsets."""
    phi = np.zeros(n)
    for j in range(n):
        others = [u for u in range(n) if u != j]
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for subset in itertools.combinations(others, k):
                phi[j] += weight * (value_of(game, n, subset + (j,)) - value_of(game, n, subset))
    return phi


class Recorder:
    """value_fn wrapper that keeps every batch it was given."""

    def __init__(self, game):
        self.game, self.batches = game, []

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        self.batches.append(np.array(Z, copy=True))
        return self.game(Z)

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate(self.batches) if self.batches else np.zeros((0, 0), dtype=bool)


# --- exact mode -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("make", [table_game, sigmoid_game])
def test_exact_equals_permutation_shapley(n, make):
    game = make(n, seed=n)
    res = kernel_shap(game, n_features=n, budget=1 << n, seed=0)
    assert res.exact and res.diagnostics["method"] == "exact"
    assert res.coalitions == 1 << n
    assert res.phi0 == pytest.approx(value_of(game, n, []))
    np.testing.assert_allclose(res.phi, permutation_shapley(game, n), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [9, 10])
def test_exact_equals_subset_formula_for_larger_games(n):  # n! orders would take minutes here
    game = table_game(n, seed=n)
    res = kernel_shap(game, n_features=n, budget=5000, seed=1)
    assert res.exact and res.coalitions == 1 << n
    np.testing.assert_allclose(res.phi, subset_shapley(game, n), rtol=0, atol=1e-11)


def test_single_unit_gets_the_whole_effect():
    res = kernel_shap(lambda Z: np.where(Z[:, 0], 5.0, 2.0), n_features=1, budget=2)
    assert res.exact and res.coalitions == 2
    assert res.phi0 == 2.0 and res.phi.tolist() == [3.0]


def test_exact_mode_diagnostics_are_complete_and_json_ready():
    res = kernel_shap(sigmoid_game(6, 0), n_features=6, budget=64)
    info = res.diagnostics
    json.dumps(info, allow_nan=False)
    assert info["phi_std_error"] == [0.0] * 6 and info["converged"] is True
    assert info["condition_number"] == pytest.approx(1.0) and info["resumed_coalitions"] == 0
    assert info["coalitions_needed_forecast"] == 64
    assert -np.inf < info["heldout_r2"] <= 1.0 and info["heldout_mae"] >= 0.0


def test_forced_exact_needs_the_budget():
    with pytest.raises(ValueError, match="2\\^5 = 32"):
        kernel_shap(table_game(5, 0), n_features=5, budget=31, method="exact")


def test_sampler_given_every_coalition_is_exact():
    game = table_game(5, 3)
    res = kernel_shap(game, n_features=5, budget=32, method="kernelshap")
    assert res.exact
    np.testing.assert_allclose(res.phi, kernel_shap(game, n_features=5, budget=32).phi, atol=1e-12)


# --- sampled mode ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n,budget", [(12, 200), (9, 100), (20, 64), (16, 1001)])
def test_sampled_efficiency_is_exact(n, budget):
    game = table_game(n, seed=budget)
    res = kernel_shap(game, n_features=n, budget=budget, seed=5)
    assert not res.exact and res.diagnostics["method"] == "kernelshap"
    delta = value_of(game, n, range(n)) - value_of(game, n, [])
    assert abs(res.phi.sum() - delta) <= 1e-9 * max(1.0, abs(delta))
    assert res.diagnostics["efficiency_residual"] <= 1e-9 * max(1.0, abs(delta))


def test_same_seed_same_result_other_seed_other_result():
    game = sigmoid_game(14, 2)
    first, again, other = (kernel_shap(game, n_features=14, budget=300, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(first.phi, again.phi)
    assert first.diagnostics == again.diagnostics
    assert not np.array_equal(first.phi, other.phi)


def test_batch_size_does_not_change_the_result():
    game = table_game(11, 4)  # row by row exact; a matrix product may round differently per batch shape
    results = [kernel_shap(game, n_features=11, budget=150, seed=3, batch_size=b).phi for b in (1, 13, 500)]
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.parametrize("n", [7, 15, 30])
def test_sampled_additive_game_is_exact(n):
    game, phi = additive_game(n, seed=n)
    res = kernel_shap(game, n_features=n, budget=4 * n, seed=1)
    assert not res.exact
    np.testing.assert_allclose(res.phi, phi, rtol=0, atol=1e-9)
    assert res.phi0 == pytest.approx(3.0)


def test_sampled_pairwise_game_is_exact_thanks_to_pairing():
    game, phi = pairwise_game(14, seed=3)
    res = kernel_shap(game, n_features=14, budget=120, seed=2)
    np.testing.assert_allclose(res.phi, phi, rtol=0, atol=1e-9)


def test_sampled_estimate_is_close_on_an_interaction_game():
    # Shapley values up to 0.24 here; measured RMSE 0.005, and 0.028 with unweighted regression rows
    game = sigmoid_game(12, seed=11)
    exact = kernel_shap(game, n_features=12, budget=4096).phi
    errors = np.array([kernel_shap(game, n_features=12, budget=1000, seed=seed).phi - exact for seed in range(3)])
    assert np.sqrt(np.mean(errors ** 2)) < 0.01
    assert np.abs(errors).max() < 0.025


def test_sampled_diagnostics_are_complete_and_json_ready():
    res = kernel_shap(sigmoid_game(16, 1), n_features=16, budget=256, seed=0)
    info = res.diagnostics
    json.dumps(info, allow_nan=False)
    expected = {"efficiency_residual", "condition_number", "design_rank", "heldout_mae", "heldout_r2",
                "coefficient_change", "phi_std_error", "std_error_estimable", "converged",
                "coalitions_needed_forecast", "resumed_coalitions", "method", "abs_phi_lower_bound",
                "confidence_z", "separated_top_units", "estimator"}
    assert expected <= set(info)
    assert info["condition_number"] >= 1.0 and info["design_rank"] == 15
    assert len(info["phi_std_error"]) == 16 and 0.0 < info["coefficient_change"] < 1.0
    assert info["std_error_estimable"] is True and min(info["phi_std_error"]) > 0.0
    assert info["heldout_r2"] > 0.0
    assert info["converged"] is False and info["coalitions_needed_forecast"] > 256


def test_too_few_pairs_are_never_reported_converged():
    res = kernel_shap(sigmoid_game(16, 1), n_features=16, budget=12, seed=0)
    assert res.diagnostics["converged"] is False
    assert res.diagnostics["std_error_estimable"] is False                # 5 pairs for 16 units
    assert res.diagnostics["phi_std_error"] == [None] * 16


def test_sampled_diagnostics_give_what_a_ui_needs_to_lead_with_non_convergence():
    res = kernel_shap(sigmoid_game(16, 1), n_features=16, budget=256, seed=0)
    info = res.diagnostics
    json.dumps(info, allow_nan=False)
    z, errors, bounds = info["confidence_z"], np.array(info["phi_std_error"]), np.array(info["abs_phi_lower_bound"])
    assert z == pytest.approx(1.96)
    np.testing.assert_allclose(bounds, np.maximum(np.abs(res.phi) - z * errors, 0.0))
    order = np.argsort(-np.abs(res.phi))
    k = info["separated_top_units"]
    assert 0 <= k < 16                                                     # not converged: not all resolved
    for rank in range(k):                                                  # each resolved unit's lower bound clears the rest
        later = order[rank + 1:]
        assert bounds[order[rank]] > (np.abs(res.phi[later]) + z * errors[later]).max()
    assert info["estimator"]["odd_triples"] >= 0 and info["estimator"]["linear_ridge_pairs"] >= 0.0


def test_exact_mode_ranks_every_unit_by_its_exact_value():
    res = kernel_shap(additive_game(6, 2)[0], n_features=6, budget=64)
    info = res.diagnostics
    assert info["abs_phi_lower_bound"] == pytest.approx(np.abs(res.phi).tolist())
    assert info["separated_top_units"] == 6 and info["estimator"] == {"linear_ridge_pairs": 0.0, "odd_triples": 0,
                                                                "tree_surrogate": False,
                                                                "control_variate": False}


def test_too_few_pairs_give_no_ranking():
    info = kernel_shap(sigmoid_game(16, 1), n_features=16, budget=12, seed=0).diagnostics
    assert info["abs_phi_lower_bound"] == [0.0] * 16 and info["separated_top_units"] == 0


# --- the estimator's pieces (shapley.estimator) ---------------------------------------------------

def unanimity_game(n: int, seed: int, orders=(3,), terms: int = 12):
    """a . z + sum_T c_T prod_{j in T} z_j with |T| in `orders`; Shapley values a_j + sum_{T ni j} c_T / |T|."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n) * 0.3
    sets = [rng.choice(n, size=rng.choice(orders), replace=False) for _ in range(terms)]
    coef = rng.normal(size=terms)
    phi = a.copy()
    for members, c in zip(sets, coef):
        phi[members] += c / len(members)
    return (lambda Z: Z @ a + sum(c * Z[:, m].all(axis=1) for m, c in zip(sets, coef))), phi


def planned(game, n: int, budget: int, seed: int):
    """(interior masks (n, M), gains (n,), Delta) of the sampled plan for (n, budget, seed)."""
    from SegSHAPLib.shapley.plan import sampled_plan

    plan = sampled_plan(n, budget, np.random.default_rng(seed))
    values = game(plan.masks)
    return plan.masks[2:], values[2:] - values[0], float(values[1] - values[0])


def test_shrinkage_rescues_near_square_designs_and_vanishes_as_pairs_grow():
    from SegSHAPLib.shapley.estimator import LINEAR, estimate

    game, phi = unanimity_game(24, 0, orders=(3, 4, 5, 6), terms=30)
    plain, shrunk, change = [], [], []
    for budget in (52, 400, 2000):                                         # 25 pairs for 24 units, then 8 M, 40 M
        for seed in range(3):
            masks, gains, delta = planned(game, 24, budget, seed)
            chosen, linear = estimate(masks, gains, delta), estimate(masks, gains, delta, LINEAR)
            if budget == 52:
                assert chosen.settings.linear_ridge > 0.0
                plain.append(np.mean((linear.phi - phi) ** 2))
                shrunk.append(np.mean((chosen.phi - phi) ** 2))
            linear_only = estimate(masks, gains, delta, type(chosen.settings)(chosen.settings.linear_ridge))
            change.append(np.abs(linear_only.phi - linear.phi).sum() / np.abs(linear.phi).sum())
    assert np.mean(shrunk) < 0.6 * np.mean(plain)                          # measured: 0.38 times
    by_budget = np.array(change).reshape(3, 3).mean(axis=1)
    assert by_budget[0] > by_budget[1] > by_budget[2] and by_budget[2] < 0.01


def test_near_square_designs_may_shrink_strongly_and_only_they():
    from SegSHAPLib.shapley import estimator

    from SegSHAPLib.shapley.fit import exact_shapley

    weights = np.random.default_rng(3).integers(1, 10, size=16)            # weighted majority game, M = 16
    game = lambda Z: (Z @ weights >= weights.sum() // 2 + 1).astype(float)  # noqa: E731
    everything = ((np.arange(1 << 16)[:, None] >> np.arange(16)) & 1).astype(bool)
    phi = exact_shapley(everything, game(everything))
    strong, capped, ridges = [], [], []
    for seed in range(4):
        masks, gains, delta = planned(game, 16, 64, seed)                  # 31 pairs for 15 free parameters
        chosen = estimator.estimate(masks, gains, delta)
        ridges.append(chosen.settings.linear_ridge)
        strong.append(np.mean((chosen.phi - phi) ** 2))
        grid, estimator.NEAR_SQUARE_GRID = estimator.NEAR_SQUARE_GRID, ()
        try:
            capped.append(np.mean((estimator.estimate(masks, gains, delta).phi - phi) ** 2))
        finally:
            estimator.NEAR_SQUARE_GRID = grid
        many = estimator.estimate(*planned(game, 16, 256, seed))            # 127 pairs > 2 M: the usual grid only
        assert many.settings.linear_ridge <= max(estimator.RIDGE_GRID)
    assert max(ridges) > max(estimator.RIDGE_GRID)
    assert np.mean(strong) < 0.6 * np.mean(capped)                        # measured: 0.34 times


def test_interactions_are_tried_beyond_one_triple_per_pair_and_chosen_by_left_out_error():
    from SegSHAPLib.shapley.estimator import LINEAR, estimate

    game, phi = unanimity_game(12, 1, orders=(3,), terms=6)               # odd part: linear + 6 triples
    chosen_error, linear_error = [], []
    for seed in range(2):
        masks, gains, delta = planned(game, 12, 400, seed)                 # 199 pairs, C(12, 3) = 220 triples
        chosen = estimate(masks, gains, delta)
        assert chosen.settings.odd_orders == (3,) and chosen.settings.odd_share > 0.0
        assert chosen.settings.odd_terms == 220 > len(masks) // 2
        assert abs(chosen.phi.sum() - delta) < 1e-12
        chosen_error.append(np.mean((chosen.phi - phi) ** 2))
        linear_error.append(np.mean((estimate(masks, gains, delta, LINEAR).phi - phi) ** 2))
    assert np.mean(chosen_error) < 0.5 * np.mean(linear_error)             # measured: 0.11 times


def all_triples(n: int) -> np.ndarray:
    """(C(n, 3), 3) every a < b < c."""
    return np.array(list(itertools.combinations(range(n), 3)))


@pytest.mark.parametrize("n,budget,share", [(10, 300, 3.0), (12, 400, 100.0), (13, 200, 0.5)])
def test_kernel_fit_equals_the_primal_fit_over_every_triple(n, budget, share):
    """The dual (kernel) solve against the explicit ridge regression on [L, all centred triple characters]
    with the same penalties: phi, the fitted odd part and its predictions agree to rounding."""
    from SegSHAPLib.shapley import estimator
    from SegSHAPLib.shapley.fit import helmert_basis, size_weights

    game, _ = unanimity_game(n, 2, orders=(3, 4, 5), terms=8)
    masks, gains, delta = planned(game, n, budget, 1)
    settings = estimator.with_interactions(0.3, (3,), share, n)
    dual = estimator.estimate(masks, gains, delta, settings)
    x = 2.0 * masks[0::2] - 1.0                                            # the primal fit, written out
    weight = size_weights(masks)[0::2]
    weight = weight / weight.mean()
    target = (gains[0::2] - gains[1::2]) / 2.0 - delta / (2.0 * n) * x.sum(axis=1)
    triples = all_triples(n)
    linear = x @ helmert_basis(n) / 2.0
    characters = x[:, triples].prod(axis=2) - x.sum(axis=1, keepdims=True) / n
    design = np.hstack([linear, characters])
    kernel_diagonal = (weight @ characters ** 2) / len(x)                   # mean weighted diagonal of the kernel
    penalty = np.concatenate([np.full(n - 1, 0.3 * (weight @ linear ** 2).mean() / len(x)),
                              np.full(len(triples), kernel_diagonal.sum() / share)])
    coefficients = np.linalg.solve(design.T @ (weight[:, None] * design) + np.diag(penalty), design.T @ (weight * target))
    beta, c = coefficients[:n - 1], coefficients[n - 1:]
    phi = delta / n + helmert_basis(n) @ beta - 2.0 * c.sum() / n
    phi += np.bincount(triples.ravel(), weights=np.repeat(2.0 * c / 3.0, 3), minlength=n)
    np.testing.assert_allclose(dual.phi, phi, rtol=0, atol=1e-10)
    probe = np.random.default_rng(0).random((50, n)) < 0.5
    xp = 2.0 * probe - 1.0
    odd = xp @ (delta / n + helmert_basis(n) @ beta) / 2.0 + (xp[:, triples].prod(axis=2) - xp.sum(axis=1, keepdims=True) / n) @ c
    np.testing.assert_allclose(dual.predict(probe, delta), delta / 2.0 + odd, rtol=0, atol=1e-10)


def test_interaction_influence_is_the_derivative_of_phi_times_the_left_out_residual():
    """The standard errors of an interaction fit scatter each pair's influence on phi: d phi / d t_k (checked by
    finite differences of the whole fit) times the pair's left-out residual."""
    from SegSHAPLib.shapley import estimator

    game, _ = unanimity_game(11, 3, orders=(3, 4), terms=8)
    masks, gains, delta = planned(game, 11, 300, 2)
    settings = estimator.with_interactions(0.3, (3,), 10.0, 11)
    chosen = estimator.estimate(masks, gains, delta, settings)
    x, target, weight = estimator._paired(masks, gains, delta)
    solution = estimator._Model(x, target, weight, settings).solve(settings.odd_share)
    left_out = solution.residual / solution.left_out
    np.testing.assert_allclose(chosen.row_residual[0::2], left_out, rtol=1e-12)
    sensitivity = chosen.influence / left_out[:, None]
    step = 1e-4
    for k in (0, 17, 90):
        moved = gains.copy()
        moved[2 * k] += 2.0 * step                                         # t_k = (g_2k - g_2k+1) / 2 - ... moves by step
        change = (estimator.estimate(masks, moved, delta, settings).phi - chosen.phi) / step
        np.testing.assert_allclose(change, sensitivity[k], rtol=0, atol=1e-8)
    assert np.allclose(sensitivity.sum(axis=1), 0.0)                       # efficiency: phi's sum does not move


def test_odd_triples_recover_a_known_odd_interaction():
    from SegSHAPLib.shapley.estimator import LINEAR, estimate, with_interactions

    game, phi = unanimity_game(10, 1, orders=(3,), terms=3)               # order-3 terms: odd part linear + triples
    masks, gains, delta = planned(game, 10, 700, 0)
    with_triples = estimate(masks, gains, delta, with_interactions(0.0, (3,), 1e9, 10))   # an almost flat prior
    np.testing.assert_allclose(with_triples.phi, phi, rtol=0, atol=1e-6)
    assert np.abs(estimate(masks, gains, delta, LINEAR).phi - phi).max() > 1e-3
    assert abs(with_triples.phi.sum() - delta) < 1e-12                     # efficiency holds with the triples too


def test_planted_odd_triples_are_fitted_at_32_units():
    """M = 32 has 4,960 triples, more than the 1,023 pairs of budget 2048 and beyond any explicit list the
    solver could afford: the kernel fit takes them all, leave-one-out error picks it over the linear fit, and
    phi's error drops."""
    from SegSHAPLib.shapley.estimator import LINEAR, estimate

    game, phi = unanimity_game(32, 7, orders=(3,), terms=5)
    chosen_error, linear_error = [], []
    for seed in range(2):
        masks, gains, delta = planned(game, 32, 2048, seed)
        chosen = estimate(masks, gains, delta)
        assert chosen.settings.odd_orders == (3,) and chosen.settings.odd_terms == math.comb(32, 3)
        assert abs(chosen.phi.sum() - delta) < 1e-12
        chosen_error.append(np.mean((chosen.phi - phi) ** 2))
        linear_error.append(np.mean((estimate(masks, gains, delta, LINEAR).phi - phi) ** 2))
    assert np.mean(chosen_error) < 0.7 * np.mean(linear_error)             # measured: 0.44 times


def test_a_planted_odd_triple_is_recovered_at_32_units_by_heredity():
    """One strong unanimity triple among 32 units: the even part's pair terms single out its three members, the
    characters weighted by them beat the unweighted kernel by leave-one-out, and phi is recovered."""
    from SegSHAPLib.shapley.estimator import LINEAR, estimate

    rng = np.random.default_rng(5)
    a = rng.normal(size=32) * 0.1
    game = lambda Z: Z @ a + 2.0 * Z[:, [3, 17, 29]].all(axis=1)         # noqa: E731
    phi = a.copy()
    phi[[3, 17, 29]] += 2.0 / 3.0
    for seed in range(2):
        masks, gains, delta = planned(game, 32, 2048, seed)
        chosen, linear = estimate(masks, gains, delta), estimate(masks, gains, delta, LINEAR)
        assert chosen.settings.unit_weights is not None
        assert set(np.argsort(chosen.settings.unit_weights)[-3:]) == {3, 17, 29}
        error = np.abs(chosen.phi - phi).max()
        assert error < 0.1 * np.abs(linear.phi - phi).max() and error < 0.005   # measured: 0.0016-0.0019 (linear 0.03-0.04)
        assert abs(chosen.phi.sum() - delta) < 1e-12


@pytest.mark.parametrize("orders,share,weighted", [((3,), 0.1, False), ((3,), 30.0, True), ((3, 5), 3.0, False)])
def test_any_interactions_leave_full_enumeration_exact(orders, share, weighted):
    from SegSHAPLib.shapley.estimator import estimate, with_interactions
    from SegSHAPLib.shapley.fit import exact_shapley
    from SegSHAPLib.shapley.plan import sampled_plan

    game = table_game(8, 4)
    plan = sampled_plan(8, 256, np.random.default_rng(0))                 # every stratum complete
    values = game(plan.masks)
    exact = exact_shapley(plan.masks, values)
    weights = np.random.default_rng(2).uniform(0.1, 3.0, 8) if weighted else None
    chosen = estimate(plan.masks[2:], values[2:] - values[0], float(values[1] - values[0]),
                      with_interactions(0.0, orders, share, 8, weights))
    np.testing.assert_allclose(chosen.phi, exact, rtol=0, atol=1e-10)      # Shapley(surrogate) + Shapley(residual)
    assert np.abs(chosen.dual).max() > 1e-6                               # the interactions did fit something


@pytest.mark.parametrize("order,weighted", [(3, False), (3, True), (5, False), (5, True)])
def test_kernel_and_its_shapley_rows_equal_their_characters_listed(order, weighted):
    """The kernel from Newton's identities, its diagonal and the Shapley values of K(x_k, .) against the sums
    over every order-set written out, with unit weights and with per-unit weights (w_T = prod of members')."""
    from SegSHAPLib.shapley.estimator import _interaction_shapley_rows, _kernel, _kernel_diagonal

    rng = np.random.default_rng(4)
    x = np.where(rng.random((6, 9)) < 0.5, -1.0, 1.0)
    weights = rng.uniform(0.2, 3.0, 9) if weighted else np.ones(9)
    sets = np.array(list(itertools.combinations(range(9), order)))
    prior = weights[sets].prod(axis=1)
    characters = x[:, sets].prod(axis=2) - x.sum(axis=1, keepdims=True) / 9
    np.testing.assert_allclose(_kernel(x, x, (order,), (2.0,), weights), 2.0 * (characters * prior) @ characters.T,
                               rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(_kernel_diagonal(x, order, weights), (characters ** 2) @ prior, rtol=1e-12, atol=1e-9)
    shapley = np.zeros((6, 9))                                             # Shapley(c_T) = 2/|T| 1_T - 2/M 1
    for t, members in enumerate(sets):
        shapley[:, members] += 2.0 / order * (2.0 * prior[t] * characters[:, t])[:, None]
        shapley -= 2.0 / 9 * (2.0 * prior[t] * characters[:, t])[:, None]
    np.testing.assert_allclose(_interaction_shapley_rows(x, (order,), (2.0,), weights), shapley, rtol=1e-10, atol=1e-9)


# --- budget, batching, arguments ------------------------------------------------------------------

@pytest.mark.parametrize("n,budget", [(2, 3), (3, 5), (4, 9), (5, 31), (8, 2), (8, 3), (8, 37), (10, 1023),
                                      (12, 64), (12, 777), (20, 100)])
def test_coalitions_are_distinct_within_budget_and_batches(n, budget):
    recorder = Recorder(sigmoid_game(n, 0))
    res = kernel_shap(recorder, n_features=n, budget=budget, seed=4, batch_size=7)
    rows = recorder.rows
    assert all(len(batch) <= 7 for batch in recorder.batches)
    assert len(rows) == res.coalitions <= budget
    assert len(set(coalition_keys(rows))) == len(rows)
    assert {k for k in coalition_keys(rows[:2])} == set(coalition_keys(np.array([[False] * n, [True] * n])))
    assert rows.dtype == bool and rows.shape[1] == n


@pytest.mark.parametrize("budget", [-1, 0, 1])
def test_budget_below_two_is_refused(budget):
    with pytest.raises(ValueError, match="budget must be at least 2"):
        kernel_shap(table_game(3, 0), n_features=3, budget=budget)


def test_no_units_is_refused():
    with pytest.raises(ValueError, match="no units"):
        kernel_shap(lambda Z: np.zeros(len(Z)), n_features=0, budget=10)


@pytest.mark.parametrize("kwargs,message", [({"batch_size": 0}, "batch_size"), ({"method": "lasso"}, "method")])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kernel_shap(table_game(3, 0), n_features=3, budget=8, **kwargs)


@pytest.mark.parametrize("output,message", [(lambda Z: np.zeros(len(Z) + 1), "must return"),
                                            (lambda Z: np.full(len(Z), np.nan), "non-finite")])
def test_bad_value_fn_output_is_refused(output, message):
    with pytest.raises(ValueError, match=message):
        kernel_shap(output, n_features=4, budget=8)


def test_progress_counts_up_to_the_total():
    calls = []
    res = kernel_shap(sigmoid_game(9, 0), n_features=9, budget=100, batch_size=16,
                      progress=lambda done, total: calls.append((done, total)))
    assert [total for _, total in calls] == [res.coalitions] * len(calls)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})
    assert calls[-1][0] == res.coalitions


# --- resume ---------------------------------------------------------------------------------------

def test_resume_after_cancel_gives_the_uninterrupted_result():
    game = sigmoid_game(13, 5)
    reference = kernel_shap(game, n_features=13, budget=300, seed=9, batch_size=20)
    store, cancel, interrupted = CoalitionStore(), threading.Event(), Recorder(game)

    def stop_after_three_batches(done, total):
        if done >= 60:
            cancel.set()

    with pytest.raises(Cancelled):
        kernel_shap(interrupted, n_features=13, budget=300, seed=9, batch_size=20, store=store, cancel=cancel,
                    progress=stop_after_three_batches)
    assert len(store) == 60 == len(interrupted.rows)
    stored = set(coalition_keys(interrupted.rows))
    recorder = Recorder(game)
    resumed = kernel_shap(recorder, n_features=13, budget=300, seed=9, batch_size=20, store=store)
    assert stored.isdisjoint(coalition_keys(recorder.rows))
    assert len(recorder.rows) == reference.coalitions - 60
    assert resumed.diagnostics["resumed_coalitions"] == 60
    np.testing.assert_array_equal(resumed.phi, reference.phi)
    assert resumed.phi0 == reference.phi0 and resumed.coalitions == reference.coalitions
    assert len(store) == reference.coalitions


def test_cancel_before_the_first_batch_evaluates_nothing():
    recorder, cancel, store = Recorder(table_game(6, 0)), threading.Event(), CoalitionStore()
    cancel.set()
    with pytest.raises(Cancelled):
        kernel_shap(recorder, n_features=6, budget=20, cancel=cancel, store=store)
    assert recorder.batches == [] and len(store) == 0


def test_a_full_store_needs_no_evaluation():
    game, store = sigmoid_game(8, 1), CoalitionStore()
    first = kernel_shap(game, n_features=8, budget=60, seed=2, store=store)
    recorder = Recorder(game)
    again = kernel_shap(recorder, n_features=8, budget=60, seed=2, store=store)
    assert recorder.batches == [] and again.diagnostics["resumed_coalitions"] == first.coalitions
    np.testing.assert_array_equal(first.phi, again.phi)


def test_a_store_claiming_unknown_values_is_refused():
    class Broken(CoalitionStore):
        def lookup(self, Z):
            return np.full(len(Z), np.nan), np.ones(len(Z), dtype=bool)

    with pytest.raises(ValueError, match="store returned non-finite"):
        kernel_shap(table_game(4, 0), n_features=4, budget=16, store=Broken())


def test_store_round_trip_and_width_check():
    store = CoalitionStore()
    Z = np.array([[True, False, True], [False, False, False]])
    store.record(Z, np.array([1.5, -2.0]))
    values, known = store.lookup(np.array([[False, False, False], [True, True, True], [True, False, True]]))
    assert known.tolist() == [True, False, True] and values[[0, 2]].tolist() == [-2.0, 1.5]
    with pytest.raises(ValueError, match="3 units"):
        store.lookup(np.zeros((1, 4), dtype=bool))


# --- several value functions, live estimates, the stop rule ----------------------------------------

def three_games(n: int):
    """value_fn (n, 3) of a sigmoid, a table and an additive game, and the three single games."""
    games = [sigmoid_game(n, 1), table_game(n, 2), additive_game(n, 3)[0]]
    return (lambda Z: np.stack([game(Z) for game in games], axis=1)), games


@pytest.mark.parametrize("n,budget", [(6, 64), (11, 150), (20, 300)])
def test_several_games_share_coalitions_and_equal_their_single_runs(n, budget):
    many, games = three_games(n)
    recorder = Recorder(many)
    results = kernel_shap_many(recorder, n_features=n, budget=budget, seed=4, batch_size=16)
    assert len(recorder.rows) == results[0].coalitions                 # each coalition asked once for all
    for game, result in zip(games, results):
        single = kernel_shap(game, n_features=n, budget=budget, seed=4, batch_size=16)
        np.testing.assert_allclose(result.phi, single.phi, rtol=0, atol=1e-12)
        assert result.phi0 == single.phi0 and result.diagnostics == single.diagnostics


def test_live_estimates_after_every_batch_end_with_the_result():
    many, _ = three_games(12)
    seen = []
    results = kernel_shap_many(many, n_features=12, budget=200, seed=1, batch_size=24, estimate=seen.append)
    assert [e.coalitions for e in seen] == [24, 48, 72, 96, 120, 144, 168, 192, 200]
    for estimate in seen:
        assert estimate.phi.shape == estimate.std_error.shape == (3, 12) and estimate.total == 200
        json.dumps(estimate.to_json(["a", "b", "c"]), allow_nan=False)
    assert np.isfinite(seen[-2].std_error).all()
    first = kernel_shap_many(many, n_features=12, budget=24, seed=1)        # 11 pairs < 12 units: the shrunk
    np.testing.assert_allclose(seen[0].std_error, [[np.inf if e is None else e               # estimator's errors,
                                                    for e in r.diagnostics["phi_std_error"]]  # as a fresh run's
                                                   for r in first], rtol=0, atol=1e-12)
    for k, result in enumerate(results):
        np.testing.assert_array_equal(seen[-1].phi[k], result.phi)
        assert seen[-1].converged[k] == result.diagnostics["converged"]
    mid = kernel_shap_many(many, n_features=12, budget=96, seed=1)
    np.testing.assert_allclose(seen[3].phi, np.array([r.phi for r in mid]), rtol=0, atol=1e-12)


def test_run_until_converged_stops_before_the_cap_like_a_fresh_run_of_that_size():
    game = sigmoid_game(10, 3)
    recorder = Recorder(game)
    result = kernel_shap(recorder, n_features=10, budget=1000, seed=2, batch_size=32, until_converged=True,
                         tolerance=0.05)
    info = result.diagnostics
    assert info["stop"] == "converged" and info["converged"] is True
    assert result.coalitions < 1000 and result.coalitions % 32 == 0 and len(recorder.rows) == result.coalitions
    fresh = kernel_shap(game, n_features=10, budget=result.coalitions, seed=2, tolerance=0.05)
    np.testing.assert_array_equal(result.phi, fresh.phi)
    assert fresh.diagnostics["stop"] == "budget"
    capped = kernel_shap(game, n_features=10, budget=1000, seed=2, batch_size=32, until_converged=True,
                         tolerance=1e-9)
    assert capped.diagnostics["stop"] == "budget" and capped.coalitions == 1000


def test_the_stop_rule_watches_only_the_chosen_games():
    many, _ = three_games(10)       # the table game never converges at 5% by 600 coalitions
    watched = kernel_shap_many(many, n_features=10, budget=600, seed=2, batch_size=32, until_converged=True,
                               converge_on=[2], tolerance=0.05)
    assert watched[0].diagnostics["stop"] == "converged" and watched[0].coalitions < 600
    everything = kernel_shap_many(many, n_features=10, budget=600, seed=2, batch_size=32, until_converged=True,
                                  tolerance=0.05)
    assert everything[0].coalitions > watched[0].coalitions


def test_finish_ends_with_the_estimate_so_far_and_says_so():
    game, finish = sigmoid_game(9, 0), threading.Event()
    result = kernel_shap(game, n_features=9, budget=300, seed=0, batch_size=20, finish=finish,
                         progress=lambda done, total: finish.set() if done >= 60 else None)
    assert result.diagnostics["stop"] == "cancelled" and result.coalitions == 60
    np.testing.assert_array_equal(result.phi, kernel_shap(game, n_features=9, budget=60, seed=0).phi)
    finish.set()
    with pytest.raises(Cancelled):
        kernel_shap(game, n_features=9, budget=300, finish=finish)


# --- imports --------------------------------------------------------------------------------------

def test_import_pulls_in_no_heavy_or_slicer_modules():
    code = ("import sys, SegSHAPLib.shapley.kernelshap; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'nnunetv2', 'slicer'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- nested plans ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 5, 8, 12, 24])
def test_plans_are_nested_across_budgets_and_the_exact_plan(n):
    from SegSHAPLib.shapley.plan import exact_plan, sampled_plan

    largest = sampled_plan(n, 1500, np.random.default_rng(7)).masks
    for budget in (2, 3, 9, 64, 129, 700):
        prefix = sampled_plan(n, budget, np.random.default_rng(7)).masks
        assert len(prefix) <= budget and (largest[:len(prefix)] == prefix).all()
    if n <= 12:
        everything = exact_plan(n, np.random.default_rng(7)).masks
        assert len(set(coalition_keys(everything))) == 1 << n
        assert (everything[:len(largest)] == largest[:len(everything)]).all()


def test_a_larger_budget_reuses_every_coalition_of_a_smaller_one():
    recorder, store = Recorder(sigmoid_game(14, 2)), CoalitionStore()
    kernel_shap(recorder, n_features=14, budget=128, seed=3, store=store)
    first = len(recorder.rows)
    grown = kernel_shap(recorder, n_features=14, budget=256, seed=3, store=store)
    assert first == 128 and len(recorder.rows) - first == 128
    assert grown.diagnostics["resumed_coalitions"] == 128
    fresh = kernel_shap(sigmoid_game(14, 2), n_features=14, budget=256, seed=3)
    np.testing.assert_array_equal(grown.phi, fresh.phi)


@pytest.mark.parametrize("n,budget,characters", [(1200, 64, 0), (400, 2048, math.comb(400, 3))])
def test_many_units_never_enumerate_the_triples(n, budget, characters):
    """At M = 1,200 (fine FCC cells) C(M, 3) is 287 million triples, 6.9 GB of indices: the kernel fit never
    lists them (its cost is in the pairs, p x p), and with fewer than 2 M pairs it is not even tried; at M = 400
    with 1,023 pairs all 10.6 million triples are fitted within the same memory."""
    import tracemalloc

    weights = np.linspace(-1.0, 1.0, n)
    tracemalloc.start()
    result = kernel_shap(lambda keep: keep.astype(float) @ weights + keep[:, :3].all(axis=1), n, budget, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 500e6, f"{peak / 1e6:.0f} MB traced"
    assert result.phi.shape == (n,) and np.isclose(result.phi.sum(), weights.sum() + 1.0)
    assert result.diagnostics["estimator"]["odd_triples"] == characters


def test_an_additive_game_whose_held_out_values_are_all_equal_scores_r2_one():
    """Weights 0.1, 0.2, 0.3, 0.4, exact: the one held-out pair, {1, 4} and {2, 3}, is worth 0.5 each, so the
    scored values are equal (SST = 0) and the additive fit predicts them to rounding (SSE ~ 1e-33): a perfect
    prediction, R^2 1 (it read 0 when only SSE == 0 counted); a real interaction still scores below 1."""
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    result = kernel_shap(lambda keep: keep.astype(float) @ weights, 4, 16, seed=0)
    assert result.exact and result.diagnostics["heldout_r2"] == 1.0
    noisy = kernel_shap(lambda keep: keep.astype(float) @ weights + 0.05 * (keep[:, 0] & keep[:, 1]), 4, 16, seed=0)
    assert noisy.diagnostics["heldout_r2"] < 1.0
