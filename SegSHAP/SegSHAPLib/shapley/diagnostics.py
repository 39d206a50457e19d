"""Diagnostics of a KernelSHAP run, all JSON-serialisable (floats, ints, bools, a list of floats).

Every refit here is the estimator actually used (shapley.estimator.estimate, with the settings the
full data chose: shrinkage and odd interaction terms) on a subset of the plan's pairs. Subsets are taken by the pairs'
round-robin positions (shapley.plan.CoalitionPlan.position), which spreads them over all strata.
"""

from __future__ import annotations

import math

import numpy as np

from SegSHAPLib.shapley.estimator import Estimate, estimate
from SegSHAPLib.shapley.fit import Fit
from SegSHAPLib.shapley.plan import CoalitionPlan

HELDOUT_FOLDS = 10               # cross-validation folds of the held-out R^2 (pairs by position modulo this)
ROUNDING = 1e-9                  # relative error of a prediction that counts as exact (held-out R^2 with SST = 0)
CONFIDENCE_Z = 1.96


def diagnostics(plan: CoalitionPlan, values: np.ndarray, phi: np.ndarray, full: Fit, chosen: Estimate,
                tolerance: float, control: np.ndarray | None = None) -> dict:
    """Diagnostics of phi (M,) estimated from the plan's values (n,); chosen is the estimate on every pair
    and full the constrained regression whose standard errors describe it (see shapley.kernelshap).

    With a control variate u (``control``: its values (n,) at the plan's coalitions), chosen and full are the
    estimate of the residual game v - u and phi = Shapley(u) + chosen.phi: every refit below is of that
    residual, the held-out predictions are u + the refit's, scored against v, and the scale is v's.

    - efficiency_residual: |sum(phi) - (v(full) - v(empty))|.
    - condition_number, design_rank: ratio of the extreme nonzero singular values and the rank of the
      weighted design sqrt(w) Z Q (1 and M - 1 for a full enumeration).
    - heldout_mae, heldout_r2: cross-validated prediction of coalitions the fit did not see: the pairs are
      split into HELDOUT_FOLDS folds by their position modulo HELDOUT_FOLDS (each fold spread over all
      strata), and each fold is predicted by the estimator refitted on the others (Estimate.predict: z . phi
      for the linear model, plus the odd interaction terms when they are used; with a control, plus u), so
      every pair is held out once. The same is done in exact mode, where it measures how additive the game
      is. With fewer than two pairs (M <= 2 and tiny budgets) the fitted coalitions themselves are scored.
      R^2 is 1 - SSE/SST about the scored values' mean; with SST = 0 it is 1 if the prediction is exact (to
      ROUNDING relative to the largest scored value) and 0 otherwise. (Before this used one fold of 10% of
      the pairs, whose R^2 swung between 0.85 and 0.98 from one budget to the next on the demo's zoom.)
    - coefficient_change: ||phi - phi_half||_1 / ||phi||_1 (the denominator 1 when phi = 0), phi_half
      the refit on the first half of the pairs by position (about half of every stratum).
    - phi_std_error: per-unit sandwich standard errors (shapley.fit.Fit.std_error, conservative for
      the plan's balanced draws); 0 in exact mode. When the sample leaves no degrees of freedom (fewer
      pairs than units) they cannot be estimated: None each (null in JSON), and std_error_estimable is
      False; convergence then counts them as large as the whole effect (the scale below).
    - converged: max standard error <= tolerance * scale, scale = |v(full) - v(empty)| (||phi||_1 when
      v(full) = v(empty)).
    - coalitions_needed_forecast: coalitions forecast to converge: the enumerated ones plus the sampled
      ones times (max standard error / goal)^2 (error ~ 1/sqrt(n)), at most 2^M (exact enumeration);
      the coalitions used when already converged.
    - abs_phi_lower_bound: per unit max(0, |phi_j| - CONFIDENCE_Z * SE_j), the key to rank by when not
      converged (a unit whose interval reaches 0 gets 0; with inestimable standard errors every unit gets
      max(0, |phi_j| - z * scale), in practice 0); equal to |phi_j| in exact mode.
    - confidence_z: the z of those bounds (1.96, two-sided 95% for a normal error).
    - separated_top_units: how many leading units, ranked by |phi|, are resolved: the largest k such
      that each of the first k has a lower bound above the upper bound |phi| + z SE of every unit ranked
      after it (M in exact mode, 0 when nothing is resolved).
    - estimator: {"linear_ridge_pairs": the shrinkage towards the equal split, as a prior worth that
      many pairs (0: none), "odd_triples": the number of odd interaction characters fitted (Settings.odd_terms:
      C(M, 3) when the kernel fit of every triple is used, 0: linear),
      "tree_surrogate": whether a boosted-tree control variate was used, "control_variate": whether a known
      game u was (the zoom's refined parent game, shapley.control)}.
    """
    known = np.zeros_like(values) if control is None else np.asarray(control, dtype=float)
    residual = values - known
    masks, gains, position = plan.masks[2:], residual[2:] - residual[0], plan.position[2:]
    known_gains = known[2:] - known[0]
    delta = float(residual[1] - residual[0])
    whole_delta = float(values[1] - values[0])
    singular = full.singular_values
    scale = abs(whole_delta) if whole_delta != 0.0 else float(np.abs(phi).sum())
    estimable = plan.exact or bool(np.isfinite(full.std_error).all())
    std_error = np.zeros_like(phi) if plan.exact else np.where(np.isfinite(full.std_error), full.std_error, scale)
    converged, forecast = convergence(plan, std_error, tolerance * scale)
    mae, r2 = _heldout(masks, gains, known_gains, position, delta, chosen)
    return {
        "efficiency_residual": float(abs(phi.sum() - whole_delta)),
        "condition_number": float(singular[0] / singular[-1]) if len(singular) else 1.0,
        "design_rank": int(len(singular)),
        "heldout_mae": mae,
        "heldout_r2": r2,
        "coefficient_change": _coefficient_change(masks, gains, position, delta, phi, chosen),
        "phi_std_error": [float(x) for x in std_error] if estimable else [None] * len(phi),
        "std_error_estimable": estimable,
        "converged": converged,
        "coalitions_needed_forecast": forecast,
        "abs_phi_lower_bound": [float(x) for x in abs_phi_lower_bound(phi, std_error)],
        "confidence_z": CONFIDENCE_Z,
        "separated_top_units": _separated(phi, std_error),
        "estimator": {"linear_ridge_pairs": float(chosen.settings.linear_ridge),
                      "odd_triples": int(chosen.settings.odd_terms),
                      "tree_surrogate": bool(chosen.settings.surrogate),
                      "control_variate": control is not None},
    }


def abs_phi_lower_bound(phi, std_error) -> np.ndarray:
    """(M,) max(0, |phi| - CONFIDENCE_Z * SE) per unit: how large its effect is at least (95%); a unit whose standard
    error is not known (None or NaN) gets 0. A sign is settled where this is above 0."""
    errors = np.array([np.nan if e is None else float(e) for e in std_error], dtype=float)
    bound = np.maximum(np.abs(np.asarray(phi, dtype=float)) - CONFIDENCE_Z * np.nan_to_num(errors), 0.0)
    return np.where(np.isfinite(errors), bound, 0.0)


def _separated(phi: np.ndarray, std_error: np.ndarray) -> int:
    """Largest k: each of the k units of largest |phi| has |phi| - z SE above |phi| + z SE of every unit after it."""
    order = np.argsort(-np.abs(phi), kind="stable")
    lower = (np.abs(phi) - CONFIDENCE_Z * std_error)[order]
    upper = (np.abs(phi) + CONFIDENCE_Z * std_error)[order]
    best_after = np.concatenate([np.maximum.accumulate(upper[::-1])[::-1][1:], [-np.inf]])
    resolved = lower > best_after
    return int(len(phi) if resolved.all() else np.argmin(resolved))


def _refit(masks: np.ndarray, gains: np.ndarray, delta: float, keep: np.ndarray, chosen: Estimate) -> Estimate:
    """The estimate refitted, with chosen's settings, on the interior rows where keep (n,) is True."""
    return estimate(masks[keep], gains[keep], delta, chosen.settings)


def _heldout(masks: np.ndarray, gains: np.ndarray, known_gains: np.ndarray, position: np.ndarray, delta: float,
             chosen: Estimate) -> tuple[float, float]:
    """(MAE, R^2) of every pair predicted by the refit on the other folds; masks (n, M), gains/position (n,):
    gains of the game estimated (the residual game with a control), known_gains (n,) the control's (0 without),
    added back so that the whole game's gains are predicted and scored."""
    pairs = len(masks) // 2
    if pairs >= 2:
        folds = min(HELDOUT_FOLDS, pairs)
        prediction = np.zeros(len(masks))
        for fold in range(folds):
            held = position % folds == fold
            prediction[held] = _refit(masks, gains, delta, ~held, chosen).predict(masks[held], delta)
    elif len(masks):
        prediction = chosen.predict(masks, delta)
    else:
        return 0.0, 1.0
    error = gains - prediction
    whole = gains + known_gains
    sse = float(error @ error)
    sst = float(((whole - whole.mean()) ** 2).sum())
    mae = float(np.abs(error).mean())
    if sst > 0.0:
        return mae, 1.0 - sse / sst
    scale = float(np.abs(whole).max()) or 1.0                    # every scored value the same: exact to rounding?
    return mae, 1.0 if sse <= len(error) * (ROUNDING * scale) ** 2 else 0.0


def _coefficient_change(masks: np.ndarray, gains: np.ndarray, position: np.ndarray, delta: float,
                        phi: np.ndarray, chosen: Estimate) -> float:
    """||phi - phi_half||_1 / ||phi||_1 with phi_half refitted on the pairs of position < pairs / 2 (of the
    residual game with a control, whose exact Shapley values both share)."""
    half = _refit(masks, gains, delta, position < math.ceil(len(masks) // 2 / 2), chosen).phi
    scale = float(np.abs(phi).sum())
    return float(np.abs(chosen.phi - half).sum() / (scale if scale > 0.0 else 1.0))


def convergence(plan: CoalitionPlan, std_error: np.ndarray, goal: float) -> tuple[bool, int]:
    """(converged, coalitions forecast to converge) from the standard errors (M,) and the goal for their max."""
    used = len(plan.masks)
    worst = float(std_error.max())
    if worst <= goal:
        return True, used
    ceiling = 1 << plan.masks.shape[1]
    if goal <= 0.0:
        return False, ceiling
    sampled = int((~plan.complete).sum())
    return False, min(ceiling, used - sampled + math.ceil(sampled * (worst / goal) ** 2))
