"""The voxel correspondence between the CT grid and nnU-Net's preprocessed network grid.

nnU-Net's preprocessing takes a CT array (z, y, x) through three geometric steps (``DefaultPreprocessor``):
transpose by ``plans.transpose_forward``, crop to the bounding box of nonzero voxels, and resample to the plans'
spacing (skimage-style resize, where output voxel o samples input coordinate (o + 0.5) * n_in / n_out - 0.5).
``NetworkGrid`` reproduces that correspondence per axis, so that

- label maps (units, ROI) are carried to the network grid by nearest neighbour (``to_network``): network voxel
  o takes the label of input voxel floor((o + 0.5) * n_in / n_out), never a blend of labels;
- boxes on the network grid (the ROI box, sliding-window patches) map back to index ranges on the CT grid
  (``network_box_to_ct``), which is how the receptive-field support B_RF is painted onto the CT.

Network-grid arrays are (z', y', x') after transpose, crop and resampling; CT-grid arrays are (z, y, x).
Boxes are ``SegSHAPLib.box.Box``: three half-open (start, stop) pairs in the array's own axis order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SegSHAPLib.box import Box


@dataclass(frozen=True)
class NetworkGrid:
    """Per-axis nearest-neighbour correspondence, CT grid (z, y, x) <-> network grid (z', y', x').

    transpose:   nnU-Net's transpose_forward; network axis a is CT axis transpose[a].
    crop:        per network axis the half-open crop range (in transposed CT indices).
    network_shape: shape of the preprocessed network input (z', y', x').
    ct_shape:    shape of the CT array (z, y, x).
    """

    transpose: tuple[int, int, int]
    crop: Box
    network_shape: tuple[int, int, int]
    ct_shape: tuple[int, int, int]

    @classmethod
    def from_preprocessing(cls, properties: dict, transpose_forward, network_shape, ct_shape) -> "NetworkGrid":
        """Build from nnU-Net's preprocessing properties (``bbox_used_for_cropping``) and the two shapes."""
        crop = Box(properties["bbox_used_for_cropping"])
        return cls(tuple(int(t) for t in transpose_forward), crop,
                   tuple(int(s) for s in network_shape), tuple(int(s) for s in ct_shape))

    def source_indices(self, axis: int) -> np.ndarray:
        """For network axis ``axis``: the transposed-CT index each network voxel samples (nearest), shape (n_out,)."""
        start, stop = self.crop[axis]
        n_in, n_out = stop - start, self.network_shape[axis]
        idx = np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64)
        return np.clip(idx, 0, n_in - 1) + start

    def to_network(self, ct_array: np.ndarray) -> np.ndarray:
        """Carry a CT-grid array (z, y, x) to the network grid (z', y', x') by nearest neighbour."""
        if tuple(ct_array.shape) != self.ct_shape:
            raise ValueError(f"array shape {ct_array.shape} is not the CT shape {self.ct_shape}")
        transposed = np.transpose(ct_array, self.transpose)
        return np.ascontiguousarray(transposed[np.ix_(*(self.source_indices(a) for a in range(3)))])

    def network_box_to_ct(self, box: Box) -> Box:
        """A half-open box on the network grid -> the half-open box of CT voxels (z, y, x) it samples."""
        per_transposed_axis = []
        for axis, (start, stop) in enumerate(box):
            src = self.source_indices(axis)[max(start, 0):min(stop, self.network_shape[axis])]
            per_transposed_axis.append((int(src.min()), int(src.max()) + 1))
        inverse = np.argsort(self.transpose)
        return Box(per_transposed_axis[int(inverse[c])] for c in range(3))

    def ct_box_to_network(self, box: Box) -> Box:
        """A half-open CT box (z, y, x) -> the smallest network box (z', y', x') whose voxels sample inside it.

        A box thinner than one network voxel maps to the nearest network voxel. Raises ValueError when the box
        lies entirely outside the region nnU-Net kept after cropping.
        """
        result = []
        for axis in range(3):
            start, stop = box[self.transpose[axis]]
            crop_start, crop_stop = self.crop[axis]
            if stop <= crop_start or start >= crop_stop:
                raise ValueError("the box lies outside the region nnU-Net keeps after cropping to nonzero voxels")
            src = self.source_indices(axis)
            inside = np.nonzero((src >= start) & (src < stop))[0]
            if inside.size == 0:  # a box thinner than one network voxel (strong downsampling): nearest voxel
                inside = np.array([int(np.argmin(np.abs(src - (start + stop - 1) / 2)))])
            result.append((int(inside[0]), int(inside[-1]) + 1))
        return Box(result)
