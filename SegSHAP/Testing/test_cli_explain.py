"""`segshap explain` and `segshap evaluate` end to end on the sample CT with the demo model (small budgets)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import DEMO_MODEL, SAMPLE_CT, SAMPLE_ORGANS
from SegSHAPLib.cli.main import main
from SegSHAPLib.io.image_io import read_volume, write_volume

pytestmark = pytest.mark.slow

FP_POINT_RAS = "-7,236.3,139.3"      # inside the largest false-positive component (in the liver)
SPLEEN_POINT_RAS = "-127,134.3,151.3"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, demo_prediction):
    """The model's own prediction on disk, so each explain skips the full-volume prediction."""
    path = tmp_path_factory.mktemp("prediction") / "prediction.nii.gz"
    write_volume(demo_prediction, path)
    return path


def _argv(out, predicted, *extra, point=FP_POINT_RAS, value="fp", units="organs", budget="12"):
    return ["explain", "--ct", str(SAMPLE_CT), "--model", str(DEMO_MODEL), "--target", "spleen",
            "--roi-point", point, "--prediction", str(predicted), "--units", units,
            "--organs", str(SAMPLE_ORGANS), "--grouping", "default", "--fcc-scale-mm", "40",
            "--value", value, "--budget", budget, "--out", str(out), *extra]


def _explain(out, predicted, *extra, **options):
    return main(_argv(out, predicted, *extra, **options))


@pytest.mark.parametrize("units", ["organs", "fcc", "hybrid"])
def test_explain_then_evaluate_writes_the_contracted_outputs(tmp_path, predicted, units):
    out = tmp_path / units
    assert _explain(out, predicted, "--batch-size", "8", units=units) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("version", "inputs", "roi", "units", "base_value", "full_value", "solver", "inference",
                "timings_s"):
        assert key in summary
    assert summary["inputs"]["units"] == units and summary["inputs"]["value"] == "fp"
    phi = np.array([u["shap"] for u in summary["units"]])
    assert abs(phi.sum() - (summary["full_value"] - summary["base_value"])) < 1e-9
    assert summary["solver"]["coalitions"] <= 12
    inference = summary["inference"]
    assert 0 < inference["patches_in_support"] < inference["patches_full_grid"]
    assert inference["patch_forwards"] < inference["naive_patch_forwards"]
    attribution, unit_map = read_volume(out / "attribution.nii.gz"), read_volume(out / "units.nii.gz")
    assert attribution.same_grid(read_volume(SAMPLE_CT))
    for unit in summary["units"][:3]:
        voxels = unit_map.array == unit["id"]
        assert voxels.sum() == unit["voxels"]
        assert np.allclose(attribution.array[voxels], unit["shap"], atol=1e-6)
    assert read_volume(out / "roi.nii.gz").array.sum() == summary["roi"]["voxels"]

    assert main(["evaluate", str(out), "--steps", "4"]) == 0
    faith = json.loads((out / "faithfulness.json").read_text())
    assert len(faith["morf"]) == len(faith["lerf"]) == len(faith["random"]) == faith["steps"] + 1
    assert faith["morf"][0] == pytest.approx(summary["full_value"])
    assert faith["s_min"] == pytest.approx(summary["base_value"])
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("value, point", [("tp", SPLEEN_POINT_RAS), ("dice", SPLEEN_POINT_RAS),
                                          ("softdice", FP_POINT_RAS)])
def test_every_value_function_runs_and_verifies_against_nnunet(tmp_path, predicted, value, point):
    out = tmp_path / value
    assert _explain(out, predicted, "--verify", "1", point=point, value=value, budget="8") == 0
    summary = json.loads((out / "summary.json").read_text())
    verify = summary["inference"]["verify"]
    assert verify["coalitions"] == 2
    assert verify["max_abs_logit_diff"] == 0.0 and verify["argmax_mismatch_voxels"] == 0
    assert summary["full_value"] != summary["base_value"]


def test_rerun_resumes_from_the_journal_with_the_same_phi(tmp_path, predicted):
    out = tmp_path / "run"
    assert _explain(out, predicted, budget="16") == 0
    first = json.loads((out / "summary.json").read_text())
    journal = (out / "journal.tsv").read_text().splitlines()
    (out / "journal.tsv").write_text("\n".join(journal[: len(journal) // 2]) + "\n" + journal[-1][:5])  # torn tail
    assert _explain(out, predicted, budget="16") == 0
    second = json.loads((out / "summary.json").read_text())
    assert second["solver"]["resumed_coalitions"] == len(journal) // 2
    assert [u["shap"] for u in second["units"]] == [u["shap"] for u in first["units"]]


def test_a_killed_run_resumes_without_recomputing_journaled_coalitions(tmp_path, predicted):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "SegSHAPLib.cli.main", *_argv(out, predicted, budget="24")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "journal.tsv"
    deadline = time.monotonic() + 600
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if journal.is_file() and len(journal.read_text().splitlines()) >= 8:   # one solver batch done
                break
            time.sleep(0.2)
    finally:
        process.kill()
        process.wait()
    journaled = len(journal.read_text().splitlines())
    assert journaled >= 2 and not (out / "summary.json").exists()
    assert _explain(out, predicted, budget="24") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["solver"]["resumed_coalitions"] >= journaled - 1   # at most a torn last line is lost
