"""Shared fixtures: the vendored sample CT, its TotalSegmentator map and the demo nnU-Net model (all real)."""

from __future__ import annotations

from pathlib import Path

import pytest

RESOURCES = Path(__file__).resolve().parents[1] / "Resources"
SAMPLE_CT = RESOURCES / "SampleData" / "example_ct_sm.nii.gz"
SAMPLE_ORGANS = RESOURCES / "SampleData" / "example_ct_sm_totalseg.nii.gz"
DEMO_MODEL = RESOURCES / "DemoModel"
# Crops of the sample CT small enough for many explanations per test: 16 x 48 x 64 voxels, two sliding-window
# patches each. case_id -> (crop as x, y, z slices, a point on the demo model's "spleen" component, its space).
CROPPED_CASES = {"spleen": ((slice(0, 64), slice(10, 58), slice(7, 23)), "-127,152.3,142.3", "ras"),
                 "liver_fp": ((slice(36, 100), slice(50, 98), slice(7, 23)), "21 24 8", "ijk")}


def write_dicom_series(volume, folder: Path, slices=None) -> list[Path]:
    """Write ``volume`` (io.image_io.Volume, axis-aligned) as a DICOM series, one file per slice k (ITK's
    writer, real DICOM files with position, orientation and series tags); ``slices``: the k to write, in order,
    repeats allowed (default every slice). Returns the files written."""
    import SimpleITK as sitk

    image = volume.to_sitk()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for n, k in enumerate(range(image.GetDepth()) if slices is None else slices):
        slice_k = image[:, :, k]
        slice_k.SetMetaData("0020|000d", "1.2.826.0.1.3680043.2.1125.1")              # study
        slice_k.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.2")              # series
        slice_k.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.3.{n}")         # this file's instance
        slice_k.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        slice_k.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        slice_k.SetMetaData("0020|0013", str(n))
        slice_k.SetMetaData("0008|0060", "CT")
        files.append(folder / f"slice{n:03d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(slice_k)
    return files


@pytest.fixture(scope="session")
def sample_ct():
    from SegSHAPLib.io.image_io import read_volume

    return read_volume(SAMPLE_CT)


@pytest.fixture(scope="session")
def sample_organs():
    from SegSHAPLib.io.image_io import read_volume

    return read_volume(SAMPLE_ORGANS)


@pytest.fixture(scope="session")
def demo_predictor():
    """The demo model loaded through nnU-Net's own initialize_from_trained_model_folder (mirroring off)."""
    from SegSHAPLib.inference.model import load_predictor

    return load_predictor(DEMO_MODEL)


@pytest.fixture(scope="session")
def demo_prediction(demo_predictor, sample_ct):
    """The demo model's segmentation of the sample CT (z, y, x) - computed once per session."""
    from SegSHAPLib.inference.model import predict_segmentation

    return predict_segmentation(demo_predictor, sample_ct)


@pytest.fixture(scope="session")
def cropped_cases(tmp_path_factory) -> Path:
    """A folder with <case>_ct.nii.gz and <case>_organs.nii.gz for each of CROPPED_CASES (nibabel's crop keeps the
    organ names' label table and the geometry)."""
    import nibabel

    folder = tmp_path_factory.mktemp("cropped_cases")
    ct, organs = nibabel.load(str(SAMPLE_CT)), nibabel.load(str(SAMPLE_ORGANS))
    for case_id, (crop, _, _) in CROPPED_CASES.items():
        nibabel.save(ct.slicer[crop], str(folder / f"{case_id}_ct.nii.gz"))
        nibabel.save(organs.slicer[crop], str(folder / f"{case_id}_organs.nii.gz"))
    return folder
