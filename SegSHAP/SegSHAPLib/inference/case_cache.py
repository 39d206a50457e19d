"""The expensive per-CT steps, kept for the next explanation in the same process: the loaded model, nnU-Net's
preprocessing of the CT and the model's full-volume prediction of it.

A planner explaining several components of one CT in Slicer, and a cohort worker running one case's unit
types x value functions, ask for the same model on the same CT again and again. The last model (by folder,
folds, device, tile step, mirroring and checkpoint) and the last CT it was run on (by a digest of the voxels and the
geometry) are kept: one of each, so memory stays bounded. Everything kept is read-only for its users (the
engine pads its own copy of the input), so reuse changes no value.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from SegSHAPLib.io.image_io import Volume
from SegSHAPLib import options
from SegSHAPLib.inference.model import Preprocessed, load_predictor, predict_segmentation, preprocess

_lock = threading.Lock()
_model: tuple[tuple, object] | None = None              # (settings, predictor)
_case: dict | None = None               # {"predictor", "digest", "preprocessed", "prediction" (None until asked)}


def cached_predictor(model_dir, folds, device: str, tile_step: float, tta: bool,
                     checkpoint: str = options.CHECKPOINT):
    """``model.load_predictor`` for these settings, loaded once while they stay the same."""
    global _model
    settings = (str(Path(model_dir).resolve()), tuple(folds) if folds else None, device, float(tile_step), bool(tta),
                checkpoint)
    with _lock:
        if _model is None or _model[0] != settings:
            _model = None                                # free the old model before loading the next
            _model = (settings, load_predictor(model_dir, folds, device, tile_step, use_mirroring=tta,
                                                  checkpoint=checkpoint))
        return _model[1]


def cached_case(predictor, ct: Volume, with_prediction: bool) -> tuple[Preprocessed, Volume | None]:
    """nnU-Net's preprocessing of ``ct`` for ``predictor`` and, when asked for, the model's own segmentation of it
    (uint8/uint16, (z, y, x) on the CT grid; else None): each computed once per model and CT."""
    global _case
    digest = ct_digest(ct)
    with _lock:
        if _case is None or _case["predictor"] is not predictor or _case["digest"] != digest:
            _case = None                                 # free the old CT's arrays before making the next
            _case = {"predictor": predictor, "digest": digest, "preprocessed": preprocess(predictor, ct),
                     "prediction": None}
        if with_prediction and _case["prediction"] is None:
            _case["prediction"] = predict_segmentation(predictor, ct, _case["preprocessed"])
        return _case["preprocessed"], (_case["prediction"] if with_prediction else None)


def clear() -> None:
    """Forget the kept model and CT (frees their memory)."""
    global _model, _case
    with _lock:
        _model, _case = None, None


def ct_digest(ct: Volume) -> str:
    """A digest of the CT's voxels (with their dtype and shape) and its geometry."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{ct.array.dtype}{ct.array.shape}".encode())
    digest.update(np.ascontiguousarray(ct.array).tobytes())
    for part in (ct.spacing, ct.origin, ct.direction):
        digest.update(np.asarray(part, dtype=np.float64).tobytes())
    return digest.hexdigest()
