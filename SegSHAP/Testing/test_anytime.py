"""Anytime explanations on the real demo model (crops of the sample CT): one run answers every value function with
the forwards of one, a larger budget extends a smaller run, and ``--budget auto`` stops once converged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SegSHAPLib.cli.main import main
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.explain.run import run_explain
from SegSHAPLib.io.image_io import read_volume

from conftest import CROPPED_CASES, DEMO_MODEL

pytestmark = pytest.mark.slow


def _request(cropped_cases, out, case="liver_fp", **options) -> ExplainRequest:
    _, point, space = CROPPED_CASES[case]
    settings = dict(model=DEMO_MODEL, out=out, ct=cropped_cases / f"{case}_ct.nii.gz", target="spleen",
                    roi_point=tuple(float(v) for v in point.replace(",", " ").split()), point_space=space,
                    units="organs", organs=cropped_cases / f"{case}_organs.nii.gz", budget=24, batch_size=8)
    settings.update(options)
    return ExplainRequest(**settings)


def test_one_run_gives_every_value_with_the_forwards_of_one(cropped_cases, tmp_path):
    together = run_explain(_request(cropped_cases, tmp_path / "all", value="tp,dice,softdice"))
    summary = together.summary
    assert summary["value_functions"] == ["tp", "dice", "softdice"] == together.value_functions
    for value in ("tp", "dice", "softdice"):
        alone = run_explain(_request(cropped_cases, tmp_path / value, value=value))
        assert alone.summary["inference"]["patch_forwards"] == summary["inference"]["patch_forwards"] > 0
        mine = summary["by_value"][value]
        np.testing.assert_allclose([u["shap"] for u in mine["units"]], alone.phi, rtol=0, atol=1e-12)
        assert mine["base_value"] == pytest.approx(alone.phi0, abs=1e-12)
        assert mine["full_value"] == pytest.approx(alone.full_value, abs=1e-12)
        assert {"units", "base_value", "full_value", "solver"} <= set(mine)
        assert all("std_error" in u for u in mine["units"])
        written = read_volume(tmp_path / "all" / f"attribution_{value}.nii.gz").array
        np.testing.assert_array_equal(written, together.by_value[value].attribution.array)
    first = summary["by_value"]["tp"]
    assert summary["units"] == first["units"] and summary["base_value"] == first["base_value"]
    np.testing.assert_array_equal(read_volume(tmp_path / "all" / "attribution.nii.gz").array,
                                  read_volume(tmp_path / "all" / "attribution_tp.nii.gz").array)


    # segshap evaluate: the curves of every value function, each ranked by its own phi
    assert main(["evaluate", str(tmp_path / "all"), "--steps", "3"]) == 0
    faithfulness = json.loads((tmp_path / "all" / "faithfulness.json").read_text())
    assert faithfulness["value_functions"] == ["tp", "dice", "softdice"] and faithfulness["value"] == "tp"
    assert faithfulness["aopc"] == faithfulness["by_value"]["tp"]["aopc"]
    assert all((tmp_path / "all" / f"curves_{value}.png").is_file() for value in ("tp", "dice", "softdice"))
    # the report: one section per value function
    from SegSHAPLib.explain.folder import ExplanationFolder
    from SegSHAPLib.report.page import write_report

    page = write_report([ExplanationFolder(tmp_path / "all")], tmp_path / "report.html", "three values").read_text()
    assert all(f"units \u2013 {value} value" in page for value in ("tp", "dice", "softdice"))


def test_the_scene_carries_every_value_function(cropped_cases, tmp_path):
    slicer_results = pytest.importorskip("SegSHAPMRML.results")
    from SegSHAPMRML import scene_io

    run_explain(_request(cropped_cases, tmp_path / "out", value="softdice,tp", budget=8))
    loaded = slicer_results.load_output_dir(tmp_path / "out")
    assert loaded.value_functions == ["softdice", "tp"]
    written = slicer_results.write_scene_from_output(tmp_path / "out", tmp_path / "scene.mrb")
    nodes = slicer_results.find_run_nodes(scene_io.load_scene(written))
    assert "attribution" in nodes and "attribution_tp" in nodes and "attribution_softdice" not in nodes
    assert "softdice +1" in nodes["attribution"].GetName()


def test_all_leaves_out_fp_where_it_is_identically_zero(cropped_cases, tmp_path):
    result = run_explain(_request(cropped_cases, tmp_path / "component", score_region="component", budget=8))
    assert result.summary["value_functions"] == ["softdice", "tp", "dice"]
    assert result.summary["inputs"]["value"] == "all"


def test_a_larger_budget_evaluates_only_the_new_coalitions(cropped_cases, tmp_path):
    """Budgets 32 then 64 on the cropped case (13 organ units): the issue's 128 then 256 is the same mechanism at four
    times the network work, too slow for a test."""
    out = tmp_path / "grown"
    small = run_explain(_request(cropped_cases, out, budget=32))
    grown = run_explain(_request(cropped_cases, out, budget=64))
    fresh = run_explain(_request(cropped_cases, tmp_path / "fresh", budget=64))
    assert small.summary["solver"]["coalitions"] == 32 and grown.summary["solver"]["coalitions"] == 64
    assert grown.summary["solver"]["resumed_coalitions"] == 32
    lines = (out / "journal.tsv").read_text().count("\n")
    assert lines == 64                                          # 32 new coalitions journaled, none twice
    for value in grown.value_functions:
        np.testing.assert_array_equal(grown.by_value[value].phi, fresh.by_value[value].phi)


def test_budget_auto_stops_before_its_cap_and_says_why(cropped_cases, tmp_path, capsys):
    out = tmp_path / "auto"
    _, point, space = CROPPED_CASES["spleen"]
    argv = ["explain", "--ct", str(cropped_cases / "spleen_ct.nii.gz"), "--model", str(DEMO_MODEL),
            "--target", "spleen", "--roi-point", point, "--point-space", space, "--units", "organs",
            "--organs", str(cropped_cases / "spleen_organs.nii.gz"), "--value", "softdice",
            "--budget", "auto", "--cap", "120", "--tolerance", "0.05", "--batch-size", "8", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    solver = summary["solver"]
    assert solver["stop"] == "converged" and solver["budget_rule"] == "auto" and solver["tolerance"] == 0.05
    assert solver["coalitions"] < 120 and solver["diagnostics"]["converged"] is True
    printed = capsys.readouterr()
    assert "stop: converged" in printed.out
    assert "top=softdice: " in printed.err                        # the bar's postfix: the current top units


def test_progress_events_carry_the_live_estimate(cropped_cases, tmp_path):
    events = []
    result = run_explain(_request(cropped_cases, tmp_path / "live", value="dice,softdice", budget=24),
                         progress=events.append)
    live = [e.estimate for e in events if e.estimate is not None]
    assert len(live) >= 3 and [e["coalitions"] for e in live] == sorted(e["coalitions"] for e in live)
    json.dumps(live, allow_nan=False)
    assert list(live[-1]["values"]) == ["dice", "softdice"] and live[-1]["units"] == result.unit_names
    assert live[-1]["values"]["softdice"]["phi"] == [u["shap"] for u in result.summary["by_value"]["softdice"]["units"]]
