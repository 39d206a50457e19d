"""ROI from a click or a mask, bounding boxes, scoring regions and the value/region refusal rules."""

from pathlib import Path

import nibabel
import numpy as np
import pytest

from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import Volume, read_volume
from SegSHAPLib.scoring.roi import (bbox_ijk, bounding_box, check_value_on_region, check_value_region, point_to_ijk,
                            roi_from_mask, roi_from_point, scoring_region)

SAMPLE_CT = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "example_ct_sm.nii.gz"


# ---------------------------------------------------------------- point -> voxel

def test_ras_to_ijk_on_sample_ct_by_hand():
    ct = read_volume(SAMPLE_CT)
    # Header: origin (LPS) = (177.95633, -11.319, 94.30176), direction diag(-1, -1, 1), spacing 3 mm. So
    # R = -(177.95633 - 3 i) = 3 i - 177.95633, A = -(-11.319 - 3 j) = 3 j + 11.319, S = 94.30176 + 3 k.
    # Voxel (i, j, k) = (10, 20, 5): R = -147.95633, A = 71.319, S = 109.30176.
    assert point_to_ijk(ct, (-147.95633, 71.319, 109.30176), "ras") == (10, 20, 5)
    # Up to half a voxel (1.5 mm) off along each axis still rounds to it; beyond, to the neighbour.
    assert point_to_ijk(ct, (-147.95633 + 1.4, 71.319 - 1.4, 109.30176 + 1.4), "ras") == (10, 20, 5)
    assert point_to_ijk(ct, (-147.95633 + 1.6, 71.319, 109.30176), "ras") == (11, 20, 5)
    # nibabel's RAS affine agrees (an independent reader of the same header).
    ras = nibabel.load(str(SAMPLE_CT)).affine @ [37, 51, 12, 1]
    assert point_to_ijk(ct, ras[:3], "ras") == (37, 51, 12)


def _rotated_volume():
    # Rotation by 0.6 rad about the axis (1, 2, 2)/3; anisotropic spacing (x, y, z) = (0.8, 1.17, 5.0) mm.
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(0.6) * cross + (1 - np.cos(0.6)) * cross @ cross
    return Volume(np.zeros((12, 40, 50), np.int16), (0.8, 1.17, 5.0), (-31.0, 12.5, 140.0), rotation)


def test_ras_to_ijk_with_rotated_direction_and_anisotropic_spacing():
    volume = _rotated_volume()
    image = volume.to_sitk()
    rng = np.random.default_rng(1)
    continuous = rng.uniform([0, 0, 0], [49, 39, 11], size=(200, 3))      # (i, j, k)
    for ijk in continuous:
        lps = np.asarray(volume.origin) + volume.direction @ (np.asarray(volume.spacing) * ijk)
        ras = lps * [-1, -1, 1]
        expected = tuple(int(v) for v in np.floor(ijk + 0.5))
        assert point_to_ijk(volume, ras, "ras") == expected
        # SimpleITK's own physical-point-to-index (nearest voxel) as an independent check.
        assert tuple(image.TransformPhysicalPointToIndex(tuple(lps))) == expected
        assert point_to_ijk(volume, ijk, "ijk") == expected


def test_point_outside_the_volume_is_refused_with_the_extent():
    ct = read_volume(SAMPLE_CT)
    with pytest.raises(InputError, match=r"outside the CT.*R in \[-179\.5, 186\.5\]"):
        point_to_ijk(ct, (500.0, 50.0, 100.0), "ras")
    with pytest.raises(InputError, match=r"outside the CT.*i in \[0, 121\], j in \[0, 100\], k in \[0, 29\]"):
        point_to_ijk(ct, (10, 20, 30), "ijk")
    with pytest.raises(InputError, match="three"):
        point_to_ijk(ct, (1.0, float("nan"), 2.0), "ras")
    with pytest.raises(InputError, match="ras, ijk"):
        point_to_ijk(ct, (1, 2, 3), "lps")


# ---------------------------------------------------------------- ROI from a click

def _chain_prediction():
    # Target class 1 voxels, given as (i, j, k): a=(1,1,1), b=(2,1,1) share a face; c=(3,2,1) shares only an
    # edge with b (differs in i and j); d=(4,3,2) shares only a corner with c (differs in i, j and k).
    # A class-2 voxel (1,2,1) touches a but is another class.
    prediction = np.zeros((5, 5, 6), np.uint8)
    for i, j, k in [(1, 1, 1), (2, 1, 1), (3, 2, 1), (4, 3, 2)]:
        prediction[k, j, i] = 1
    prediction[1, 2, 1] = 2
    return prediction


@pytest.mark.parametrize("connectivity, size", [(6, 2), (18, 3), (26, 4)])
def test_component_depends_on_connectivity(connectivity, size):
    roi = roi_from_point(_chain_prediction(), 1, (1, 1, 1), connectivity)
    assert roi.dtype == bool and roi.shape == (5, 5, 6)
    assert roi.sum() == size and roi[1, 1, 1] and not roi[1, 2, 1]


def test_default_connectivity_is_26():
    assert roi_from_point(_chain_prediction(), 1, (4, 3, 2)).sum() == 4


def test_point_off_target_names_the_class_and_the_nearest_target_voxel():
    with pytest.raises(InputError, match=r"class 2, not the target class 1.*\(i, j, k\) = \(1, 1, 1\)"):
        roi_from_point(_chain_prediction(), 1, (1, 2, 1))
    with pytest.raises(InputError, match=r"background \(class 0\).*\(4, 3, 2\)"):
        roi_from_point(_chain_prediction(), 1, (5, 4, 3))
    with pytest.raises(InputError, match="no voxel of target class 7"):
        roi_from_point(_chain_prediction(), 7, (1, 1, 1))
    with pytest.raises(InputError, match="outside"):
        roi_from_point(_chain_prediction(), 1, (6, 0, 0))
    with pytest.raises(InputError, match="6, 18, 26"):
        roi_from_point(_chain_prediction(), 1, (1, 1, 1), connectivity=8)


# ---------------------------------------------------------------- ROI from a mask, boxes

def test_roi_from_mask_checks_grid_and_emptiness():
    ct = Volume(np.zeros((4, 5, 6), np.int16), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    mask = ct.with_array(np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(InputError, match="empty"):
        roi_from_mask(mask, ct)
    mask.array[2, 3, 4] = 5
    assert roi_from_mask(mask, ct).sum() == 1 and roi_from_mask(mask, ct)[2, 3, 4]
    shifted = Volume(mask.array, (1.0, 1.0, 2.0), (0.0, 0.0, 4.0), np.eye(3))
    with pytest.raises(InputError, match="not on the same voxel grid.*origin"):
        roi_from_mask(shifted, ct)


def test_bounding_box_is_half_open_and_bbox_ijk_is_xyz():
    mask = np.zeros((5, 6, 7), bool)
    mask[1, 2, 3] = mask[3, 4, 5] = True
    box = bounding_box(mask)
    assert box == ((1, 4), (2, 5), (3, 6))
    assert bbox_ijk(box) == [[3, 6], [2, 5], [1, 4]]
    with pytest.raises(ValueError):
        bounding_box(np.zeros((2, 2, 2), bool))


# ---------------------------------------------------------------- scoring regions

SPACING_ZYX = (5.0, 1.17, 1.17)


def _small_roi():
    roi = np.zeros((9, 30, 30), bool)
    roi[4, 10:14, 12] = True      # an L shape in one slice plus a voxel one slice up
    roi[4, 13, 12:17] = True
    roi[5, 11, 12] = True
    return roi


def test_component_and_box_regions():
    roi = _small_roi()
    component = scoring_region(roi, "component", SPACING_ZYX)
    np.testing.assert_array_equal(component, roi)
    assert component is not roi
    box = scoring_region(roi, "box", SPACING_ZYX)
    assert box.sum() == 2 * 4 * 5 and box[4:6, 10:14, 12:17].all()


def test_dilated_region_is_the_set_within_d_mm():
    roi, d_mm = _small_roi(), 6.0
    region = scoring_region(roi, "dilated", SPACING_ZYX, dilate_mm=d_mm)
    # Brute force: distance in mm from every voxel centre to every ROI voxel centre.
    grid = np.indices(roi.shape).reshape(3, -1).T * np.array(SPACING_ZYX)
    centres = np.argwhere(roi) * np.array(SPACING_ZYX)
    distance = np.sqrt(((grid[:, None, :] - centres[None, :, :]) ** 2).sum(-1)).min(1).reshape(roi.shape)
    np.testing.assert_array_equal(region, distance <= d_mm)
    # By hand from voxel (z, y, x) = (4, 10, 12): one slice up/down is 5 mm (in), two slices 10 mm (out);
    # in-plane 5 voxels = 5.85 mm (in), 6 voxels = 7.02 mm (out).
    assert region[3, 10, 12] and not region[2, 10, 12]
    assert region[4, 10, 7] and not region[4, 10, 6]


def test_dilated_region_needs_a_useful_distance():
    with pytest.raises(InputError, match="dilate-mm"):
        scoring_region(_small_roi(), "dilated", SPACING_ZYX)
    with pytest.raises(InputError, match="smallest voxel spacing"):
        scoring_region(_small_roi(), "dilated", SPACING_ZYX, dilate_mm=1.0)
    with pytest.raises(InputError, match="box, component, dilated"):
        scoring_region(_small_roi(), "sphere", SPACING_ZYX)


def test_fp_on_component_is_refused_with_an_alternative():
    with pytest.raises(InputError, match="identically 0.*score-region box"):
        check_value_region("fp", "component")
    for value in ("tp", "fp", "dice", "softdice"):
        for kind in ("box", "dilated"):
            check_value_region(value, kind)
    for value in ("tp", "dice", "softdice"):
        check_value_region(value, "component")
    with pytest.raises(InputError, match="tp, fp, dice, softdice"):
        check_value_region("auc", "box")


def test_value_on_region_data_rules():
    roi = _small_roi()
    box = scoring_region(roi, "box", SPACING_ZYX)
    check_value_on_region("fp", box, roi)                   # the box holds voxels outside the prediction
    with pytest.raises(InputError, match="fp is identically 0"):
        check_value_on_region("fp", roi, roi)                # the component scored on itself
    with pytest.raises(InputError, match="fp is identically 0"):
        check_value_on_region("fp", box, box)                # a cuboid component: its box is itself
    elsewhere = np.zeros_like(roi)
    elsewhere[0, 0, 0:3] = True                              # a given mask that misses the prediction
    for value in ("tp", "dice"):
        with pytest.raises(InputError, match=f"{value} is identically 0"):
            check_value_on_region(value, elsewhere, roi)
    check_value_on_region("softdice", elsewhere, roi)
    check_value_on_region("fp", elsewhere, roi)
