"""Zoom units: an organ unit map with chosen organs refined into their hybrid cells (organ inside FCC cell).

Every unrefined organ unit stays one unit, with its id order, name and voxels unchanged; a refined organ unit j
is split into the pieces of the hybrid map (``units.hybrid``) that lie in it, named as hybrid names them
("liver @ cell 23"). The result is again a partition of the parent's units' voxels, so the refined game is a
Shapley game over a partition of B_RF (docs/method.md): a parent coalition (organs kept or removed whole) is
the refined coalition that keeps exactly the cells of the kept organs (``parent_unit_of``).

Voxels of a refined organ that no hybrid piece covers (a hybrid fragment dropped because no piece of the same
organ touched it) join the organ's largest piece, so the organ's voxels are covered exactly; an organ with a
single piece stays one unit under that piece's name. All arrays are (z, y, x) on the CT grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from SegSHAPLib.units.unit_map import UnitMap, support_box


def refine_units(parent: UnitMap, hybrid: UnitMap, refined_ids: Sequence[int]) -> UnitMap:
    """The parent's units with the units ``refined_ids`` (1-based parent ids) split into hybrid pieces.

    parent: organ units (``organ_units``); hybrid: hybrid units (``hybrid_units``) on the same grid and support.
    Units are numbered in parent order, a refined unit's pieces in hybrid id order (so with no refined id the
    result equals the parent). ``source_labels``: the parent's entry for an unrefined unit, the hybrid's
    (FCC unit id, organ label id) for a piece.
    """
    refined = set(int(j) for j in refined_ids)
    if not refined <= set(range(1, parent.n_units + 1)):
        raise ValueError(f"refined ids {sorted(refined)} are not all units 1..{parent.n_units} of the parent")
    box = support_box(parent.labels > 0)
    parent_box, hybrid_box = parent.labels[box], hybrid.labels[box]
    labels_box = np.zeros(parent_box.shape, dtype=np.int32)
    names, sources = [], []
    parent_sources = parent.source_labels or [()] * parent.n_units
    for j in range(1, parent.n_units + 1):
        inside = parent_box == j
        pieces, counts = np.unique(hybrid_box[inside], return_counts=True)
        pieces, counts = pieces[pieces > 0], counts[pieces > 0]
        if j not in refined or pieces.size == 0:
            labels_box[inside] = len(names) + 1
            names.append(parent.names[j - 1])
            sources.append(tuple(parent_sources[j - 1]))
            continue
        first = len(names) + 1
        lookup = np.full(int(hybrid_box.max()) + 1, first + int(np.argmax(counts)), dtype=np.int32)
        lookup[pieces] = np.arange(first, first + pieces.size, dtype=np.int32)
        labels_box[inside] = lookup[hybrid_box[inside]]      # uncovered voxels (hybrid 0) -> the largest piece
        names += [hybrid.names[h - 1] for h in pieces]
        sources += [tuple(hybrid.source_labels[h - 1]) if hybrid.source_labels else () for h in pieces]
    labels = np.zeros(parent.labels.shape, dtype=np.int32)
    labels[box] = labels_box
    return UnitMap(labels, names, sources)


def parent_unit_of(child: UnitMap, parent_labels: np.ndarray) -> np.ndarray:
    """int64 (M_child,): the parent unit id (1-based) holding each child unit, for a child map that refines the
    parent's (every child unit inside one parent unit). parent_labels: int (z, y, x) on the same grid."""
    ids = np.zeros(child.n_units + 1, dtype=np.int64)
    inside = child.labels > 0
    ids[child.labels[inside]] = parent_labels[inside]
    return ids[1:]


def refined_coalitions(parent_keep: np.ndarray, parent_of: np.ndarray) -> np.ndarray:
    """Parent coalitions bool (n, M_parent) as child coalitions bool (n, M_child): a child unit is kept exactly
    when its parent unit is (an organ kept whole = all its cells kept)."""
    return np.asarray(parent_keep, dtype=bool)[:, parent_of - 1]
