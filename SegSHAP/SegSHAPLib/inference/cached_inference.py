"""Exact, cached, ROI-restricted nnU-Net sliding-window inference for many coalitions.

For a coalition m (which units are kept), nnU-Net's logits inside the ROI box B depend only on the sliding-window
patches that overlap B (the support), and each patch's network output depends only on which units *inside that
patch* are removed. ``CachedSlidingWindow`` therefore

1. uses nnU-Net's own patch grid (its sliding-window slicers on the input padded as nnU-Net pads it, 3d patches
   or 2d slice-wise ones), nnU-Net's Gaussian (``compute_gaussian``) and nnU-Net's forward of one patch (so
   mirroring TTA is nnU-Net's when enabled) - the private parts through ``nnunet_private``;
2. runs only support patches, and memoises each patch's Gaussian-weighted output, cropped to B, on the key
   ``PatchKey`` (fold, patch, removed units inside the patch) - mode ``memo``; mode ``baseline`` only reuses patches with no
   removed unit (the published cache); mode ``none`` recomputes every support patch for every coalition;
3. fuses exactly as nnU-Net does: float16 accumulators, patches added in nnU-Net's slicer order, the Gaussian
   weight sum accumulated in the same order, ``torch.div`` in float16, folds summed in float16 and divided by
   their count. Fusion is element-wise, so restricting it to B changes no bit: with batch size 1 on CPU the
   logits in B equal ``predict_logits_from_preprocessed_data`` on the perturbed input exactly (tested).

Arrays: the preprocessed input is (1, z', y', x') float32; unit labels (z', y', x') int32 on the same network
grid; logits come out as float32 (n, C, bz, by, bx) over the box, in nnU-Net's float16 precision.
Coalitions are perturbed in network space: removed voxels take the replacement R of the removal operator
(the model-normalised mask value, or a fixed image: ``inference.removal``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.box import Box
from SegSHAPLib.errors import Cancelled
from SegSHAPLib.inference import nnunet_private
from SegSHAPLib.inference.forward_count import ForwardCount, count_forwards
from SegSHAPLib.inference.patch_memo import PatchKey, PatchMemo
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
    patch:       the patch in the padded network grid (z, y, x); a 2d patch is one slice thick in z.
    in_patch:    the patch/box intersection in patch-local coordinates.
    in_box:      the same intersection in box-local coordinates.
    units:       sorted unit ids (1..M) present in the patch.
    """

    index: int
    patch: Box
    in_patch: Box
    in_box: Box
    units: np.ndarray


@dataclass(frozen=True)
class _Recompute:
    """The work item of a (coalition, support patch) whose output this cache mode does not keep."""

    coalition: int
    position: int


def patch_box(slicer: tuple) -> Box:
    """One of nnU-Net's slicers -> its spatial box (z, y, x) in the padded grid. A 2d slicer
    ``(slice(None), z, slice_y, slice_x)`` covers the one slice z."""
    return Box((s.start, s.stop) if isinstance(s, slice) else (int(s), int(s) + 1) for s in slicer[1:])


class SlidingWindowLayout:
    """nnU-Net's padded input and patch grid for one preprocessed case, and the patches that overlap a box.

    padded:     float32 (Z, Y, X), the input padded as ``predict_sliding_window_return_logits`` pads it.
    offset:     padding before each axis; network voxel v sits at v + offset in the padded grid.
    patches:    nnU-Net's patches in its own slicer order, as boxes (z, y, x) in the padded grid.
    is_2d:      True for a 2d configuration (patch_size (py, px), patches one slice thick).
    patch_size: nnU-Net's patch size, (pz, py, px) or (py, px) for 2d.
    """

    def __init__(self, predictor, data: np.ndarray):
        """predictor: an initialised nnUNetPredictor; data: preprocessed input (1, z', y', x') float32."""
        import torch
        from acvl_utils.cropping_and_padding.padding import pad_nd_image

        if data.ndim != 4 or data.shape[0] != 1:
            raise ValueError(f"expected one-channel preprocessed data (1, z, y, x), got {data.shape}")
        self.patch_size = tuple(int(p) for p in predictor.configuration_manager.patch_size)
        self.is_2d = len(self.patch_size) == 2
        padded, revert = pad_nd_image(torch.from_numpy(np.ascontiguousarray(data)), self.patch_size, "constant",
                                      {"value": 0}, True, None)
        self.padded = padded[0].numpy()
        self.offset = tuple(int(s.start) for s in revert[1:])
        self.network_shape = tuple(int(s) for s in data.shape[1:])
        self.patches = [patch_box(s) for s in nnunet_private.sliding_window_slicers(predictor, padded.shape[1:])]

    def padded_box(self, box: Box) -> Box:
        """A network-grid box -> the same voxels in the padded grid."""
        return Box(box).shifted(self.offset)

    def support(self, box: Box) -> list[tuple[int, Box, Box]]:
        """Patches overlapping ``box``: (index in nnU-Net's order, patch, patch/box intersection), padded grid."""
        box_padded = self.padded_box(box)
        found = []
        for index, patch in enumerate(self.patches):
            common = patch.intersection(box_padded)
            if not common.is_empty:
                found.append((index, patch, common))
        return found

    def support_network_boxes(self, box: Box) -> list[Box]:
        """The support patches of ``box`` as boxes on the unpadded network grid (padding clipped away)."""
        return [patch.shifted([-o for o in self.offset]).clipped(self.network_shape)
                for _, patch, _ in self.support(box)]


class CachedSlidingWindow:
    """Coalition -> nnU-Net logits in the ROI box, with the fewest patch forwards the memo allows."""

    def __init__(self, predictor, layout: SlidingWindowLayout, unit_labels: np.ndarray, n_units: int, box: Box,
                 replacement: float | np.ndarray, cache_mode: str = "memo", batch_size: int = 1,
                 max_cache_bytes: int = options.MEMO_BYTES):
        """predictor: an initialised nnUNetPredictor; layout: its padded input and patch grid;
        unit_labels: (z', y', x') int32 unit ids on the network grid (0 = not a unit); box: half-open ROI box
        on the network grid; replacement: what removed voxels take, the normalised mask value (a float) or a
        float32 image (z', y', x') on the network grid (``inference.removal``)."""
        import torch
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian

        if cache_mode not in options.CACHE_MODES:
            raise ValueError(f"cache mode {cache_mode!r} is not one of {options.CACHE_MODES}")
        if batch_size < 1:
            raise ValueError("batch size must be >= 1")
        if unit_labels.shape != layout.network_shape:
            raise ValueError(f"unit labels {unit_labels.shape} are not on the network grid {layout.network_shape}")
        self.predictor = predictor
        self.is_2d = layout.is_2d
        self.n_units = int(n_units)
        self.cache_mode = cache_mode
        self.batch_size = int(batch_size)
        self.device = predictor.device
        self.n_classes = predictor.label_manager.num_segmentation_heads
        self._padded = layout.padded
        self._units = np.zeros(self._padded.shape, dtype=np.int32)
        network_part = layout.padded_box(Box.whole(layout.network_shape)).slices
        self._units[network_part] = unit_labels
        if np.ndim(replacement) == 0:
            self._replacement = float(replacement)
        else:                                             # on the padded grid; padding is no unit, never replaced
            self._replacement = np.zeros(self._padded.shape, dtype=np.float32)
            self._replacement[network_part] = replacement
        self.box = Box(box)
        self.box_shape = self.box.shape
        box_padded = layout.padded_box(self.box)
        self.support: list[SupportPatch] = []
        for index, patch, common in layout.support(self.box):
            units = np.unique(self._units[patch.slices])
            self.support.append(SupportPatch(index, patch, common.relative_to(patch), common.relative_to(box_padded),
                                             units[units > 0]))

        # nnU-Net's Gaussian over the patch, (pz, py, px); a 2d one gets a leading axis of 1 (one slice).
        gaussian = compute_gaussian(layout.patch_size, sigma_scale=1. / 8, value_scaling_factor=10,
                                    device=torch.device("cpu")) if predictor.use_gaussian else None
        self._gaussian = gaussian[None] if gaussian is not None and self.is_2d else gaussian
        self._weight_sum = torch.zeros(self.box_shape, dtype=torch.half)
        for sp in self.support:
            self._weight_sum[sp.in_box.slices] += self._gaussian[sp.in_patch.slices] \
                if self._gaussian is not None else 1
        self._fold_parameters = predictor.list_of_parameters
        self.memo = PatchMemo(max_cache_bytes)
        self.counters = InferenceCounters(patches_full_grid=len(layout.patches),
                                          patches_in_support=len(self.support),
                                          folds=len(self._fold_parameters))

    # -- keys -------------------------------------------------------------------------------------------
    def _key(self, fold: int, sp: SupportPatch, keep: np.ndarray) -> PatchKey | None:
        """The memo key of a (fold, patch, coalition), or None when this cache mode must recompute it."""
        removed = np.packbits(~keep[sp.units - 1]).tobytes() if sp.units.size else b""
        key = PatchKey(fold, sp.index, removed if any(removed) else b"")
        if self.cache_mode == "none" or (self.cache_mode == "baseline" and not key.is_baseline):
            return None
        return key

    # -- network ----------------------------------------------------------------------------------------
    def _patch_input(self, sp: SupportPatch, keep: np.ndarray) -> np.ndarray:
        """The network input patch (pz, py, px) float32 for coalition ``keep`` ((1, py, px) for 2d)."""
        replacement = self._replacement if np.ndim(self._replacement) == 0 else self._replacement[sp.patch.slices]
        return apply_coalition(self._padded[sp.patch.slices], self._units[sp.patch.slices], keep, replacement)

    def _forward(self, inputs: list[np.ndarray]) -> list:
        """Network outputs (C, pz, py, px) for a batch of patch inputs ((C, 1, py, px) for 2d, whose network
        takes (n, 1, py, px): the slice axis of the patch is the channel axis)."""
        import torch

        stacked = np.stack(inputs)
        x = torch.from_numpy(stacked if self.is_2d else stacked[:, None]).to(self.device)
        autocast = torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" \
            else contextlib.nullcontext()
        started = time.perf_counter()
        with torch.inference_mode(), autocast:
            out = nnunet_private.mirror_and_predict(self.predictor, x).to("cpu")
        self.counters.network_seconds += time.perf_counter() - started
        self.counters.patch_forwards += len(inputs)
        return list(out[:, :, None] if self.is_2d else out)

    def _weighted_crop(self, sp: SupportPatch, prediction):
        """nnU-Net's `prediction *= gaussian` restricted to the box part of the patch: float32 (C, ...)."""
        part = prediction[(slice(None), *sp.in_patch.slices)]
        return part * self._gaussian[sp.in_patch.slices] if self._gaussian is not None else part

    def _load_fold(self, fold: int) -> None:
        if len(self._fold_parameters) > 1:
            nnunet_private.load_fold_weights(self.predictor, self._fold_parameters[fold])

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
                    fused[i][(slice(None), *sp.in_box.slices)] += contributions[i][sp_pos]
                torch.div(fused[i], self._weight_sum, out=fused[i])
            folds_logits.append(fused)
        logits = folds_logits[0]
        for other in folds_logits[1:]:
            logits += other
        if len(folds_logits) > 1:
            logits /= len(folds_logits)
        self.counters.coalitions += n
        return logits.float().numpy()

    def planned_forwards(self, keep: np.ndarray) -> ForwardCount:
        """The patch forwards ``evaluate(keep)`` would run on a fresh engine of this support, in each cache mode
        (counted, none run; ``forward_count``): keep bool (n, M) in evaluation order. Exact while the memo does
        not evict (``ForwardCount.evicts``)."""
        element_bytes = 2 if self.device.type == "cuda" else 4       # CUDA runs under autocast: float16 crops
        crop_bytes = [self.n_classes * int(np.prod(sp.in_patch.shape)) * element_bytes for sp in self.support]
        return count_forwards(keep, [sp.units for sp in self.support], crop_bytes,
                              folds=len(self._fold_parameters), memo_bound_bytes=self.memo.max_bytes)

    def _contributions(self, fold: int, keep: np.ndarray, cancel, progress) -> list[list]:
        """Per coalition, per support patch: the Gaussian-weighted box crop, from the memo or the network."""
        n = keep.shape[0]
        result = [[None] * len(self.support) for _ in range(n)]
        pending: dict[PatchKey | _Recompute, list[tuple[int, int]]] = {}   # work item -> (coalition, position)s
        for i in range(n):
            for pos, sp in enumerate(self.support):
                key = self._key(fold, sp, keep[i])
                cached = self.memo.get(key) if key is not None else None
                if cached is not None:
                    result[i][pos] = cached
                    self.counters.patch_cache_hits += 1
                    continue
                item = key if key is not None else _Recompute(i, pos)
                if item in pending:
                    self.counters.patch_cache_hits += 1
                pending.setdefault(item, []).append((i, pos))
        items = list(pending)
        for start in range(0, len(items), self.batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled between network batches")
            chunk = items[start:start + self.batch_size]
            firsts = [pending[t][0] for t in chunk]
            outputs = self._forward([self._patch_input(self.support[pos], keep[i]) for i, pos in firsts])
            for item, (i, pos), prediction in zip(chunk, firsts, outputs):
                weighted = self._weighted_crop(self.support[pos], prediction)
                if isinstance(item, PatchKey):
                    self.memo.put(item, weighted, pinned=item.is_baseline)
                for j, p in pending[item]:
                    result[j][p] = weighted
            if progress is not None:
                progress(self.counters)
        return result
