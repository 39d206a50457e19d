"""The on-disk coalition journal: what survives a kill mid-write, and what a resume reads back."""

from __future__ import annotations

import numpy as np

from SegSHAPLib.explain.journal import JOURNAL_FILE, CoalitionJournal, journal_entries


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
