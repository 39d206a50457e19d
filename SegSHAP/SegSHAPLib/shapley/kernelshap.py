"""KernelSHAP for coalition games over M units, numpy only (no scipy, torch, nnunetv2 or slicer).

    from SegSHAPLib.shapley.kernelshap import kernel_shap
    res = kernel_shap(value_fn, n_features=M, budget=N, seed=0)

value_fn(Z) -> (n,) values for Z a bool array (n, M), True = unit kept; it is called in batches.
kernel_shap_many(value_fn, ...) does the same for V games at once, value_fn(Z) -> (n, V): one plan, one
weighted design, V right-hand sides; it can also report the estimate after every batch and stop once the
standard errors are small enough.

- 2^M <= budget (or method="exact"): exact Shapley values by enumerating all 2^M coalitions.
- Otherwise KernelSHAP (Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions",
  NeurIPS 2017) on a deterministic plan of paired coalitions, the sizes the budget covers enumerated in
  full, the others sampled without replacement with the same number per size (leverage scores, Musco &
  Witter, ICLR 2025) and balanced by herding (shapley.plan), solved as a weighted least-squares
  problem with the efficiency constraint eliminated exactly (shapley.fit) on the pairs' odd part, shrunk
  towards the equal split when pairs are few and with every odd triple (a kernel fit) when the data
  support them (shapley.estimator). Measured at equal budgets (benchmarks/bench_solver.py): mean squared
  error 0.002-0.41 times shap.KernelExplainer's in all 72 cells; ahead of the best shapiq 1.8
  approximator in 65 of 66 cells, at most 1.28 times behind it (benchmarks/README.md).

The whole plan is fixed by (M, budget, seed) before any value is asked for, so a run interrupted
through `cancel` resumes from its `store` (protocol in shapley.store) to exactly the same result; and
plans are nested (the plan of a smaller budget is a prefix of a larger one's), so a larger budget with
the same store evaluates only the coalitions the smaller run had not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.errors import Cancelled
from SegSHAPLib.shapley.diagnostics import convergence, diagnostics
from SegSHAPLib.shapley.estimator import LINEAR
from SegSHAPLib.shapley.estimator import estimate as estimate_phi  # `estimate` is kernel_shap_many's callback
from SegSHAPLib.shapley.fit import exact_shapley, fit
from SegSHAPLib.shapley.plan import CoalitionPlan, exact_plan, sampled_plan
from SegSHAPLib.shapley.store import CoalitionStore, coalition_keys

__all__ = ["CoalitionStore", "KernelShapResult", "LiveEstimate", "coalition_keys", "coalition_plan", "kernel_shap",
           "kernel_shap_many"]

METHODS = ("auto", "exact", "kernelshap")
DEFAULT_TOLERANCE = options.TOLERANCE   # convergence goal of the standard errors, relative to |v(full) - v(empty)|


class Store(Protocol):
    """The resume store protocol (CoalitionStore is the in-memory implementation)."""

    def lookup(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def record(self, Z: np.ndarray, values: np.ndarray) -> None: ...


class KnownGame(Protocol):
    """A control variate: a game whose values are cheap and whose Shapley values are exact
    (shapley.control.RefinedParentGame)."""

    def values(self, masks: np.ndarray) -> np.ndarray: ...

    def shapley(self) -> np.ndarray: ...


class CancelEvent(Protocol):
    """What `cancel` needs: threading.Event's is_set."""

    def is_set(self) -> bool: ...


@dataclass
class KernelShapResult:
    """Result of kernel_shap for one value function (kernel_shap_many gives one per value function).

    Attributes:
        phi0: v(empty).
        phi: (M,) attributions, sum(phi) = v(full) - v(empty).
        coalitions: distinct coalitions whose value was used (evaluated or taken from the store),
            empty and full included; never more than the budget.
        exact: True when phi is the exact Shapley value (all 2^M coalitions used).
        diagnostics: see shapley.diagnostics.diagnostics, plus "resumed_coalitions" (values taken
            from the store), "method" ("exact" or "kernelshap") and "stop" (see STOPS).
    """

    phi0: float
    phi: np.ndarray
    coalitions: int
    exact: bool
    diagnostics: dict = field(default_factory=dict)


@dataclass
class LiveEstimate:
    """The estimate after a batch, for V value functions over M units (kernel_shap_many's `estimate`).

    Attributes:
        coalitions: the plan prefix the estimate uses (its values all known), empty and full included.
        total: coalitions in the whole plan (the budget, or the cap of a run until converged).
        phi0: (V,) v(empty) per value function.
        phi: (V, M) attributions on the prefix.
        std_error: (V, M) standard errors; inf where the prefix leaves no degrees of freedom, 0 when exact.
        converged: (V,) bool, max standard error <= tolerance * |v(full) - v(empty)| (shapley.diagnostics).
        coalitions_needed_forecast: (V,) int, coalitions forecast to converge (shapley.diagnostics).
    """

    coalitions: int
    total: int
    phi0: np.ndarray
    phi: np.ndarray
    std_error: np.ndarray
    converged: np.ndarray
    coalitions_needed_forecast: np.ndarray

    def to_json(self, names: list[str] | None = None) -> dict:
        """Plain JSON types: {"coalitions", "total", "values": {name: {"phi0", "phi", "std_error" (null when
        not estimable), "converged", "coalitions_needed_forecast"}}}; names default to "0", "1", ..."""
        names = names or [str(k) for k in range(len(self.phi))]
        return {"coalitions": int(self.coalitions), "total": int(self.total),
                "values": {name: {"phi0": float(self.phi0[k]), "phi": [float(x) for x in self.phi[k]],
                                  "std_error": [float(x) if np.isfinite(x) else None for x in self.std_error[k]],
                                  "converged": bool(self.converged[k]),
                                  "coalitions_needed_forecast": int(self.coalitions_needed_forecast[k])}
                           for k, name in enumerate(names)}}


def kernel_shap(
    value_fn: Callable[[np.ndarray], np.ndarray],
    n_features: int,
    budget: int,
    seed: int = 0,
    **options,
) -> KernelShapResult:
    """Shapley values of the game value_fn over n_features units from at most `budget` coalitions.

    value_fn: Z bool (n, M) -> values (n,). Every option is kernel_shap_many's; this is its one-value form.
    """
    def one_column(Z: np.ndarray) -> np.ndarray:
        return _checked_values(value_fn(Z), len(Z))[:, None]

    return kernel_shap_many(one_column, n_features, budget, seed, **options)[0]


def kernel_shap_many(
    value_fn: Callable[[np.ndarray], np.ndarray],
    n_features: int,
    budget: int,
    seed: int = 0,
    *,
    batch_size: int = 64,
    store: Store | None = None,
    cancel: CancelEvent | None = None,
    finish: CancelEvent | None = None,
    progress: Callable[[int, int], None] | None = None,
    estimate: Callable[[LiveEstimate], None] | None = None,
    until_converged: bool = False,
    converge_on: Sequence[int] | None = None,
    method: str = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
    controls: Sequence[KnownGame | None] | None = None,
) -> list[KernelShapResult]:
    """Shapley values of V games at once (value_fn gives V values per coalition), one result per game.

    Every game is asked about the same coalitions and solved on the same weighted design (each result is
    what kernel_shap gives for that game alone). The plan is evaluated in segments of batch_size
    coalitions; after each (when `estimate` or `until_converged` asks for it) the games are fitted on the
    plan's prefix so far, the estimate goes to `estimate`, and the run may end early. diagnostics["stop"]
    says what ended it: "budget" (the plan ran out), "converged" (until_converged and every watched game
    converged) or "cancelled" (the `finish` event).

    Args:
        value_fn: Z bool (n, M) -> values (n, V), V >= 1 fixed; never given more than batch_size rows at
            once, never a coalition the store already knows.
        n_features: M >= 1.
        budget: most distinct coalitions to use, empty and full included (>= 2); the cap under
            until_converged.
        seed: seed of the numpy Generator that draws the plan; same seed, same plan, same phi. Plans are
            nested: the plan of a smaller budget is a prefix of the plan of a larger one.
        batch_size: most coalitions per value_fn call; the estimate and the stop rule are checked after
            every batch_size coalitions of the plan (so a resumed run stops where a fresh one would).
        store: resume store (lookup/record, see shapley.store) of (n, V) values; each batch is recorded
            right after it is evaluated.
        cancel: object with is_set() (e.g. threading.Event), checked before every batch; when set,
            Cancelled is raised.
        finish: like cancel, but the run ends with the estimate of the prefix known so far (stop
            "cancelled"); Cancelled all the same when not even v(empty) and v(full) are known.
        progress: progress(done, total) after each batch; done counts store hits too.
        estimate: estimate(LiveEstimate) after each segment of the plan.
        until_converged: end the run at the first segment where every watched game has converged.
        converge_on: the games (column indices) the stop rule watches; default all.
        method: "auto" (exact when 2^M <= budget, else "kernelshap"), "exact" or "kernelshap".
        tolerance: convergence goal for the standard errors, relative to |v(full) - v(empty)|.
        controls: per game, a known game u (shapley.control) or None: phi is then
            Shapley(u) + the estimate of Shapley(v - u), the diagnostics those of that estimate (their
            held-out R^2 scores the prediction of v itself). Exact enumeration ignores them.

    Raises:
        ValueError: M < 1 ("no units" for M = 0), budget < 2, batch_size < 1, an unknown method, an
            exact method the budget cannot afford, or value_fn output of the wrong shape or non-finite.
        Cancelled: the cancel event was set before all values were known.
    """
    n_features, budget = int(n_features), int(budget)
    _check_arguments(n_features, budget, batch_size, method)
    plan = _make_plan(n_features, budget, seed, method)
    watched = None if converge_on is None else list(converge_on)
    run = _Run(value_fn, plan, store, batch_size)
    stop, used = "budget", len(plan.masks)
    for end in _segment_ends(len(plan.masks), batch_size):
        if run.pending(end) and (cancel is not None and cancel.is_set()):
            raise Cancelled(f"cancelled with {run.known_count()} of {len(plan.masks)} coalition values known")
        if run.pending(end) and finish is not None and finish.is_set():
            stop, used = "cancelled", run.known_prefix()
            if used < 2:
                raise Cancelled(f"cancelled with {run.known_count()} of {len(plan.masks)} coalition values known")
            break
        if run.evaluate_until(end) and progress is not None:
            progress(run.known_count(), len(plan.masks))
        if (estimate is not None or until_converged) and end < len(plan.masks):
            live = _live_estimate(plan, run.values, end, tolerance, controls)
            if estimate is not None:
                estimate(live)
            if until_converged and live.converged[watched if watched is not None else slice(None)].all():
                stop, used = "converged", end
                break
    results = _results(plan.prefix(used), run.values[:used], run.resumed_within(used), tolerance, stop, controls)
    if estimate is not None:
        estimate(_live_estimate(plan, run.values, used, tolerance, controls, results))
    return results


STOPS = ("budget", "converged", "cancelled")


def _segment_ends(total: int, batch_size: int) -> list[int]:
    """Prefix lengths where a segment of the plan ends: every batch_size coalitions (rounded down to whole
    pairs, at least the empty and full coalition), and the plan's end."""
    ends = sorted({max(2, end - end % 2) for end in range(batch_size, total, batch_size)} | {total})
    return [end for end in ends if end <= total]


class _Run:
    """The plan's values (N, V) as they become known: from the store, then from value_fn batch by batch."""

    def __init__(self, value_fn, plan: CoalitionPlan, store: Store | None, batch_size: int):
        self.value_fn, self.masks, self.store, self.batch_size = value_fn, plan.masks, store, batch_size
        total = len(plan.masks)
        self.values, self.known, self.from_store = None, np.zeros(total, dtype=bool), np.zeros(total, dtype=bool)
        self.done = 0
        if store is not None:
            stored, known = store.lookup(plan.masks)
            known = np.asarray(known, dtype=bool).reshape(total)
            if known.any():
                stored = np.asarray(stored, dtype=float).reshape(total, -1)
                if not np.isfinite(stored[known]).all():
                    raise ValueError("the store returned non-finite values for coalitions it says it knows")
                self.values = np.full(stored.shape, np.nan)
                self.values[known] = stored[known]
            self.known, self.from_store = known.copy(), known.copy()

    def pending(self, end: int) -> bool:
        """Whether a coalition of the prefix [0, end) still needs value_fn."""
        return not self.known[self.done:end].all()

    def evaluate_until(self, end: int) -> bool:
        """Evaluate the unknown coalitions of [done, end) in batches; True when value_fn was called."""
        rows = self.done + np.flatnonzero(~self.known[self.done:end])
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            values = _checked_table(self.value_fn(self.masks[batch]), len(batch))
            if self.values is None:
                self.values = np.full((len(self.masks), values.shape[1]), np.nan)
            elif values.shape[1] != self.values.shape[1]:
                raise ValueError(f"value_fn must return {self.values.shape[1]} values per coalition (as the store "
                                 f"holds), got {values.shape[1]}")
            self.values[batch] = values
            self.known[batch] = True
            if self.store is not None:
                self.store.record(self.masks[batch], values)
        self.done = max(self.done, end)
        return len(rows) > 0

    def known_count(self) -> int:
        return int(self.known.sum())

    def known_prefix(self) -> int:
        """Length of the longest known prefix, rounded down to whole pairs."""
        unknown = np.flatnonzero(~self.known)
        n = int(unknown[0]) if len(unknown) else len(self.known)
        return n if n == len(self.known) else n - n % 2

    def resumed_within(self, n: int) -> int:
        return int(self.from_store[:n].sum())


def _live_estimate(plan: CoalitionPlan, values: np.ndarray, n: int, tolerance: float,
                   controls: Sequence[KnownGame | None] | None,
                   results: list[KernelShapResult] | None = None) -> LiveEstimate:
    """The estimate on the plan's first n coalitions (from `results` when they are the final ones)."""
    prefix = plan.prefix(n)
    per_value = [_quick_fit(prefix, values[:n, k], tolerance, _control(controls, k, prefix))
                 for k in range(values.shape[1])] if results is None \
        else [(r.phi, np.array([np.inf if e is None else e for e in r.diagnostics["phi_std_error"]]),
               r.diagnostics["converged"], r.diagnostics["coalitions_needed_forecast"]) for r in results]
    return LiveEstimate(coalitions=n, total=len(plan.masks), phi0=values[0].copy(),
                        phi=np.array([p[0] for p in per_value]), std_error=np.array([p[1] for p in per_value]),
                        converged=np.array([p[2] for p in per_value], dtype=bool),
                        coalitions_needed_forecast=np.array([p[3] for p in per_value], dtype=int))


def _control(controls: Sequence[KnownGame | None] | None, k: int,
             plan: CoalitionPlan) -> tuple[np.ndarray, np.ndarray] | None:
    """(u at the plan's coalitions (N,), Shapley(u) (M,)) of game k's control, None without one or when exact."""
    game = None if controls is None or plan.exact else controls[k]
    return None if game is None else (np.asarray(game.values(plan.masks), dtype=float), game.shapley())


def _residual_fit(plan: CoalitionPlan, values: np.ndarray, control: tuple[np.ndarray, np.ndarray] | None):
    """(chosen Estimate, Fit, phi (M,)) of one game's values (N,) on the plan: the estimate of v, or with a
    control (u (N,), Shapley(u)) Shapley(u) + the estimate of v - u."""
    residual = values if control is None else values - control[0]
    delta = float(residual[1] - residual[0])
    gains = residual[2:] - residual[0]
    chosen = estimate_phi(plan.masks[2:], gains, delta, LINEAR if plan.exact else None)
    full = fit(plan.masks[2:], gains, delta, residual=chosen.row_residual, parameters=chosen.parameters,
               influence=chosen.influence)
    return chosen, full, chosen.phi if control is None else control[1] + chosen.phi


def _quick_fit(prefix: CoalitionPlan, values: np.ndarray, tolerance: float,
               control: tuple[np.ndarray, np.ndarray] | None):
    """(phi (M,), std errors (M,), converged, forecast) of one game on a prefix: the main fit and the
    convergence rule of shapley.diagnostics, without its refits (held-out and half-sample)."""
    delta = float(values[1] - values[0])
    _, full, phi = _residual_fit(prefix, values, control)
    scale = abs(delta) if delta != 0.0 else float(np.abs(phi).sum())
    std_error = np.where(np.isfinite(full.std_error), full.std_error, scale)
    converged, forecast = convergence(prefix, std_error, tolerance * scale)
    return phi, np.where(np.isfinite(full.std_error), full.std_error, np.inf), converged, forecast


def _results(plan: CoalitionPlan, values: np.ndarray, resumed: int, tolerance: float,
             stop: str, controls: Sequence[KnownGame | None] | None) -> list[KernelShapResult]:
    """One KernelShapResult per column of values (N, V) on the plan (the prefix the run used), each what the
    one-value solver gives for that game alone (shapley.estimator's choice made per game)."""
    results = []
    for k, column in enumerate(values.T):
        control = _control(controls, k, plan)
        chosen, full, phi = _residual_fit(plan, column, control)
        phi = exact_shapley(plan.masks, column) if plan.exact else phi
        info = diagnostics(plan, column, phi, full, chosen, tolerance, None if control is None else control[0])
        info.update(resumed_coalitions=resumed, method="exact" if plan.exact else "kernelshap", stop=stop,
                    tolerance=tolerance)
        results.append(KernelShapResult(phi0=float(column[0]), phi=phi, coalitions=len(plan.masks),
                                        exact=plan.exact, diagnostics=info))
    return results


def _check_arguments(n_features: int, budget: int, batch_size: int, method: str) -> None:
    """Raise ValueError with a message naming the first bad argument."""
    if n_features == 0:
        raise ValueError("no units: n_features is 0, there is nothing to attribute")
    if n_features < 0:
        raise ValueError(f"n_features must be positive, got {n_features}")
    if budget < 2:
        raise ValueError(f"budget must be at least 2 (the empty and the full coalition), got {budget}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "exact" and budget < 1 << n_features:
        raise ValueError(f"exact Shapley values for {n_features} units need 2^{n_features} = "
                         f"{1 << n_features} coalitions, the budget is {budget}")


def coalition_plan(n_features: int, budget: int, seed: int) -> CoalitionPlan:
    """The coalitions ``kernel_shap`` (method "auto") evaluates for (M, budget, seed), without evaluating any."""
    _check_arguments(int(n_features), int(budget), 1, "auto")
    return _make_plan(int(n_features), int(budget), seed, "auto")


def _make_plan(n_features: int, budget: int, seed: int, method: str) -> CoalitionPlan:
    """The deterministic plan for (M, budget, seed): exact when asked or affordable under "auto"."""
    rng = np.random.default_rng(seed)
    if method == "exact" or (method == "auto" and budget >= 1 << n_features):
        return exact_plan(n_features, rng)
    return sampled_plan(n_features, budget, rng)


def _checked_values(output, n: int) -> np.ndarray:
    """value_fn output as a finite float array (n,); ValueError otherwise."""
    values = np.asarray(output, dtype=float)
    if values.shape not in ((n,), (n, 1)):
        raise ValueError(f"value_fn must return {n} values for {n} coalitions, got shape {values.shape}")
    values = values.reshape(n)
    if not np.isfinite(values).all():
        raise ValueError("value_fn returned non-finite values (NaN or inf)")
    return values


def _checked_table(output, n: int) -> np.ndarray:
    """value_fn output as a finite float array (n, V); ValueError otherwise."""
    values = np.asarray(output, dtype=float)
    if values.ndim != 2 or values.shape[0] != n or values.shape[1] < 1:
        raise ValueError(f"value_fn must return (n, V) = ({n}, V) values for {n} coalitions, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("value_fn returned non-finite values (NaN or inf)")
    return values
