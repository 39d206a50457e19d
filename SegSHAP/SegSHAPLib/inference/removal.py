"""The removal operator (``--removal``): what a removed unit's network-input voxels become (docs/method.md,
section 5). Each operator gives a replacement R, computed once per explanation from the unperturbed normalised
network input x̃ (1, z', y', x') and the unit map on the network grid, never from a coalition:

- ``constant``: R = b̃, the mask value b normalised as nnU-Net normalises this CT (``mask_value``; a scalar);
- ``blur``:     R = G_sigma * x̃, x̃ blurred by a Gaussian of ``sigma_mm`` mm per axis (the network grid's voxel
                spacing converts it; scipy's ``gaussian_filter``, border mode 'nearest'), float32 (z', y', x');
- ``mean``:     R(v) = the mean of x̃ over the network voxels of v's own unit (``scipy.ndimage.mean``), float32
                (z', y', x'), 0 where v is in no unit (never used: such voxels are always kept).

X̃^(m)(v) = R(v) for v in a removed unit (``perturbation.apply_coalition``). As R is fixed and R(v) depends on v
alone, a patch's input still depends only on which units inside it are removed, so the memo's key (fold,
patch, removed units in the patch) stays exact for every operator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SegSHAPLib.inference.mask_value import MaskValue
from SegSHAPLib.inference.network_grid import NetworkGrid


@dataclass(frozen=True)
class Removal:
    """One explanation's removal operator and its replacement R (a float, or float32 (z', y', x') on the
    network grid)."""

    operator: str
    replacement: float | np.ndarray
    sigma_mm: float | None = None                  # blur only
    sigma_voxels: tuple[float, float, float] | None = None   # blur only: per network axis (z', y', x')

    def as_summary(self) -> dict:
        """summary.json's ``removal`` block: the operator, and for blur its sigma in mm and network voxels."""
        block = {"operator": self.operator, "space": "normalised network input"}
        if self.operator == "blur":
            block.update(sigma_mm=self.sigma_mm, sigma_network_voxels=list(self.sigma_voxels))
        return block


def network_spacing(grid: NetworkGrid, ct_spacing_zyx) -> tuple[float, float, float]:
    """The network grid's voxel spacing (mm) along (z', y', x'): the CT's spacing along the transposed axis,
    scaled by nnU-Net's resampling (cropped length / network length)."""
    return tuple(float(ct_spacing_zyx[grid.transpose[a]]) * grid.crop.shape[a] / grid.network_shape[a]
                 for a in range(3))


def build_removal(operator: str, network_input: np.ndarray, units_net: np.ndarray, mask: MaskValue, *,
                  sigma_mm: float, spacing_net: tuple[float, float, float]) -> Removal:
    """The removal of ``operator`` for this case.

    network_input: x̃ float32 (z', y', x'), the unperturbed normalised input. units_net: int32 (z', y', x'), 0 =
    no unit. mask: the constant's b̃. sigma_mm: blur's sigma. spacing_net: network voxel spacing (z', y', x') mm.
    """
    from scipy import ndimage

    if operator == "constant":
        return Removal(operator, float(mask.normalised))
    if operator == "blur":
        sigma_voxels = tuple(sigma_mm / s for s in spacing_net)
        blurred = ndimage.gaussian_filter(network_input.astype(np.float64), sigma_voxels, mode="nearest")
        return Removal(operator, blurred.astype(np.float32), sigma_mm, sigma_voxels)
    if operator == "mean":
        n_units = int(units_net.max(initial=0))
        means = np.zeros(n_units + 1, dtype=np.float64)
        means[1:] = ndimage.mean(network_input.astype(np.float64), labels=units_net, index=np.arange(1, n_units + 1))
        return Removal(operator, means[units_net].astype(np.float32))
    raise ValueError(f"unknown removal operator {operator!r}")
