#!/usr/bin/env python
"""Per zoo model (SegSHAP/Testing/model_zoo.py): support vs full grid, patch forwards vs naive, and --verify.

Builds the zoo into a temporary folder, crops the sample CT as conftest's "spleen" case (16 x 48 x 64 voxels),
and runs, for each explainable model, the same command the zoo test runs:

    segshap explain --ct CROP --model ZOO/<name> --target spleen|liver --roi-mask MASK --units fcc
        --fcc-scale-mm 24 --value softdice --budget B --verify 2 --batch-size 1 [--tta] [--checkpoint ...]

Printed per model: patches in support / full grid, folds, coalitions, patch forwards, naive forwards (one
nnU-Net prediction per coalition), their ratio, and the verify figures (max |logit diff|, argmax mismatches).
Forwards are counted, so they are stable on a noisy machine.

Run: .venv/bin/python benchmarks/bench_model_zoo.py [--budget 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTING = REPO / "SegSHAP" / "Testing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(TESTING))
    import nibabel
    import numpy as np

    from conftest import CROPPED_CASES, SAMPLE_CT
    from model_zoo import build_zoo
    from test_model_zoo import EXPLAINABLE, OPTIONS, TARGET
    from SegSHAPLib.cli.main import main as segshap
    from SegSHAPLib.io.image_io import read_volume, write_volume

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        zoo = build_zoo(tmp / "zoo")
        crop = nibabel.load(str(SAMPLE_CT)).slicer[CROPPED_CASES["spleen"][0]]
        nibabel.save(crop, str(tmp / "ct.nii.gz"))
        ct = read_volume(tmp / "ct.nii.gz")
        mask = np.zeros(ct.shape_zyx, dtype=np.uint8)             # the zoo test's ROI mask, (z, y, x)
        mask[5:11, 18:30, 26:38] = 1
        write_volume(ct.with_array(mask), tmp / "mask.nii.gz")
        print(f"{'model':22s} {'support/grid':>13s} {'folds':>5s} {'coal.':>5s} {'forwards':>8s} {'naive':>7s} "
              f"{'ratio':>6s} {'max|dlogit|':>11s} {'argmax diff':>11s}")
        for name in EXPLAINABLE:
            out = tmp / name
            code = segshap(["explain", "--ct", str(tmp / "ct.nii.gz"), "--model", str(zoo[name]),
                            "--target", TARGET.get(name, "spleen"), "--roi-mask", str(tmp / "mask.nii.gz"),
                            "--units", "fcc", "--fcc-scale-mm", "24", "--value", "softdice",
                            "--budget", str(args.budget), "--verify", "2", "--batch-size", "1",
                            "--out", str(out)] + OPTIONS.get(name, []))
            if code != 0:
                print(f"{name:22s} exit {code}")
                continue
            inference = json.loads((out / "summary.json").read_text())["inference"]
            verify = inference["verify"]
            coalitions = json.loads((out / "summary.json").read_text())["solver"]["coalitions"]
            print(f"{name:22s} {inference['patches_in_support']:>5d}/{inference['patches_full_grid']:<7d} "
                  f"{inference['folds']:>5d} {coalitions:>5d} {inference['patch_forwards']:>8d} "
                  f"{inference['naive_patch_forwards']:>7d} "
                  f"{inference['naive_patch_forwards'] / max(inference['patch_forwards'], 1):>6.1f} "
                  f"{verify['max_abs_logit_diff']:>11g} {verify['argmax_mismatch_voxels']:>11d}")


if __name__ == "__main__":
    main()
