"""A byte-budgeted memo of per-patch network outputs (the part of each patch that lies in the ROI box).

Keys are ``PatchKey`` (fold, patch index, removed units inside the patch); values are CPU tensors. Entries the
caller pins (the engine pins a key with nothing removed, the unperturbed baseline) are needed by almost every
coalition and are never evicted. Everything else is evicted least-recently-used once the byte budget is exceeded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class PatchKey:
    """What one memoised patch output depends on.

    fold:    fold position in the predictor's parameter list.
    patch:   the patch's index in nnU-Net's slicer order.
    removed: packed bits (numpy ``packbits``) of 'removed' for the units inside the patch, in unit-id order;
             b"" when no unit of the patch is removed (the baseline output of that patch).
    """

    fold: int
    patch: int
    removed: bytes

    @property
    def is_baseline(self) -> bool:
        return self.removed == b""


class PatchMemo:
    """LRU memo of tensors under a byte budget, with pinned entries that never leave."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self._pinned: dict = {}
        self._lru: OrderedDict = OrderedDict()
        self._lru_bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._pinned) + len(self._lru)

    @property
    def bytes_used(self) -> int:
        return self._lru_bytes + sum(t.element_size() * t.nelement() for t in self._pinned.values())

    def __contains__(self, key) -> bool:
        return key in self._pinned or key in self._lru

    def get(self, key):
        """The stored tensor or None; a hit refreshes the entry's recency."""
        if key in self._pinned:
            return self._pinned[key]
        value = self._lru.get(key)
        if value is not None:
            self._lru.move_to_end(key)
        return value

    def put(self, key, value, pinned: bool = False) -> None:
        """Store ``value`` (a tensor) under ``key``; unpinned entries may evict older ones."""
        if pinned:
            self._pinned[key] = value
            return
        size = value.element_size() * value.nelement()
        if size > self.max_bytes:
            return
        old = self._lru.pop(key, None)
        if old is not None:
            self._lru_bytes -= old.element_size() * old.nelement()
        self._lru[key] = value
        self._lru_bytes += size
        while self._lru_bytes > self.max_bytes:
            _, evicted = self._lru.popitem(last=False)
            self._lru_bytes -= evicted.element_size() * evicted.nelement()
            self.evictions += 1
