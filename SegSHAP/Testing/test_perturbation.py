"""The perturbation operator X^(m): removed units take the mask value, everything else is untouched."""

import numpy as np
import pytest

from SegSHAPLib.errors import InputError
from SegSHAPLib.inference.perturbation import apply_coalition

# (z, y, x) = (2, 2, 3); unit 0 = not a unit.
UNITS = np.array([[[0, 1, 1], [2, 2, 0]],
                  [[3, 3, 1], [0, 2, 3]]], dtype=np.int32)
IMAGE = np.arange(12, dtype=np.int16).reshape(2, 2, 3) * 10   # 0, 10, ..., 110


def test_single_coalition_by_hand():
    # Remove unit 2 only: voxels (0,1,0), (0,1,1), (1,1,1) (values 30, 40, 100) become -1024.
    out = apply_coalition(IMAGE, UNITS, np.array([True, False, True]), -1024)
    expected = np.array([[[0, 10, 20], [-1024, -1024, 50]],
                         [[60, 70, 80], [90, -1024, 110]]], dtype=np.int16)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int16


def test_batch_gives_one_image_per_coalition():
    keep = np.array([[True, True, True], [False, False, False], [False, True, True]])
    out = apply_coalition(IMAGE, UNITS, keep, -1024)
    assert out.shape == (3, 2, 2, 3)
    np.testing.assert_array_equal(out[0], IMAGE)                                  # all kept: the image
    np.testing.assert_array_equal(out[1], np.where(UNITS == 0, IMAGE, -1024))     # all removed: only unit 0 left
    np.testing.assert_array_equal(out[2], np.where(UNITS == 1, -1024, IMAGE))     # unit 1 removed
    for m in range(3):
        np.testing.assert_array_equal(out[m], apply_coalition(IMAGE, UNITS, keep[m], -1024))


def test_input_is_never_modified():
    image, units, keep = IMAGE.copy(), UNITS.copy(), np.array([False, False, False])
    apply_coalition(image, units, keep, -1024)
    np.testing.assert_array_equal(image, IMAGE)
    np.testing.assert_array_equal(units, UNITS)
    assert not keep.any()
    out = apply_coalition(image, units, np.ones(3, bool), -1024)
    out[...] = 7
    np.testing.assert_array_equal(image, IMAGE)   # even all-kept returns a new array


def test_float_image_in_preprocessed_space():
    # Any shape and dtype: a float32 "normalised" image with a normalised mask value (rounded to float32).
    image = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    units = np.array([[1, 1, 0, 0], [1, 0, 0, 2], [2, 2, 0, 0]])
    out = apply_coalition(image, units, np.array([False, True]), -1.2345678901)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[units == 1], np.float32(-1.2345678901))
    np.testing.assert_array_equal(out[units != 1], image[units != 1])


def test_refuses_bad_arguments():
    with pytest.raises(ValueError, match="bool"):
        apply_coalition(IMAGE, UNITS, np.array([1, 0, 1]), -1024)
    with pytest.raises(ValueError, match="3 units|keep has 2"):
        apply_coalition(IMAGE, UNITS, np.array([True, False]), -1024)
    with pytest.raises(ValueError, match="shape"):
        apply_coalition(IMAGE, UNITS[:, :1], np.ones(3, bool), -1024)
    with pytest.raises(InputError, match="int16"):
        apply_coalition(IMAGE, UNITS, np.ones(3, bool), -1024.5)
    with pytest.raises(InputError, match="int16"):
        apply_coalition(IMAGE, UNITS, np.ones(3, bool), -40000)
