"""The zoom's control variate (shapley.control) and the solver's use of a known game (kernel_shap_many(controls=)):
closed-form Shapley values against enumeration, the measured coalitions reproduced, exactness whatever the
control, and a game the control explains converging where the plain estimate does not."""

from __future__ import annotations

import numpy as np
import pytest

from SegSHAPLib.shapley.control import (RefinedParentGame, moebius, new_within_coalitions, refined_parent_game,
                                        within_coalition_count, within_unit_coalitions)
from SegSHAPLib.shapley.fit import exact_shapley
from SegSHAPLib.shapley.kernelshap import kernel_shap_many
from SegSHAPLib.shapley.plan import exact_plan

# parent units 0..4; child units: parent 1 split into 3 cells, parent 3 into 2 (and a zoom of parent 1 only)
TWO_REFINED = (np.array([0, 1, 1, 1, 2, 3, 3, 4]), (1, 3))
ONE_REFINED = (np.array([0, 1, 1, 1, 1, 2, 3, 4]), (1,))


def _random_game(rng, parent_of, refined) -> RefinedParentGame:
    parent = rng.normal(size=1 << 5)
    measured = rng.normal(size=len(within_unit_coalitions(parent_of, refined)))
    return refined_parent_game(parent, parent_of, refined, measured)


def _all(n_units: int) -> np.ndarray:
    return exact_plan(n_units, np.random.default_rng(0)).masks


@pytest.mark.parametrize("parent_of, refined", [TWO_REFINED, ONE_REFINED])
def test_closed_form_shapley_values_equal_enumeration(parent_of, refined):
    rng = np.random.default_rng(3)
    for _ in range(3):
        game = _random_game(rng, parent_of, refined)
        masks = _all(len(parent_of))
        assert game.shapley() == pytest.approx(exact_shapley(masks, game.values(masks)), abs=1e-12)


def test_the_known_game_is_the_parent_on_parent_coalitions_and_the_measurement_on_the_cells():
    parent_of, refined = ONE_REFINED
    rng = np.random.default_rng(4)
    parent = rng.normal(size=1 << 5)
    cells = within_unit_coalitions(parent_of, refined)
    measured = rng.normal(size=len(cells))
    measured[0], measured[-1] = parent[0b11101], parent[0b11111]       # cells all removed / all kept: parent's
    game = refined_parent_game(parent, parent_of, refined, measured)
    assert game.values(cells) == pytest.approx(measured, abs=1e-12)
    bits = (np.arange(32)[:, None] >> np.arange(5)) & 1                 # every parent coalition, as child units
    child = bits[:, parent_of].astype(bool)
    assert game.values(child) == pytest.approx(parent, abs=1e-12)
    assert within_coalition_count(parent_of, refined) == 2 ** 4 - 2


def test_unrefined_parent_units_must_be_single_child_units():
    parent_of, _ = TWO_REFINED
    with pytest.raises(ValueError, match="exactly one child unit"):
        refined_parent_game(np.zeros(32), parent_of, (1,), np.zeros(8))


def test_moebius_dividends_rebuild_the_table():
    table = np.random.default_rng(5).normal(size=16)
    m = moebius(table)
    subsets = [[t for t in range(16) if t & s == t] for s in range(16)]
    assert [m[s].sum() for s in subsets] == pytest.approx(table.tolist(), abs=1e-12)


def _factorised_game(parent_of, refined, seed):
    """A child game v = u exactly (its cells act through one factor) and u built from its measurements."""
    rng = np.random.default_rng(seed)
    truth = _random_game(rng, parent_of, refined)
    measured = truth.values(within_unit_coalitions(parent_of, refined))
    return truth, refined_parent_game(truth.parent_values, parent_of, refined, measured)


def test_a_game_the_control_explains_is_solved_exactly_from_few_coalitions():
    parent_of, refined = TWO_REFINED
    truth, control = _factorised_game(parent_of, refined, 6)
    exact = exact_shapley(_all(8), truth.values(_all(8)))
    with_control, = kernel_shap_many(lambda z: truth.values(z)[:, None], 8, 40, seed=1, controls=[control])
    plain, = kernel_shap_many(lambda z: truth.values(z)[:, None], 8, 40, seed=1)
    assert with_control.phi == pytest.approx(exact, abs=1e-9)
    assert with_control.diagnostics["converged"] and with_control.diagnostics["heldout_r2"] == pytest.approx(1.0)
    assert with_control.diagnostics["estimator"]["control_variate"] is True
    assert np.abs(plain.phi - exact).max() > 1e-3 and not plain.diagnostics["converged"]


def test_any_control_leaves_exact_enumeration_exact_and_efficiency_intact():
    parent_of, refined = TWO_REFINED
    rng = np.random.default_rng(7)
    wrong = _random_game(rng, parent_of, refined)                      # unrelated to the game below
    weights = rng.normal(size=8)

    def game(z):
        return (z @ weights + np.sin(3.0 * z[:, 1] * z[:, 5]))[:, None]

    exact, = kernel_shap_many(game, 8, 256, seed=0, controls=[wrong])
    assert exact.exact and exact.phi == pytest.approx(exact_shapley(_all(8), game(_all(8))[:, 0]), abs=1e-12)
    sampled, = kernel_shap_many(game, 8, 120, seed=0, controls=[wrong])
    delta = game(np.ones((1, 8), dtype=bool))[0, 0] - game(np.zeros((1, 8), dtype=bool))[0, 0]
    assert sampled.phi.sum() == pytest.approx(delta, abs=1e-9)
    assert sampled.diagnostics["efficiency_residual"] < 1e-9


def test_live_estimates_use_the_control_too():
    parent_of, refined = TWO_REFINED
    truth, control = _factorised_game(parent_of, refined, 8)
    exact = exact_shapley(_all(8), truth.values(_all(8)))
    seen = []
    kernel_shap_many(lambda z: truth.values(z)[:, None], 8, 64, seed=2, batch_size=16, controls=[control],
                     estimate=seen.append)
    assert len(seen) >= 3 and all(live.phi[0] == pytest.approx(exact, abs=1e-9) for live in seen[1:])


def test_the_new_cell_patterns_leave_out_the_full_and_the_parent_coalitions():
    for parent_of, refined in (TWO_REFINED, ONE_REFINED):
        new = new_within_coalitions(parent_of, refined)
        assert len(new) == within_coalition_count(parent_of, refined)
        assert not new.all(axis=1).any()
        removed = ~new
        for r in refined:                                          # no row removes exactly all of r's cells
            cells = parent_of == r
            assert not (removed[:, cells].all(axis=1) & (removed.sum(axis=1) == cells.sum())).any()
