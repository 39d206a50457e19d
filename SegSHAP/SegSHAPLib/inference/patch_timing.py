"""The measured time of one sliding-window patch forward, per model and device, kept in the case cache folder
(``<folder>/patch_seconds.json``: model digest -> seconds) so it is measured once.

The measurement runs the network's own forward (``nnUNetPredictor._internal_maybe_mirror_and_predict``, as the
cached engine does) on a zero patch of the plans' patch size (1, c, pz, py, px): one warm-up pass, then the
median of ``REPEATS`` timed passes. It is a wall-clock figure of this machine at this moment (other load slows
it); counted forwards are the stable figure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from SegSHAPLib.io.atomic_files import write_json_atomic

TIMINGS_FILE = "patch_seconds.json"
REPEATS = 3


def measure_patch_seconds(predictor) -> float:
    """Seconds of one patch forward of ``predictor`` on its device (median of REPEATS after a warm-up)."""
    import torch

    channels = len(predictor.dataset_json["channel_names"])
    patch = torch.zeros((1, channels, *predictor.configuration_manager.patch_size), device=predictor.device)
    times = []
    with torch.inference_mode():
        for repeat in range(REPEATS + 1):
            started = time.perf_counter()
            predictor._internal_maybe_mirror_and_predict(patch)
            if predictor.device.type == "cuda":
                torch.cuda.synchronize(predictor.device)
            if repeat:
                times.append(time.perf_counter() - started)
    return float(np.median(times))


def patch_seconds(predictor, folder: Path | None, model_key: str) -> float:
    """The kept figure for ``model_key`` (``case_store.model_digest``) in ``folder``, else measured now and kept
    there (``folder`` None: measured, not kept)."""
    path = None if folder is None else Path(folder) / TIMINGS_FILE
    known = _read(path)
    if model_key not in known:
        known[model_key] = measure_patch_seconds(predictor)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, {**_read(path), model_key: known[model_key]}, sort_keys=True)
    return float(known[model_key])


def _read(path: Path | None) -> dict:
    """The timings file as a dict ({} when missing or unreadable: it is only remeasured)."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
