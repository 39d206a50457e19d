"""The patch forwards a list of coalitions costs in each cache mode, counted without running the network.

A support patch's output depends only on the fold and on which units *inside that patch* are removed
(``PatchKey``), so for coalitions ``keep`` (n, M) evaluated in order on a fresh engine:

- ``memo``:     one forward per distinct (fold, patch, removed-units-in-patch pattern);
- ``baseline``: per patch one forward for the pattern with nothing removed (the published cache keeps only it),
                plus one for every coalition that removes a unit of the patch;
- ``none``:     one forward per coalition and patch.

Each mode is counted per patch on the (n, |U_p|) removed pattern, vectorised (``np.unique`` of its packed rows),
so n = 2000 coalitions over dozens of patches count in well under a second. The counts equal the engine's
``InferenceCounters.patch_forwards`` while its memo does not evict (``memo_peak_bytes`` within its byte bound;
``evicts`` says when not, and the memo count is then a lower bound).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from SegSHAPLib import options


@dataclass(frozen=True)
class ForwardCount:
    """coalitions: n counted; lookups: n x patches x folds (the patch results the fusion reads);
    forwards: cache mode -> patch forwards; memo_peak_bytes: what the memo holds at the end in mode memo
    (no eviction: every distinct pattern's box crop, the pinned baseline crops included), of which
    memo_pinned_bytes the baseline crops (never evicted); memo_bound_bytes: the engine's bound on the others; distinct_ceiling: sum over patches of min(2^|U_p|, n) x folds, the
    most forwards any n coalitions could cost in mode memo (exact enumeration reaches it with sum_p 2^|U_p|)."""

    coalitions: int
    lookups: int
    forwards: dict[str, int]
    memo_peak_bytes: int
    memo_pinned_bytes: int
    memo_bound_bytes: int
    distinct_ceiling: int

    @property
    def evicts(self) -> bool:
        """True when the memo's unpinned entries exceed its bound (then it evicts and memo costs more)."""
        return self.memo_peak_bytes - self.memo_pinned_bytes > self.memo_bound_bytes

    def hit_rate(self, mode: str) -> float:
        """The share of patch look-ups a mode answers without a forward (the engine's ``hit_rate``)."""
        return 1.0 - self.forwards[mode] / self.lookups if self.lookups else 0.0


def count_forwards(keep: np.ndarray, patch_units: Sequence[np.ndarray], crop_bytes: Sequence[int], folds: int = 1,
                   memo_bound_bytes: int = options.MEMO_BYTES) -> ForwardCount:
    """Count the patch forwards of evaluating ``keep`` (bool (n, M), True = unit kept, in evaluation order) on a
    fresh engine. patch_units: per support patch, the sorted unit ids (1..M) inside it; crop_bytes: per support
    patch, the bytes of its memoised box crop (classes x crop voxels x element size); folds: the model's."""
    keep = np.asarray(keep, dtype=bool)
    if keep.ndim != 2:
        raise ValueError(f"keep must be (n, M), got {keep.shape}")
    if len(patch_units) != len(crop_bytes):
        raise ValueError("one crop size per support patch")
    n = keep.shape[0]
    memo = baseline = ceiling = 0
    memo_bytes = pinned_bytes = 0
    for units, size in zip(patch_units, crop_bytes):
        removed = ~keep[:, np.asarray(units, dtype=np.intp) - 1]                  # (n, |U_p|)
        intact = ~removed.any(axis=1)
        distinct = _distinct_rows(removed) if n else 0
        memo += distinct
        baseline += int(intact.any()) + int((~intact).sum())
        ceiling += min(2 ** len(units), n)
        memo_bytes += distinct * int(size)
        pinned_bytes += int(intact.any()) * int(size)
    lookups = n * len(patch_units)
    return ForwardCount(coalitions=n, lookups=lookups * folds,
                        forwards={"memo": memo * folds, "baseline": baseline * folds, "none": lookups * folds},
                        memo_peak_bytes=memo_bytes * folds, memo_pinned_bytes=pinned_bytes * folds,
                        memo_bound_bytes=int(memo_bound_bytes), distinct_ceiling=ceiling * folds)


def _distinct_rows(rows: np.ndarray) -> int:
    """The number of distinct rows of a bool array (n, k) (1 for k = 0: every row is the empty pattern)."""
    if rows.shape[1] == 0:
        return 1
    packed = np.ascontiguousarray(np.packbits(rows, axis=1))
    return len(np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel()))
