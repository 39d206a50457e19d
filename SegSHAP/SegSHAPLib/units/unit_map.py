"""The unit map (the partition {U_j} of part of the support) and the rule that turns raw candidates into it.

All arrays are (z, y, x) on the CT grid. Every builder (organs, fcc, hybrid) produces raw candidate units on
the support's bounding box and hands them to ``finish_units``, which applies one documented rule:

1. Voxels outside the support are not units (the builders only label support voxels).
2. Fragments: a candidate with fewer than ``min_voxels`` voxels is merged into the adjacent candidate with
   which it shares the most voxel faces (6-neighbourhood), among the candidates that are not fragments
   themselves and carry the same merge key (organs: none, so organ fragments are always dropped; fcc: any
   cell; hybrid: a piece of the same organ in a neighbouring cell). With no such neighbour it is dropped
   (its voxels become 0, i.e. left unperturbed). Ties go to the lower candidate id; fragments never merge
   into each other, so the result does not depend on any processing order.
3. The surviving candidates are renumbered 1..M in the order of their candidate ids.
4. No unit left -> InputError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from SegSHAPLib.errors import InputError
from SegSHAPLib.scoring.roi import bounding_box


@dataclass
class UnitMap:
    """Interpretable units on the CT grid.

    labels:        int32 array (z, y, x); 0 = not a unit, 1..M = unit ids, every id in 1..M present.
    names:         M names; names[j - 1] is unit j's name.
    source_labels: optional, M tuples of ints saying what each unit is made of (organs: the organ label ids
                   it holds; fcc: the lattice index (a, b, c) of its cell centre; hybrid: (fcc unit id,
                   organ label id)). The builders document their meaning.
    """

    labels: np.ndarray
    names: list[str]
    source_labels: list[tuple[int, ...]] | None = None

    def __post_init__(self):
        if self.labels.dtype != np.int32 or self.labels.ndim != 3:
            raise ValueError(f"unit labels must be a 3D int32 array, got {self.labels.ndim}D {self.labels.dtype}")
        counts = np.bincount(self.labels.ravel(), minlength=len(self.names) + 1)
        if len(counts) != len(self.names) + 1 or np.any(counts[1:] == 0):
            raise ValueError(f"unit labels must use every id 1..{len(self.names)} and no other")
        if self.source_labels is not None and len(self.source_labels) != len(self.names):
            raise ValueError("source_labels must hold one entry per unit")

    @property
    def n_units(self) -> int:
        """M, the number of units."""
        return len(self.names)

    def voxel_counts(self) -> np.ndarray:
        """Voxels per unit, int64 (M,); entry j - 1 is unit j's count."""
        return np.bincount(self.labels.ravel(), minlength=self.n_units + 1)[1:]


def support_box(support_mask: np.ndarray) -> tuple[slice, slice, slice]:
    """Slices (z, y, x) of the support's bounding box; ValueError for an empty support."""
    if not support_mask.any():
        raise ValueError("the support mask is empty")
    return bounding_box(support_mask).slices


def _face_contacts(raw: np.ndarray, n_candidates: int):
    """(a, b, faces): for every ordered pair of different candidates a != b that touch, how many voxel faces
    they share. Symmetric: both (a, b) and (b, a) are listed."""
    firsts, seconds = [], []
    for axis in range(raw.ndim):
        lo = raw[tuple(slice(0, -1) if d == axis else slice(None) for d in range(raw.ndim))]
        hi = raw[tuple(slice(1, None) if d == axis else slice(None) for d in range(raw.ndim))]
        touching = (lo != hi) & (lo > 0) & (hi > 0)
        firsts += [lo[touching], hi[touching]]
        seconds += [hi[touching], lo[touching]]
    pair = np.concatenate(firsts).astype(np.int64) * (n_candidates + 1) + np.concatenate(seconds)
    pairs, faces = np.unique(pair, return_counts=True)
    return pairs // (n_candidates + 1), pairs % (n_candidates + 1), faces


def _merge_targets(raw: np.ndarray, n_candidates: int, min_voxels: int, merge_key: np.ndarray | None) -> np.ndarray:
    """Lookup table (n_candidates + 1,): candidate id -> the candidate it ends up in (0 = dropped)."""
    counts = np.bincount(raw.ravel(), minlength=n_candidates + 1)
    fragment = counts < min_voxels
    fragment[0] = False
    destination = np.arange(n_candidates + 1)
    destination[fragment] = 0
    if fragment.any():
        a, b, faces = _face_contacts(raw, n_candidates)
        allowed = fragment[a] & ~fragment[b]
        if merge_key is not None:
            allowed &= merge_key[a - 1] == merge_key[b - 1]
        a, b, faces = a[allowed], b[allowed], faces[allowed]
        order = np.lexsort((b, -faces, a))            # by fragment, then most shared faces, then lowest id
        a, b = a[order], b[order]
        first = np.r_[True, a[1:] != a[:-1]] if a.size else np.zeros(0, bool)
        destination[a[first]] = b[first]
    return destination


def finish_units(raw: np.ndarray, names: Sequence[str], source_labels: Sequence[tuple[int, ...]], *,
                 shape: tuple[int, int, int], box: tuple[slice, slice, slice], min_voxels: int,
                 merge_key: np.ndarray | None, no_units_hint: str) -> UnitMap:
    """Apply the module's rule to raw candidates and place the result on the full CT grid.

    raw:           int array (z, y, x) over ``box`` (the support's bounding box), candidate ids 1..K (0 = none).
    names, source_labels: K entries, for candidates 1..K.
    shape:         full CT grid shape (z, y, x); box: where ``raw`` sits in it.
    min_voxels:    candidates below this size are fragments (see the module docstring).
    merge_key:     (K,) ints; a fragment may only merge into a candidate with the same key; None = any.
    no_units_hint: what the user can do when no unit remains (appended to the InputError).
    """
    n_candidates = len(names)
    destination = _merge_targets(raw, n_candidates, min_voxels, merge_key)
    merged = destination[raw]
    survivors = np.flatnonzero(np.bincount(merged.ravel(), minlength=n_candidates + 1)[1:]) + 1
    if survivors.size == 0:
        raise InputError(f"the unit map has no units inside the receptive-field support of the ROI; {no_units_hint}")
    renumber = np.zeros(n_candidates + 1, dtype=np.int32)
    renumber[survivors] = np.arange(1, survivors.size + 1, dtype=np.int32)
    labels = np.zeros(shape, dtype=np.int32)
    labels[box] = renumber[merged]
    return UnitMap(labels, [names[c - 1] for c in survivors], [tuple(source_labels[c - 1]) for c in survivors])
