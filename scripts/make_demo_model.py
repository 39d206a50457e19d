#!/usr/bin/env python
"""Reproduce SegSHAP's demo nnU-Net v2 model from the bundled sample CT (seeded, a few minutes on 2 CPU cores).

The result is a regular nnU-Net v2 trained-model folder that ``nnUNetPredictor.initialize_from_trained_model_folder``
loads and nnU-Net's own code predicts with:

    <out>/dataset.json
    <out>/plans.json                      3d_fullres: 3 mm spacing, patch 16x48x48 (z, y, x), 4-stage PlainConvUNet
    <out>/fold_0/checkpoint_final.pth     trainer_name nnUNetTrainer, configuration 3d_fullres

How it is made, with nnU-Net's own parts wherever they exist:
- Fingerprint: foreground intensity statistics of the CT under the spleen label, computed with
  ``DatasetFingerprintExtractor.collect_foreground_intensities`` and aggregated as nnU-Net's extractor does.
- Plans: written in nnU-Net's plans format with the default planner's resampling and CT normalisation choices,
  but a deliberately small network and patch so that the sample gives a few dozen sliding-window patches.
- Preprocessing: nnU-Net's ``DefaultPreprocessor.run_case_npy`` (transpose, crop to nonzero, CTNormalization,
  resampling).
- Network: ``nnUNetTrainer.build_network_architecture`` from the plans; loss: nnU-Net's ``DC_and_CE_loss``.
- Training: a short, seeded loop of our own on random 16x48x48 patches (one third forced onto the spleen) with
  random flips, Adam; nnU-Net's full trainer would need its dataset folders and hours, which a demo does not.

The demo model segments the spleen (TotalSegmentator label 1) on the very CT it was trained on, so it is an
overfitted toy in medical terms; what matters for SegSHAP is that it is a real nnU-Net model with real true and
false positives to explain.

Usage: python scripts/make_demo_model.py [--out SegSHAP/Resources/DemoModel] [--iterations 1200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "SegSHAP" / "Resources" / "SampleData"
SPLEEN_LABEL = 1
PATCH_SIZE = [16, 48, 48]


def fingerprint_intensities(ct_zyx: np.ndarray, seg_zyx: np.ndarray) -> dict:
    """nnU-Net's foreground intensity properties for one CT channel, keyed like plans.json wants them."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    samples, _ = DatasetFingerprintExtractor.collect_foreground_intensities(
        seg_zyx[None].astype(np.int16), ct_zyx[None].astype(np.float32))
    values = np.asarray(samples[0], dtype=np.float64)
    p005, median, p995 = np.percentile(values, (0.5, 50.0, 99.5))
    return {"0": {"max": float(values.max()), "mean": float(values.mean()), "median": float(median),
                  "min": float(values.min()), "percentile_00_5": float(p005),
                  "percentile_99_5": float(p995), "std": float(values.std())}}


def make_plans(shape_zyx, spacing_zyx, intensity_properties: dict) -> dict:
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    architecture = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 4,
            "features_per_stage": [8, 16, 32, 64],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [2, 2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2, 2],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": PATCH_SIZE,
        "median_image_size_in_voxels": [float(s) for s in shape_zyx],
        "spacing": [float(s) for s in spacing_zyx],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": architecture,
        "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset999_SegSHAPDemoSpleen",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [float(s) for s in spacing_zyx],
        "original_median_shape_after_transp": [int(s) for s in shape_zyx],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": intensity_properties,
    }


DATASET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "spleen": 1},
    "numTraining": 1,
    "file_ending": ".nii.gz",
    "name": "SegSHAP demo: spleen on the TotalSegmentator sample CT",
    "reference": "Sample CT from the TotalSegmentator repository (Apache-2.0), "
                 "TotalSegmentator dataset (Zenodo 10.5281/zenodo.6802613, CC BY 4.0)",
}


def random_patch(rng: np.random.Generator, data: np.ndarray, seg: np.ndarray, force_foreground: bool):
    """One (1, *PATCH_SIZE) image patch and its (1, *PATCH_SIZE) label patch; data/seg are (1, z, y, x)."""
    shape = np.array(data.shape[1:])
    size = np.array(PATCH_SIZE)
    if force_foreground:
        fg = np.argwhere(seg[0] > 0)
        centre = fg[rng.integers(len(fg))]
        start = np.clip(centre - size // 2, 0, shape - size)
    else:
        start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, size)])
    sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, size))
    x, y = data[(slice(None), *sl)], seg[(slice(None), *sl)]
    for axis in range(1, 4):
        if rng.random() < 0.5:
            x, y = np.flip(x, axis), np.flip(y, axis)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def train(network, data, seg, iterations: int, seed: int, batch_size: int = 2) -> None:
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    loss_fn = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                             weight_ce=1, weight_dice=1, ignore_label=None,
                             dice_class=MemoryEfficientSoftDiceLoss)
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimiser, total_iters=iterations, power=0.9)
    rng = np.random.default_rng(seed)
    network.train()
    started = time.time()
    for it in range(iterations):
        batch = [random_patch(rng, data, seg, force_foreground=(b == 0 and rng.random() < 0.66))
                 for b in range(batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.int64))
        optimiser.zero_grad()
        loss = loss_fn(network(x), y)
        loss.backward()
        optimiser.step()
        scheduler.step()
        if it % 100 == 0 or it == iterations - 1:
            print(f"iteration {it:5d}  loss {loss.item():+.4f}  {time.time() - started:6.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "SegSHAP" / "Resources" / "DemoModel")
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    ct_image = sitk.ReadImage(str(SAMPLE / "example_ct_sm.nii.gz"))
    ct = sitk.GetArrayFromImage(ct_image).astype(np.float32)                        # (z, y, x)
    spleen = (sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "example_ct_sm_totalseg.nii.gz")))
              == SPLEEN_LABEL).astype(np.int16)                                     # (z, y, x)
    spacing_zyx = list(ct_image.GetSpacing())[::-1]

    plans = make_plans(ct.shape, spacing_zyx, fingerprint_intensities(ct, spleen))
    plans_manager = PlansManager(plans)
    configuration = plans_manager.get_configuration("3d_fullres")
    data, seg, _ = DefaultPreprocessor(verbose=False).run_case_npy(
        ct[None], spleen[None], {"spacing": spacing_zyx}, plans_manager, configuration, DATASET_JSON)
    seg[seg < 0] = 0  # crop_to_nonzero marks outside-the-body as -1; nnU-Net's trainer maps it to background too
    print(f"preprocessed network input {data.shape} (c, z, y, x), spleen voxels {int((seg > 0).sum())}")

    network = nnUNetTrainer.build_network_architecture(plans_manager, configuration, 1, 2,
                                                       enable_deep_supervision=False)
    train(network, data, seg, args.iterations, args.seed)

    out = args.out
    (out / "fold_0").mkdir(parents=True, exist_ok=True)
    (out / "plans.json").write_text(json.dumps(plans, indent=2) + "\n")
    (out / "dataset.json").write_text(json.dumps(DATASET_JSON, indent=2) + "\n")
    checkpoint = {
        "network_weights": network.state_dict(),
        "trainer_name": "nnUNetTrainer",
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": DATASET_JSON,
                      "device": "cpu"},
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": 1,
        "_best_ema": None,
        "grad_scaler_state": None,
        "optimizer_state": None,
        "logging": {},
    }
    torch.save(checkpoint, out / "fold_0" / "checkpoint_final.pth")
    size_kb = (out / "fold_0" / "checkpoint_final.pth").stat().st_size / 1024
    print(f"wrote {out} (checkpoint {size_kb:.0f} KiB, "
          f"{sum(p.numel() for p in network.parameters())} parameters)")


if __name__ == "__main__":
    main()
