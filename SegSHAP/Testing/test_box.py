"""Box: the one type boxes travel as (pairs that compare as tuples, slices for indexing, intersection, shifts)."""

from __future__ import annotations

import numpy as np

from SegSHAPLib.box import Box


def test_box_indexes_like_its_pairs_and_compares_as_a_tuple():
    box = Box([(1, 3), (0, 2), (2, 5)])
    array = np.arange(4 * 3 * 6).reshape(4, 3, 6)
    assert np.array_equal(array[box.slices], array[1:3, 0:2, 2:5])
    assert box == ((1, 3), (0, 2), (2, 5)) and box.shape == (2, 2, 3)
    assert Box.from_slices((slice(1, 3), slice(0, 2), slice(2, 5))) == box


def test_intersection_shift_clip_and_relative_coordinates():
    a, b = Box([(0, 4), (0, 4)]), Box([(2, 6), (3, 8)])
    assert a.intersection(b) == ((2, 4), (3, 4))
    assert Box([(0, 2), (0, 2)]).intersection(Box([(2, 4), (0, 2)])).is_empty
    assert b.shifted((1, -1)) == ((3, 7), (2, 7))
    assert b.clipped((5, 5)) == ((2, 5), (3, 5))
    assert a.intersection(b).relative_to(b) == ((0, 2), (0, 1))
