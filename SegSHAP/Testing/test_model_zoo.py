"""Every kind of nnU-Net model a user may bring (model_zoo.py, built by nnU-Net's own network builder): `segshap
predict` equals nnU-Net's own prediction, `segshap explain --verify 1 --batch-size 1` equals nnU-Net's full
recomputation bit for bit (CPU), and what SegSHAP cannot run is refused with one line and exit 2.

The explanations are kept small for CI (a 2 x 8 x 8-voxel ROI, FCC cells of 24 mm, 8
coalitions): what they prove - the cached engine's logits equal nnU-Net's on the baseline and a random coalition,
for every kind of model - does not depend on the size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_zoo import build_zoo
from SegSHAPLib.cli.main import main
from SegSHAPLib.io.image_io import read_volume, write_volume

EXPLAINABLE = ("2d", "3d_2folds_mirroring", "resenc", "4labels", "zscore", "zscore_masked", "resampled_transposed",
               "best_only")
TARGET = {"4labels": "liver"}                       # the others segment the spleen (label 1)
OPTIONS = {"3d_2folds_mirroring": ["--tta"], "best_only": ["--checkpoint", "checkpoint_best.pth"]}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_zoo(tmp_path_factory.mktemp("model_zoo"))


@pytest.fixture(scope="module")
def case(cropped_cases):
    """The cropped spleen CT (16 x 48 x 64 voxels, z, y, x) and a 2 x 8 x 8-voxel ROI mask in its middle."""
    ct_path = cropped_cases / "spleen_ct.nii.gz"
    ct = read_volume(ct_path)
    mask = np.zeros(ct.shape_zyx, dtype=np.uint8)
    mask[7:9, 20:28, 28:36] = 1
    write_volume(ct.with_array(mask), cropped_cases / "spleen_roi_mask.nii.gz")
    return ct_path, cropped_cases / "spleen_roi_mask.nii.gz"


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.strip().splitlines()
            if not line.startswith("perform_everything_on_device")]


def _nnunet_prediction(model_dir, ct_path, checkpoint: str, mirroring: bool) -> np.ndarray:
    """nnU-Net's own prediction of the file, read with nnU-Net's own SimpleITKIO: (z, y, x)."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=True, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), None, checkpoint)
    image, properties = SimpleITKIO().read_images([str(ct_path)])
    return np.asarray(predictor.predict_single_npy_array(image, properties))


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "3d_2folds_mirroring" else name
                                  for name in EXPLAINABLE])   # slow: 2 folds x 8 mirrorings on the whole crop, twice
def test_predict_equals_nnunet(zoo, case, name, tmp_path, capsys):
    ct_path, _ = case
    out = tmp_path / "prediction.nii.gz"
    options = OPTIONS.get(name, [])
    assert main(["predict", "--ct", str(ct_path), "--model", str(zoo[name]), "--out", str(out)] + options) == 0
    ours = read_volume(out).array
    theirs = _nnunet_prediction(zoo[name], ct_path, options[1] if "--checkpoint" in options else
                                "checkpoint_final.pth", "--tta" in options)
    assert ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("name", EXPLAINABLE)
def test_explain_verify_is_exact(zoo, case, name, tmp_path, capsys):
    ct_path, mask_path = case
    out = tmp_path / "explanation"
    argv = ["explain", "--ct", str(ct_path), "--model", str(zoo[name]), "--target", TARGET.get(name, "spleen"),
            "--roi-mask", str(mask_path), "--units", "fcc", "--fcc-scale-mm", "24", "--value", "softdice",
            "--budget", "8", "--verify", "1", "--batch-size", "1", "--out", str(out)] + OPTIONS.get(name, [])
    assert main(argv) == 0, _errors(capsys)
    summary = json.loads((out / "summary.json").read_text())
    inference = summary["inference"]
    assert inference["verify"] == {"coalitions": 2, "max_abs_logit_diff": 0.0, "argmax_mismatch_voxels": 0}
    assert inference["patches_in_support"] <= inference["patches_full_grid"]
    assert inference["patch_forwards"] < inference["naive_patch_forwards"]
    assert inference["folds"] == (2 if name == "3d_2folds_mirroring" else 1)
    assert summary["inputs"]["checkpoint"] == ("checkpoint_best.pth" if name == "best_only"
                                               else "checkpoint_final.pth")
    assert summary["mask_value"]["image_units"] == -1024.0
    if name == "4labels":
        assert summary["roi"]["target"] == 4
    if name == "2d":   # slice-wise patches: the full grid is every slice times the in-plane grid
        assert inference["patches_full_grid"] % 16 == 0


@pytest.mark.parametrize("name, command, words", [
    ("cascade", "explain", ("3d_cascade_fullres", "3d_lowres", "cascade")),
    ("cascade", "predict", ("3d_cascade_fullres", "3d_lowres", "cascade")),
    ("region_based", "explain", ("region-based",)),
    ("best_only", "explain", ("checkpoint_final.pth", "checkpoint_best.pth", "--checkpoint")),
    ("best_only", "predict", ("checkpoint_final.pth", "checkpoint_best.pth", "--checkpoint")),
])
def test_unsupported_models_get_one_clear_line_and_exit_2(zoo, case, name, command, words, tmp_path, capsys):
    ct_path, mask_path = case
    argv = [command, "--ct", str(ct_path), "--model", str(zoo[name])]
    if command == "predict":
        argv += ["--out", str(tmp_path / "prediction.nii.gz")]
    else:
        argv += ["--target", "1", "--roi-mask", str(mask_path), "--units", "fcc", "--value", "softdice",
                 "--budget", "4", "--out", str(tmp_path / "explanation")]
    assert main(argv) == 2
    errors = _errors(capsys)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"segshap {command}: error:")
    for word in words:
        assert word in errors[0]
