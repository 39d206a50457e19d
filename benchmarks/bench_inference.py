#!/usr/bin/env python
"""Patch forwards and time per coalition of the cached engine, per cache mode, measured in one run.

For each unit type (organs with the default grouping, fcc, hybrid) on the bundled sample CT and demo model, the
same KernelSHAP coalition plan (budget N, seed 0) is evaluated with the engine in each cache mode:
``memo`` (ours: per patch, keyed on the removed units inside it), ``baseline`` (reuse only patches with nothing
removed: the published cache) and ``none``. Printed per mode: patch forwards per coalition, hit rate, seconds
per coalition, and the forward ratio to ``none`` and to the naive cost (one full-volume nnU-Net prediction per
coalition = coalitions x patches in the full grid). Forwards are counted, so they are stable on a noisy machine;
seconds are not. Every mode gives bit-identical values (checked here too).

Run: .venv/bin/python benchmarks/bench_inference.py [--budget 48] [--roi fp|spleen] [--units organs fcc hybrid]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "SegSHAP" / "Resources" / "SampleData"
MODEL = REPO / "SegSHAP" / "Resources" / "DemoModel"
ROIS = {"fp": ((-7.0, 236.3, 139.3), "fp"), "spleen": ((-127.0, 134.3, 151.3), "softdice")}


def measure(predictor, prediction, units: str, roi: str, mode: str, budget: int, out: Path) -> dict:
    from SegSHAPLib.explain.request import ExplainRequest
    from SegSHAPLib.explain.case_inputs import CaseInputs
    from SegSHAPLib.explain.context import prepare_context
    from SegSHAPLib.shapley.kernelshap import kernel_shap

    point, value = ROIS[roi]
    request = ExplainRequest(model=MODEL, out=out, ct=SAMPLE / "example_ct_sm.nii.gz", target="1", roi_point=point,
                             units=units, organs=SAMPLE / "example_ct_sm_totalseg.nii.gz", grouping="default",
                             fcc_scale_mm=40.0, value=value, budget=budget, cache=mode)
    context = prepare_context(request, predictor=predictor, inputs=CaseInputs(prediction=prediction))
    counters = context.engine.counters
    before_forwards, before_hits, before_coalitions = (counters.patch_forwards, counters.patch_cache_hits,
                                                       counters.coalitions)
    started = time.perf_counter()
    result = kernel_shap(context.values, context.n_units, budget, seed=0, batch_size=8)
    seconds = time.perf_counter() - started
    forwards = counters.patch_forwards - before_forwards
    hits = counters.patch_cache_hits - before_hits
    coalitions = counters.coalitions - before_coalitions
    return {"units": units, "mode": mode, "M": context.n_units, "coalitions": coalitions,
            "support": counters.patches_in_support, "grid": counters.patches_full_grid, "forwards": forwards,
            "hit_rate": hits / max(hits + forwards, 1), "seconds": seconds, "phi": result.phi}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=48)
    parser.add_argument("--roi", choices=sorted(ROIS), default="fp")
    parser.add_argument("--units", nargs="+", default=["organs", "fcc", "hybrid"])
    args = parser.parse_args()

    import tempfile

    from SegSHAPLib.io.image_io import read_volume
    from SegSHAPLib.inference.model import load_predictor, predict_segmentation

    predictor = load_predictor(MODEL)
    prediction = predict_segmentation(predictor, read_volume(SAMPLE / "example_ct_sm.nii.gz"))
    header = (f"{'units':7} {'mode':8} {'M':>4} {'coal.':>5} {'support':>7} {'forwards':>8} {'fwd/coal':>8} "
              f"{'hit rate':>8} {'s/coal':>7} {'vs none':>8} {'vs naive':>8}")
    print(f"ROI: {args.roi}; budget {args.budget}; demo model, sample CT; forwards are counted, seconds measured")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for units in args.units:
            rows = [measure(predictor, prediction, units, args.roi, mode, args.budget, Path(tmp) / f"{units}_{mode}")
                    for mode in ("memo", "baseline", "none")]
            none = rows[-1]
            for row in rows:
                naive = row["coalitions"] * row["grid"]
                print(f"{row['units']:7} {row['mode']:8} {row['M']:>4} {row['coalitions']:>5} "
                      f"{row['support']:>4}/{row['grid']:<2} {row['forwards']:>8} "
                      f"{row['forwards'] / row['coalitions']:>8.2f} {100 * row['hit_rate']:>7.1f}% "
                      f"{row['seconds'] / row['coalitions']:>7.3f} {none['forwards'] / row['forwards']:>7.2f}x "
                      f"{naive / row['forwards']:>7.2f}x")
                if not np.array_equal(row["phi"], rows[0]["phi"]):
                    print(f"   !! phi of mode {row['mode']} differs from memo")


if __name__ == "__main__":
    main()
