"""Zoom: an organ-unit explanation refined into hybrid cells of chosen organs (units.zoom, explain.refine,
``segshap explain --refine``), on the cropped liver false-positive case with the demo model (small budgets)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import CROPPED_CASES, DEMO_MODEL, cropped_explain_args
from SegSHAPLib.cli.main import main
from SegSHAPLib.explain.context import prepare_context
from SegSHAPLib.explain.folder import ExplanationFolder
from SegSHAPLib.explain.journal import journal_entries
from SegSHAPLib.explain.refine import resolve_refinement
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.explain.run import run_explain
from SegSHAPLib.io.image_io import read_volume
from SegSHAPLib.report.page import write_report
from SegSHAPLib.shapley.kernelshap import kernel_shap_many
from SegSHAPLib.shapley.store import coalition_keys
from SegSHAPLib.units import fcc_units, hybrid_units, organ_class_names, organ_units
from SegSHAPLib.units.zoom import parent_unit_of, refine_units, refined_coalitions

pytestmark = pytest.mark.slow

PARENT_BUDGET = 32
SCALE_MM = "40"
ZOOM_SCALE_MM = "100"    # the exact parent's zoom: 4 cells of "liver and gallbladder", 10 units


def _case(cropped_cases):
    return cropped_cases / "liver_fp_ct.nii.gz", cropped_cases / "liver_fp_organs.nii.gz"


@pytest.fixture(scope="module")
def parent(cropped_cases, tmp_path_factory):
    """A finished organ-unit explanation of the cropped liver false positive, made by the CLI."""
    ct, organs = _case(cropped_cases)
    _, point, space = CROPPED_CASES["liver_fp"]
    out = tmp_path_factory.mktemp("zoom") / "parent"
    assert main(["explain", "--ct", str(ct), "--model", str(DEMO_MODEL), "--target", "spleen", "--roi-point", point,
                 "--point-space", space, "--units", "organs", "--organs", str(organs), "--value", "softdice",
                 "--fcc-scale-mm", SCALE_MM, "--budget", str(PARENT_BUDGET), "--batch-size", "8",
                 "--out", str(out)]) == 0
    return out


def _summary(folder) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_refined_units_partition_the_parent_units(cropped_cases):
    ct_path, organs_path = _case(cropped_cases)
    ct, organs = read_volume(ct_path), read_volume(organs_path)
    support = np.zeros(ct.shape_zyx, dtype=bool)
    support[:, 4:40, 2:30] = True
    names = organ_class_names(organs_path)
    parent = organ_units(organs.array, support, names)
    assert parent.n_units >= 2
    hybrid = hybrid_units(fcc_units(ct, support, 20.0, organ_labels_zyx=organs.array, class_names=names),
                          organs.array, names)
    sizes = parent.voxel_counts()
    refined = [int(np.argmax(sizes)) + 1]
    child = refine_units(parent, hybrid, refined)

    assert np.array_equal(child.labels > 0, parent.labels > 0)          # the same voxels, each in one unit
    parent_of = parent_unit_of(child, parent.labels)
    assert np.array_equal(parent.labels[child.labels > 0], parent_of[child.labels[child.labels > 0] - 1])
    pieces = [c + 1 for c in range(child.n_units) if parent_of[c] == refined[0]]
    assert len(pieces) >= 2 and all(" @ cell " in child.names[c - 1] for c in pieces)
    for j in range(1, parent.n_units + 1):
        if j not in refined:
            (c,) = np.flatnonzero(parent_of == j) + 1
            assert child.names[c - 1] == parent.names[j - 1]
            assert np.array_equal(child.labels == c, parent.labels == j)
    unrefined = refine_units(parent, hybrid, [])
    assert np.array_equal(unrefined.labels, parent.labels) and unrefined.names == parent.names
    keep = np.array([[True] * parent.n_units, [j + 1 in refined for j in range(parent.n_units)]])
    assert refined_coalitions(keep, parent_of)[1].sum() == len(pieces)


def test_zoom_reuses_the_parent_coalitions_with_their_values(parent, tmp_path):
    out = tmp_path / "zoom"
    assert main(["explain", "--refine", str(parent), "--refine-top", "1", "--budget", "24", "--out", str(out)]) == 0
    summary, parent_summary = _summary(out), _summary(parent)
    top = max(parent_summary["units"], key=lambda u: abs(u["shap"]))["name"]
    refine = summary["refine"]
    assert refine["organs"] == [top] and refine["parent"] == str(parent.resolve())
    assert refine["parent_units"] == len(parent_summary["units"])
    assert refine["parent_coalitions"] == parent_summary["solver"]["coalitions"]
    assert 2 <= refine["reused_coalitions"] == summary["solver"]["resumed_coalitions"]   # at least empty and full
    assert len(summary["units"]) > len(parent_summary["units"])
    assert summary["inputs"]["refine_organs"] == [top] and summary["inputs"]["value"] == "softdice"
    assert summary["inputs"]["budget"] == 24 and summary["inputs"]["fcc_scale_mm"] == float(SCALE_MM)  # given, kept
    assert summary["full_value"] == pytest.approx(parent_summary["full_value"], abs=1e-6)
    page = write_report([ExplanationFolder(out)], tmp_path / "report.html", "zoom").read_text()
    assert f"organs, zoom into {top} cells" in page

    # The seeded values are what the refined game computes: recompute a few parent coalitions on the child.
    request = resolve_refinement(ExplainRequest.from_json(summary["inputs"]))
    context = prepare_context(request)
    parent_entries = list(journal_entries(parent).items())[:6]
    n_parent = len(parent_summary["units"])
    keep = np.array([np.unpackbits(np.frombuffer(bytes.fromhex(k), np.uint8))[:n_parent] for k, _ in parent_entries],
                    dtype=bool)
    recomputed = np.asarray(context.values(refined_coalitions(keep, context.parent_unit_of)))   # (n, V)
    journaled = [[values[name] for name in context.value_names] for _, values in parent_entries]
    assert recomputed.reshape(len(journaled), -1).ravel().tolist() == pytest.approx(np.ravel(journaled).tolist(),
                                                                                    abs=1e-5)


def test_zoom_refining_nothing_is_the_parent_game(parent, tmp_path):
    request = ExplainRequest.from_json(_summary(parent)["inputs"])
    request.out, request.refine, request.refine_organs = tmp_path / "same", parent, []
    result = run_explain(request)
    parent_summary = _summary(parent)
    assert result.unit_names == [u["name"] for u in parent_summary["units"]]
    assert result.phi == pytest.approx([u["shap"] for u in parent_summary["units"]], abs=1e-12)
    assert result.summary["refine"]["reused_coalitions"] == result.summary["solver"]["coalitions"]


def _refuse(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_bad_refine_requests_are_refused_in_one_line(parent, tmp_path, capsys):
    out = str(tmp_path / "never")
    err = _refuse(["explain", "--refine", str(parent), "--refine-organs", "pancreas_x", "--out", out], capsys)
    assert "pancreas_x" in err and "not a unit" in err
    assert "exactly one" in _refuse(["explain", "--refine", str(parent), "--out", out], capsys)
    assert "missing" in _refuse(["explain", "--refine", str(tmp_path), "--refine-top", "1", "--out", out], capsys)
    assert "--refine-top" in _refuse(["explain", "--refine", str(parent), "--refine-top", "999", "--out", out],
                                     capsys)
    hybrid = tmp_path / "hybrid_parent"
    shutil.copytree(parent, hybrid)
    summary = _summary(hybrid)
    summary["inputs"]["units"] = "hybrid"
    (hybrid / "summary.json").write_text(json.dumps(summary))
    assert "--units organs" in _refuse(["explain", "--refine", str(hybrid), "--refine-top", "1", "--out", out],
                                       capsys)
    assert "--refine" in _refuse(["explain", "--refine-top", "1", "--out", out], capsys)
    assert not (tmp_path / "never").exists()


@pytest.fixture(scope="module")
def exact_parent(cropped_cases, tmp_path_factory):
    """The cropped liver false positive with organ units in the built-in systems grouping (7 units), enumerated
    exactly (128 coalitions): a parent whose game is known on every coalition."""
    out = tmp_path_factory.mktemp("zoom_exact") / "parent"
    assert main(["explain", *cropped_explain_args(cropped_cases, "liver_fp", out, "--grouping", "systems",
                                                  budget=128)]) == 0
    assert _summary(out)["solver"]["method"] == "exact"
    return out


def _journal_game(folder, value="softdice"):
    """The game of a folder's journal, value_fn for kernel_shap_many (every coalition asked must be journaled)."""
    entries = journal_entries(folder)
    return lambda keep: np.array([[entries[key.hex()][value]] for key in coalition_keys(keep)])


def test_a_zoom_of_an_exact_parent_uses_it_as_control_and_converges_where_sampling_alone_does_not(exact_parent,
                                                                                                   tmp_path, capsys):
    out = tmp_path / "zoom"
    zoom = ["explain", "--refine", str(exact_parent), "--refine-top", "1", "--fcc-scale-mm", ZOOM_SCALE_MM,
            "--budget", "64", "--out", str(out)]
    capsys.readouterr()
    assert main([*zoom, "--dry-run", "--patch-seconds", "0.01"]) == 0
    preview = json.loads(capsys.readouterr().out)
    assert main(zoom) == 0
    summary = _summary(out)
    # The preview counts the cell patterns and the smaller plan: the coalitions the run evaluates or reuses.
    assert preview["coalitions"] == summary["solver"]["coalitions"] + summary["refine"]["control"]["coalitions"]
    assert preview["upper_bound"] and preview["patch_forwards"]["memo"] >= summary["inference"]["patch_forwards"]
    control, solver = summary["refine"]["control"], summary["solver"]
    cells = [u for u in summary["units"] if " @ " in u["name"]]
    assert control == {"used": True, "refined_units": ["liver and gallbladder"],
                       "coalitions": 2 ** len(cells) - 2, "evaluated_coalitions": 2 ** len(cells) - 2}
    assert len(cells) >= 3 and solver["coalitions"] <= 64 - control["coalitions"]
    assert solver["diagnostics"]["estimator"]["control_variate"] is True
    phi = np.array([u["shap"] for u in summary["units"]])
    assert phi.sum() == pytest.approx(summary["full_value"] - summary["base_value"], abs=1e-9)

    # The plain estimate from the very same coalitions: an additive fit of the cells predicts nothing.
    plain, = kernel_shap_many(_journal_game(out), len(phi), solver["coalitions"], seed=0)
    with_control = solver["diagnostics"]
    assert with_control["heldout_r2"] > 0.9 > plain.diagnostics["heldout_r2"]
    assert max(with_control["phi_std_error"]) < 0.5 * max(plain.diagnostics["phi_std_error"])

    # A larger budget extends the run; the cell patterns are journaled, so nothing of them is recomputed.
    assert main(["explain", "--refine", str(exact_parent), "--refine-top", "1", "--fcc-scale-mm", ZOOM_SCALE_MM,
                 "--budget", "96", "--out", str(out)]) == 0
    again = _summary(out)
    assert again["refine"]["control"]["evaluated_coalitions"] == 0
    assert again["solver"]["resumed_coalitions"] >= solver["coalitions"]


def test_a_zoom_of_a_sampled_parent_goes_without_the_control_and_says_why(parent, tmp_path):
    out = tmp_path / "zoom"
    assert main(["explain", "--refine", str(parent), "--refine-top", "1", "--fcc-scale-mm", ZOOM_SCALE_MM,
                 "--budget", "24", "--out", str(out)]) == 0
    summary = _summary(out)
    assert _summary(parent)["solver"]["method"] == "kernelshap"
    assert summary["refine"]["control"] == {"used": False, "reason": summary["refine"]["control"]["reason"]}
    assert "sampled" in summary["refine"]["control"]["reason"]
    assert summary["solver"]["coalitions"] == 24
    assert summary["solver"]["diagnostics"]["estimator"]["control_variate"] is False
