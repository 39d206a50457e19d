"""The on-disk journal of evaluated coalitions that makes an explanation survive Ctrl-C, crashes and retries.

An explain output folder holds
- ``journal_spec.json``: what the coalition values depend on (CT, model, folds, ROI, region, units, value
  function, mask value, inference settings). A folder whose spec differs is never reused or overwritten.
- ``journal.tsv``: one line per evaluated coalition, appended and fsynced after every solver batch::

      <key>\t<values>\t<spec digest>\t<checksum>\n

  ``key``: the coalition's packed bits in hex (``shapley.store.coalition_keys``); ``values``: one or more
  comma-separated float reprs (one per value function; today one); ``spec digest``: the first 16 hex digits of
  the SHA-256 of the folder's journal spec (``spec_digest``); ``checksum``: the CRC-32 (8 hex digits) of the line
  up to the tab before it. Journals written before this format (``<key>\t<value>``, no digest or checksum)
  still resume: their lines are trusted as they were.
- ``journal.lock``: held (``fcntl.flock``) by the process using the folder, so a second one refuses at once.

Reading never fails on a bad line and never trusts one silently: a line that is not newline-terminated (torn by a
kill mid-write) is dropped; a line with a wrong checksum or unparsable fields (damaged), another spec's digest
or the wrong key width (foreign), a NaN/inf value (non-finite), or a key journaled with different values
(conflicting: every line of that key) is skipped and counted by reason (``JournalReport``, summary.json's
``solver.journal_skipped_lines``). Skipped lines are moved to ``journal_rejected.tsv`` and journal.tsv is
rewritten (atomically) without them, so their coalitions are recomputed once and the journal is clean again.

``CoalitionJournal`` implements the solver's store protocol (``lookup``/``record``), so a rerun of the same
command re-evaluates nothing that was journaled; budget and seed are not part of the spec, so a rerun with a
larger budget reuses every value already computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SegSHAPLib.errors import InputError
from SegSHAPLib.io.atomic_files import output_error, write_json_atomic, write_text_atomic
from SegSHAPLib.shapley.store import CoalitionStore, coalition_keys

try:
    import fcntl
except ImportError:                   # Windows: no advisory locks; one process per folder is then up to the user
    fcntl = None

SPEC_FILE = "journal_spec.json"
JOURNAL_FILE = "journal.tsv"
REJECTED_FILE = "journal_rejected.tsv"
LOCK_FILE = "journal.lock"
SKIP_REASONS = ("damaged", "foreign", "non_finite", "conflicting")
SPEC_DIGEST_LENGTH = 16

log = logging.getLogger(__name__)


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


def spec_digest(spec: dict | None) -> str:
    """The digest a journal line carries: the first 16 hex digits of the SHA-256 of the spec's sorted JSON."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:SPEC_DIGEST_LENGTH]


def journal_line(key: str, values, digest: str) -> str:
    """One journal line (newline included) for coalition ``key`` (hex) with ``values`` (one float or several)."""
    body = f"{key}\t{','.join(repr(float(v)) for v in np.atleast_1d(values))}\t{digest}"
    return f"{body}\t{zlib.crc32(body.encode('ascii')):08x}\n"


@dataclass
class JournalReport:
    """What reading a journal found: coalition key (hex) -> values (tuple of floats), the good lines (as read),
    and the skipped lines with the count of each reason (SKIP_REASONS)."""

    entries: dict[str, tuple[float, ...]] = field(default_factory=dict)
    good_lines: list[str] = field(default_factory=list)
    rejected_lines: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def skipped_counts(self) -> dict[str, int]:
        """summary.json's ``solver.journal_skipped_lines``: every reason with its count (0 when none)."""
        return {reason: int(self.skipped[reason]) for reason in SKIP_REASONS}


def _parse_line(line: str, digest: str | None, width: int | None) -> tuple[str, tuple[float, ...]] | str:
    """(key, values) of one journal line, or the reason (one of SKIP_REASONS) it is skipped."""
    fields = line.split("\t")
    if len(fields) == 4:
        body = line[:line.rfind("\t")]
        if f"{zlib.crc32(body.encode('ascii', 'replace')):08x}" != fields[3]:
            return "damaged"
        if digest is not None and fields[2] != digest:
            return "foreign"
    elif len(fields) != 2:                          # 2 fields: a journal written before digests and checksums
        return "damaged"
    key = fields[0]
    try:
        bytes.fromhex(key)
        values = tuple(float(v) for v in fields[1].split(","))
    except ValueError:
        return "damaged"
    if width is not None and len(key) != width:
        return "foreign"
    if not all(np.isfinite(values)):
        return "non_finite"
    return key, values


def read_journal(folder: Path, digest: str | None = None, n_units: int | None = None) -> JournalReport:
    """Every newline-terminated line of ``folder``'s journal.tsv sorted into good and skipped (see the module
    doc). ``digest``: the spec digest lines must carry (None: not checked); ``n_units``: the width keys must
    have (None: not checked). A key journaled twice with the same values is one entry."""
    path = Path(folder) / JOURNAL_FILE
    report = JournalReport()
    if not path.is_file():
        return report
    width = None if n_units is None else (n_units + 7) // 8 * 2
    parsed = []
    for line in path.read_text(encoding="ascii", errors="replace").split("\n")[:-1]:
        if not line.strip():
            continue
        result = _parse_line(line, digest, width)
        if isinstance(result, str):
            report.skipped[result] += 1
            report.rejected_lines.append(line)
        else:
            parsed.append((line, *result))
    seen: dict[str, set] = {}
    for _, key, values in parsed:
        seen.setdefault(key, set()).add(values)
    for line, key, values in parsed:
        if len(seen[key]) > 1:
            report.skipped["conflicting"] += 1
            report.rejected_lines.append(line)
        else:
            report.entries[key] = values
            report.good_lines.append(line)
    return report


def journal_entries(folder: Path) -> dict[str, float]:
    """Coalition key (hex) -> (first) value of every line of ``folder``'s journal.tsv that ``read_journal``
    accepts, the spec digest checked against the folder's own journal spec ({} without a journal)."""
    digest = spec_digest(read_spec(folder)) if (Path(folder) / SPEC_FILE).is_file() else None
    return {key: values[0] for key, values in read_journal(folder, digest).entries.items()}


class JournalLock:
    """An exclusive ``flock`` on ``journal.lock`` in an output folder, so two processes never journal into one
    folder at once; InputError at once (no waiting) when another process holds it. Released by ``release`` or
    when the process ends, however it ends (the kernel drops the lock)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self.handle = None
        if fcntl is None:
            return
        try:
            self.handle = open(self.path, "a+", encoding="ascii")
        except OSError as err:
            raise output_error(self.path, err) from None
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            self.handle = None
            raise InputError(f"{folder} is in use by another segshap process (pid {holder}); wait for it to "
                             "finish or choose another --out") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()                   # closing the descriptor drops the flock
            self.handle = None


class CoalitionJournal(CoalitionStore):
    """The solver's coalition store, backed by ``journal.tsv`` in an output folder (read on open, appended on
    every ``record``). Holds the folder's lock until ``close`` (use it as a context manager). ``skipped``: the
    lines skipped on opening, by reason (see the module doc)."""

    def __init__(self, folder: Path, n_units: int):
        super().__init__()
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL_FILE
        self.n_units = int(n_units)
        self.digest = spec_digest(read_spec(self.folder))
        self.lock = JournalLock(self.folder)
        try:
            report = JournalReport()
            if self.path.is_file():
                self._drop_torn_tail()
                report = read_journal(self.folder, self.digest, self.n_units)
                if report.rejected_lines:
                    self._quarantine(report)
                self._load(report)
        except BaseException:
            self.lock.release()
            raise
        self.skipped = report.skipped_counts()
        self.loaded = len(self)

    def __enter__(self) -> "CoalitionJournal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.lock.release()

    def _drop_torn_tail(self) -> None:
        """Cut a line torn by a kill mid-write, so the next record starts on a line of its own."""
        size = self.path.stat().st_size
        complete = self.path.read_bytes().rfind(b"\n") + 1
        if complete < size:
            os.truncate(self.path, complete)

    def _quarantine(self, report: JournalReport) -> None:
        """Move the skipped lines to journal_rejected.tsv and rewrite journal.tsv with the good ones only."""
        log.warning("%s: skipped %d journal line(s) (%s); their coalitions are recomputed, the lines are kept in %s",
                    self.path, len(report.rejected_lines),
                    ", ".join(f"{n} {reason}" for reason, n in report.skipped.items()), REJECTED_FILE)
        try:
            with open(self.folder / REJECTED_FILE, "a", encoding="ascii", errors="replace") as handle:
                handle.write("".join(line + "\n" for line in report.rejected_lines))
        except OSError as err:
            raise output_error(self.folder / REJECTED_FILE, err) from None
        write_text_atomic(self.path, "".join(line + "\n" for line in report.good_lines))

    def _load(self, report: JournalReport) -> None:
        if report.entries:
            keys = [np.unpackbits(np.frombuffer(bytes.fromhex(key), dtype=np.uint8))[:self.n_units]
                    for key in report.entries]
            super().record(np.array(keys, dtype=bool), np.array([values[0] for values in report.entries.values()]))

    def record(self, Z: np.ndarray, values: np.ndarray) -> None:
        super().record(Z, values)
        lines = [journal_line(key.hex(), value, self.digest)
                 for key, value in zip(coalition_keys(Z), np.asarray(values, dtype=float).reshape(-1))]
        try:
            with open(self.path, "a", encoding="ascii") as handle:
                handle.write("".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise output_error(self.path, err) from None
