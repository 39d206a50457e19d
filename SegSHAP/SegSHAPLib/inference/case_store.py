"""The on-disk case cache: nnU-Net's preprocessing of a CT and the model's full-volume prediction, kept across
processes (the CLI, cohort workers and the Slicer panel's child processes share one folder).

Folder (first that applies): ``--case-cache DIR`` (``none`` turns the cache off), ``$SEGSHAP_CACHE_DIR`` (also
``none``), ``$XDG_CACHE_HOME/segshap``, ``%LOCALAPPDATA%/segshap`` on Windows, ``~/.cache/segshap``. Entries live
in ``<folder>/cases/<key>.npz``; the key digests the CT's content (voxels and geometry), the model (folder,
plans.json, dataset.json, and each used fold's checkpoint content), the folds, the device type, the tile step,
mirroring and the nnU-Net and SegSHAP versions (``entry_key``, ``model_digest``). ``<folder>/patch_seconds.json``
keeps the measured time of one patch forward per model digest (``inference.patch_timing``).

An entry is an uncompressed ``.npz`` holding ``data`` (float32 (c, z', y', x'), the preprocessed input),
``properties`` (nnU-Net's properties as JSON), ``prediction`` ((z, y, x) on the CT grid, once computed) and
``checksum`` (blake2b over every other member's name, dtype, shape and bytes). It is written atomically
(``io.atomic_files``) and checked on every read: an entry that does not load or whose checksum differs is deleted
and recomputed, never trusted. The folder stays under a byte budget (``$SEGSHAP_CACHE_MAX_GB``, default 4):
after each write the least recently used entries (by file mtime; a read refreshes it) are deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.errors import OutputError
from SegSHAPLib.io.atomic_files import atomic_target

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "SEGSHAP_CACHE_DIR"
MAX_GB_ENV = "SEGSHAP_CACHE_MAX_GB"
DEFAULT_MAX_GB = 4.0
OFF = "none"
CASES = "cases"


def default_cache_root() -> Path:
    """The user's cache folder for SegSHAP (without looking at SEGSHAP_CACHE_DIR)."""
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "segshap"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "segshap"
    return Path.home() / ".cache" / "segshap"


def cache_folder(setting: str | os.PathLike | None) -> Path | None:
    """The cache folder for a ``--case-cache`` value (None: the environment's or the default), None when off."""
    chosen = setting if setting is not None else os.environ.get(CACHE_DIR_ENV) or default_cache_root()
    return None if str(chosen).strip().lower() == OFF else Path(chosen)


def max_bytes() -> int:
    """The byte budget of the case cache ($SEGSHAP_CACHE_MAX_GB, default 4 GB)."""
    return int(float(os.environ.get(MAX_GB_ENV, DEFAULT_MAX_GB)) * 1024 ** 3)


_file_digests: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """blake2b of a file's content, computed once per (path, size, mtime) in a process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digests:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 22), b""):
                digest.update(block)
        _file_digests[key] = digest.hexdigest()
    return _file_digests[key]


def model_digest(model_dir, folds: list[str], device_type: str, tile_step: float, tta: bool,
                 checkpoint: str = options.CHECKPOINT) -> str:
    """A digest (hex) of a model and its inference settings: the folder, plans.json, dataset.json, each used
    fold's checkpoint content, the folds, the device type, tile step, mirroring, nnU-Net's and SegSHAP's versions."""
    from importlib.metadata import version

    from SegSHAPLib import __version__

    model_dir = Path(model_dir).resolve()
    parts = {"model": str(model_dir), "folds": list(folds), "device": device_type, "tile_step": float(tile_step),
             "tta": bool(tta), "segshap": __version__, "nnunetv2": version("nnunetv2"),
             "files": {name: file_digest(model_dir / name) for name in ("plans.json", "dataset.json")},
             "checkpoints": {fold: file_digest(model_dir / f"fold_{fold}" / checkpoint)
                             for fold in folds}}
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=20).hexdigest()


def entry_key(ct_digest: str, **model) -> str:
    """The cache key (hex) of one CT under one model and its settings (``model``: model_digest's arguments)."""
    return hashlib.blake2b(f"{ct_digest}|{model_digest(**model)}".encode(), digest_size=20).hexdigest()


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class CaseStore:
    """Entries (name -> array) in ``folder/cases`` under a byte budget."""

    def __init__(self, folder: str | os.PathLike, budget_bytes: int | None = None):
        self.folder = Path(folder) / CASES
        self.budget_bytes = max_bytes() if budget_bytes is None else int(budget_bytes)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The entry's arrays, or None when there is none or it is damaged (then it is deleted)."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as entry:
                arrays = {name: entry[name] for name in entry.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            return self._discard(path, f"unreadable ({type(err).__name__}: {err})")
        stored = arrays.pop("checksum", None)
        if stored is None or str(stored) != _checksum(arrays):
            return self._discard(path, "checksum mismatch")
        try:
            os.utime(path)                                 # most recently used
        except OSError:
            pass
        return arrays

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Write an entry atomically, then evict the least recently used ones beyond the budget. A failure to
        write (disk full, no permission) only logs: the cache is an optimisation."""
        try:
            with atomic_target(self.path(key)) as temporary, open(temporary, "wb") as stream:
                np.savez(stream, checksum=np.array(_checksum(arrays)), **arrays)
            self.evict(keep=self.path(key))
        except (OSError, OutputError) as err:
            log.warning("case cache: cannot write %s (%s); continuing without it", self.path(key), err)

    def evict(self, keep: Path | None = None) -> None:
        """Delete the oldest entries (by mtime) until the folder fits the budget; ``keep`` goes last."""
        entries = []
        for path in self.folder.glob("*.npz"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((path == keep, stat.st_mtime, stat.st_size, path))
        total = sum(size for _, _, size, _ in entries)
        for _, _, size, path in sorted(entries, key=lambda e: (e[0], e[1])):
            if total <= self.budget_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def _discard(self, path: Path, why: str) -> None:
        log.warning("case cache: %s is damaged (%s); recomputing it", path.name, why)
        path.unlink(missing_ok=True)
        return None


def open_store(setting: str | os.PathLike | None) -> CaseStore | None:
    """The case store for a ``--case-cache`` value, None when the cache is off."""
    folder = cache_folder(setting)
    return None if folder is None else CaseStore(folder)
