"""``CaseInputs``: the in-memory inputs of one explanation (Slicer nodes read into ``Volume``s, the demo's arrays).

They take precedence over the request's paths (``prepare_context``). Field names are the request's path fields
(``ct``, ``organs``, ``prediction``, ``roi_mask``), so a persisted input is simply the request's file of that name.
Every volume lies on the CT grid: ``Volume.array`` is (z, y, x), spacing/origin (x, y, z), direction 3x3.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SegSHAPLib.io.image_io import Volume, write_volume

PERSISTED = ("ct", "organs", "roi_mask")            # written as <name>.nii.gz, so summary.json names real files
HASHED = (("ct", "ct_volume"), ("organs", "organ_volume"), ("roi_mask", "roi_mask_volume"),
          ("prediction", "prediction_volume"))      # field -> its name in the digest (stable across versions)


@dataclass(frozen=True)
class CaseInputs:
    """The in-memory volumes of one case and the organ map's names (label value -> name); None: not given."""

    ct: Volume | None = None
    organs: Volume | None = None
    prediction: Volume | None = None
    roi_mask: Volume | None = None
    organ_names: dict[int, str] | None = None

    def digest(self, grouping=None) -> str:
        """sha256 (hex) of everything a run reads besides the model and its settings: the volumes (voxels
        (z, y, x), dtype, geometry), the organ names and the content of a grouping file (``grouping`` when it
        names a file)."""
        digest = hashlib.sha256()
        for field_name, hashed_name in HASHED:
            volume = getattr(self, field_name)
            if volume is not None:
                _hash_volume(digest, hashed_name, volume)
        digest.update(json.dumps(sorted((self.organ_names or {}).items())).encode())
        if grouping is not None and Path(grouping).is_file():
            digest.update(Path(grouping).read_bytes())
        return digest.hexdigest()

    def files(self, request, folder) -> dict[str, Path]:
        """Request field -> absolute file in ``folder`` for each persisted input the request names no file for:
        where ``persist`` writes it, and so the paths the run's journal spec records."""
        return {name: (Path(folder) / f"{name}.nii.gz").resolve() for name in PERSISTED
                if getattr(self, name) is not None and getattr(request, name, None) is None}

    def persist(self, request, folder):
        """Write the inputs of ``files`` into ``folder`` and return ``request`` pointing at them."""
        files = self.files(request, folder)
        for name, path in files.items():
            write_volume(getattr(self, name), path)
        return dataclasses.replace(request, **files) if files else request


def _hash_volume(digest, name: str, volume: Volume) -> None:
    """Feed one ``Volume`` (array (z, y, x), spacing/origin (x, y, z), direction 3x3) into ``digest``."""
    array = np.ascontiguousarray(volume.array)
    header = [name, array.dtype.str, list(array.shape), [float(v) for v in volume.spacing],
              [float(v) for v in volume.origin], np.asarray(volume.direction, dtype=float).ravel().tolist()]
    digest.update(json.dumps(header).encode())
    digest.update(array.tobytes())
