"""The four value functions of docs/method.md (section 7, "Value functions"), vectorised over a batch of coalitions.

Every value function has the signature ``f(logits, region, baseline_pred, target) -> np.ndarray (n,)``:
- logits:        float array (n, C, z, y, x): raw network logits (not softmax) for n coalitions on a box,
                 C classes including background (class 0).
- region:        bool (z, y, x), the scoring region R inside the same box; |R| = sum R > 0.
- baseline_pred: bool (z, y, x), P_0 = (argmax_c of the unperturbed logits == target).
- target:        the class index t.
With P_m = 1[argmax_c Z^(m)_c = t] (ties go to the lowest class index, as numpy's and torch's argmax do) and
z_t^(m) the raw logit of class t:
- tp:       S_TP(m)   =  (1/|R|) sum_x R(x) 1[P_m(x)=1 and P_0(x)=1] z_t^(m)(x)
- fp:       S_FP(m)   = -(1/|R|) sum_x R(x) 1[P_m(x)=1 and P_0(x)=0] z_t^(m)(x)
- dice:     S_Dice(m) =  2 |(P_m.R) and (P_0.R)| / (|P_m.R| + |P_0.R| + eps), eps = 1e-8 (only guards 0/0:
            the dice of two empty sets is 0)
- softdice: S_Soft(m) =  (1/|R|) sum_x R(x) 1[P_m(x)=1] w(x) z_t^(m)(x), w = 2 P_0 - 1
Sums are taken in float64. numpy only: the engine converts torch tensors before calling.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from SegSHAPLib.errors import InputError

DICE_EPS = 1e-8


def _on_region(logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray, target: int):
    """Restrict to the region's voxels: (P_m (n, |R|) bool, z_t (n, |R|) float64, P_0 (|R|,) bool)."""
    logits = np.asarray(logits)
    if logits.ndim != 5:
        raise ValueError(f"logits must be (n, C, z, y, x), got shape {logits.shape}")
    if region.shape != logits.shape[2:] or baseline_pred.shape != logits.shape[2:]:
        raise ValueError(f"region {region.shape} and baseline_pred {baseline_pred.shape} must match the logits' "
                         f"spatial shape {logits.shape[2:]}")
    if not 0 <= target < logits.shape[1]:
        raise ValueError(f"target class {target} is not among the logits' {logits.shape[1]} classes")
    if not region.any():
        raise ValueError("the scoring region is empty")
    inside = logits[:, :, region]                                     # (n, C, |R|)
    predicted = inside.argmax(axis=1) == target                       # (n, |R|)
    return predicted, inside[:, target].astype(np.float64), baseline_pred[region]


def tp(logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray, target: int) -> np.ndarray:
    """S_TP: mean over R of the target logit where the voxel stays predicted as a baseline positive. (n,)."""
    predicted, z_t, p0 = _on_region(logits, region, baseline_pred, target)
    return np.where(predicted & p0, z_t, 0.0).sum(axis=1) / p0.size


def fp(logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray, target: int) -> np.ndarray:
    """S_FP: minus the mean over R of the target logit where a baseline negative becomes predicted. (n,)."""
    predicted, z_t, p0 = _on_region(logits, region, baseline_pred, target)
    return 0.0 - np.where(predicted & ~p0, z_t, 0.0).sum(axis=1) / p0.size   # 0.0 - x: no negative zeros


def dice(logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray, target: int) -> np.ndarray:
    """S_Dice: Dice overlap, within R, of the coalition's prediction with the baseline prediction. (n,)."""
    predicted, _, p0 = _on_region(logits, region, baseline_pred, target)
    overlap = (predicted & p0).sum(axis=1)
    return 2.0 * overlap / (predicted.sum(axis=1) + p0.sum() + DICE_EPS)


def softdice(logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray, target: int) -> np.ndarray:
    """S_Soft: mean over R of the target logit where predicted, + on baseline positives, - elsewhere. (n,)."""
    predicted, z_t, p0 = _on_region(logits, region, baseline_pred, target)
    w = np.where(p0, 1.0, -1.0)
    return np.where(predicted, w * z_t, 0.0).sum(axis=1) / p0.size


ValueFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
VALUE_FUNCTIONS: dict[str, ValueFunction] = {"tp": tp, "fp": fp, "dice": dice, "softdice": softdice}


def value_function(name: str) -> ValueFunction:
    """The value function registered under ``name``; InputError listing the valid names otherwise."""
    try:
        return VALUE_FUNCTIONS[name]
    except KeyError:
        raise InputError(f"value function {name!r} is not one of {', '.join(VALUE_FUNCTIONS)}") from None
