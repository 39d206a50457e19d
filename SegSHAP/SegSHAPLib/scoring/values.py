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

``value_table(names, logits, ...)`` gives several of them at once, (n, V), from one pass over the region (each
column equal to that function's own result). ``requested_values(text)`` reads ``--value``: one name, a
comma-separated list, or ``all`` (every value function, in ALL_ORDER: softdice first, as it is the one never
identically zero on a nonempty region).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from SegSHAPLib import options
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


def _tp(predicted: np.ndarray, z_t: np.ndarray, p0: np.ndarray) -> np.ndarray:
    return np.where(predicted & p0, z_t, 0.0).sum(axis=1) / p0.size


def _fp(predicted: np.ndarray, z_t: np.ndarray, p0: np.ndarray) -> np.ndarray:
    return 0.0 - np.where(predicted & ~p0, z_t, 0.0).sum(axis=1) / p0.size   # 0.0 - x: no negative zeros


def _dice(predicted: np.ndarray, z_t: np.ndarray, p0: np.ndarray) -> np.ndarray:
    overlap = (predicted & p0).sum(axis=1)
    return 2.0 * overlap / (predicted.sum(axis=1) + p0.sum() + DICE_EPS)


def _softdice(predicted: np.ndarray, z_t: np.ndarray, p0: np.ndarray) -> np.ndarray:
    w = np.where(p0, 1.0, -1.0)
    return np.where(predicted, w * z_t, 0.0).sum(axis=1) / p0.size


def tp(logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray, target: int) -> np.ndarray:
    """S_TP: mean over R of the target logit where the voxel stays predicted as a baseline positive. (n,)."""
    return _tp(*_on_region(logits, region, baseline_pred, target))


def fp(logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray, target: int) -> np.ndarray:
    """S_FP: minus the mean over R of the target logit where a baseline negative becomes predicted. (n,)."""
    return _fp(*_on_region(logits, region, baseline_pred, target))


def dice(logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray, target: int) -> np.ndarray:
    """S_Dice: Dice overlap, within R, of the coalition's prediction with the baseline prediction. (n,)."""
    return _dice(*_on_region(logits, region, baseline_pred, target))


def softdice(logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray, target: int) -> np.ndarray:
    """S_Soft: mean over R of the target logit where predicted, + on baseline positives, - elsewhere. (n,)."""
    return _softdice(*_on_region(logits, region, baseline_pred, target))


ValueFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
VALUE_FUNCTIONS: dict[str, ValueFunction] = {"tp": tp, "fp": fp, "dice": dice, "softdice": softdice}
_ON_REGION = {"tp": _tp, "fp": _fp, "dice": _dice, "softdice": _softdice}
ALL = options.ALL_VALUES
ALL_ORDER = options.ALL_VALUES_ORDER


def value_function(name: str) -> ValueFunction:
    """The value function registered under ``name``; InputError listing the valid names otherwise."""
    try:
        return VALUE_FUNCTIONS[name]
    except KeyError:
        raise InputError(f"value function {name!r} is not one of {', '.join(VALUE_FUNCTIONS)} (or {ALL})") from None


def value_table(names: list[str], logits: np.ndarray, region: np.ndarray, baseline_pred: np.ndarray,
                target: int) -> np.ndarray:
    """The value functions ``names`` at once: float64 (n, V), column k equal to ``VALUE_FUNCTIONS[names[k]]``'s
    result (same arguments and shapes as the single functions)."""
    for name in names:
        value_function(name)
    restricted = _on_region(logits, region, baseline_pred, target)
    return np.stack([_ON_REGION[name](*restricted) for name in names], axis=1)


def requested_values(text: str) -> list[str]:
    """``--value``'s value functions in order: one name, a comma-separated list, or ``all`` (ALL_ORDER).
    InputError for an unknown name, a repeat or an empty list."""
    text = str(text).strip()
    if text == ALL:
        return list(ALL_ORDER)
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise InputError(f"--value {text!r}: give a value function, a comma-separated list of them, or {ALL}")
    for name in names:
        value_function(name)
    if len(set(names)) != len(names):
        raise InputError(f"--value {text!r} names a value function twice")
    return names
