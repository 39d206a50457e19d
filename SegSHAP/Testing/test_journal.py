"""The on-disk coalition journal: what survives a kill mid-write, and what a resume reads back."""

from __future__ import annotations

import numpy as np

from SegSHAPLib.explain.journal import (JOURNAL_FILE, CoalitionJournal, journal_entries, journal_line, read_journal,
                                        spec_digest)


def _journal_with_three(folder) -> np.ndarray:
    """Record three coalitions of 5 units in ``folder``; returns them, bool (3, 5)."""
    Z = np.array([[1, 0, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    CoalitionJournal(folder, 5).record(Z, np.array([0.25, -1.0, 0.123456789]))
    return Z


def test_entries_are_the_complete_lines(tmp_path):
    Z = _journal_with_three(tmp_path)
    entries = journal_entries(tmp_path)
    assert len(entries) == 3
    assert sorted(entries.values()) == [-1.0, 0.123456789, 0.25]
    assert journal_entries(tmp_path / "nothing here") == {}
    values, known = CoalitionJournal(tmp_path, 5).lookup(Z)
    assert known.all() and values.tolist() == [0.25, -1.0, 0.123456789]


def test_a_torn_value_is_dropped_not_misread(tmp_path):
    """A kill in the middle of '0.123456789' must not leave 0.12 as that coalition's value."""
    Z = _journal_with_three(tmp_path)
    path = tmp_path / JOURNAL_FILE
    path.write_text(path.read_text()[:-8])                      # last line cut inside its value
    assert len(journal_entries(tmp_path)) == 2
    journal = CoalitionJournal(tmp_path, 5)
    values, known = journal.lookup(Z)
    assert known.tolist() == [True, True, False] and journal.loaded == 2
    # the torn tail is cut, so the next record starts on its own line and is read back
    journal.record(Z[2:], np.array([0.5]))
    journal.close()
    values, known = CoalitionJournal(tmp_path, 5).lookup(Z)
    assert known.all() and values[2] == 0.5


def test_line_format_and_every_skip_reason(tmp_path):
    """<key>\\t<values>\\t<spec digest>\\t<crc32>: each kind of bad line is skipped and counted, never trusted."""
    digest = spec_digest({"ct": "a"})
    line = journal_line("a0", [0.5, -0.25], digest)
    key, values, line_digest, checksum = line.rstrip("\n").split("\t")
    assert (key, values, line_digest, len(checksum)) == ("a0", "0.5,-0.25", digest, 8)
    lines = [line,
             journal_line("b0", 1.0, "0" * 16),                       # another request's
             journal_line("c0", float("inf"), digest),                 # non-finite
             line.replace("0.5", "0.6"),                              # checksum no longer matches
             journal_line("d0", 0.1, digest), journal_line("d0", 0.2, digest),      # conflicting
             journal_line("e0", 0.3, digest), journal_line("e0", 0.3, digest),      # a harmless repeat
             "f0\t0.75"]                                               # a journal of an earlier version
    (tmp_path / JOURNAL_FILE).write_text("".join(text if text.endswith("\n") else text + "\n" for text in lines))
    report = read_journal(tmp_path, digest, n_units=8)
    assert report.entries == {"a0": (0.5, -0.25), "e0": (0.3,), "f0": (0.75,)}
    assert report.skipped_counts() == {"damaged": 1, "foreign": 1, "non_finite": 1, "conflicting": 2}
