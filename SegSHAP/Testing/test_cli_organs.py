"""`segshap organs`: TotalSegmentator's organ map of a CT, up to the point this offline machine allows.

What runs here: bad input, a missing TotalSegmentator package, missing weights with no way to download them
(refused before TotalSegmentator would download, nothing written), and the post-processing of a real
TotalSegmentator output (the vendored sample map) into a named label map on the CT's grid that `explain` reads.
What cannot run here: TotalSegmentator's model itself (its weights cannot be downloaded on this machine).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE_CT, SAMPLE_ORGANS
from SegSHAPLib.units import organ_segmentation
from SegSHAPLib.cli.main import main
from SegSHAPLib.io.image_io import Volume, read_volume
from SegSHAPLib.units.organ_segmentation import (WeightsNeeded, check_roi_subset, check_weights, server_reachable,
                                           to_ct_grid, write_named_label_map)
from SegSHAPLib.units.organs import organ_class_names, organ_units

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _run(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def _totalsegmentator_installed() -> bool:
    try:
        import totalsegmentator.python_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("ct, out_name, message", [
    ("{tmp}/missing_ct.nii.gz", "organs.nii.gz", "no such file"),
    (str(SAMPLE_CT), "organs.nrrd", "give a .nii.gz or .nii file name"),
    (str(SAMPLE_CT), "existing.nii.gz", "already exists"),
])
def test_bad_input_is_one_line_before_totalsegmentator_is_needed(tmp_path, capsys, ct, out_name, message):
    """Input errors come before the package and weights checks (this venv has no TotalSegmentator, so a later
    check would answer with the install command instead) and leave the output folder as it was."""
    (tmp_path / "existing.nii.gz").write_bytes(b"keep me")
    code, err = _run(capsys, ["organs", "--ct", ct.format(tmp=tmp_path), "--out", str(tmp_path / out_name)])
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.nii.gz"]
    assert (tmp_path / "existing.nii.gz").read_bytes() == b"keep me"


def test_missing_package_names_the_install_command_of_an_existing_extra(tmp_path, capsys, monkeypatch):
    """The package is absent from this venv (see test_missing_weights_are_refused_before_any_download); the
    sys.modules entry makes it absent wherever the test runs."""
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)
    code, err = _run(capsys, ["organs", "--ct", str(SAMPLE_CT), "--out", str(tmp_path / "organs.nii.gz")])
    assert code == 2
    assert len(err) == 1 and "TotalSegmentator cannot be imported" in err[0], err
    assert organ_segmentation.INSTALL_COMMAND in err[0]
    assert 'totalseg = ["TotalSegmentator==2.18.0"]' in PYPROJECT.read_text()      # the extra the command installs
    assert "[totalseg]" in organ_segmentation.INSTALL_COMMAND
    assert not list(tmp_path.iterdir())


def test_missing_weights_are_refused_before_any_download(tmp_path):
    """Weights check on a real folder layout, with the TotalSegmentator package absent from this venv:
    TotalSegmentator 2.18.0 depends on fury<2, which needs vtk<9.4, while slicer-core (the MRML tests) pins
    vtk==9.6.2, so installing it would break the slicer extra. The folder names below are the ones
    TotalSegmentator 2.18.0's tables give for `--fast` (weights_needed, checked against the real package in
    test_real_package_offline_failure wherever it is installed)."""
    needed = WeightsNeeded(tmp_path / "nnunet" / "results", ("Dataset297_TotalSegmentator_total_3mm_1559subj",),
                           "total_fast")
    with pytest.raises(organ_segmentation.InputError) as refused:
        check_weights(needed, reachable=lambda: False)
    message = str(refused.value)
    assert "\n" not in message
    for part in (str(needed.weights_dir), "Dataset297_TotalSegmentator_total_3mm_1559subj", "TOTALSEG_HOME_DIR",
                 "totalseg_download_weights -t total_fast", "totalseg_import_weights"):
        assert part in message
    assert not (tmp_path / "nnunet").exists()

    check_weights(needed, reachable=lambda: True)   # online: TotalSegmentator downloads them itself

    (needed.weights_dir / needed.folders[0]).mkdir(parents=True)
    check_weights(needed, reachable=lambda: pytest.fail("the network must not be probed when the weights are there"))


@pytest.mark.skipif(not _totalsegmentator_installed(),
                    reason="TotalSegmentator is not installed in this venv: its fury<2 needs vtk<9.4, slicer-core "
                           "pins vtk==9.6.2; install the totalseg extra in a venv without the slicer extra to run this")
def test_real_package_offline_failure(tmp_path, capsys, monkeypatch):
    """The installed TotalSegmentator with an empty home folder and no network: one line naming the folder and the
    fast model's weights, nothing downloaded or written (not even TotalSegmentator's config.json)."""
    home = tmp_path / "totalseg_home"
    home.mkdir()
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    monkeypatch.setattr(organ_segmentation, "server_reachable", lambda: False)
    out = tmp_path / "organs.nii.gz"
    code, err = _run(capsys, ["organs", "--ct", str(SAMPLE_CT), "--out", str(out), "--fast"])
    assert code == 2
    assert len(err) == 1 and str(home / "nnunet" / "results") in err[0], err
    assert "Dataset297_TotalSegmentator_total_3mm_1559subj" in err[0]
    assert not list(home.iterdir()) and not out.exists()


def test_server_probe_tells_an_open_port_from_a_closed_one():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert server_reachable("127.0.0.1", listening.getsockname()[1], timeout_s=2)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]          # bound, never listening: connections are refused
        assert not server_reachable("127.0.0.1", port, timeout_s=2)


def test_unknown_roi_subset_class_is_refused():
    names = list(organ_class_names(SAMPLE_ORGANS).values())   # TotalSegmentator's total names, from its label table
    check_roi_subset(["liver", "spleen"], names)
    check_roi_subset(None, names)
    with pytest.raises(organ_segmentation.InputError, match="livr not in TotalSegmentator's total task"):
        check_roi_subset(["liver", "livr"], names)


def test_totalsegmentator_output_becomes_a_named_map_on_the_ct_grid_that_explain_reads(tmp_path, sample_ct):
    """The vendored sample map is TotalSegmentator's real `total` output for the sample CT (same grid, label
    table in its header): post-processing keeps every voxel and name, and the written file passes explain's
    grid check and names its organ units."""
    labels, names = to_ct_grid(SAMPLE_ORGANS, sample_ct)
    original = read_volume(SAMPLE_ORGANS)
    assert labels.same_grid(sample_ct) and labels.array.dtype == np.uint8
    np.testing.assert_array_equal(labels.array, original.array)
    assert names == organ_class_names(SAMPLE_ORGANS) and names[1] == "spleen" and names[5] == "liver"

    out = write_named_label_map(labels, names, tmp_path / "sub" / "organs.nii.gz")
    written = read_volume(out)
    assert written.same_grid(sample_ct)                       # what explain's --organs grid check asks
    np.testing.assert_array_equal(written.array, original.array)
    assert organ_class_names(out) == names
    units = organ_units(written.array, np.ones(sample_ct.shape_zyx, dtype=bool), organ_class_names(out))
    assert {"spleen", "liver", "kidney_left"} <= set(units.names)
    assert not [n for n in units.names if n.startswith("label_")]


def test_output_stored_in_another_orientation_is_resampled_onto_the_ct_grid(tmp_path, sample_ct):
    """A label file on the same voxels stored with i running the other way (array flipped along x, direction
    column i negated, origin at the former last column) comes back voxel for voxel on the CT's grid."""
    original = read_volume(SAMPLE_ORGANS)
    nx = original.shape_zyx[2]
    direction = original.direction.copy()
    direction[:, 0] *= -1
    origin = tuple(np.asarray(original.origin) + original.direction[:, 0] * original.spacing[0] * (nx - 1))
    flipped = Volume(original.array[:, :, ::-1].copy(), original.spacing, origin, direction)
    names = organ_class_names(SAMPLE_ORGANS)
    path = write_named_label_map(flipped, names, tmp_path / "flipped.nii.gz")
    assert read_volume(path).same_grid(flipped) and not flipped.same_grid(sample_ct)

    labels, flipped_names = to_ct_grid(path, sample_ct)
    assert labels.same_grid(sample_ct)
    np.testing.assert_array_equal(labels.array, original.array)
    assert flipped_names == names
