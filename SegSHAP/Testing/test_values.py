"""Value functions against hand-computed answers on a 4-voxel box (docs/method.md, section 7 "Value functions")."""

import numpy as np
import pytest

from SegSHAPLib.errors import InputError
from SegSHAPLib.scoring.values import DICE_EPS, VALUE_FUNCTIONS, dice, fp, softdice, tp, value_function

# Box of shape (z, y, x) = (1, 1, 4): voxels v0..v3. Target class t = 1, C = 2 classes.
#   region R      = [1, 1, 1, 0]           -> |R| = 3
#   baseline P_0  = [1, 1, 0, 0]           -> w = 2 P_0 - 1 = [+1, +1, -1, -1]
# Coalition a: background logits [0, 0, 0, 0], target logits z_t = [2, -1, 3, 5] -> P_a = [1, 0, 1, 1]
# Coalition b: background logits [1, 1, 1, 1], target logits z_t = [4, 2, 0.5, 9] -> P_b = [1, 1, 0, 1]
REGION = np.array([True, True, True, False]).reshape(1, 1, 4)
BASELINE = np.array([True, True, False, False]).reshape(1, 1, 4)
LOGITS = np.array([
    [[0, 0, 0, 0], [2, -1, 3, 5]],
    [[1, 1, 1, 1], [4, 2, 0.5, 9]],
], dtype=np.float32).reshape(2, 2, 1, 1, 4)
TARGET = 1


def test_tp_by_hand():
    # a: voxels in R with P_a = P_0 = 1: v0 only -> 2 / 3
    # b: v0 and v1 -> (4 + 2) / 3 = 2
    np.testing.assert_allclose(tp(LOGITS, REGION, BASELINE, TARGET), [2 / 3, 2.0])


def test_fp_by_hand():
    # a: voxels in R with P_a = 1, P_0 = 0: v2 (v3 is outside R) -> -(3) / 3 = -1
    # b: v2 has P_b = 0 -> -0 / 3 = 0
    np.testing.assert_allclose(fp(LOGITS, REGION, BASELINE, TARGET), [-1.0, 0.0])


def test_dice_by_hand():
    # a: |P_a.R| = |{v0, v2}| = 2, |P_0.R| = 2, overlap {v0} = 1 -> 2 * 1 / (2 + 2 + eps) = 0.5
    # b: |P_b.R| = |{v0, v1}| = 2, overlap 2 -> 4 / (4 + eps)
    np.testing.assert_allclose(dice(LOGITS, REGION, BASELINE, TARGET), [2 / (4 + DICE_EPS), 4 / (4 + DICE_EPS)],
                               rtol=1e-15)


def test_softdice_by_hand():
    # a: v0: +1 * 2, v2: -1 * 3 (v1 not predicted) -> (2 - 3) / 3 = -1/3
    # b: v0: +1 * 4, v1: +1 * 2 (v2 not predicted) -> 6 / 3 = 2
    np.testing.assert_allclose(softdice(LOGITS, REGION, BASELINE, TARGET), [-1 / 3, 2.0])


def test_output_is_float64_per_coalition():
    for name, function in VALUE_FUNCTIONS.items():
        out = function(LOGITS, REGION, BASELINE, TARGET)
        assert out.shape == (2,) and out.dtype == np.float64, name


def test_raw_logit_not_probability_and_argmax_over_all_classes():
    # Three classes on one voxel in R with P_0 = 1; target logit 5 is positive but class 2 has 7 -> not predicted.
    region = np.ones((1, 1, 1), bool)
    logits = np.array([0.0, 5.0, 7.0]).reshape(1, 3, 1, 1, 1)
    assert tp(logits, region, region, 1)[0] == 0.0
    # With class 2 at 4 instead the voxel is predicted and tp is the raw logit 5 (softmax would give < 1).
    logits[0, 2] = 4.0
    assert tp(logits, region, region, 1)[0] == 5.0


def test_tie_goes_to_lower_class():
    # Background and target logits equal (2, 2): argmax picks class 0, so the voxel is not predicted.
    region = np.ones((1, 1, 1), bool)
    logits = np.array([2.0, 2.0]).reshape(1, 2, 1, 1, 1)
    assert tp(logits, region, region, 1)[0] == 0.0
    assert dice(logits, region, region, 1)[0] == 0.0


def test_dice_of_two_empty_sets_is_zero():
    # Nothing predicted and P_0 empty within R: 0 / (0 + 0 + eps) = 0.
    region = np.ones((1, 1, 2), bool)
    logits = np.array([[1.0, 1.0], [0.0, 0.0]]).reshape(1, 2, 1, 1, 2)
    assert dice(logits, region, np.zeros_like(region), 1)[0] == 0.0


def test_batch_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 3, 2, 3, 4)).astype(np.float32)
    region = rng.random((2, 3, 4)) < 0.6
    baseline = rng.random((2, 3, 4)) < 0.5
    for name, function in VALUE_FUNCTIONS.items():
        batch = function(logits, region, baseline, 2)
        single = [function(logits[m:m + 1], region, baseline, 2)[0] for m in range(5)]
        np.testing.assert_allclose(batch, single, err_msg=name)


def test_softdice_equals_tp_when_the_region_is_inside_the_baseline():
    # On the clicked component P_0 = 1 on all of R, so w = 1 and S_Soft = S_TP (documented in roi.py).
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 2, 2, 3, 3))
    region = rng.random((2, 3, 3)) < 0.5
    np.testing.assert_allclose(softdice(logits, region, region, 1), tp(logits, region, region, 1))


def test_registry_and_unknown_name():
    assert set(VALUE_FUNCTIONS) == {"tp", "fp", "dice", "softdice"}
    assert value_function("softdice") is softdice
    with pytest.raises(InputError, match="tp, fp, dice, softdice"):
        value_function("iou")


def test_shape_checks():
    with pytest.raises(ValueError, match=r"\(n, C, z, y, x\)"):
        tp(LOGITS[0], REGION, BASELINE, TARGET)
    with pytest.raises(ValueError, match="classes"):
        tp(LOGITS, REGION, BASELINE, 2)
    with pytest.raises(ValueError, match="empty"):
        tp(LOGITS, np.zeros_like(REGION), BASELINE, TARGET)
