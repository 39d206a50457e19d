"""Zoom: explain again a finished organ-unit explanation (the parent) with chosen organs split into hybrid cells.

- ``parent_request``: the parent folder's request (summary.json's inputs); refuses a folder that is not finished
  or not an organ-unit explanation (one line each).
- ``resolve_refinement``: a request with ``refine`` set gets ``refine_organs`` checked against the parent's unit
  names, or filled from ``refine_top`` (top K by |phi|), so the journal spec names the organs.
- ``refined_unit_ids``: the parent unit ids of the refined organs in a unit map built for this request.
- ``ParentReuse``: the solver's store seeded with the parent's journal (a parent coalition, organs kept or
  removed whole, is the child coalition keeping exactly their cells) and counting the values it supplied.

The child game is a Shapley game of its own (its plan picks its own coalitions); the parent's values are used
where the two plans coincide, which does not change the estimator (a stored value is the value the engine would
compute; for exact enumeration every parent coalition is among the child's).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.folder import ExplanationFolder
from SegSHAPLib.explain.journal import differing_keys, journal_entries
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.shapley.store import coalition_keys
from SegSHAPLib.units.unit_map import UnitMap
from SegSHAPLib.units.zoom import refined_coalitions

UNIT_KEYS = ("refine", "refine_organs", "fcc_scale_mm", "segshap_version")   # spec keys the zoom may change


def _parent_summary(parent: Path) -> dict:
    summary = ExplanationFolder(parent).finished_summary()
    inputs = summary.get("inputs", {})
    if inputs.get("units") != "organs" or inputs.get("refine"):
        kind = "a zoom" if inputs.get("refine") else f"{inputs.get('units')} units"
        raise InputError(f"--refine {parent} is {kind}; refine an explanation made with --units organs")
    return summary


def parent_request(parent: str | Path) -> ExplainRequest:
    """The request a finished organ-unit explanation folder was made with; InputError otherwise."""
    return ExplainRequest.from_json(_parent_summary(Path(parent))["inputs"])


def resolve_refinement(request: ExplainRequest) -> ExplainRequest:
    """The request with ``refine_organs`` checked (or chosen from ``refine_top``) and ``refine_top`` None; a
    request without ``refine`` is returned unchanged. InputError (one line) on any inconsistency."""
    if request.refine is None:
        if request.refine_organs is not None or request.refine_top is not None:
            raise InputError("--refine-organs and --refine-top need --refine PARENT_OUT")
        return request
    summary = _parent_summary(Path(request.refine))
    if request.units != "organs":
        raise InputError(f"--refine refines organ units; drop --units {request.units}")
    if (request.refine_organs is None) == (request.refine_top is None):
        raise InputError("--refine needs exactly one of --refine-organs NAME,... and --refine-top K")
    units = sorted(summary["units"], key=lambda u: int(u["id"]))
    names = [u["name"] for u in units]
    if request.refine_top is not None:
        if not 1 <= request.refine_top <= len(names):
            raise InputError(f"--refine-top {request.refine_top}: give 1..{len(names)} (the parent's units)")
        ranked = sorted(units, key=lambda u: (-abs(float(u["shap"])), int(u["id"])))[:request.refine_top]
        chosen = {u["name"] for u in ranked}
    else:
        chosen = set(request.refine_organs)          # none: the parent's own game (every value reused)
        unknown = sorted(chosen - set(names))
        if unknown:
            raise InputError(f"--refine-organs {unknown[0]!r} is not a unit of {request.refine}; its units are "
                             f"{', '.join(names)}")
    return replace(request, refine_organs=[name for name in names if name in chosen], refine_top=None)


def refined_unit_ids(request: ExplainRequest, organ_map: UnitMap) -> list[int]:
    """1-based ids in ``organ_map`` (this request's organ units) of ``request.refine_organs``; InputError when the
    organ units differ from the parent's (an overridden CT, ROI, organ map or grouping)."""
    parent_names = ExplanationFolder(request.refine).unit_names()
    if organ_map.names != parent_names:
        raise InputError(f"this request's organ units differ from those of --refine {request.refine}; keep its CT, "
                         "ROI, organ map and grouping")
    return [organ_map.names.index(name) + 1 for name in request.refine_organs]


class ParentReuse:
    """The solver's store (lookup/record, ``shapley.store``) over ``store`` (the child's journal), seeded with the
    parent's journaled coalitions mapped to child coalitions when the parent's values are the child's (the same
    journal spec but for the unit keys, every value function the child journals, and a removal operator whose
    replacement does not depend on the units: not ``mean``). ``reused`` counts the solver's lookups answered by a parent value.
    ``parent_table``: float (2^Mp, V) the parent's values by bitmask of its units (bit j = unit j + 1 kept), one
    column per value function of ``store.value_names``, when the parent journal holds every parent coalition
    (an exactly enumerated parent; the zoom's control variate, ``explain.zoom_control``), else None."""

    def __init__(self, store, request: ExplainRequest, parent_of: np.ndarray):
        self.store, self.reused = store, 0
        parent = ExplanationFolder(request.refine)
        differing = [k for k in differing_keys(parent.spec() or {}, request.journal_spec()) if k not in UNIT_KEYS]
        self.refused = f"the parent differs in {', '.join(differing)}" if differing else None
        if request.removal == "mean" and not differing:    # a removed organ takes its mean, its removed cells theirs
            differing = ["removal"]
            self.refused = ("--removal mean: a removed organ takes the organ's mean intensity, its removed cells "
                            "their own means, so the parent's values are not the zoom's")
        parent_summary = parent.summary() or {}
        parent_value = (parent_summary.get("value_functions") or [parent_summary.get("inputs", {}).get("value")])[0]
        entries = {} if differing else journal_entries(parent.path, legacy_value=parent_value)
        n_parent = int(parent_of.max(initial=0))
        width = (n_parent + 7) // 8 * 2
        names = list(store.value_names)            # the child journal's value functions, in its column order
        keys = [key for key, values in entries.items()
                if len(key) == width and all(name in values for name in names)]
        self.parent_coalitions = len(keys)
        self._parent_keys: set[bytes] = set()
        self.parent_table = None
        if keys:
            bits = np.unpackbits(np.frombuffer(bytes.fromhex("".join(keys)), dtype=np.uint8).reshape(len(keys), -1),
                                 axis=1)[:, :n_parent].astype(bool)
            child = refined_coalitions(bits, parent_of)
            self._parent_keys = set(coalition_keys(child))
            values = np.array([[entries[k][name] for name in names] for k in keys], dtype=float)   # (n, V)
            _, known = store.lookup(child)
            if (~known).any():
                store.record(child[~known], values[~known])
            if len(keys) == 1 << n_parent:              # the parent game is known on every coalition
                self.parent_table = np.zeros((1 << n_parent, len(names)))
                self.parent_table[bits.astype(np.int64) @ (1 << np.arange(n_parent, dtype=np.int64))] = values

    def lookup(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, known = self.store.lookup(Z)
        self.reused += sum(key in self._parent_keys for key in np.array(coalition_keys(Z), dtype=object)[known])
        return values, known

    def known(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``lookup`` for coalitions outside the solver's plan (the zoom's control): not counted as reused."""
        return self.store.lookup(Z)

    def record(self, Z: np.ndarray, values: np.ndarray) -> None:
        self.store.record(Z, values)

    def summary(self) -> dict:
        """summary.json's "refine" entries about reuse."""
        reuse = {"parent_coalitions": self.parent_coalitions, "reused_coalitions": int(self.reused)}
        if self.refused:
            reuse["reuse_refused"] = self.refused
        return reuse
