"""Label maps and masks as they must be: integer-valued, and a mask one value only (arrays in any axis order).

A label map (an organ map, a prediction) or a mask read from an image file may be stored as floats; a
probability map or a resampled (interpolated) map then holds values between the labels. Such values are refused
with the values found, never rounded or thresholded silently.
"""

from __future__ import annotations

import numpy as np

from SegSHAPLib.errors import InputError

SHOWN_VALUES = 8


def shown(values) -> str:
    """Up to SHOWN_VALUES values as text ('1, 2, 5' or '1, 2, ... (40 values)')."""
    values = [f"{v:g}" for v in values]
    if len(values) <= SHOWN_VALUES:
        return ", ".join(values)
    return ", ".join(values[:SHOWN_VALUES]) + f", ... ({len(values)} values)"


def label_values(array: np.ndarray, what: str) -> np.ndarray:
    """The distinct values (sorted int64) of a label map; InputError naming ``what`` when some are not
    integers (the message shows a few of them)."""
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        if array.size and array.min() >= 0 and array.max() < 1 << 16:
            counts = np.bincount(array.reshape(-1).astype(np.int64, copy=False))
            return np.flatnonzero(counts).astype(np.int64)
        return np.unique(array).astype(np.int64)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{what} has non-numeric values ({array.dtype})")
    fractional = array[np.round(array) != array]             # NaN compares unequal, so it is listed too
    if fractional.size:
        raise InputError(f"{what} has {fractional.size:,} non-integer voxel value(s), e.g. "
                         f"{shown(np.unique(fractional)[:SHOWN_VALUES])}: it is not a label map (a probability map, "
                         "or one resampled with interpolation?); give integer labels (0 outside)")
    return np.unique(array).astype(np.int64)


def binary_mask(array: np.ndarray, what: str) -> np.ndarray:
    """A mask (0 outside, one nonzero value inside) as bool; InputError naming ``what`` and the values found
    when it holds non-integer values or several nonzero labels."""
    values = label_values(array, what)
    inside = values[values != 0]
    if len(inside) > 1:
        raise InputError(f"{what} is not binary: it holds the labels {shown(inside)} besides 0; give a mask of one "
                         "region (0 outside, one value inside), e.g. select one label first")
    return array != 0
