"""The on-disk journal of evaluated coalitions that makes an explanation survive Ctrl-C, crashes and retries.

An explain output folder holds
- ``journal_spec.json``: what the coalition values depend on (CT, model, folds, ROI, region, units, value
  function, mask value, inference settings). A folder whose spec differs is never reused or overwritten.
- ``journal.tsv``: one line per evaluated coalition, ``<packed-bit key in hex>\\t<value repr>``, appended and
  fsynced after every solver batch. A torn last line (a kill mid-write) is ignored on reading.

``CoalitionJournal`` implements the solver's store protocol (``lookup``/``record``), so a rerun of the same
command re-evaluates nothing that was journaled; budget and seed are not part of the spec, so a rerun with a
larger budget reuses every value already computed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .atomic_files import write_json_atomic
from .errors import InputError
from .kernelshap_store import CoalitionStore, coalition_keys

SPEC_FILE = "journal_spec.json"
JOURNAL_FILE = "journal.tsv"


def claim_output_folder(out: Path, spec: dict, command: str, create: bool = True) -> None:
    """Make ``out`` ready for ``spec``: create it, or accept it when it holds the same spec; else InputError.

    A folder with other files but no journal spec (another command's output, or anything else) is refused,
    and so is one holding a different explanation: nothing is silently overwritten. With ``create=False``
    only those checks run and nothing is written (so a request that fails validation leaves no folder behind).
    """
    out = Path(out)
    spec_path = out / SPEC_FILE
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        existing = read_spec(out)
        if existing is None:
            raise InputError(f"--out {out} already holds other files (not a {command} output); choose an empty "
                             "or new folder")
        if existing != spec:
            raise InputError(f"--out {out} holds an explanation of a different request (differs in: "
                             f"{', '.join(differing_keys(existing, spec))}); choose another --out or delete that "
                             "folder")
        return
    if not create:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(spec_path, spec, sort_keys=True)
    except OSError as err:
        raise InputError(f"cannot write to --out {out}: {err.strerror or err}") from None


def read_spec(out: Path) -> dict | None:
    """The journal spec held by the folder ``out`` (None when it has none); InputError when it is damaged."""
    spec_path = Path(out) / SPEC_FILE
    if not spec_path.is_file():
        return None
    try:
        return json.loads(spec_path.read_text())
    except json.JSONDecodeError:
        raise InputError(f"{spec_path} is damaged; delete {out} or choose another --out") from None


def differing_keys(existing: dict, spec: dict) -> list[str]:
    """Sorted names of the spec entries that differ between two journal specs."""
    return sorted(k for k in set(existing) | set(spec) if existing.get(k) != spec.get(k))


def journaled_coalitions(out: Path) -> int:
    """How many coalition lines the journal in ``out`` holds (a torn last line included; 0 without one)."""
    path = Path(out) / JOURNAL_FILE
    if not path.is_file():
        return 0
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))


class CoalitionJournal(CoalitionStore):
    """The solver's coalition store, backed by ``journal.tsv`` in an output folder (read on open, appended on
    every ``record``)."""

    def __init__(self, folder: Path, n_units: int):
        super().__init__()
        self.path = Path(folder) / JOURNAL_FILE
        self.n_units = int(n_units)
        if self.path.is_file():
            self._read()
        self.loaded = len(self)

    def _read(self) -> None:
        width = (self.n_units + 7) // 8 * 2
        keys, values = [], []
        for line in self.path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) != 2 or len(parts[0]) != width:
                continue                      # a torn write from a kill: that coalition is simply recomputed
            try:
                keys.append(np.unpackbits(np.frombuffer(bytes.fromhex(parts[0]), dtype=np.uint8))[:self.n_units])
                values.append(float(parts[1]))
            except ValueError:
                continue
        if keys:
            super().record(np.array(keys, dtype=bool), np.array(values))

    def record(self, Z: np.ndarray, values: np.ndarray) -> None:
        super().record(Z, values)
        lines = [f"{key.hex()}\t{float(value)!r}\n"
                 for key, value in zip(coalition_keys(Z), np.asarray(values, dtype=float).reshape(-1))]
        with open(self.path, "a", encoding="ascii") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
