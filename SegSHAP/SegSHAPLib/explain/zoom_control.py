"""The zoom's control variate: the exact parent game, each refined organ entering through its measured cells.

A zoom whose parent was enumerated exactly knows its parent game on every coalition. Before the solver runs,
``measure_zoom_control`` evaluates, for each refined organ, every pattern of its cells with every other unit
kept (``shapley.control.within_unit_coalitions``; journaled like any coalition, so a rerun resumes them) and builds
one known game u per value function (``shapley.control.refined_parent_game``). The solver then estimates
Shapley(v - u) and adds the exact Shapley(u) (``kernel_shap_many(controls=...)``): the same game and the same
guarantees, with the variance of what the parent does not already explain (docs/method.md, "Zoom").

The measured coalitions count against ``--budget``: the solver's plan gets the budget minus them. The control is
left out, with the reason in summary.json's ``refine.control``, when the parent was sampled (its game is not known
everywhere), when its values are not the zoom's (``ParentReuse.refused``), when no organ was split into more than
one cell, or when the cells' patterns would take more than ``shapley.control.CONTROL_SHARE`` of the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SegSHAPLib.errors import Cancelled
from SegSHAPLib.explain.context import ExplanationContext
from SegSHAPLib.explain.refine import ParentReuse
from SegSHAPLib.progress import ProgressEvent
from SegSHAPLib.shapley.control import (CONTROL_SHARE, RefinedParentGame, refined_parent_game,
                                        within_coalition_count, within_unit_coalitions)


@dataclass(frozen=True)
class ZoomControl:
    """The control of one zoom: ``games`` per value function (``context.value_names`` order), or none and the
    ``reason``; ``coalitions``: the measured coalitions beyond the parent's and the full one (what the budget
    gives up for them); ``evaluated``: how many of those this run computed (the rest came from the journal)."""

    games: tuple[RefinedParentGame, ...] | None
    refined: tuple[str, ...]
    coalitions: int
    evaluated: int
    reason: str | None = None

    def summary(self) -> dict:
        """summary.json's ``refine.control``."""
        if self.games is None:
            return {"used": False, "reason": self.reason}
        return {"used": True, "refined_units": list(self.refined), "coalitions": self.coalitions,
                "evaluated_coalitions": self.evaluated}


def control_plan(parent_of: np.ndarray, budget: int, parent_known: bool,
                 refused: str | None = None) -> tuple[tuple[int, ...], int, str | None]:
    """(refined parent units 0-based, coalitions their cell patterns take beyond the parent's, reason to go
    without or None) for a zoom whose child units lie in parent units ``parent_of`` (M,), 0-based, under
    ``budget`` coalitions in all; ``parent_known``: the parent game is known on every coalition; ``refused``: why
    the parent's values are not the zoom's (``ParentReuse.refused``), if they are not."""
    counts = np.bincount(parent_of)
    refined = tuple(int(r) for r in np.flatnonzero(counts > 1))
    if not refined:
        return (), 0, "no organ is split into more than one cell"
    needed = within_coalition_count(parent_of, refined)
    if needed > CONTROL_SHARE * budget:
        return refined, 0, (f"the refined organs' cell patterns take {needed:,} coalitions, more than "
                            f"{CONTROL_SHARE:.0%} of the budget {budget:,}")
    if refused:
        return refined, 0, f"the parent's values are not the zoom's ({refused})"
    if not parent_known:
        return refined, 0, "the parent was sampled, so its game is not known on every coalition (explain it exactly first)"
    return refined, needed, None


def measure_zoom_control(context: ExplanationContext, store: ParentReuse, parent_names: list[str], budget: int,
                         progress=None, cancel=None, batch_size: int = 8) -> ZoomControl:
    """Evaluate the refined organs' cell patterns (through ``store``, so journaled) and build the control; a
    ZoomControl without games (and its reason) when it cannot be used. ``parent_names``: the parent's units in
    id order. Cancelled when ``cancel`` is set."""
    parent_of = np.asarray(context.parent_unit_of, dtype=np.int64) - 1
    refined, needed, reason = control_plan(parent_of, budget, store.parent_table is not None, store.refused)
    names = tuple(parent_names[r] for r in refined)
    if reason is not None:
        return ZoomControl(None, names, 0, 0, reason)
    masks = within_unit_coalitions(parent_of, refined)
    measured, known = store.known(masks)
    todo = np.flatnonzero(~known)
    for start in range(0, len(todo), batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled while measuring the cells of {', '.join(names)}")
        if progress is not None:
            progress(ProgressEvent("prepare", start, len(todo),
                                   f"measuring the cells of {', '.join(names)}: {start}/{len(todo)} coalitions"))
        batch = todo[start:start + batch_size]
        measured[batch] = context.values(masks[batch], cancel=cancel)
        store.record(masks[batch], measured[batch])
    games = tuple(refined_parent_game(store.parent_table[:, k], parent_of, refined, measured[:, k])
                  for k in range(len(context.value_names)))
    return ZoomControl(games, names, needed, len(todo))
