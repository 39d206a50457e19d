"""The on-disk journal of evaluated coalitions that makes an explanation survive Ctrl-C, crashes and retries.

An explain output folder holds
- ``journal_spec.json``: what the coalition values depend on (CT, model, folds, ROI, region, units, mask
  value, inference settings; not the value function: every value function defined for the region is
  journaled). A folder whose spec differs is never reused or overwritten.
- ``journal.tsv``: one line per evaluated coalition, ``<packed-bit key in hex>\\t<values>``, appended and
  fsynced after every solver batch, where ``<values>`` is ``<name>=<float repr>`` for each value function,
  joined by ``;`` (e.g. ``0b\\tsoftdice=0.25;tp=1.5;dice=0.9``). A line of an older single-value journal holds
  a bare ``<float repr>`` there (the value of that folder's one value function). A torn last line (a kill
  mid-write) is ignored on reading; a coalition journaled twice keeps the latest value of each name.

``CoalitionJournal`` implements the solver's store protocol (``lookup``/``record``), so a rerun of the same
command re-evaluates nothing that was journaled; budget, seed and value function are not part of the spec, so
a rerun with a larger budget (plans are nested: it extends the smaller one) or another value function reuses
every value already computed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from SegSHAPLib.io.atomic_files import write_json_atomic
from SegSHAPLib.errors import InputError
from SegSHAPLib.shapley.store import coalition_keys

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


def journal_entries(folder: Path, legacy_value: str | None = None) -> dict[str, dict[str, float]]:
    """Coalition key (hex) -> {value function: value} of every complete line of ``folder``'s journal.tsv ({}
    without one).

    Only newline-terminated lines count: a line torn by a kill mid-write (even one whose value still parses,
    e.g. "0.12" of "0.1234...") is dropped and that coalition is simply recomputed. A key journaled twice keeps
    the latest value of each name. A bare value (an older single-value journal) is read as ``legacy_value``'s,
    or skipped without one."""
    path = Path(folder) / JOURNAL_FILE
    if not path.is_file():
        return {}
    entries: dict[str, dict[str, float]] = {}
    for line in path.read_text(encoding="ascii", errors="replace").split("\n")[:-1]:
        parts = line.split("\t")
        if len(parts) != 2:
            continue
        try:
            bytes.fromhex(parts[0])
            values = _parse_values(parts[1], legacy_value)
        except ValueError:
            continue
        if values:
            entries.setdefault(parts[0], {}).update(values)
    return entries


def _parse_values(text: str, legacy_value: str | None) -> dict[str, float]:
    """``name=value;...`` (or a bare value, read as legacy_value's) -> {name: value}; ValueError if malformed."""
    if "=" not in text:
        return {} if legacy_value is None else {legacy_value: float(text)}
    values = {}
    for item in text.split(";"):
        name, number = item.split("=")
        values[name] = float(number)
    return values


class CoalitionJournal:
    """The solver's coalition store, backed by ``journal.tsv`` in an output folder (read on open, appended on
    every ``record``), for the value functions ``value_names``: lookup gives values (n, V) in that order, a
    coalition counting as known when every one of them is journaled; record takes (n, V) and journals them
    all. ``legacy_value`` names the value of an older single-value journal's lines (see journal_entries)."""

    def __init__(self, folder: Path, n_units: int, value_names: list[str], legacy_value: str | None = None):
        self.path = Path(folder) / JOURNAL_FILE
        self.n_units, self.value_names = int(n_units), list(value_names)
        self._entries: dict[bytes, dict[str, float]] = {}
        if self.path.is_file():
            self._drop_torn_tail()
            width = (self.n_units + 7) // 8 * 2
            self._entries = {bytes.fromhex(key): values
                             for key, values in journal_entries(self.path.parent, legacy_value).items()
                             if len(key) == width}
        self.loaded = len(self)

    def __len__(self) -> int:
        return sum(all(name in values for name in self.value_names) for values in self._entries.values())

    def _drop_torn_tail(self) -> None:
        """Cut a line torn by a kill mid-write, so the next record starts on a line of its own."""
        size = self.path.stat().st_size
        complete = self.path.read_bytes().rfind(b"\n") + 1
        if complete < size:
            os.truncate(self.path, complete)

    def _keys(self, Z: np.ndarray) -> list[bytes]:
        Z = np.asarray(Z, dtype=bool)
        if Z.ndim != 2 or Z.shape[1] != self.n_units:
            raise ValueError(f"this journal holds coalitions of {self.n_units} units, got shape {Z.shape}")
        return coalition_keys(Z)

    def lookup(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values (n, V) float in value_names order and known (n,) bool of the coalitions Z (n, M)."""
        rows = [self._entries.get(key, {}) for key in self._keys(Z)]
        values = np.array([[row.get(name, np.nan) for name in self.value_names] for row in rows], dtype=float)
        known = np.array([all(name in row for name in self.value_names) for row in rows], dtype=bool)
        return values.reshape(len(rows), len(self.value_names)), known

    def record(self, Z: np.ndarray, values: np.ndarray) -> None:
        """Journal the values (n, V) (columns in value_names order) of the coalitions Z (n, M)."""
        keys = self._keys(Z)
        values = np.asarray(values, dtype=float).reshape(len(keys), len(self.value_names))
        lines = []
        for key, row in zip(keys, values):
            named = dict(zip(self.value_names, row.tolist()))
            self._entries.setdefault(key, {}).update(named)
            lines.append(f"{key.hex()}\t" + ";".join(f"{name}={value!r}" for name, value in named.items()) + "\n")
        with open(self.path, "a", encoding="ascii") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
