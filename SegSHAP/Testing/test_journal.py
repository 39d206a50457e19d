"""The on-disk coalition journal: what survives a kill mid-write, and what a resume reads back."""

from __future__ import annotations

import zlib

import numpy as np

from SegSHAPLib.explain.journal import (JOURNAL_FILE, CoalitionJournal, journal_entries, journal_line, read_journal,
                                        spec_digest)

NAMES = ["softdice", "dice"]


def _journal_with_three(folder) -> np.ndarray:
    """Record three coalitions of 5 units in ``folder``; returns them, bool (3, 5)."""
    Z = np.array([[1, 0, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    CoalitionJournal(folder, 5, NAMES).record(Z, np.array([[0.25, 2.0], [-1.0, 0.0], [0.123456789, 1e-300]]))
    return Z


def test_entries_are_the_complete_lines(tmp_path):
    Z = _journal_with_three(tmp_path)
    entries = journal_entries(tmp_path)
    assert len(entries) == 3
    assert sorted(e["softdice"] for e in entries.values()) == [-1.0, 0.123456789, 0.25]
    assert journal_entries(tmp_path / "nothing here") == {}
    values, known = CoalitionJournal(tmp_path, 5, NAMES).lookup(Z)
    assert known.all() and values.tolist() == [[0.25, 2.0], [-1.0, 0.0], [0.123456789, 1e-300]]
    assert (tmp_path / JOURNAL_FILE).read_text().split("\n")[0].split("\t")[:2] == ["98", "softdice=0.25;dice=2.0"]
    reordered, known = CoalitionJournal(tmp_path, 5, ["dice"]).lookup(Z)      # any subset, any order
    assert known.all() and reordered[:, 0].tolist() == [2.0, 0.0, 1e-300]


def test_a_torn_value_is_dropped_not_misread(tmp_path):
    """A kill in the middle of '0.123456789' must not leave 0.12 as that coalition's value."""
    Z = _journal_with_three(tmp_path)
    path = tmp_path / JOURNAL_FILE
    path.write_text(path.read_text()[:-8])                      # last line cut inside its value
    assert len(journal_entries(tmp_path)) == 2
    journal = CoalitionJournal(tmp_path, 5, NAMES)
    values, known = journal.lookup(Z)
    assert known.tolist() == [True, True, False] and journal.loaded == 2
    # the torn tail is cut, so the next record starts on its own line and is read back
    journal.record(Z[2:], np.array([[0.5, 0.75]]))
    journal.close()
    values, known = CoalitionJournal(tmp_path, 5, NAMES).lookup(Z)
    assert known.all() and values[2].tolist() == [0.5, 0.75]


def _unnamed_line(key: str, value: float, digest: str) -> str:
    """A line as segshap wrote it between checksums and named values: <key>\\t<value>\\t<digest>\\t<crc32>."""
    body = f"{key}\t{value!r}\t{digest}"
    return f"{body}\t{zlib.crc32(body.encode('ascii')):08x}\n"


def test_values_journaled_apart_merge_and_older_journals_still_read(tmp_path):
    Z = np.array([[1, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    CoalitionJournal(tmp_path, 5, ["tp"]).record(Z, np.array([[1.0], [2.0]]))
    values, known = CoalitionJournal(tmp_path, 5, ["tp", "fp"]).lookup(Z)
    assert not known.any()                                      # fp is missing for both
    CoalitionJournal(tmp_path, 5, ["fp"]).record(Z[:1], np.array([[-3.0]]))
    values, known = CoalitionJournal(tmp_path, 5, ["tp", "fp"]).lookup(Z)
    assert known.tolist() == [True, False] and values[0].tolist() == [1.0, -3.0]
    digest = spec_digest(None)                                  # the folders here hold no journal spec
    for name, text in {"first": "98\t0.25\n00\t-1.0\n",                      # segshap 0.1.0: one bare value
                       "named": "98\tsoftdice=0.25\n00\tsoftdice=-1.0\n",     # multi-value, before checksums
                       "checksummed": _unnamed_line("98", 0.25, digest) + _unnamed_line("00", -1.0, digest)}.items():
        old = tmp_path / name
        old.mkdir()
        (old / JOURNAL_FILE).write_text(text)
        with CoalitionJournal(old, 5, ["softdice"], legacy_value="softdice") as journal:
            values, known = journal.lookup(Z)
        assert known.all() and values[:, 0].tolist() == [0.25, -1.0], name


def test_line_format_and_every_skip_reason(tmp_path):
    """<key>\\t<name>=<value>;...\\t<spec digest>\\t<crc32>: each kind of bad line is skipped and counted, never
    trusted; lines of one key with different value functions add up."""
    digest = spec_digest({"ct": "a"})
    line = journal_line("a0", {"softdice": 0.5, "tp": -0.25}, digest)
    key, values, line_digest, checksum = line.rstrip("\n").split("\t")
    assert (key, values, line_digest, len(checksum)) == ("a0", "softdice=0.5;tp=-0.25", digest, 8)
    lines = [line,
             journal_line("a0", {"dice": 0.125}, digest),                       # another value of the same key
             journal_line("b0", {"tp": 1.0}, "0" * 16),                        # another request's
             journal_line("c0", {"tp": float("inf")}, digest),                 # non-finite
             line.replace("0.5", "0.6"),                                       # checksum no longer matches
             journal_line("d0", {"tp": 0.1}, digest), journal_line("d0", {"tp": 0.2}, digest),      # conflicting
             journal_line("e0", {"tp": 0.3}, digest), journal_line("e0", {"tp": 0.3}, digest),      # a repeat
             "f0\t0.75"]                                                        # a journal of an earlier version
    (tmp_path / JOURNAL_FILE).write_text("".join(text if text.endswith("\n") else text + "\n" for text in lines))
    report = read_journal(tmp_path, digest, n_units=8, legacy_value="tp")
    assert report.entries == {"a0": {"softdice": 0.5, "tp": -0.25, "dice": 0.125}, "e0": {"tp": 0.3},
                              "f0": {"tp": 0.75}}
    assert report.skipped_counts() == {"damaged": 1, "foreign": 1, "non_finite": 1, "conflicting": 2}
