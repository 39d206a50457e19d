"""``segshap predict``: the model's own nnU-Net segmentation of a CT, written with the CT's geometry."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from SegSHAPLib import options
from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import read_volume, write_volume


def add_model_arguments(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    """Arguments shared by every subcommand that runs the model (predict, explain). ``optional``: nothing is
    required and nothing has a default (None = not given; ``segshap explain --refine`` takes it from the parent)."""
    def default(value):
        return None if optional else value

    parser.add_argument("--ct", required=not optional, type=Path,
                        help="CT image (NIfTI, NRRD or a DICOM series folder)")
    parser.add_argument("--model", required=not optional, type=Path, help="nnU-Net v2 trained-model folder")
    parser.add_argument("--fold", action="append", default=None,
                        help="fold to use (repeatable; default: every fold_X with the checkpoint)")
    parser.add_argument("--checkpoint", default=default(options.CHECKPOINT),
                        help=f"checkpoint file in each fold_X, as nnU-Net's -chk (default {options.CHECKPOINT}; "
                             "checkpoint_best.pth for an early-stopped training)")
    parser.add_argument("--device", default=default(options.DEVICE),
                        help=f"cpu, cuda, cuda:N or auto (default {options.DEVICE})")
    parser.add_argument("--tile-step", type=float, default=default(options.TILE_STEP),
                        help=f"nnU-Net sliding-window step (default {options.TILE_STEP})")
    parser.add_argument("--tta", action="store_true", default=default(False),
                        help="mirroring test-time augmentation as nnU-Net's default prediction (8x slower)")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="write the nnU-Net model's own segmentation of a CT",
        description="Run nnU-Net's own preprocessing, sliding-window prediction and export on one CT. Mirroring "
                    "is off unless --tta, the same setting `segshap explain` uses for its baseline, so the "
                    "components you click are exactly the ones explained.")
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="output label image (.nii.gz or .nrrd)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from SegSHAPLib.inference.model import load_predictor, predict_segmentation

    if not str(args.out).lower().endswith((".nii", ".nii.gz", ".nrrd", ".mha")):
        raise InputError(f"--out {args.out}: give a .nii.gz, .nii, .nrrd or .mha file name")
    ct = read_volume(args.ct)
    predictor = load_predictor(args.model, args.fold, args.device, args.tile_step, use_mirroring=args.tta,
                               checkpoint=args.checkpoint)
    started = time.perf_counter()
    seg = predict_segmentation(predictor, ct)
    try:
        write_volume(seg, args.out)
    except (OSError, RuntimeError) as err:
        raise InputError(f"cannot write {args.out}: {err}") from None
    labels = {int(v): int((seg.array == v).sum()) for v in sorted(set(seg.array.ravel().tolist())) if v}
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s; voxels per label: {labels}")
    return 0
