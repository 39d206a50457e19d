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

from SegSHAPLib.io.atomic_files import write_json_atomic
from SegSHAPLib.errors import InputError
from SegSHAPLib.shapley.store import CoalitionStore, coalition_keys

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
    """How many complete (newline-terminated) coalition lines the journal in ``out`` holds (0 without one); a
    torn last line is not counted, as ``journal_entries`` does not read it."""
    path = Path(out) / JOURNAL_FILE
    if not path.is_file():
        return 0
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))


def journal_entries(folder: Path) -> dict[str, float]:
    """Coalition key (hex) -> value of every complete line of ``folder``'s journal.tsv ({} without one).

    Only newline-terminated lines count: a line torn by a kill mid-write (even one whose value still parses,
    e.g. "0.12" of "0.1234...") is dropped and that coalition is simply recomputed. A key journaled twice keeps
    its latest value."""
    path = Path(folder) / JOURNAL_FILE
    if not path.is_file():
        return {}
    entries = {}
    for line in path.read_text(encoding="ascii", errors="replace").split("\n")[:-1]:
        parts = line.split("\t")
        if len(parts) != 2:
            continue
        try:
            bytes.fromhex(parts[0])
            entries[parts[0]] = float(parts[1])
        except ValueError:
            continue
    return entries


class CoalitionJournal(CoalitionStore):
    """The solver's coalition store, backed by ``journal.tsv`` in an output folder (read on open, appended on
    every ``record``)."""

    def __init__(self, folder: Path, n_units: int):
        super().__init__()
        self.path = Path(folder) / JOURNAL_FILE
        self.n_units = int(n_units)
        if self.path.is_file():
            self._drop_torn_tail()
            self._read()
        self.loaded = len(self)

    def _drop_torn_tail(self) -> None:
        """Cut a line torn by a kill mid-write, so the next record starts on a line of its own."""
        size = self.path.stat().st_size
        complete = self.path.read_bytes().rfind(b"\n") + 1
        if complete < size:
            os.truncate(self.path, complete)

    def _read(self) -> None:
        width = (self.n_units + 7) // 8 * 2
        entries = [(key, value) for key, value in journal_entries(self.path.parent).items() if len(key) == width]
        if entries:
            keys = [np.unpackbits(np.frombuffer(bytes.fromhex(key), dtype=np.uint8))[:self.n_units]
                    for key, _ in entries]
            super().record(np.array(keys, dtype=bool), np.array([value for _, value in entries]))

    def record(self, Z: np.ndarray, values: np.ndarray) -> None:
        super().record(Z, values)
        lines = [f"{key.hex()}\t{float(value)!r}\n"
                 for key, value in zip(coalition_keys(Z), np.asarray(values, dtype=float).reshape(-1))]
        with open(self.path, "a", encoding="ascii") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
