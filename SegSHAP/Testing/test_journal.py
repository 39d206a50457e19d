"""The on-disk coalition journal: what survives a kill mid-write, and what a resume reads back."""

from __future__ import annotations

import numpy as np

from SegSHAPLib.explain.journal import JOURNAL_FILE, CoalitionJournal, journal_entries

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
    assert (tmp_path / JOURNAL_FILE).read_text().split("\n")[0] == "98\tsoftdice=0.25;dice=2.0"
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
    values, known = CoalitionJournal(tmp_path, 5, NAMES).lookup(Z)
    assert known.all() and values[2].tolist() == [0.5, 0.75]


def test_values_journaled_apart_merge_and_an_old_single_value_journal_still_reads(tmp_path):
    Z = np.array([[1, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    CoalitionJournal(tmp_path, 5, ["tp"]).record(Z, np.array([[1.0], [2.0]]))
    values, known = CoalitionJournal(tmp_path, 5, ["tp", "fp"]).lookup(Z)
    assert not known.any()                                      # fp is missing for both
    CoalitionJournal(tmp_path, 5, ["fp"]).record(Z[:1], np.array([[-3.0]]))
    values, known = CoalitionJournal(tmp_path, 5, ["tp", "fp"]).lookup(Z)
    assert known.tolist() == [True, False] and values[0].tolist() == [1.0, -3.0]
    old = tmp_path / "old"
    old.mkdir()
    (old / JOURNAL_FILE).write_text("98\t0.25\n00\t-1.0\n")          # segshap 0.1.0's one value per line
    assert journal_entries(old) == {}
    values, known = CoalitionJournal(old, 5, ["softdice"], legacy_value="softdice").lookup(Z)
    assert known.all() and values[:, 0].tolist() == [0.25, -1.0]
