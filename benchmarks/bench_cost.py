#!/usr/bin/env python
"""Cost at the published scale, counted (no network forward): patch forwards and hit rate per cache mode.

The published study runs TotalSegmentator-like nnU-Net models (about 1.5 mm, patch about 128^3, step 0.5) at
n = 1000 coalitions for organ units and 2000 for FCC and hybrid units, and reports cache hit rates of 32.4%
(organs), 15.0% (FCC) and 30.2% (hybrid). This benchmark builds such a model (SegSHAP/Testing/model_zoo.py
``published_scale_model``: 1.5 mm, patch 128^3, TotalSegmentator's 117 classes, random weights: the counts do
not depend on them), lets nnU-Net's own preprocessing resample the sample CT to 1.5 mm (the larger grid) and
nnU-Net's own slicers (``compute_steps_for_sliding_window``, step 0.5) lay the patches, and for each ROI and unit
type asks ``explain.cost.cost_preview`` (the code behind ``segshap explain --dry-run``) for the forwards of the
solver's own plan in every cache mode. The "prediction" the ROIs come from is the sample's TotalSegmentator map.
Three more configurations per ROI measure where the memo is weak: organs in the built-in default groups, organs
in 9 body systems (2^9 <= 1000, so the plan is exact enumeration and memo forwards reach sum_p 2^|U_p|), and FCC
cells as wide as nnU-Net's patch step (96 mm = 64 voxels).

Columns: ROI; units; M; n (coalitions); support / full-grid patches; |U_p| (units per support patch, mean and
max); forwards and hit rate for memo (ours), baseline (the published cache) and none; memo/baseline forward
ratio; naive forwards (one full prediction per coalition); the share of the naive forwards memo and baseline
save (the published pipeline predicts the full grid, so this is the figure its hit rate compares with); the
published hit rate of that unit type; the memo's bytes at the end (1 GiB bound: above it, it evicts and memo costs more than counted); the counting seconds
(plan + count on the prepared case, i.e. what --dry-run adds once the case is prepared).

Run: .venv/bin/python benchmarks/bench_cost.py [--fcc-scale-mm 30] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTING = REPO / "SegSHAP" / "Testing"
PUBLISHED_HIT_RATE = {"organs": 0.324, "fcc": 0.150, "hybrid": 0.302}
BUDGETS = {"organs": 1000, "fcc": 2000, "hybrid": 2000}
# Where the memo is weak (item 3 of issue 16): fewer units per patch. The sample's 41 structures in 9 systems,
# so that 2^M <= 1000 and the plan enumerates every coalition (memo forwards then reach sum_p 2^|U_p|).
SYSTEMS = {"liver": ["liver"], "spleen": ["spleen"], "kidneys": ["kidney_*"],
           "digestive": ["stomach", "pancreas", "small_bowel", "duodenum", "colon", "gallbladder", "esophagus"],
           "vessels": ["aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_*"],
           "bones": ["vertebrae_*", "rib_*", "costal_cartilages", "sternum", "sacrum", "spinal_cord"],
           "lungs": ["lung_*", "heart", "trachea"], "muscles": ["autochthon_*", "iliopsoas_*", "gluteus_*"],
           "glands": ["adrenal_gland_*"]}
# (row label, unit type, budget, other request fields); {systems} is replaced by the SYSTEMS grouping file.
CONFIGURATIONS = [(units, units, budget, {}) for units, budget in BUDGETS.items()] + [
    ("organs, default groups", "organs", 1000, {"grouping": "default"}),
    ("organs, 9 systems", "organs", 1000, {"grouping": "{systems}"}),
    ("fcc 96 mm (= patch step)", "fcc", 2000, {"fcc_scale_mm": 96.0}),
]
ROIS = ("adrenal_gland_right", "spleen", "liver")      # a small component, an organ, the largest organ


def roi_points(organs) -> dict[str, tuple[int, int, int]]:
    """ROI name -> an (i, j, k) voxel deep inside that label's largest component of the organ map
    (Volume, z, y, x): the maximum of its distance transform."""
    import numpy as np
    from scipy import ndimage

    from SegSHAPLib.units.organs import organ_class_names

    ids = {name: label for label, name in organ_class_names(TESTING.parent / "Resources" / "SampleData"
                                                               / "example_ct_sm_totalseg.nii.gz").items()}
    points = {}
    for name in ROIS:
        components, count = ndimage.label(organs.array == ids[name])
        largest = 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
        depth = ndimage.distance_transform_edt(components == largest)
        z, y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        points[name] = (int(x), int(y), int(z))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fcc-scale-mm", type=float, default=None, help="FCC cell spacing (default: options')")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    sys.path.insert(0, str(TESTING))
    from conftest import SAMPLE_CT, SAMPLE_ORGANS
    from model_zoo import published_scale_model

    from SegSHAPLib import options
    from SegSHAPLib.explain.cost import cost_preview
    from SegSHAPLib.explain.request import ExplainRequest
    from SegSHAPLib.io.image_io import read_volume
    from SegSHAPLib.units.organs import organ_class_names

    fcc_scale = args.fcc_scale_mm or options.FCC_SCALE_MM
    organs = read_volume(SAMPLE_ORGANS)
    points = roi_points(organs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_cost_") as tmp:
        model = published_scale_model(Path(tmp) / "model", organ_class_names(SAMPLE_ORGANS))
        systems = Path(tmp) / "systems.json"
        systems.write_text(json.dumps(SYSTEMS))
        for roi, point in points.items():
            for label, units, budget, changes in CONFIGURATIONS:
                changes = {key: str(systems) if value == "{systems}" else value for key, value in changes.items()}
                fields = dict(model=model, out=Path(tmp) / "never_written", ct=SAMPLE_CT, target=roi,
                              roi_point=point, point_space="ijk", prediction=SAMPLE_ORGANS, units=units,
                              organs=SAMPLE_ORGANS, fcc_scale_mm=fcc_scale, value="softdice", budget=budget,
                              case_cache=str(Path(tmp) / "cache"))
                request = ExplainRequest(**{**fields, **changes})
                cost_preview(request, seconds_per_forward=1.0)          # prepares the case (cached from then on)
                started = time.perf_counter()
                preview = cost_preview(request, seconds_per_forward=1.0)
                seconds = time.perf_counter() - started
                rows.append({"roi": roi, "configuration": label, "units": units, "count_seconds": round(seconds, 2), **preview.as_dict()})
                print_row(rows[-1], header=len(rows) == 1)
    print(f"\nmodel: 1.5 mm, patch 128^3, step 0.5, 117 classes; sample CT resampled by nnU-Net to 1.5 mm; "
          f"FCC {fcc_scale:g} mm; hit rate = share of patch look-ups answered without a forward")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


def print_row(row: dict, header: bool) -> None:
    if header:
        print("| ROI | units | M | n | support/grid | \\|U_p\\| mean/max | memo fwd (hit) | baseline fwd (hit) | none fwd "
              "| memo/baseline | naive | saved vs naive: memo / baseline | published hit | memo GiB | count s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    f, h = row["patch_forwards"], row["hit_rate"]
    sizes = row["units_per_patch"]
    naive = row["naive_patch_forwards"]
    print(f"| {row['roi']} | {row['configuration']} | {row['n_units']} | {row['coalitions']} | "
          f"{row['patches_in_support']}/{row['patches_full_grid']} | {sum(sizes) / len(sizes):.1f}/{max(sizes)} | "
          f"{f['memo']:,} ({100 * h['memo']:.1f}%) | {f['baseline']:,} ({100 * h['baseline']:.1f}%) | "
          f"{f['none']:,} | {f['memo'] / f['baseline']:.3f} | {naive:,} | {100 * (1 - f['memo'] / naive):.1f}% / "
          f"{100 * (1 - f['baseline'] / naive):.1f}% | {100 * PUBLISHED_HIT_RATE[row['units']]:.1f}% | "
          f"{row['memo_peak_bytes'] / 2 ** 30:,.1f} | {row['count_seconds']} |", flush=True)


if __name__ == "__main__":
    main()
