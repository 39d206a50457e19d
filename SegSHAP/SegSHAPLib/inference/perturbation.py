"""The perturbation operator X^(m) (docs/method.md, section 5): removed units take the replacement R, all else
is the image.

Pure and geometry-free: it works on any grid (the CT grid, or nnU-Net's preprocessed space where the image
is float32 and R the normalised replacement of ``removal``), so long as the image, the unit labels and an array
R share a shape. R is a scalar (the mask value b: ``--removal constant``) or an image (blur, mean).
"""

from __future__ import annotations

import numpy as np

from SegSHAPLib.errors import InputError


def apply_coalition(image: np.ndarray, unit_labels: np.ndarray, keep: np.ndarray,
                    replacement: float | np.ndarray) -> np.ndarray:
    """X^(m): the image with every voxel of a removed unit set to its replacement.

    image:       array of any shape S (e.g. (z, y, x)); never modified.
    unit_labels: integer array of shape S, 0 = not a unit (always left as is), 1..M = unit ids.
    keep:        bool (M,) for one coalition or (n, M) for a batch; keep[..., j-1] True = unit j kept.
    replacement: what removed voxels take: a scalar b (for an integer image a whole number its dtype holds), or
                 an array of shape S (voxel v takes replacement[v]); cast to the image's dtype.
    Returns a new array of shape S (one coalition) or (n, *S) (batch), with the image's dtype.
    """
    keep = np.asarray(keep)
    if keep.dtype != bool or keep.ndim not in (1, 2):
        raise ValueError(f"keep must be a bool array (M,) or (n, M), got {keep.dtype} {keep.shape}")
    if unit_labels.shape != image.shape:
        raise ValueError(f"unit labels {unit_labels.shape} and image {image.shape} differ in shape")
    n_units = keep.shape[-1]
    if unit_labels.size and (unit_labels.min() < 0 or unit_labels.max() > n_units):
        raise ValueError(f"unit labels span [{unit_labels.min()}, {unit_labels.max()}] but keep has {n_units} units")
    fill = np.asarray(replacement)
    if fill.ndim and fill.shape != image.shape:
        raise ValueError(f"replacement {fill.shape} and image {image.shape} differ in shape")
    if not fill.ndim and np.issubdtype(image.dtype, np.integer):
        limits = np.iinfo(image.dtype)
        if not (float(replacement).is_integer() and limits.min <= replacement <= limits.max):
            raise InputError(f"mask value {replacement} cannot be stored in the image's type {image.dtype}; "
                             f"give a whole number in [{limits.min}, {limits.max}]")
    fill = fill.astype(image.dtype)  # float images round R to their precision
    # Column 0 stands for "not a unit", which is always kept.
    keep_with_zero = np.concatenate([np.ones(keep.shape[:-1] + (1,), dtype=bool), keep], axis=-1)
    kept = keep_with_zero[..., unit_labels]                           # S or (n, *S)
    return np.where(kept, image, fill)
