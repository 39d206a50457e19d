"""The expensive per-CT steps, kept for the next explanation: the loaded model, nnU-Net's preprocessing of the
CT and the model's full-volume prediction of it - in this process (below), and on disk for other processes
(``case_store``: a new CLI run, a cohort worker, the panel's next child process).

A planner explaining several components of one CT in Slicer, and a cohort worker running one case's unit
types x value functions, ask for the same model on the same CT again and again. The last model (by folder,
folds, device, tile step, mirroring and checkpoint) and the last CT it was run on (by a digest of the voxels and the
geometry) are kept: one of each, so memory stays bounded. Everything kept is read-only for its users (the
engine pads its own copy of the input), so reuse changes no value. Lookup order: this process, the disk store,
computing (and then storing) it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SegSHAPLib.io.image_io import Volume
from SegSHAPLib import options
from SegSHAPLib.inference.case_store import CaseStore, entry_key
from SegSHAPLib.inference.model import Preprocessed, load_predictor, predict_segmentation, preprocess

_lock = threading.Lock()
_model: tuple[tuple, object] | None = None              # (settings, predictor)
_case: dict | None = None               # {"predictor", "digest", "preprocessed", "prediction" (None until asked)}


@dataclass
class CaseData:
    """One CT's model work for an explanation. ``prediction``: the model's segmentation (uint8/uint16 (z, y, x) on
    the CT grid) or None when not asked for. ``source``: where the preprocessing came from ("memory", "disk",
    "computed"); ``full_predictions``: full-volume predictions this call ran (0 or 1)."""

    preprocessed: Preprocessed
    prediction: Volume | None
    source: str
    full_predictions: int


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


def cached_case(predictor, ct: Volume, with_prediction: bool, store: CaseStore | None = None,
                model_key: dict | None = None) -> CaseData:
    """nnU-Net's preprocessing of ``ct`` for ``predictor`` and, when asked for, the model's own segmentation of it:
    each computed once per model and CT. ``store`` (with ``model_key``: ``case_store.entry_key``'s model
    arguments) keeps them on disk for other processes."""
    global _case
    digest = ct_digest(ct)
    key = entry_key(digest, **model_key) if store is not None else None
    with _lock:
        source, changed = "memory", False
        if _case is None or _case["predictor"] is not predictor or _case["digest"] != digest:
            _case = None                                 # free the old CT's arrays before making the next
            stored = store.load(key) if store is not None else None
            if stored is not None:
                source = "disk"
                pre = Preprocessed(stored["data"], json.loads(str(stored["properties"])))
                prediction = ct.with_array(stored["prediction"]) if "prediction" in stored else None
            else:
                source, changed = "computed", True
                pre, prediction = preprocess(predictor, ct), None
            _case = {"predictor": predictor, "digest": digest, "preprocessed": pre, "prediction": prediction}
        full_predictions = 0
        if with_prediction and _case["prediction"] is None:
            _case["prediction"] = predict_segmentation(predictor, ct, _case["preprocessed"])
            full_predictions, changed = 1, True
        if changed and store is not None:
            store.save(key, _entry_arrays(_case))
        return CaseData(_case["preprocessed"], _case["prediction"] if with_prediction else None, source,
                        full_predictions)


def _entry_arrays(case: dict) -> dict:
    """A kept case as the arrays of a store entry."""
    arrays = {"data": case["preprocessed"].data,
              "properties": np.array(json.dumps(case["preprocessed"].properties, default=_plain))}
    if case["prediction"] is not None:
        arrays["prediction"] = case["prediction"].array
    return arrays


def _plain(value):
    """numpy scalars and arrays in nnU-Net's properties as JSON values."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else str(value)


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
