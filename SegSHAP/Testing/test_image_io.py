"""Image I/O keeps voxels and geometry (origin, spacing, direction) through every supported format."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_dicom_series
from SegSHAPLib.io.image_io import ImageReadError, Volume, describe_grid_mismatch, read_volume, write_volume


def _oblique_volume() -> Volume:
    """A volume with anisotropic spacing, flipped axes and a rotation: nothing about it is the identity."""
    rng = np.random.default_rng(3)
    array = rng.integers(-1024, 1500, size=(7, 9, 11)).astype(np.int16)        # (z, y, x)
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    direction = rotation @ np.diag([-1.0, 1.0, -1.0])
    return Volume(array, (0.78, 1.17, 5.0), (-120.5, 33.25, 410.0), direction)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, suffix):
    volume = _oblique_volume()
    path = write_volume(volume, tmp_path / f"image{suffix}")
    back = read_volume(path)
    assert np.array_equal(back.array, volume.array)
    assert back.array.dtype == volume.array.dtype
    assert np.allclose(back.spacing, volume.spacing, atol=1e-5)
    assert np.allclose(back.origin, volume.origin, atol=1e-4)
    assert np.allclose(back.direction, volume.direction, atol=1e-5)
    assert back.same_grid(volume)


def test_dicom_series_folder_is_read_with_its_geometry(tmp_path):
    volume = _oblique_volume()
    volume = Volume(volume.array, (0.8, 0.8, 2.5), (10.0, -20.0, 30.0), np.diag([1.0, 1.0, 1.0]))
    write_dicom_series(volume, tmp_path)
    back = read_volume(tmp_path)
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.spacing, volume.spacing, atol=1e-4)
    assert np.allclose(back.origin, volume.origin, atol=1e-4)


def test_ras_ijk_conversion_inverts_and_follows_slicer_convention(sample_ct):
    ijk = np.array([[0, 0, 0], [121, 100, 29], [17.5, 3.25, 8.0]])
    ras = sample_ct.ijk_to_ras(ijk)
    assert np.allclose(sample_ct.ras_to_ijk(ras), ijk)
    # Voxel (0, 0, 0) sits at the LPS origin; RAS flips the sign of the first two coordinates.
    assert np.allclose(ras[0], [-sample_ct.origin[0], -sample_ct.origin[1], sample_ct.origin[2]])


def test_unreadable_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_volume(tmp_path / "missing.nii.gz")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError, match="cannot be read"):
        read_volume(bad)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(ImageReadError, match="unsupported file type"):
        read_volume(notes)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(ImageReadError, match="no DICOM series"):
        read_volume(empty)


def test_grid_mismatch_is_described(sample_ct):
    other = Volume(sample_ct.array[:, :, :-1], sample_ct.spacing, sample_ct.origin, sample_ct.direction)
    message = describe_grid_mismatch(sample_ct, other, "the CT", "the organ map")
    assert "size" in message and "(122, 101, 30) vs (121, 101, 30)" in message
