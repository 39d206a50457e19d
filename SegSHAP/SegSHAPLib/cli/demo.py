"""``segshap demo``: the whole job on the bundled CT and demo model, no arguments, ending in report.html.

It predicts the spleen with the demo nnU-Net model, clicks the largest false-positive component of the prediction
("false" judged against the bundled TotalSegmentator map) and asks, with the softdice value, which anatomy makes
the model call these voxels spleen, in two steps that keep the number of units small where it matters:

1. organ units with the built-in ``systems`` grouping (9 units around this component): 2^9 = 512 coalitions,
   exact Shapley values, affordable because each network patch holds few units and the patch memo computes
   each patch once per combination of its own units (3,760 patch forwards);
2. a zoom (``--refine``) into the top organ's hybrid cells (``DEMO_ZOOM_FCC_SCALE_MM``), every other organ
   staying one unit, with ``DEMO_ZOOM_BUDGET`` coalitions: the 2^6 - 2 patterns of the organ's 6 cells, which
   make the exact organ game a control variate (``explain.zoom_control``), then the sampled plan.

It evaluates their faithfulness (MoRF/LeRF) and writes a self-contained ``report.html`` that opens with each
explanation's verdict (``report.verdict``). (The fp value is not used here: it scores voxels that become *new*
false positives, so on a clicked component its full-coalition value is 0 by construction.)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from SegSHAPLib import options

RESOURCES = Path(__file__).resolve().parents[2] / "Resources"   # SegSHAP/Resources, next to SegSHAPLib
SAMPLE_CT = RESOURCES / "SampleData" / "example_ct_sm.nii.gz"
SAMPLE_ORGANS = RESOURCES / "SampleData" / "example_ct_sm_totalseg.nii.gz"
DEMO_MODEL = RESOURCES / "DemoModel"
SPLEEN, SPLEEN_NAME = 1, "spleen"   # the demo model's label (dataset.json), by value and by name
DEMO_EXPLANATIONS = (("false_positive", "organs"), ("false_positive", "zoom"))
DEMO_GROUPING = "systems"      # units.grouping.BUILTIN_GROUPINGS: 9 organ units around the false positive
DEMO_ZOOM_TOP = 1              # the zoom refines the false positive's organ of largest |phi| into hybrid cells
DEMO_ZOOM_FCC_SCALE_MM = 100.0  # of those cells: 6 pieces of "liver and gallbladder", 14 units in all
DEMO_VALUE = "softdice"
DEMO_BATCH = 8   # about 3x the CPU throughput of batch 1; logits then match nnU-Net to float16 rounding, not bit for bit


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="explain the bundled sample end to end and write report.html",
                                   description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--budget", type=int, default=options.DEMO_BUDGET,
                        help=f"coalitions of the organ-unit explanation (default {options.DEMO_BUDGET}: exact)")
    parser.add_argument("--zoom-budget", type=int, default=options.DEMO_ZOOM_BUDGET,
                        help=f"coalitions of the zoom into the top organ's cells (default {options.DEMO_ZOOM_BUDGET})")
    parser.set_defaults(run=run)


def click_points(prediction: np.ndarray, reference: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """(i, j, k) voxels to click: inside the predicted component that overlaps the reference spleen most, and
    inside the largest predicted component with no reference spleen voxel. Arrays are (z, y, x)."""
    components, n = ndimage.label(prediction == SPLEEN, structure=np.ones((3, 3, 3)))
    sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, n + 1))
    true_voxels = ndimage.sum_labels(reference == SPLEEN, components, index=np.arange(1, n + 1))
    spleen = int(np.argmax(true_voxels)) + 1
    false = [c + 1 for c in range(n) if true_voxels[c] == 0]
    if not false:
        raise RuntimeError("the demo model's prediction has no false-positive component")
    false_positive = max(false, key=lambda c: sizes[c - 1])

    def inner_voxel(label: int) -> tuple[int, int, int]:
        depth = ndimage.distance_transform_edt(components == label)
        z, y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        return int(x), int(y), int(z)

    return {"spleen": inner_voxel(spleen), "false_positive": inner_voxel(false_positive)}


def organ_request(out: Path, point_ijk: tuple[int, int, int], prediction: Path, budget: int):
    """The demo's organ-unit explanation of the component at ``point_ijk`` (i, j, k) of ``prediction``."""
    from SegSHAPLib.explain.request import ExplainRequest

    return ExplainRequest(model=DEMO_MODEL, out=out, ct=SAMPLE_CT, target=SPLEEN_NAME, roi_point=point_ijk,
                          point_space="ijk", prediction=prediction, units="organs", organs=SAMPLE_ORGANS,
                          grouping=DEMO_GROUPING, value=DEMO_VALUE, budget=budget, seed=0, batch_size=DEMO_BATCH)


def zoom_request(parent, out: Path, budget: int):
    """The demo's zoom of the finished organ explanation ``parent`` (its request) into its top organ's cells."""
    return replace(parent, out=out, refine=parent.out, refine_top=DEMO_ZOOM_TOP,
                   fcc_scale_mm=DEMO_ZOOM_FCC_SCALE_MM, budget=budget)


def write_demo_report(out: Path, folders: list[Path], wall_s: float) -> Path:
    """``out``/report.html of the demo's explanation folders (checked first: the report shows only folders whose
    parts belong together), with the demo's wall time in its header."""
    from SegSHAPLib.explain.folder import ExplanationFolder
    from SegSHAPLib.explain.output_check import check_output_folder
    from SegSHAPLib.report.page import write_report

    for folder in folders:
        check_output_folder(folder)
    return write_report([ExplanationFolder(folder) for folder in folders], out / "report.html",
                        "SegSHAP demo: why did the model call these voxels spleen?",
                        extra={"wall time (s)": round(wall_s, 1)})


def run(args: argparse.Namespace) -> int:
    from SegSHAPLib.explain.run import run_explain
    from SegSHAPLib.explain.case_inputs import CaseInputs
    from SegSHAPLib.explain.faithfulness import evaluate_output
    from SegSHAPLib.io.image_io import read_volume, write_volume
    from SegSHAPLib.inference.model import load_predictor, predict_segmentation
    from SegSHAPLib.cli.explain import TqdmProgress, print_verdict

    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ct, organs = read_volume(SAMPLE_CT), read_volume(SAMPLE_ORGANS)
    print("segshap demo: predicting the spleen with the demo nnU-Net model")
    prediction = predict_segmentation(load_predictor(DEMO_MODEL), ct)
    write_volume(prediction, out / "prediction.nii.gz")
    points = click_points(prediction.array, organs.array)
    folders, organ_requests = [], {}
    for roi_name, units in DEMO_EXPLANATIONS:
        kind = f"zoom_{DEMO_ZOOM_FCC_SCALE_MM:g}mm" if units == "zoom" else f"{units}_{DEMO_GROUPING}"
        folder = out / f"{roi_name}__{kind}__{DEMO_VALUE}"       # named by their settings: never an older demo's
        what = (f"a zoom into its top organ's hybrid cells ({DEMO_ZOOM_FCC_SCALE_MM:g} mm)"
                if units == "zoom" else f"{units} units ({DEMO_GROUPING} grouping)")
        print(f"segshap demo: explaining the {roi_name.replace('_', ' ')} component at ijk {points[roi_name]} "
              f"with {what} and the {DEMO_VALUE} value")
        if units == "zoom":
            request = zoom_request(organ_requests[roi_name], folder, args.zoom_budget)
        else:
            request = organ_request(folder, points[roi_name], out / "prediction.nii.gz", args.budget)
            organ_requests[roi_name] = request
        progress = TqdmProgress()
        try:
            result = run_explain(request, inputs=CaseInputs(ct=ct, organs=organs, prediction=prediction),
                                 progress=progress)
        finally:
            progress.close()
        print_verdict(result.summary)
        evaluate_output(folder, steps=options.FAITHFULNESS_STEPS)
        folders.append(folder)
    wall = time.perf_counter() - started
    report = write_demo_report(out, folders, wall)
    (out / "demo.json").write_text(json.dumps({"wall_time_s": round(wall, 1), "clicked_ijk": points,
                                               "explanations": [str(f) for f in folders]}, indent=2) + "\n")
    print(f"segshap demo: done in {wall:.0f} s -> {report}")
    return 0
