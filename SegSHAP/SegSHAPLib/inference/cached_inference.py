"""Exact, cached, ROI-restricted nnU-Net sliding-window inference for many coalitions.

For a coalition m (which units are kept), nnU-Net's logits inside the ROI box B depend only on the sliding-window
patches that overlap B (the support), and each patch's network output depends only on which units *inside that
patch* are removed. ``CachedSlidingWindow`` therefore

1. uses nnU-Net's own patch grid (``nnUNetPredictor._internal_get_sliding_window_slicers`` on the padded
   preprocessed input, ``pad_nd_image`` as nnU-Net pads), nnU-Net's Gaussian (``compute_gaussian``) and nnU-Net's
   forward (``_internal_maybe_mirror_and_predict``, so mirroring TTA is nnU-Net's when enabled);
2. runs only support patches, and memoises each patch's Gaussian-weighted output, cropped to B, on the key
   (fold, patch, removed units inside the patch) - mode ``memo``; mode ``baseline`` only reuses patches with no
   removed unit (the published cache); mode ``none`` recomputes every support patch for every coalition;
3. fuses exactly as nnU-Net does: float16 accumulators, patches added in nnU-Net's slicer order, the Gaussian
   weight sum accumulated in the same order, ``torch.div`` in float16, folds summed in float16 and divided by
   their count. Fusion is element-wise, so restricting it to B changes no bit: with batch size 1 on CPU the
   logits in B equal ``predict_logits_from_preprocessed_data`` on the perturbed input exactly (tested).

Arrays: the preprocessed input is (1, z', y', x') float32; unit labels (z', y', x') int32 on the same network
grid; logits come out as float32 (n, C, bz, by, bx) over the box, in nnU-Net's float16 precision.
Coalitions are perturbed in network space: removed voxels take the model-normalised mask value.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.errors import Cancelled
from SegSHAPLib.inference.network_grid import Box
from SegSHAPLib.inference.patch_memo import PatchMemo
from SegSHAPLib.inference.perturbation import apply_coalition



@dataclass
class InferenceCounters:
    """Counted quantities of one engine (the stable figures on noisy machines)."""

    patches_full_grid: int = 0
    patches_in_support: int = 0
    folds: int = 1
    coalitions: int = 0
    patch_forwards: int = 0
    patch_cache_hits: int = 0
    network_seconds: float = 0.0

    @property
    def naive_patch_forwards(self) -> int:
        """What one nnU-Net prediction per coalition would cost: coalitions x full grid x folds."""
        return self.coalitions * self.patches_full_grid * self.folds

    @property
    def hit_rate(self) -> float:
        lookups = self.patch_forwards + self.patch_cache_hits
        return self.patch_cache_hits / lookups if lookups else 0.0

    def as_summary(self) -> dict:
        return {"patches_full_grid": self.patches_full_grid, "patches_in_support": self.patches_in_support,
                "folds": self.folds, "coalitions": self.coalitions, "patch_forwards": self.patch_forwards,
                "patch_cache_hits": self.patch_cache_hits, "naive_patch_forwards": self.naive_patch_forwards,
                "hit_rate": round(self.hit_rate, 6)}


@dataclass(frozen=True)
class SupportPatch:
    """One sliding-window patch that overlaps the ROI box.

    index:       position in nnU-Net's slicer order (full grid).
    patch:       spatial slices of the patch in the padded network grid.
    in_patch:    slices of the patch/box intersection, in patch-local coordinates.
    in_box:      slices of the same intersection, in box-local coordinates.
    units:       sorted unit ids (1..M) present in the patch.
    """

    index: int
    patch: tuple
    in_patch: tuple
    in_box: tuple
    units: np.ndarray


def _intersect(a: tuple, b: tuple):
    """Two triples of slices -> their intersection as (start, stop) pairs, or None when disjoint."""
    pairs = [(max(sa.start, sb.start), min(sa.stop, sb.stop)) for sa, sb in zip(a, b)]
    return None if any(lo >= hi for lo, hi in pairs) else pairs


class SlidingWindowLayout:
    """nnU-Net's padded input and patch grid for one preprocessed case, and the patches that overlap a box.

    padded:  float32 (Z, Y, X), the input padded as ``predict_sliding_window_return_logits`` pads it.
    offset:  padding before each axis; network voxel v sits at v + offset in the padded grid.
    slicers: nnU-Net's slicers in its own order (channel slice first, then z, y, x).
    """

    def __init__(self, predictor, data: np.ndarray):
        """predictor: an initialised nnUNetPredictor; data: preprocessed input (1, z', y', x') float32."""
        import torch
        from acvl_utils.cropping_and_padding.padding import pad_nd_image

        if data.ndim != 4 or data.shape[0] != 1:
            raise ValueError(f"expected one-channel preprocessed data (1, z, y, x), got {data.shape}")
        self.patch_size = tuple(int(p) for p in predictor.configuration_manager.patch_size)
        padded, revert = pad_nd_image(torch.from_numpy(np.ascontiguousarray(data)), self.patch_size, "constant",
                                      {"value": 0}, True, None)
        self.padded = padded[0].numpy()
        self.offset = tuple(int(s.start) for s in revert[1:])
        self.network_shape = tuple(int(s) for s in data.shape[1:])
        self.slicers = predictor._internal_get_sliding_window_slicers(padded.shape[1:])

    def padded_box(self, box: Box) -> tuple:
        """A half-open network-grid box -> slices in the padded grid."""
        return tuple(slice(a + o, b + o) for (a, b), o in zip(box, self.offset))

    def support(self, box: Box) -> list[tuple[int, tuple, list]]:
        """Patches overlapping ``box``: (index in nnU-Net's order, patch slices, intersection (start, stop) pairs),
        all in padded coordinates."""
        box_padded = self.padded_box(box)
        found = []
        for index, sl in enumerate(self.slicers):
            pairs = _intersect(tuple(sl[1:]), box_padded)
            if pairs is not None:
                found.append((index, tuple(sl[1:]), pairs))
        return found

    def support_network_boxes(self, box: Box) -> list[Box]:
        """The support patches of ``box`` as boxes on the unpadded network grid (padding clipped away)."""
        boxes = []
        for _, patch, _ in self.support(box):
            boxes.append(tuple((max(s.start - o, 0), min(s.stop - o, n))
                               for s, o, n in zip(patch, self.offset, self.network_shape)))
        return boxes


class CachedSlidingWindow:
    """Coalition -> nnU-Net logits in the ROI box, with the fewest patch forwards the memo allows."""

    def __init__(self, predictor, layout: SlidingWindowLayout, unit_labels: np.ndarray, n_units: int, box: Box,
                 mask_value: float, cache_mode: str = "memo", batch_size: int = 1,
                 max_cache_bytes: int = 1 << 30):
        """predictor: an initialised nnUNetPredictor; layout: its padded input and patch grid;
        unit_labels: (z', y', x') int32 unit ids on the network grid (0 = not a unit); box: half-open ROI box
        on the network grid; mask_value: the normalised value removed voxels take."""
        import torch
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian

        if cache_mode not in options.CACHE_MODES:
            raise ValueError(f"cache mode {cache_mode!r} is not one of {options.CACHE_MODES}")
        if batch_size < 1:
            raise ValueError("batch size must be >= 1")
        if unit_labels.shape != layout.network_shape:
            raise ValueError(f"unit labels {unit_labels.shape} are not on the network grid {layout.network_shape}")
        self.predictor = predictor
        self.n_units = int(n_units)
        self.mask_value = float(mask_value)
        self.cache_mode = cache_mode
        self.batch_size = int(batch_size)
        self.device = predictor.device
        self.n_classes = predictor.label_manager.num_segmentation_heads
        self._padded = layout.padded
        self._units = np.zeros(self._padded.shape, dtype=np.int32)
        self._units[layout.padded_box(tuple((0, n) for n in layout.network_shape))] = unit_labels
        self.box = tuple((int(a), int(b)) for a, b in box)
        self.box_shape = tuple(b - a for a, b in self.box)
        box_padded = layout.padded_box(self.box)
        self.support: list[SupportPatch] = []
        for index, spatial, pairs in layout.support(self.box):
            units = np.unique(self._units[spatial])
            self.support.append(SupportPatch(
                index, spatial,
                tuple(slice(lo - s.start, hi - s.start) for (lo, hi), s in zip(pairs, spatial)),
                tuple(slice(lo - b.start, hi - b.start) for (lo, hi), b in zip(pairs, box_padded)),
                units[units > 0]))

        self._gaussian = compute_gaussian(layout.patch_size, sigma_scale=1. / 8, value_scaling_factor=10,
                                          device=torch.device("cpu")) if predictor.use_gaussian else None
        self._weight_sum = torch.zeros(self.box_shape, dtype=torch.half)
        for sp in self.support:
            self._weight_sum[sp.in_box] += self._gaussian[sp.in_patch] if self._gaussian is not None else 1
        self._fold_parameters = predictor.list_of_parameters
        self.memo = PatchMemo(max_cache_bytes)
        self.counters = InferenceCounters(patches_full_grid=len(layout.slicers),
                                          patches_in_support=len(self.support),
                                          folds=len(self._fold_parameters))

    # -- keys -------------------------------------------------------------------------------------------
    def _removed_in_patch(self, sp: SupportPatch, keep: np.ndarray) -> bytes:
        """Packed bits of 'removed' for the units inside the patch (empty bytes-equivalent when none)."""
        return np.packbits(~keep[sp.units - 1]).tobytes() if sp.units.size else b""

    def _key(self, fold: int, sp: SupportPatch, keep: np.ndarray):
        """The memo key of a (fold, patch, coalition), or None when this cache mode must recompute it."""
        removed = self._removed_in_patch(sp, keep)
        nothing_removed = not any(removed)
        if self.cache_mode == "none" or (self.cache_mode == "baseline" and not nothing_removed):
            return None
        return (fold, sp.index, removed if not nothing_removed else b"")

    # -- network ----------------------------------------------------------------------------------------
    def _patch_input(self, sp: SupportPatch, keep: np.ndarray) -> np.ndarray:
        """The network input patch (pz, py, px) float32 for coalition ``keep``."""
        return apply_coalition(self._padded[sp.patch], self._units[sp.patch], keep, self.mask_value)

    def _forward(self, inputs: list[np.ndarray]) -> list:
        """Network outputs for a batch of patch inputs, Gaussian-weighted and cropped later by the caller."""
        import torch

        x = torch.from_numpy(np.stack(inputs)[:, None]).to(self.device)
        autocast = torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" \
            else contextlib.nullcontext()
        started = time.perf_counter()
        with torch.inference_mode(), autocast:
            out = self.predictor._internal_maybe_mirror_and_predict(x).to("cpu")
        self.counters.network_seconds += time.perf_counter() - started
        self.counters.patch_forwards += len(inputs)
        return list(out)

    def _weighted_crop(self, sp: SupportPatch, prediction):
        """nnU-Net's `prediction *= gaussian` restricted to the box part of the patch: float32 (C, ...)."""
        part = prediction[(slice(None), *sp.in_patch)]
        return part * self._gaussian[sp.in_patch] if self._gaussian is not None else part

    def _load_fold(self, fold: int) -> None:
        if len(self._fold_parameters) > 1:
            network = self.predictor.network
            getattr(network, "_orig_mod", network).load_state_dict(self._fold_parameters[fold])

    # -- public -----------------------------------------------------------------------------------------
    def evaluate(self, keep: np.ndarray, cancel=None,
                 progress: Callable[[InferenceCounters], None] | None = None) -> np.ndarray:
        """Logits in the box for a batch of coalitions.

        keep: bool (n, M), True = unit kept. Returns float32 (n, C, bz, by, bx), nnU-Net's float16 values.
        cancel: optional event checked between network batches (raises ``Cancelled``).
        """
        import torch

        keep = np.asarray(keep, dtype=bool)
        if keep.ndim != 2 or keep.shape[1] != self.n_units:
            raise ValueError(f"keep must be (n, {self.n_units}), got {keep.shape}")
        n = keep.shape[0]
        folds_logits = []
        for fold in range(len(self._fold_parameters)):
            self._load_fold(fold)
            contributions = self._contributions(fold, keep, cancel, progress)
            fused = torch.zeros((n, self.n_classes, *self.box_shape), dtype=torch.half)
            for i in range(n):
                for sp_pos, sp in enumerate(self.support):
                    fused[i][(slice(None), *sp.in_box)] += contributions[i][sp_pos]
                torch.div(fused[i], self._weight_sum, out=fused[i])
            folds_logits.append(fused)
        logits = folds_logits[0]
        for other in folds_logits[1:]:
            logits += other
        if len(folds_logits) > 1:
            logits /= len(folds_logits)
        self.counters.coalitions += n
        return logits.float().numpy()

    def planned_forwards(self, keep: np.ndarray) -> int:
        """The patch forwards ``evaluate(keep)`` would run on this engine as it is now (counted, none run):
        keep bool (n, M). Assumes the memo keeps every result (it holds ``max_cache_bytes``), so a run can
        only need more when that bound evicts."""
        seen = set()
        forwards = 0
        for fold in range(len(self._fold_parameters)):
            for row in np.asarray(keep, dtype=bool):
                for sp in self.support:
                    key = self._key(fold, sp, row)
                    if key is None or (key not in seen and key not in self.memo):
                        forwards += 1
                        if key is not None:
                            seen.add(key)
        return forwards

    def _contributions(self, fold: int, keep: np.ndarray, cancel, progress) -> list[list]:
        """Per coalition, per support patch: the Gaussian-weighted box crop, from the memo or the network."""
        n = keep.shape[0]
        result = [[None] * len(self.support) for _ in range(n)]
        pending: dict = {}          # key (or unique token) -> list of (coalition, support position)
        for i in range(n):
            for pos, sp in enumerate(self.support):
                key = self._key(fold, sp, keep[i])
                cached = self.memo.get(key) if key is not None else None
                if cached is not None:
                    result[i][pos] = cached
                    self.counters.patch_cache_hits += 1
                    continue
                token = key if key is not None else ("uncached", i, pos)
                if token in pending:
                    self.counters.patch_cache_hits += 1
                pending.setdefault(token, []).append((i, pos))
        tokens = list(pending)
        for start in range(0, len(tokens), self.batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled between network batches")
            chunk = tokens[start:start + self.batch_size]
            firsts = [pending[t][0] for t in chunk]
            outputs = self._forward([self._patch_input(self.support[pos], keep[i]) for i, pos in firsts])
            for token, (i, pos), prediction in zip(chunk, firsts, outputs):
                weighted = self._weighted_crop(self.support[pos], prediction)
                if not isinstance(token[0], str):
                    self.memo.put(token, weighted, pinned=(token[2] == b""))
                for j, p in pending[token]:
                    result[j][p] = weighted
            if progress is not None:
                progress(self.counters)
        return result
