"""The verdict on one explanation: is it an answer or noise, what does it say, and what would fix it.

One source for the report (``report.page``), the CLI (``segshap explain``'s last lines) and the Slicer panel; it
reads summary.json only (plain Python, no numpy), so every reader shows the same words and the same ranking.

    from SegSHAPLib.report.verdict import verdict
    v = verdict(summary)                 # summary.json's dict; value=None: its first value function
    v.converged, v.headline              # True/False and one line a planner understands
    v.ranked                             # UnitBound per unit: by |phi| when converged, else by the lower bound
    v.settled                            # names of the units whose sign is settled (|phi| - z SE > 0)
    v.actions                            # Action per fix when not converged, cheapest first: coalitions,
                                         # patch forwards, seconds; .text is one line

Rules (docs/method.md, section "Reading the diagnostics"):

- converged: exact enumeration, or the solver's convergence test (``diagnostics.converged``: every standard
  error <= tolerance x |v(full) - v(empty)|) passes and the held-out R^2 is at least ``HELDOUT_R2_GOAL`` (the
  linear Shapley model predicts coalitions it was not fitted on).
- ranking when not converged: by the lower confidence bound max(0, |phi| - z SE) (``abs_phi_lower_bound``), so a
  unit ranks high only when its effect is large *and* measured; ties (bound 0) by |phi|.
- actions, each with its cost measured in this run (patch forwards per newly evaluated coalition, seconds per
  patch forward of network time): a larger budget (the solver's forecast of the coalitions needed, up to exact
  enumeration; nested plans extend the run), a zoom (organs first, then the top organs' cells) for supervoxel
  units, coarser units (fewer refined organs, larger cells), and for a zoom of a sampled parent with 2^M_parent
  <= ``EXACT_PARENT_MAX`` the parent made exact first, so that it becomes the zoom's control variate (priced at
  the parent's missing coalitions, at this run's rates). Changing the units changes M; the coalitions
  needed are scaled by M'/M from the forecast (the regression's variance grows about linearly with the number of
  units), at most 2^M' (exact enumeration).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

HELDOUT_R2_GOAL = 0.9        # the held-out R^2 a converged sampled estimate must reach
ZOOM_TOP = 2                 # the zoom the verdict suggests for supervoxel units: the top 2 organs' cells
CELL_UNITS_SEPARATOR = " @ "  # hybrid and zoom cell names: "liver @ cell 23" (units.hybrid)
SETTLED_SHOWN = 3            # settled units named in a headline
COARSER_CELLS = 1.5          # the "coarser cells" fix: this times --fcc-scale-mm, about 1/3.4 of the cells
EXACT_PARENT_MAX = 4096      # a zoom of a sampled parent is told to make it exact when 2^M_parent is at most this
MINUS = "\u2212"


@dataclass(frozen=True)
class UnitBound:
    """One unit: phi, its standard error (None when not estimable; 0 when exact), the lower confidence bound of
    |phi| and whether its sign is settled (the bound is above 0)."""

    id: int
    name: str
    phi: float
    std_error: float | None
    lower_bound: float
    sign_settled: bool


@dataclass(frozen=True)
class Action:
    """A fix for non-convergence. kind: "budget", "zoom" or "coarser"; advice: what to run (one line);
    coalitions: new coalitions to evaluate; patch_forwards, seconds: their estimated cost (None when this run
    measured no network work, e.g. everything came from a journal)."""

    kind: str
    advice: str
    coalitions: int
    patch_forwards: int | None
    seconds: float | None

    @property
    def text(self) -> str:
        """E.g. "rerun the same command with --budget 1800 (...): about 1,672 coalitions, 25,000 patch forwards,
        ~40 min on this machine"."""
        cost = f"about {self.coalitions:,} coalitions"
        if self.patch_forwards is not None:
            cost += f", {self.patch_forwards:,} patch forwards"
        if self.seconds is not None:
            cost += f", ~{duration(self.seconds)} on this machine"
        return f"{self.advice}: {cost}"


@dataclass(frozen=True)
class Verdict:
    """The verdict on one value function of one explanation (see the module docstring)."""

    value: str
    converged: bool
    exact: bool
    headline: str
    ranked: tuple[UnitBound, ...]
    settled: tuple[str, ...]
    separated_top_units: int
    heldout_r2: float | None
    actions: tuple[Action, ...]

    @property
    def ranked_by(self) -> str:
        """How ``ranked`` is ordered: "|phi|" or "lower bound"."""
        return "|phi|" if self.converged else "lower bound"

    def as_dict(self) -> dict:
        """Plain JSON types (the panel's and the progress stream's form)."""
        return {**asdict(self), "ranked_by": self.ranked_by, "actions": [{**asdict(a), "text": a.text}
                                                                       for a in self.actions]}


def duration(seconds: float) -> str:
    """A readable duration: "45 s", "12 min", "3.5 h", "2.1 days"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def verdict(summary: dict, value: str | None = None) -> Verdict:
    """The verdict on ``value`` (default: the first value function) of a summary.json dict; an older
    single-value summary (no ``by_value``) is read from its top level."""
    by_value = summary.get("by_value") or {}
    value = value or (summary.get("value_functions") or [summary.get("inputs", {}).get("value", "")])[0]
    own = by_value.get(value, summary)
    solver = own["solver"]
    diagnostics = solver.get("diagnostics", {})
    exact = solver.get("method") == "exact"
    r2 = diagnostics.get("heldout_r2")
    converged = exact or (bool(diagnostics.get("converged")) and r2 is not None and r2 >= HELDOUT_R2_GOAL)
    units = _unit_bounds(own["units"], diagnostics, exact)
    ranked = tuple(sorted(units, key=lambda u: -abs(u.phi)) if converged
                   else sorted(units, key=lambda u: (-u.lower_bound, -abs(u.phi))))
    settled = tuple(u.name for u in ranked if u.sign_settled)
    separated = int(diagnostics.get("separated_top_units", len(units) if exact else 0))
    actions = () if converged else _actions(summary, own, len(units))
    return Verdict(value=value, converged=converged, exact=exact,
                   headline=_headline(value, converged, exact, ranked, settled, separated, r2, diagnostics),
                   ranked=ranked, settled=settled, separated_top_units=separated, heldout_r2=r2, actions=actions)


def _unit_bounds(units: list[dict], diagnostics: dict, exact: bool) -> list[UnitBound]:
    """UnitBound per summary unit; bounds from the diagnostics (|phi| when exact, 0 when a summary lacks them)."""
    bounds = diagnostics.get("abs_phi_lower_bound") or []
    found = []
    for k, unit in enumerate(units):
        phi = float(unit["shap"])
        bound = abs(phi) if exact else (float(bounds[k]) if len(bounds) == len(units) else 0.0)
        found.append(UnitBound(id=int(unit["id"]), name=str(unit["name"]), phi=phi,
                               std_error=unit.get("std_error"), lower_bound=bound,
                               sign_settled=bound > 0.0))
    return found


def _direction(phi: float) -> str:
    return "supports" if phi >= 0 else "opposes"


def _headline(value: str, converged: bool, exact: bool, ranked: tuple[UnitBound, ...], settled: tuple[str, ...],
              separated: int, r2: float | None, diagnostics: dict) -> str:
    """One line: converged or not, and what the explanation does (or does not yet) say."""
    if not ranked:
        return "No units to explain."
    top, n = ranked[0], len(ranked)
    total = sum(abs(u.phi) for u in ranked) or 1.0
    lead = (f"{top.name} {_direction(top.phi)} the {value} score most "
            f"(\u03c6 {top.phi:+.3g}, {abs(top.phi) / total:.0%} of \u03a3|\u03c6|)")
    if exact:
        interacting = ("" if r2 is None or r2 >= HELDOUT_R2_GOAL else
                       f" The units interact (held-out R\u00b2 {r2:.2f} of an additive fit): each \u03c6 is an average "
                       "contribution over coalitions, not an effect that adds up alone.")
        return f"Exact Shapley values (every coalition evaluated): {lead}.{interacting}"
    if converged:
        return (f"Converged (held-out R\u00b2 {r2:.2f}, every standard error within "
                f"{diagnostics.get('tolerance', 0):.0%} of the effect): {lead}.")
    why = f"held-out R\u00b2 {r2:.2f}" if r2 is not None else "no held-out check"
    if not diagnostics.get("converged"):
        why += ", standard errors above the goal"
    if not settled:
        return f"Not converged ({why}): treat this ranking as noise; no unit's sign is settled yet."
    signed = [f"{u.name} ({'+' if u.phi >= 0 else MINUS})" for u in ranked if u.sign_settled]
    shown = ", ".join(signed[:SETTLED_SHOWN]) + (f" and {len(signed) - SETTLED_SHOWN} more"
                                                 if len(signed) > SETTLED_SHOWN else "")
    said = f"{len(settled)} of {n} units have a settled sign: {shown}"
    if separated:
        said += f"; the top {separated} by |\u03c6| stand apart from the rest"
    return f"Not converged ({why}): {said}. Treat the rest of the ranking as noise."


def _cost_rates(summary: dict, own: dict) -> tuple[float | None, float | None]:
    """(patch forwards per newly evaluated coalition, seconds per patch forward) measured in this run. A zoom's
    coalitions reused from its parent are among the resumed ones (the parent's values seed its store)."""
    inference, timings = summary.get("inference", {}), summary.get("timings_s", {})
    solver = own["solver"]
    evaluated = int(solver.get("coalitions", 0)) - int(solver.get("resumed_coalitions", 0))
    forwards = int(inference.get("patch_forwards", 0))
    if evaluated <= 0 or forwards <= 0:
        return None, None
    network = timings.get("inference")
    return forwards / evaluated, (float(network) / forwards if network else None)


def _action(kind: str, advice: str, coalitions: int, rates: tuple[float | None, float | None]) -> Action:
    per_coalition, per_forward = rates
    forwards = None if per_coalition is None else int(math.ceil(coalitions * per_coalition))
    seconds = None if forwards is None or per_forward is None else forwards * per_forward
    return Action(kind, advice, int(coalitions), forwards, seconds)


def _needed(forecast: int, n_units: int, new_units: int) -> int:
    """Coalitions forecast for ``new_units`` units from the forecast for ``n_units``: scaled by M'/M, at most
    2^M' (exact enumeration), at least M' + 2."""
    return int(min(1 << new_units, max(new_units + 2, math.ceil(forecast * new_units / max(n_units, 1)))))


def _actions(summary: dict, own: dict, n_units: int) -> tuple[Action, ...]:
    """The fixes for a non-converged explanation, cheapest first."""
    inputs = summary.get("inputs", {})
    solver = own["solver"]
    done = int(solver.get("coalitions", 0))
    forecast = int(solver.get("diagnostics", {}).get("coalitions_needed_forecast") or (1 << n_units))
    rates = _cost_rates(summary, own)
    exact_count = 1 << n_units
    target = min(forecast, exact_count)
    budget_advice = ("rerun the same command with --budget {} (exact enumeration)" if target >= exact_count
                     else "rerun the same command with --budget {} (the run extends; nothing is recomputed)")
    refine = summary.get("refine") or {}
    control = refine.get("control") or {}
    measured = int(control.get("coalitions", 0)) if control.get("used") else 0   # a zoom's control takes them first
    actions = [_action("budget", budget_advice.format(target + measured), max(target - done, 0), rates)]
    parent_exact = 1 << int(refine.get("parent_units", 0))
    if inputs.get("refine") and not control.get("used") and \
            int(refine.get("parent_coalitions", parent_exact)) < parent_exact <= EXACT_PARENT_MAX:
        actions.append(_action("zoom", f"explain the parent exactly first (rerun it with --budget {parent_exact}), "
                                       "then this zoom again: the exact organ game becomes its control variate",
                               parent_exact - int(refine["parent_coalitions"]), rates))
    cells = _cells_by_organ(own["units"])
    scale = COARSER_CELLS * float(inputs.get("fcc_scale_mm") or 30)
    coarser_cells = n_units - sum(len(c) - math.ceil(len(c) / COARSER_CELLS ** 3) for c in cells.values())
    refined = [organ for organ in summary.get("refine", {}).get("organs") or [] if organ in cells]
    if inputs.get("refine") and len(refined) > 1:   # cells named after the refined units (an ungrouped parent)
        top = max(refined, key=lambda organ: sum(abs(float(u["shap"])) for u in cells[organ]))
        one_organ = n_units - sum(len(cells[organ]) - 1 for organ in refined if organ != top)
        actions.append(_action("coarser", f"refine one organ only (--refine-organs {top})",
                               _needed(forecast, n_units, one_organ), rates))
    if inputs.get("units") == "hybrid" and not inputs.get("refine") and cells:
        weight = {organ: sum(abs(float(u["shap"])) for u in c) for organ, c in cells.items()}
        top = sorted(cells, key=lambda organ: -weight[organ])[:ZOOM_TOP]
        zoom_units = len(cells) + sum(len(cells[organ]) - 1 for organ in top)
        actions.append(_action("zoom", f"explain with --units organs first, then zoom into the top {ZOOM_TOP} "
                                       f"organs' cells (--refine OUT --refine-top {ZOOM_TOP})",
                               _needed(forecast, n_units, len(cells)) + _needed(forecast, n_units, zoom_units),
                               rates))
    fewer = coarser_cells if cells else max(1, math.ceil(n_units / COARSER_CELLS ** 3))
    if (cells or inputs.get("units") == "fcc") and fewer < n_units:
        actions.append(_action("coarser", f"coarser cells (--fcc-scale-mm {scale:g})",
                               _needed(forecast, n_units, fewer), rates))
    return tuple(sorted(actions, key=lambda a: a.coalitions))


def _cells_by_organ(units: list[dict]) -> dict[str, list[dict]]:
    """Cell units ("organ @ cell N") by organ name, in unit order."""
    cells: dict[str, list[dict]] = {}
    for unit in units:
        organ, separator, _ = str(unit["name"]).partition(CELL_UNITS_SEPARATOR)
        if separator:
            cells.setdefault(organ, []).append(unit)
    return cells
