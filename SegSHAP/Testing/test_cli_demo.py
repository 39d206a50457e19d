"""``segshap demo`` finds the bundled sample CT, organ map and demo model wherever its module lives, and its first
step is an exact organ explanation at the cost the patch memo counts.

(The whole demo takes about a minute and a half idle, so CI checks its inputs and its plan here, counted but not run; the demo
itself is `make demo`.)
"""

from __future__ import annotations

from conftest import DEMO_MODEL, SAMPLE_CT, SAMPLE_ORGANS


def test_demo_inputs_are_the_bundled_resources():
    from SegSHAPLib.cli import demo

    assert demo.SAMPLE_CT.resolve() == SAMPLE_CT and demo.SAMPLE_CT.is_file()
    assert demo.SAMPLE_ORGANS.resolve() == SAMPLE_ORGANS and demo.SAMPLE_ORGANS.is_file()
    assert demo.DEMO_MODEL.resolve() == DEMO_MODEL and (demo.DEMO_MODEL / "plans.json").is_file()


def test_demo_organ_explanation_is_exact_and_costs_what_the_memo_counts(demo_prediction, sample_ct, sample_organs,
                                                                          tmp_path):
    """The demo's first step is exact (2^M <= its budget) at the cost the patch memo gives an exact enumeration:
    each support patch once per combination of the units inside it (sum over patches of 2^units), counted on
    the run's own plan by explain.cost (no coalition is run); its zoom refines the top organ only."""
    import numpy as np

    from SegSHAPLib import options
    from SegSHAPLib.cli import demo
    from SegSHAPLib.explain.case_inputs import CaseInputs
    from SegSHAPLib.explain.context import prepare_context
    from SegSHAPLib.explain.cost import cost_preview
    from SegSHAPLib.io.image_io import write_volume

    prediction = write_volume(demo_prediction, tmp_path / "prediction.nii.gz")
    point = demo.click_points(demo_prediction.array, sample_organs.array)["false_positive"]
    request = demo.organ_request(tmp_path / "organs", point, prediction, options.DEMO_BUDGET)
    inputs = CaseInputs(ct=sample_ct, organs=sample_organs, prediction=demo_prediction)
    preview = cost_preview(request, inputs=inputs)
    assert preview.method == "exact" and preview.coalitions == 1 << preview.n_units == options.DEMO_BUDGET
    engine = prepare_context(request, inputs=inputs, with_baseline=False).engine
    per_patch = [len(patch.units) for patch in engine.support]
    memo = preview.patch_forwards["memo"]
    assert memo == sum(2 ** n for n in per_patch) < preview.coalitions * len(per_patch)
    print(f"\ndemo organs: M = {preview.n_units}, units per support patch {per_patch}, exact enumeration "
          f"{memo} patch forwards (without the memo {preview.coalitions * len(per_patch)})")
    zoom = demo.zoom_request(request, tmp_path / "zoom", options.DEMO_ZOOM_BUDGET)
    assert zoom.refine == request.out and zoom.refine_top == 1 and zoom.budget == options.DEMO_ZOOM_BUDGET
    assert np.isclose(zoom.fcc_scale_mm, demo.DEMO_ZOOM_FCC_SCALE_MM)
