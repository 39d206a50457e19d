"""Benchmark: a larger budget extends a run (nested plans), counted on the demo model.

`segshap explain` of the tests' cropped false-positive case ("liver_fp" in SegSHAP/Testing/conftest.py, organ
units, every value function) with budget 128, then the same command with budget 256 on the same --out, then a
fresh budget-256 run. Prints the coalitions and patch forwards of each run, the journal's size and the largest
difference between the grown and the fresh phi per value function. From the repo root (about 20 min on the
shared 2-core machine):

    .venv/bin/python benchmarks/bench_anytime.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SegSHAP" / "Testing"))

from conftest import CROPPED_CASES, DEMO_MODEL, SAMPLE_CT, SAMPLE_ORGANS  # noqa: E402


def explain(folder: Path, out: Path, budget: int) -> dict:
    """Run `segshap explain` on the cropped case in `folder`; its summary.json."""
    from SegSHAPLib.cli.main import main

    _, point, space = CROPPED_CASES["liver_fp"]
    argv = ["explain", "--ct", str(folder / "ct.nii.gz"), "--model", str(DEMO_MODEL), "--target", "spleen",
            "--roi-point", point.replace(" ", ","), "--point-space", space, "--units", "organs",
            "--organs", str(folder / "organs.nii.gz"), "--budget", str(budget), "--batch-size", "8",
            "--out", str(out)]
    if main(argv) != 0:
        raise SystemExit(f"segshap explain failed for {out}")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    import nibabel

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench_anytime_"))
    folder.mkdir(parents=True, exist_ok=True)
    crop = CROPPED_CASES["liver_fp"][0]
    nibabel.save(nibabel.load(str(SAMPLE_CT)).slicer[crop], str(folder / "ct.nii.gz"))
    nibabel.save(nibabel.load(str(SAMPLE_ORGANS)).slicer[crop], str(folder / "organs.nii.gz"))
    small = explain(folder, folder / "grown", 128)
    grown = explain(folder, folder / "grown", 256)
    fresh = explain(folder, folder / "fresh", 256)
    lines = (folder / "grown" / "journal.tsv").read_text().count("\n")
    print(f"M = {len(grown['units'])} organ units, value functions {', '.join(grown['value_functions'])}")
    print(f"budget 128:        {small['solver']['coalitions']} coalitions, "
          f"{small['inference']['patch_forwards']} patch forwards")
    print(f"then budget 256:   {grown['solver']['coalitions']} coalitions, {grown['solver']['resumed_coalitions']} "
          f"from the journal, {lines} journal lines, {grown['inference']['patch_forwards']} patch forwards")
    print(f"fresh budget 256:  {fresh['solver']['coalitions']} coalitions, "
          f"{fresh['inference']['patch_forwards']} patch forwards")
    for value in grown["value_functions"]:
        difference = np.abs(np.array([u["shap"] for u in grown["by_value"][value]["units"]])
                            - np.array([u["shap"] for u in fresh["by_value"][value]["units"]])).max()
        print(f"{value:9s} max |phi(128 then 256) - phi(fresh 256)| = {difference:.3g}")


if __name__ == "__main__":
    main()
