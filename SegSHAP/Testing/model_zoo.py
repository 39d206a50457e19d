"""A zoo of small nnU-Net v2 trained-model folders of every kind a user may bring, built in seconds.

Each model is a regular trained-model folder (``dataset.json``, ``plans.json``, ``fold_X/checkpoint_*.pth``) in
nnU-Net's own plans format; its network is built by nnU-Net's own ``nnUNetTrainer.build_network_architecture``
from those plans and keeps the weights of nnU-Net's own initialisation under a fixed seed (no training: what the
tests check - SegSHAP's engine equals nnU-Net's prediction bit for bit - does not depend on the weights being
good). ``nnUNetPredictor.initialize_from_trained_model_folder`` loads every one of them.

The models, sized for the cropped sample CTs of conftest.CROPPED_CASES (16 x 48 x 64 voxels (z, y, x), 3 mm):

    2d                  configuration 2d: slice-wise 32 x 32 patches, Conv2d PlainConvUNet
    3d_2folds_mirroring 3d_fullres, folds 0 and 1 (different seeds), mirroring axes (0, 1, 2)
    resenc              3d_fullres with nnU-Net's ResidualEncoderUNet (the ResEnc presets' architecture)
    4labels             four foreground labels (spleen, kidney_right, kidney_left, liver)
    zscore              ZScoreNormalization (statistics of each image, as nnU-Net's MR models)
    zscore_masked       ZScoreNormalization with use_mask_for_norm (statistics inside the nonzero mask)
    resampled_transposed transpose_forward (0, 2, 1) and a 4 x 2.5 x 3.5 mm target spacing (resampling on every axis)
    cascade             3d_cascade_fullres whose previous_stage is 3d_lowres (refused by SegSHAP)
    region_based        regions {organ: [1, 2], core: 2} (refused by SegSHAP)
    best_only           one fold holding only checkpoint_best.pth (an early-stopped training)

Usage: python SegSHAP/Testing/model_zoo.py OUT_FOLDER  (the tests build it into a session tmp folder instead).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEMO_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "DemoModel"
CT_INTENSITIES = {"max": 1800.0, "mean": 60.0, "median": 55.0, "min": -1024.0, "percentile_00_5": -990.0,
                  "percentile_99_5": 1300.0, "std": 180.0}
CT_SPACING = [3.0, 3.0, 3.0]


def _architecture(dims: int, n_stages: int, residual: bool = False, base_features: int = 4) -> dict:
    """nnU-Net's architecture block of a configuration: a PlainConvUNet or ResidualEncoderUNet with
    ``base_features`` x 2^stage features per stage (at most 320, nnU-Net's cap)."""
    conv, norm = ("Conv3d", "InstanceNorm3d") if dims == 3 else ("Conv2d", "InstanceNorm2d")
    first_stride = [1, 1, 1] if dims == 3 else [1, 1]
    strides = [first_stride] + [([1, 2, 2] if s == 1 else [2, 2, 2]) if dims == 3 else [2, 2]
                                for s in range(1, n_stages)]
    kwargs = {
        "n_stages": n_stages,
        "features_per_stage": [min(base_features * 2 ** s, 320) for s in range(n_stages)],
        "conv_op": f"torch.nn.modules.conv.{conv}",
        "kernel_sizes": [[3] * dims] * n_stages,
        "strides": strides,
        "n_conv_per_stage_decoder": [1] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.{norm}",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if residual:
        kwargs["n_blocks_per_stage"] = [1, 2, 2][:n_stages]
        name = "ResidualEncoderUNet"
    else:
        kwargs["n_conv_per_stage"] = [2] * n_stages
        name = "PlainConvUNet"
    return {"network_class_name": f"dynamic_network_architectures.architectures.unet.{name}",
            "arch_kwargs": kwargs, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def _configuration(patch_size: list[int], spacing: list[float], architecture: dict, identifier: str,
                   normalization: str = "CTNormalization", use_mask_for_norm: bool = False) -> dict:
    """The demo model's 3d_fullres configuration (nnU-Net's default resampling) with these changes."""
    demo = json.loads((DEMO_MODEL / "plans.json").read_text())["configurations"]["3d_fullres"]
    return {**demo, "data_identifier": identifier, "patch_size": patch_size,
            "median_image_size_in_voxels": [16.0, 48.0, 64.0][-len(patch_size):], "spacing": spacing,
            "normalization_schemes": [normalization], "use_mask_for_norm": [use_mask_for_norm],
            "architecture": architecture}


def _plans(name: str, configurations: dict, transpose=(0, 1, 2), plans_name: str = "nnUNetPlans") -> dict:
    backward = [int(i) for i in sorted(range(3), key=lambda a: transpose[a])]
    return {
        "dataset_name": f"Dataset990_Zoo{name}",
        "plans_name": plans_name,
        "original_median_spacing_after_transp": [CT_SPACING[t] for t in transpose],
        "original_median_shape_after_transp": [[16, 48, 64][t] for t in transpose],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose),
        "transpose_backward": backward,
        "configurations": configurations,
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": CT_INTENSITIES},
    }


def _dataset(labels: dict, **extra) -> dict:
    return {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz",
            "name": "SegSHAP test zoo (random weights)", **extra}


def _write(folder: Path, plans: dict, dataset: dict, configuration: str, folds=(0,), seed: int = 0,
           checkpoint: str = "checkpoint_final.pth", mirror_axes=None) -> Path:
    """Build the network with nnU-Net's trainer from the plans (seeded initialisation) and save each fold."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    heads = plans_manager.get_label_manager(dataset).num_segmentation_heads
    channels = determine_num_input_channels(plans_manager, configuration_manager, dataset)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2) + "\n")
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    dims = len(configuration_manager.patch_size)
    for fold in folds:
        torch.manual_seed(seed + 1000 * fold)
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, channels, heads,
                                                           enable_deep_supervision=False)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                    "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                                  "dataset_json": dataset, "device": "cpu"},
                    "inference_allowed_mirroring_axes": tuple(range(dims)) if mirror_axes is None else mirror_axes,
                    "current_epoch": 0, "_best_ema": None, "grad_scaler_state": None, "optimizer_state": None,
                    "logging": {}},
                   folder / f"fold_{fold}" / checkpoint)
    return folder


SPLEEN = {"background": 0, "spleen": 1}


def _fullres(**changes) -> dict:
    options = {"patch_size": [16, 32, 32], "spacing": CT_SPACING, "architecture": _architecture(3, 3),
               "identifier": "nnUNetPlans_3d_fullres"}
    options.update(changes)
    return _configuration(**options)


def normalisation_model(out: Path, scheme: str, use_mask_for_norm: bool = False) -> Path:
    """A 3d_fullres model at the CT's own spacing (no resampling) that normalises with ``scheme``."""
    name = f"{scheme}{'_masked' if use_mask_for_norm else ''}"
    return _write(Path(out) / name, _plans(name, {"3d_fullres": _fullres(
        normalization=scheme, use_mask_for_norm=use_mask_for_norm)}), _dataset(SPLEEN), "3d_fullres", seed=11)


PUBLISHED_PATCH = [128, 128, 128]     # about what nnU-Net plans for TotalSegmentator's 1.5 mm 3d_fullres models
PUBLISHED_SPACING = [1.5, 1.5, 1.5]


def published_scale_model(out: Path, labels: dict[int, str], base_features: int = 4) -> Path:
    """A TotalSegmentator-like 3d_fullres model at the published scale: 1.5 mm, patch 128^3, one label per
    ``labels`` entry (id -> name, ids 1..K, e.g. TotalSegmentator's own), a 6-stage PlainConvUNet with
    ``base_features`` (32 is nnU-Net's default width; 4 loads in a second, for counting only) and random
    weights. For the cost and throughput benchmarks: the counts depend on the grid, patch and classes, not on
    the weights."""
    architecture = _architecture(3, 6, base_features=base_features)
    architecture["arch_kwargs"]["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * 5
    architecture["arch_kwargs"]["kernel_sizes"] = [[3, 3, 3]] * 6
    architecture["arch_kwargs"]["n_conv_per_stage_decoder"] = [2] * 5
    configuration = _fullres(patch_size=PUBLISHED_PATCH, spacing=PUBLISHED_SPACING, architecture=architecture)
    dataset = _dataset({"background": 0, **{name: int(label) for label, name in sorted(labels.items())}})
    return _write(Path(out), _plans("PublishedScale", {"3d_fullres": configuration}), dataset, "3d_fullres", seed=12)


def build_zoo(out: Path) -> dict[str, Path]:
    """Write every zoo model under ``out``; returns name -> model folder."""
    out = Path(out)
    models = {}
    models["2d"] = _write(out / "2d", _plans("2d", {"2d": _configuration(
        [32, 32], CT_SPACING[1:], _architecture(2, 3), "nnUNetPlans_2d")}), _dataset(SPLEEN), "2d", seed=1)
    models["3d_2folds_mirroring"] = _write(out / "3d_2folds_mirroring", _plans("Folds", {"3d_fullres": _fullres()}),
                                           _dataset(SPLEEN), "3d_fullres", folds=(0, 1), seed=2)
    models["resenc"] = _write(out / "resenc", _plans("ResEnc", {"3d_fullres": _fullres(
        architecture=_architecture(3, 3, residual=True))}, plans_name="nnUNetResEncUNetMPlans"),
        _dataset(SPLEEN), "3d_fullres", seed=3)
    models["4labels"] = _write(out / "4labels", _plans("FourLabels", {"3d_fullres": _fullres()}), _dataset(
        {"background": 0, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 4}), "3d_fullres", seed=4)
    models["zscore"] = _write(out / "zscore", _plans("ZScore", {"3d_fullres": _fullres(
        normalization="ZScoreNormalization")}), _dataset(SPLEEN), "3d_fullres", seed=5)
    models["zscore_masked"] = _write(out / "zscore_masked", _plans("ZScoreMasked", {"3d_fullres": _fullres(
        normalization="ZScoreNormalization", use_mask_for_norm=True)}), _dataset(SPLEEN), "3d_fullres", seed=6)
    models["resampled_transposed"] = _write(
        out / "resampled_transposed",
        _plans("Transposed", {"3d_fullres": _fullres(patch_size=[8, 32, 32], spacing=[4.0, 2.5, 3.5])},
               transpose=(0, 2, 1)), _dataset(SPLEEN), "3d_fullres", seed=7)
    cascade_configurations = {
        "3d_fullres": _fullres(),
        "3d_lowres": _fullres(spacing=[6.0, 6.0, 6.0], identifier="nnUNetPlans_3d_lowres",
                              patch_size=[8, 16, 16]) | {"next_stage": ["3d_cascade_fullres"]},
        "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
    }
    models["cascade"] = _write(out / "cascade", _plans("Cascade", cascade_configurations), _dataset(SPLEEN),
                               "3d_cascade_fullres", seed=8)
    models["region_based"] = _write(out / "region_based", _plans("Regions", {"3d_fullres": _fullres()}),
                                    _dataset({"background": 0, "organ": [1, 2], "core": 2},
                                             regions_class_order=[1, 2]), "3d_fullres", seed=9)
    models["best_only"] = _write(out / "best_only", _plans("BestOnly", {"3d_fullres": _fullres()}),
                                 _dataset(SPLEEN), "3d_fullres", seed=10, checkpoint="checkpoint_best.pth")
    return models


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("Usage: ")[1].strip())
    for name, path in build_zoo(Path(sys.argv[1])).items():
        print(f"{name:22s} {path}")
