"""The verdict (report.verdict): converged or not, ranking by the lower confidence bound, settled signs and the
fixes with their cost, on summaries built from the real solver's results (shapley.kernel_shap on numpy games
whose answer is known: additive games are recovered exactly, games with strong interactions are not at a small
budget)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from SegSHAPLib.report.verdict import HELDOUT_R2_GOAL, verdict
from SegSHAPLib.shapley import kernel_shap

FORWARDS, INFERENCE_S = 900, 45.0       # this run's measured network work (patch forwards, seconds)


def _summary(result, names: list[str], units: str = "organs", refine: str | None = None) -> dict:
    """summary.json as explain.run writes it (the keys the verdict reads), one value function "softdice"."""
    errors = result.diagnostics["phi_std_error"]
    own = {"units": [{"id": j + 1, "name": name, "voxels": 10, "shap": float(result.phi[j]), "std_error": errors[j]}
                     for j, name in enumerate(names)],
           "base_value": float(result.phi0), "full_value": float(result.phi0 + result.phi.sum()),
           "solver": {"method": "exact" if result.exact else "kernelshap", "coalitions": int(result.coalitions),
                      "resumed_coalitions": 0, "diagnostics": result.diagnostics}}
    return {"inputs": {"units": units, "refine": refine, "fcc_scale_mm": 30.0, "value": "softdice"},
            **own, "value_functions": ["softdice"], "by_value": {"softdice": own},
            "inference": {"patch_forwards": FORWARDS}, "timings_s": {"inference": INFERENCE_S}}


def _additive(M: int):
    weights = np.linspace(-1.0, 2.0, M)
    return lambda Z: Z @ weights


def _interacting(M: int):
    """A saturating game with strong higher-order interactions (a segmentation-like score)."""
    rng = np.random.default_rng(7)
    weights, pairs = rng.normal(size=M), rng.normal(size=(M, M))
    return lambda Z: np.tanh(Z @ weights + 0.8 * np.einsum("ni,ij,nj->n", Z, pairs, Z) / M) + \
        np.sin(7.0 * (Z * np.arange(1, M + 1)).sum(axis=1) / M)


def test_exact_enumeration_is_an_answer_ranked_by_abs_phi():
    result = kernel_shap(_interacting(4), 4, budget=64)
    v = verdict(_summary(result, ["liver", "stomach", "colon", "aorta"]))
    assert result.exact and v.converged and v.exact and not v.actions
    assert v.headline.startswith("Exact Shapley values")
    assert ("The units interact" in v.headline) == (result.diagnostics["heldout_r2"] < HELDOUT_R2_GOAL)
    weights = np.random.default_rng(3).normal(size=6)      # no held-out pair of equal gains (SST > 0)
    additive = kernel_shap(lambda Z: Z @ weights, 6, budget=64)
    assert additive.exact and additive.diagnostics["heldout_r2"] > 0.999
    assert "interact" not in verdict(_summary(additive, list("abcdef"))).headline
    assert [u.name for u in v.ranked] == [["liver", "stomach", "colon", "aorta"][j]
                                          for j in np.argsort(-np.abs(result.phi), kind="stable")]
    assert v.ranked_by == "|phi|"


def test_a_recovered_sampled_game_is_converged():
    M = 12
    result = kernel_shap(_additive(M), M, budget=64)
    v = verdict(_summary(result, [f"organ {j}" for j in range(M)]))
    assert not result.exact and result.diagnostics["converged"] and result.diagnostics["heldout_r2"] > 0.99
    assert v.converged and not v.actions and v.headline.startswith("Converged")
    assert v.ranked[0].name == f"organ {M - 1}"          # the largest weight


def test_noise_is_not_an_answer_ranked_by_lower_bound_with_priced_fixes():
    M = 16
    result = kernel_shap(_interacting(M), M, budget=48)
    summary = _summary(result, [f"organ {j}" for j in range(M)])
    v = verdict(summary)
    bounds = result.diagnostics["abs_phi_lower_bound"]
    assert not v.converged and v.headline.startswith("Not converged") and "noise" in v.headline
    assert v.ranked_by == "lower bound"
    assert [u.lower_bound for u in v.ranked] == sorted(bounds, reverse=True)
    assert set(v.settled) == {f"organ {j}" for j in range(M) if bounds[j] > 0}
    for unit in v.ranked:                               # settled: the 95% interval excludes 0
        z = result.diagnostics["confidence_z"]
        assert unit.sign_settled == (unit.std_error is not None and abs(unit.phi) - z * unit.std_error > 0)
    budget = next(a for a in v.actions if a.kind == "budget")
    forecast = result.diagnostics["coalitions_needed_forecast"]
    assert budget.coalitions == min(forecast, 1 << M) - result.coalitions > 0
    assert budget.patch_forwards == math.ceil(budget.coalitions * FORWARDS / result.coalitions)
    assert budget.seconds == pytest.approx(budget.patch_forwards * INFERENCE_S / FORWARDS)
    assert f"--budget {min(forecast, 1 << M)}" in budget.text and "patch forwards" in budget.text


def test_the_convergence_test_alone_is_not_enough_without_held_out_fit():
    M = 12
    summary = _summary(kernel_shap(_additive(M), M, budget=64), [f"organ {j}" for j in range(M)])
    summary["by_value"]["softdice"]["solver"]["diagnostics"]["heldout_r2"] = HELDOUT_R2_GOAL - 0.01
    assert not verdict(summary).converged
    summary["by_value"]["softdice"]["solver"]["diagnostics"]["heldout_r2"] = HELDOUT_R2_GOAL
    assert verdict(summary).converged


def test_supervoxel_units_are_told_to_zoom_and_a_zoom_to_refine_less():
    M = 16
    names = [f"{organ} @ cell {c}" for organ, c in zip(["liver"] * 10 + ["stomach"] * 4 + ["colon"] * 2, range(M))]
    result = kernel_shap(_interacting(M), M, budget=40)
    hybrid = verdict(_summary(result, names, units="hybrid"))
    kinds = [a.kind for a in hybrid.actions]
    assert "zoom" in kinds and "coarser" in kinds and "budget" in kinds
    assert [a.coalitions for a in hybrid.actions] == sorted(a.coalitions for a in hybrid.actions)
    summary = _summary(result, names, units="organs", refine="/parent")
    summary["refine"] = {"organs": ["liver", "stomach", "colon"]}
    zoom = verdict(summary)
    refine_less = next(a for a in zoom.actions if "--refine-organs" in a.advice)
    top = max(("liver", "stomach", "colon"),
              key=lambda organ: sum(abs(result.phi[j]) for j, n in enumerate(names) if n.startswith(organ)))
    assert f"--refine-organs {top}" in refine_less.advice
    summary["refine"] = {"organs": ["liver and gallbladder"]}        # a grouped parent unit: no such advice
    assert not any("--refine-organs" in a.advice for a in verdict(summary).actions)


def test_a_zooms_reused_coalitions_are_not_counted_twice_in_the_cost():
    """A zoom's parent-reused coalitions are among its resumed ones (they seed its store): the rate divides the
    forwards by the coalitions evaluated here, coalitions - resumed."""
    M = 16
    result = kernel_shap(_interacting(M), M, budget=48)
    summary = _summary(result, [f"organ {j}" for j in range(M)], refine="/parent")
    summary["refine"] = {"organs": ["organ 0"], "reused_coalitions": 8}
    summary["by_value"]["softdice"]["solver"]["resumed_coalitions"] = 8
    budget = next(a for a in verdict(summary).actions if a.kind == "budget")
    assert budget.patch_forwards == math.ceil(budget.coalitions * FORWARDS / (result.coalitions - 8))


def test_a_zooms_budget_advice_adds_the_cell_patterns_its_control_measures_first():
    """--budget counts a zoom's measured cell patterns too (explain.zoom_control): the advice adds them to the
    coalitions the solver's plan needs, while the coalitions to evaluate stay the plan's."""
    M = 16
    result = kernel_shap(_interacting(M), M, budget=48)
    summary = _summary(result, [f"organ {j}" for j in range(M)], refine="/parent")
    forecast = min(result.diagnostics["coalitions_needed_forecast"], 1 << M)
    summary["refine"] = {"organs": ["organ 0"], "control": {"used": True, "coalitions": 62}}
    budget = next(a for a in verdict(summary).actions if a.kind == "budget")
    assert f"--budget {forecast + 62} " in budget.text and budget.coalitions == forecast - result.coalitions
    summary["refine"]["control"] = {"used": False, "reason": "the parent was sampled"}
    assert f"--budget {forecast} " in next(a for a in verdict(summary).actions if a.kind == "budget").text


def test_a_zoom_of_a_sampled_parent_is_told_to_make_the_parent_exact_first():
    M = 16
    result = kernel_shap(_interacting(M), M, budget=48)
    summary = _summary(result, [f"organ {j}" for j in range(M)], refine="/parent")
    summary["refine"] = {"organs": ["organ 0"], "parent_units": 9, "parent_coalitions": 176,
                         "control": {"used": False, "reason": "the parent was sampled"}}
    advice = [a for a in verdict(summary).actions if "parent exactly" in a.advice]
    assert len(advice) == 1 and "--budget 512" in advice[0].advice and advice[0].coalitions == 512 - 176
    summary["refine"]["parent_coalitions"] = 512                     # an exact parent: no such advice
    assert not any("parent exactly" in a.advice for a in verdict(summary).actions)
    summary["refine"].update(parent_units=19, parent_coalitions=176)  # 2^19: not affordable, not advised
    assert not any("parent exactly" in a.advice for a in verdict(summary).actions)


def test_older_single_value_summary_and_unmeasured_cost():
    M = 16
    summary = _summary(kernel_shap(_interacting(M), M, budget=48), [f"organ {j}" for j in range(M)])
    del summary["by_value"], summary["value_functions"]
    summary["inference"]["patch_forwards"] = 0           # everything came from a journal: nothing measured
    v = verdict(summary)
    assert v.value == "softdice" and not v.converged
    assert all(a.patch_forwards is None and a.seconds is None for a in v.actions)
    assert v.as_dict()["actions"][0]["text"].startswith("rerun")


def test_segshap_explain_ends_with_the_verdict_and_the_units_ranked_its_way(capsys):
    from SegSHAPLib.cli.explain import print_verdict

    M = 16
    result = kernel_shap(_interacting(M), M, budget=48)
    summary = _summary(result, [f"organ {j}" for j in range(M)])
    print_verdict(summary, shown=3)
    lines = capsys.readouterr().out.splitlines()
    v = verdict(summary)
    assert lines[0] == f"value functions: softdice; verdict on softdice: {v.headline}"
    assert lines[1] == "top units by lower bound:"
    assert [line.split()[2] for line in lines[2:5]] == [u.name.split()[1] for u in v.ranked[:3]]
    assert lines[5:] == [f"fix: {a.text}" for a in v.actions]
