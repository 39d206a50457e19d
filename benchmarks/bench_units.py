"""Benchmark: SLIC against FCC units at the same mean unit volume, on the bundled sample CT and demo model.

For each ROI and scale S (FCC's --fcc-scale-mm = SLIC's --slic-size-mm, so that both aim at a mean unit volume
of S^3 / sqrt 2), over the ROI's receptive-field support B_RF:

- M: the number of units; mean volume: support voxels in units / M, in mL;
- adherence: the fraction of unit voxels that lie in their unit's majority label of the organ map (background
  counts as one label), voxel-weighted over all units; and the share of units with adherence >= 0.9;
- with --budget B (> 0): one explanation per unit type (softdice, seed 0, --removal constant) at the first scale,
  and the solver's mean and largest standard error of phi relative to |v(full) - v(empty)|, and the patch
  forwards it took.

From the repo root (about 10 min on the shared 2-core machine with the default budget):

    nice -n 10 .venv/bin/python benchmarks/bench_units.py [--scales 30 45 60] [--compactness 0.1] [--budget 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SegSHAP" / "Testing"))

from conftest import DEMO_MODEL, SAMPLE_CT, SAMPLE_ORGANS  # noqa: E402

ROIS = {"false-positive spleen in the liver": (-7.0, 236.3, 139.3), "spleen": (-127.0, 152.3, 142.3)}


def adherence(units: np.ndarray, organs: np.ndarray) -> tuple[float, float]:
    """(voxel-weighted fraction of unit voxels in their unit's majority label, share of units >= 0.9), for unit
    labels and an organ map (z, y, x) on the same grid."""
    inside = units > 0
    table = np.zeros((int(units.max()) + 1, int(organs.max()) + 1), dtype=np.int64)
    np.add.at(table, (units[inside], organs[inside]), 1)
    table = table[1:]
    per_unit = table.max(axis=1) / table.sum(axis=1)
    return float(table.max(axis=1).sum() / inside.sum()), float((per_unit >= 0.9).mean())


def unit_rows(request, scales: list[float]) -> list[dict]:
    from SegSHAPLib.explain.context import prepare_context
    from SegSHAPLib.io.image_io import read_volume

    organs = read_volume(SAMPLE_ORGANS).array
    rows = []
    for scale in scales:
        for units in ("fcc", "slic"):
            context = prepare_context(replace(request, units=units, fcc_scale_mm=scale, slic_size_mm=scale),
                                      with_baseline=False)
            labels = context.units.labels
            weighted, share = adherence(labels, organs)
            rows.append({"scale_mm": scale, "units": units, "M": context.n_units,
                         "mean_volume_ml": float((labels > 0).sum() * context.ct.voxel_volume_mm3() / 1000
                                                 / context.n_units),
                         "adherence": weighted, "units_over_0.9": share})
    return rows


def solver_rows(request, scale: float, budget: int, folder: Path) -> list[dict]:
    from SegSHAPLib.explain.run import run_explain

    rows = []
    for units in ("fcc", "slic"):
        result = run_explain(replace(request, units=units, fcc_scale_mm=scale, slic_size_mm=scale, budget=budget,
                                     value="softdice", out=folder / units))
        summary = result.summary
        spread = abs(summary["full_value"] - summary["base_value"])
        errors = np.array([u["std_error"] for u in summary["units"]], dtype=float)
        rows.append({"units": units, "M": len(summary["units"]), "budget": budget,
                     "coalitions": summary["solver"]["coalitions"], "method": summary["solver"]["method"],
                     "mean_se_rel": float(np.nanmean(errors) / spread), "max_se_rel": float(np.nanmax(errors) / spread),
                     "patch_forwards": summary["inference"]["patch_forwards"]})
    return rows


def main() -> None:
    from SegSHAPLib import options
    from SegSHAPLib.explain.request import ExplainRequest

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[30.0, 45.0, 60.0])
    parser.add_argument("--compactness", type=float, default=options.SLIC_COMPACTNESS)
    parser.add_argument("--budget", type=int, default=128, help="0 skips the explanations")
    parser.add_argument("--solver-scale", type=float, default=60.0, help="the scale of the explanations")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench_units_"))
    print(f"| ROI | S (mm) | units | M | mean volume (mL) | adherence | units >= 0.9 |\n|---|---|---|---|---|---|---|")
    requests = {}
    for name, point in ROIS.items():
        requests[name] = ExplainRequest(model=DEMO_MODEL, out=folder, ct=SAMPLE_CT, target="spleen", roi_point=point,
                                        organs=SAMPLE_ORGANS, slic_compactness=args.compactness, batch_size=8)
        for row in unit_rows(requests[name], args.scales):
            print(f"| {name} | {row['scale_mm']:g} | {row['units']} | {row['M']} | {row['mean_volume_ml']:.1f} | "
                  f"{row['adherence']:.3f} | {row['units_over_0.9']:.2f} |", flush=True)
    if args.budget > 0:
        name = next(iter(ROIS))
        print(f"\n{name}, S = {args.solver_scale:g} mm, softdice, budget {args.budget}:\n\n| units | M | "
              "coalitions | solver | mean SE / |v(full) - v(empty)| | max SE / ... | patch forwards |\n"
              "|---|---|---|---|---|---|---|")
        for row in solver_rows(requests[name], args.solver_scale, args.budget, folder):
            print(f"| {row['units']} | {row['M']} | {row['coalitions']} | {row['method']} | {row['mean_se_rel']:.4f} | "
                  f"{row['max_se_rel']:.4f} | {row['patch_forwards']} |", flush=True)
    (folder / "bench_units_args.json").write_text(json.dumps(vars(args), default=str))


if __name__ == "__main__":
    main()
