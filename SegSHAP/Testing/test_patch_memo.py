"""The patch memo's byte budget: least-recently-used eviction, recency refreshed by hits, pinned baseline entries
never evicted, oversized values refused, a re-put replaces its old bytes (real torch tensors)."""

from __future__ import annotations

import pytest
import torch

from SegSHAPLib.inference.patch_memo import PatchMemo

KIB = 1024


def tensor_of(kib: int, fill: float = 0.0) -> torch.Tensor:
    """A float32 tensor of ``kib`` KiB (256 elements per KiB)."""
    return torch.full((kib * 256,), fill, dtype=torch.float32)


def test_least_recently_used_entry_is_evicted_first():
    memo = PatchMemo(3 * KIB)
    for name in ("a", "b", "c"):
        memo.put(name, tensor_of(1))
    assert memo.bytes_used == 3 * KIB and memo.evictions == 0
    memo.put("d", tensor_of(1))                                   # over budget: "a" is the oldest
    assert memo.get("a") is None and all(memo.get(k) is not None for k in ("b", "c", "d"))
    assert memo.evictions == 1 and memo.bytes_used == 3 * KIB and len(memo) == 3


def test_a_hit_refreshes_recency():
    memo = PatchMemo(3 * KIB)
    for name in ("a", "b", "c"):
        memo.put(name, tensor_of(1))
    assert memo.get("a") is not None                              # "a" is now the most recent; "b" the oldest
    memo.put("d", tensor_of(1))
    assert memo.get("b") is None and memo.get("a") is not None


def test_a_large_entry_evicts_as_many_as_needed():
    memo = PatchMemo(4 * KIB)
    for name in ("a", "b", "c", "d"):
        memo.put(name, tensor_of(1))
    memo.put("big", tensor_of(3))
    assert [k for k in ("a", "b", "c", "d") if memo.get(k) is not None] == ["d"]
    assert memo.evictions == 3 and memo.bytes_used == 4 * KIB


def test_pinned_entries_are_never_evicted_nor_counted_against_the_budget():
    memo = PatchMemo(2 * KIB)
    baseline = tensor_of(5, fill=1.0)
    memo.put("baseline", baseline, pinned=True)
    for name in ("a", "b", "c", "d"):
        memo.put(name, tensor_of(1))
    assert memo.get("baseline") is baseline
    assert [k for k in ("a", "b", "c", "d") if memo.get(k) is not None] == ["c", "d"]
    assert memo.bytes_used == 7 * KIB and memo.evictions == 2


def test_a_value_larger_than_the_budget_is_not_stored_and_evicts_nothing():
    memo = PatchMemo(2 * KIB)
    memo.put("a", tensor_of(1))
    memo.put("huge", tensor_of(3))
    assert memo.get("huge") is None and memo.get("a") is not None and memo.evictions == 0


def test_putting_a_key_again_replaces_its_bytes():
    memo = PatchMemo(3 * KIB)
    memo.put("a", tensor_of(1))
    memo.put("b", tensor_of(1))
    memo.put("a", tensor_of(2, fill=2.0))                          # 2 + 1 KiB: fits, nothing evicted
    assert memo.bytes_used == 3 * KIB and memo.evictions == 0 and len(memo) == 2
    assert float(memo.get("a")[0]) == 2.0


def test_zero_budget_stores_only_pinned_entries_and_negative_is_refused():
    memo = PatchMemo(0)
    memo.put("a", tensor_of(1))
    memo.put("baseline", tensor_of(1), pinned=True)
    assert memo.get("a") is None and memo.get("baseline") is not None
    with pytest.raises(ValueError, match="max_bytes"):
        PatchMemo(-1)
