"""The mask value b: for each of nnU-Net's normalisation schemes, b̃ is what nnU-Net's own preprocessing gives a
voxel of value b in this very CT (the statistics of this case, under nnU-Net's mask when the plans ask for it)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DEMO_MODEL
from model_zoo import normalisation_model
from SegSHAPLib.errors import InputError
from SegSHAPLib.inference.mask_value import mask_value
from SegSHAPLib.inference.model import load_predictor, preprocess
from SegSHAPLib.io.image_io import read_volume


@pytest.fixture(scope="module")
def ct(cropped_cases):
    return read_volume(cropped_cases / "spleen_ct.nii.gz")


@pytest.mark.parametrize("scheme, use_mask", [("CTNormalization", False), ("ZScoreNormalization", False),
                                              ("ZScoreNormalization", True), ("RescaleTo01Normalization", False),
                                              ("NoNormalization", False)])
def test_normalised_mask_value_is_what_nnunet_gives_a_voxel_of_that_value(ct, scheme, use_mask, tmp_path):
    predictor = load_predictor(normalisation_model(tmp_path, scheme, use_mask))
    pre = preprocess(predictor, ct)            # the plans' spacing is the CT's: no resampling, so voxels map 1:1
    crop = pre.properties["bbox_used_for_cropping"]
    assert pre.data.shape[1:] == tuple(b - a for a, b in crop)
    rng = np.random.default_rng(0)
    for _ in range(5):
        voxel = tuple(int(rng.integers(a, b)) for a, b in crop)
        value = float(ct.array[voxel])
        ours = mask_value(predictor, ct, value)
        theirs = pre.data[(0, *(v - a for v, (a, _) in zip(voxel, crop)))]
        assert ours.normalised == float(theirs), (voxel, value)
        assert ours.image_units == value and ours.scheme == scheme and ours.use_mask_for_norm == use_mask


def test_zscore_air_is_far_below_this_ct_not_its_mean(ct, tmp_path):
    predictor = load_predictor(normalisation_model(tmp_path, "ZScoreNormalization"))
    air = mask_value(predictor, ct, -1024.0)
    mean, std = float(ct.array.astype(np.float32).mean()), float(ct.array.astype(np.float32).std())
    assert air.statistics["mean"] == pytest.approx(mean, rel=1e-5)
    assert air.statistics["std"] == pytest.approx(std, rel=1e-5)
    assert air.normalised == pytest.approx((-1024.0 - mean) / std, rel=1e-5)
    assert air.normalised < -1.0                 # the old single-voxel pass gave 0 (this CT's mean)


def test_ct_normalisation_clips_at_the_plans_percentile(ct):
    predictor = load_predictor(DEMO_MODEL)
    assert mask_value(predictor, ct, -1024.0).normalised == mask_value(predictor, ct, -41.0).normalised
    assert mask_value(predictor, ct, -1024.0).statistics == {}


def test_rgb_mask_value_must_be_a_colour(ct, tmp_path):
    predictor = load_predictor(normalisation_model(tmp_path, "RGBTo01Normalization"))
    with pytest.raises(InputError, match="0..255"):
        mask_value(predictor, ct, -1024.0)
    assert mask_value(predictor, ct, 51.0).normalised == float(np.float32(51.0) / np.float32(255.0))
