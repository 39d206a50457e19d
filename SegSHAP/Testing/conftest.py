"""Shared fixtures: the vendored sample CT, its TotalSegmentator map and the demo nnU-Net model (all real)."""

from __future__ import annotations

from pathlib import Path

import pytest

RESOURCES = Path(__file__).resolve().parents[1] / "Resources"
SAMPLE_CT = RESOURCES / "SampleData" / "example_ct_sm.nii.gz"
SAMPLE_ORGANS = RESOURCES / "SampleData" / "example_ct_sm_totalseg.nii.gz"
DEMO_MODEL = RESOURCES / "DemoModel"


@pytest.fixture(scope="session")
def sample_ct():
    from SegSHAPLib.image_io import read_volume

    return read_volume(SAMPLE_CT)


@pytest.fixture(scope="session")
def sample_organs():
    from SegSHAPLib.image_io import read_volume

    return read_volume(SAMPLE_ORGANS)


@pytest.fixture(scope="session")
def demo_predictor():
    """The demo model loaded through nnU-Net's own initialize_from_trained_model_folder (mirroring off)."""
    from SegSHAPLib.model import load_predictor

    return load_predictor(DEMO_MODEL)


@pytest.fixture(scope="session")
def demo_prediction(demo_predictor, sample_ct):
    """The demo model's segmentation of the sample CT (z, y, x) - computed once per session."""
    from SegSHAPLib.model import predict_segmentation

    return predict_segmentation(demo_predictor, sample_ct)
