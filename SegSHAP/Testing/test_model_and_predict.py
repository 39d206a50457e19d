"""The demo model is a real nnU-Net v2 model; `segshap predict` is nnU-Net's own prediction, voxel for voxel."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from conftest import DEMO_MODEL, SAMPLE_CT, SAMPLE_ORGANS
from SegSHAPLib.cli.main import main
from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import read_volume
from SegSHAPLib.inference.model import check_model_folder, load_predictor, resolve_target


def test_demo_model_folder_loads_through_nnunet(demo_predictor):
    assert demo_predictor.trainer_name == "nnUNetTrainer"
    assert list(demo_predictor.configuration_manager.patch_size) == [16, 48, 48]
    assert demo_predictor.label_manager.num_segmentation_heads == 2
    n_parameters = sum(p.numel() for p in demo_predictor.network.parameters())
    assert n_parameters < 1_250_000                      # under 5 MB of float32 weights
    assert (DEMO_MODEL / "fold_0" / "checkpoint_final.pth").stat().st_size < 5 * 1024 * 1024


@pytest.mark.slow                     # two full predictions of the sample CT (the CLI's and nnU-Net's)
def test_predict_cli_equals_nnunet_own_prediction(tmp_path, demo_predictor):
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", "--ct", str(SAMPLE_CT), "--model", str(DEMO_MODEL), "--out", str(out)]) == 0
    ours = read_volume(out)
    # nnU-Net's own file-to-file pipeline (its reader, preprocessing, sliding window and export).
    nnunet_out = tmp_path / "nnunet"
    nnunet_out.mkdir()
    demo_predictor.predict_from_files_sequential([[str(SAMPLE_CT)]], str(nnunet_out), save_probabilities=False,
                                                 overwrite=True, folder_with_segs_from_prev_stage=None)
    (written,) = nnunet_out.glob("*.nii.gz")           # nnU-Net names the case after the input file
    theirs = read_volume(written)
    assert np.array_equal(ours.array, theirs.array)
    assert ours.same_grid(theirs)


def test_demo_model_quality_has_true_and_false_positives(demo_prediction, sample_organs):
    predicted = demo_prediction.array == 1
    spleen = sample_organs.array == 1
    dice = 2 * (predicted & spleen).sum() / (predicted.sum() + spleen.sum())
    assert dice >= 0.8
    assert (predicted & ~spleen).sum() > 0               # false positives remain to be explained


def test_missing_and_malformed_model_folders_are_explained(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        check_model_folder(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(DEMO_MODEL, broken)
    (broken / "plans.json").unlink()
    with pytest.raises(InputError, match="plans.json is missing"):
        check_model_folder(broken)
    (broken / "plans.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        check_model_folder(broken)
    shutil.copy(DEMO_MODEL / "plans.json", broken / "plans.json")
    with pytest.raises(InputError, match="fold\\(s\\) 3 not found"):
        check_model_folder(broken, ["3"])
    (broken / "fold_0" / "checkpoint_final.pth").write_bytes(b"garbage")
    with pytest.raises(InputError, match="could not be loaded"):
        load_predictor(broken)
    shutil.rmtree(broken / "fold_0")
    with pytest.raises(InputError, match="no fold_X"):
        check_model_folder(broken)


def test_plans_with_an_unknown_network_class_fail_clearly(tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(DEMO_MODEL, broken)
    plans = json.loads((broken / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "no.such.Network"
    (broken / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(InputError, match="could not be loaded"):
        load_predictor(broken)


def test_target_by_name_or_value(demo_predictor):
    assert resolve_target(demo_predictor, "spleen") == 1
    assert resolve_target(demo_predictor, "1") == 1
    with pytest.raises(InputError, match="1=spleen"):
        resolve_target(demo_predictor, "liver")
    string_labels = copy.copy(demo_predictor)                     # the real predictor, its labels as strings
    string_labels.dataset_json = {**demo_predictor.dataset_json, "labels": {"background": "0", "spleen": "1"}}
    with pytest.raises(InputError, match="has no integer foreground label"):
        resolve_target(string_labels, "spleen")


@pytest.mark.parametrize("argv, message", [
    (["--ct", "missing.nii.gz", "--model", str(DEMO_MODEL)], "no such file"),
    (["--ct", str(SAMPLE_CT), "--model", "/no/model"], "does not exist"),
    (["--ct", str(SAMPLE_ORGANS), "--model", str(DEMO_MODEL), "--device", "tpu"], "unknown device"),
])
def test_predict_cli_bad_input_is_one_line(tmp_path, capsys, argv, message):
    code = main(["predict", *argv, "--out", str(tmp_path / "seg.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
