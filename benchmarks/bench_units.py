"""Benchmark: SLIC against FCC units at the same mean unit volume, on the bundled sample CT and demo model.

For each ROI and FCC scale S, over the ROI's receptive-field support B_RF: FCC units of scale S, and SLIC units
at the same mean unit volume. SLIC's --slic-size-mm S aims at S^3 / sqrt 2 (a whole FCC cell), which SLIC meets,
but FCC's cells cut by the support's border make FCC's mean smaller; so SLIC's size is matched to FCC's measured
mean volume (two secant steps on size^3 from S). Per unit map:

- M: the number of units; mean volume: support voxels in units / M, in mL;
- adherence: the fraction of unit voxels that lie in their unit's majority label of the organ map (background
  counts as one label), voxel-weighted over all units; and the share of units with adherence >= 0.9;
- with --budget B (> 0): one explanation per unit type (softdice, seed 0, --removal constant) at
  --solver-scale (SLIC matched as above), and the solver's mean and largest standard error of phi relative to |v(full) - v(empty)|, and the patch
  forwards it took.

From the repo root (43 min on the shared, loaded 2-core machine with the default budget; --budget 0: minutes):

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


def unit_map_row(request, units: str, size: float, organs: np.ndarray) -> dict:
    from SegSHAPLib.explain.context import prepare_context

    context = prepare_context(replace(request, units=units, fcc_scale_mm=size, slic_size_mm=size), with_baseline=False)
    labels = context.units.labels
    weighted, share = adherence(labels, organs)
    return {"size_mm": size, "units": units, "M": context.n_units, "adherence": weighted, "units_over_0.9": share,
            "mean_volume_ml": float((labels > 0).sum() * context.ct.voxel_volume_mm3() / 1000 / context.n_units)}


def matched_slic_size(request, fcc_row: dict, organs: np.ndarray) -> tuple[float, dict]:
    """(SLIC size, its row) whose mean unit volume matches the FCC row's: two secant steps on size^3."""
    size = fcc_row["size_mm"]
    row = unit_map_row(request, "slic", size, organs)
    for _ in range(2):
        size *= (fcc_row["mean_volume_ml"] / row["mean_volume_ml"]) ** (1 / 3)
        row = unit_map_row(request, "slic", round(size, 1), organs)
    return round(size, 1), row


def unit_rows(request, scales: list[float]) -> list[dict]:
    from SegSHAPLib.io.image_io import read_volume

    organs = read_volume(SAMPLE_ORGANS).array
    rows = []
    for scale in scales:
        fcc = unit_map_row(request, "fcc", scale, organs)
        rows += [fcc, matched_slic_size(request, fcc, organs)[1]]
    return rows


def solver_rows(request, scale: float, budget: int, folder: Path) -> list[dict]:
    from SegSHAPLib.explain.run import run_explain
    from SegSHAPLib.io.image_io import read_volume

    organs = read_volume(SAMPLE_ORGANS).array
    slic_size, _ = matched_slic_size(request, unit_map_row(request, "fcc", scale, organs), organs)
    rows = []
    for units, size in (("fcc", scale), ("slic", slic_size)):
        result = run_explain(replace(request, units=units, fcc_scale_mm=size, slic_size_mm=size, budget=budget,
                                     value="softdice", out=folder / units))
        summary = result.summary
        spread = abs(summary["full_value"] - summary["base_value"])
        errors = np.array([u["std_error"] for u in summary["units"]], dtype=float)
        rows.append({"units": units, "size_mm": size, "M": len(summary["units"]), "budget": budget,
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
    print("| ROI | units | size (mm) | M | mean volume (mL) | adherence | units >= 0.9 |\n|---|---|---|---|---|---|---|")
    requests = {}
    for name, point in ROIS.items():
        requests[name] = ExplainRequest(model=DEMO_MODEL, out=folder, ct=SAMPLE_CT, target="spleen", roi_point=point,
                                        organs=SAMPLE_ORGANS, slic_compactness=args.compactness, batch_size=8)
        for row in unit_rows(requests[name], args.scales):
            print(f"| {name} | {row['units']} | {row['size_mm']:g} | {row['M']} | {row['mean_volume_ml']:.1f} | "
                  f"{row['adherence']:.3f} | {row['units_over_0.9']:.2f} |", flush=True)
    if args.budget > 0:
        name = next(iter(ROIS))
        print(f"\n{name}, FCC S = {args.solver_scale:g} mm, softdice, budget {args.budget}:\n\n| units | size (mm) | "
              "M | coalitions | solver | mean SE / Δv | max SE / Δv | patch forwards |\n"
              "|---|---|---|---|---|---|---|---|")
        for row in solver_rows(requests[name], args.solver_scale, args.budget, folder):
            print(f"| {row['units']} | {row['size_mm']:g} | {row['M']} | {row['coalitions']} | {row['method']} | "
                  f"{row['mean_se_rel']:.4f} | "
                  f"{row['max_se_rel']:.4f} | {row['patch_forwards']} |", flush=True)
    (folder / "bench_units_args.json").write_text(json.dumps(vars(args), default=str))


if __name__ == "__main__":
    main()
