"""Bad input to `segshap explain` gives one clear line and exit code 2, never a traceback, and loses nothing.

Arguments refused before anything is read run in the fast tier; the cases that read the full sample CT, its
prediction or the model are in the slow tier."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import DEMO_MODEL, SAMPLE_CT, SAMPLE_ORGANS
from SegSHAPLib.cli.main import main
from SegSHAPLib.io.image_io import Volume, read_volume, write_volume

FP_POINT = "-7,236.3,139.3"


@pytest.fixture(scope="module")
def files(tmp_path_factory, demo_prediction, sample_ct):
    """Prediction, a cropped organ map (wrong grid), an empty mask and a CT with a NaN voxel, on disk."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    write_volume(demo_prediction, folder / "prediction.nii.gz")
    organs = read_volume(SAMPLE_ORGANS)
    write_volume(Volume(organs.array[:, :, :-5].copy(), organs.spacing, organs.origin, organs.direction),
                 folder / "organs_cropped.nii.gz")
    write_volume(sample_ct.with_array(np.zeros(sample_ct.shape_zyx, dtype=np.uint8)), folder / "empty.nii.gz")
    nan_ct = sample_ct.array.astype(np.float32)
    nan_ct[3, 4, 5] = np.nan
    write_volume(sample_ct.with_array(nan_ct), folder / "nan_ct.nii.gz")
    return folder


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in err if not line.startswith("perform_everything_on_device")]


def _argv(files, out, **changes):
    options = {"--ct": str(SAMPLE_CT), "--model": str(DEMO_MODEL), "--target": "spleen", "--roi-point": FP_POINT,
               "--prediction": str(files / "prediction.nii.gz"), "--units": "organs",
               "--organs": str(SAMPLE_ORGANS), "--value": "softdice", "--budget": "8", "--out": str(out)}
    options.update(changes)
    argv = ["explain"]
    for flag, value in options.items():
        if value is not None:
            argv += [flag, value]
    return argv


# Refused by the argument checks before any image is read or the model loaded: the fast tier.
EARLY = [
    ({"--roi-point": "1,2"}, "three comma-separated numbers"),
    ({"--units": "voxels"}, "unknown unit type"),
    ({"--value": "auc"}, "not one of"),
    ({"--units": "fcc", "--fcc-scale-mm": "0"}, "must be > 0"),
    ({"--budget": "1"}, "at least 2"),
    ({"--value": "fp", "--score-region": "component"}, "identically 0"),
]
# Refused once the full sample CT, its prediction or the model are read: the slow tier.
LATE = [
    ({"--organs": "{files}/organs_cropped.nii.gz"}, "not on the same voxel grid"),
    ({"--prediction": "{files}/organs_cropped.nii.gz"}, "not on the same voxel grid"),
    ({"--roi-point": "900,900,900"}, "outside"),
    ({"--roi-point": "0,0,0", "--point-space": "ijk"}, "nearest"),
    ({"--roi-point": None, "--roi-mask": "{files}/empty.nii.gz"}, "empty"),
    ({"--model": "{files}/no_model"}, "does not exist"),
    ({"--ct": "{files}/nan_ct.nii.gz"}, "NaN"),
    ({"--units": "hybrid", "--organs": None}, "needs --organs"),
]


def _assert_one_clear_line(tmp_path, capsys, folder, changes, message):
    changes = {k: (v.format(files=folder) if isinstance(v, str) else v) for k, v in changes.items()}
    code, err = _run(capsys, _argv(folder, tmp_path / "out", **changes))
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists()          # a corrected rerun into the same --out is not refused


@pytest.mark.parametrize("changes, message", EARLY)
def test_bad_arguments_are_one_clear_line_before_anything_is_read(tmp_path, capsys, changes, message):
    """``--prediction`` names a file that does not exist: these arguments are refused before it is looked at."""
    _assert_one_clear_line(tmp_path, capsys, tmp_path / "never_read", changes, message)


@pytest.mark.slow
@pytest.mark.parametrize("changes, message", LATE)
def test_bad_input_is_one_clear_line(tmp_path, capsys, files, changes, message):
    _assert_one_clear_line(tmp_path, capsys, files, changes, message)


@pytest.mark.slow
def test_an_existing_folder_of_another_command_or_request_is_never_overwritten(tmp_path, capsys, files):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, err = _run(capsys, _argv(files, foreign))
    assert code == 2 and "already holds other files" in err[0]
    assert (foreign / "notes.txt").read_text() == "keep me"

    out = tmp_path / "explained"
    assert main(_argv(files, out, **{"--budget": "4"})) == 0
    capsys.readouterr()                                    # drop the successful run's progress output
    before = (out / "summary.json").read_text()
    code, err = _run(capsys, _argv(files, out, **{"--value": "tp"}))
    assert code == 2 and "different request" in err[0] and "value" in err[0]
    assert (out / "summary.json").read_text() == before
    assert json.loads(before)["inputs"]["value"] == "softdice"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders, so the case cannot arise")
def test_unwritable_output_folder_is_refused(tmp_path, capsys, files):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    code, err = _run(capsys, _argv(files, locked / "out"))
    assert code == 2 and "cannot write" in err[0]


@pytest.mark.slow
def test_unwritable_output_path_is_refused_even_for_root(tmp_path, capsys, files):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = _run(capsys, _argv(files, blocker / "out"))
    assert code == 2 and "cannot write" in err[0]
