"""The HTML report and its figures.

The explanation folder here is synthetic (a small volume, made-up phi, hand-written summary.json and
faithfulness.json): the report only renders the files an explain run leaves behind, so nothing in these tests
needs the model, and synthetic content lets the tests know exactly which colour and which number must appear.
"""

from __future__ import annotations

import base64
import io
import json
import re
from html import escape

import matplotlib.image
import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import Normalize

from SegSHAPLib import __version__
from SegSHAPLib.io.image_io import Volume, write_volume
from SegSHAPLib.explain.folder import ExplanationFolder
from SegSHAPLib.report.page import write_report
from SegSHAPLib.report.figures import (CT_WINDOW_HU, NEGATIVE_COLOUR, OVERLAY_ALPHA, OVERLAY_CMAP, POSITIVE_COLOUR,
                                       VIEWS, Reorientation, curves_figure, ranked_bar_chart, slice_panel,
                                       view_slice)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPE_ZYX = (12, 20, 24)
CT_HU = 40.0                                   # mid-window: a known grey
RAS_IDENTITY_LPS = np.diag([-1.0, -1.0, 1.0])  # i -> patient's right, j -> anterior, k -> superior
UNITS = [  # listed out of |phi| order on purpose; where each unit lies: see _maps
    {"id": 3, "name": "kidney_left", "shap": 0.05},
    {"id": 1, "name": "spleen", "shap": 1.0},
    {"id": 2, "name": "colon <sigmoid> & rectum", "shap": -0.25},
]
SUMMARY_COST = {"patch_forwards": 1234, "naive_patch_forwards": 98765, "patch_cache_hits": 4321, "coalitions": 6}
FAITHFULNESS = {"steps": 3, "fraction_removed": [0.0, 1 / 3, 2 / 3, 1.0], "morf": [0.0, -0.9, -1.1, -1.2],
                "lerf": [0.0, -0.02, -0.3, -1.2], "random": [0.0, -0.4, -0.8, -1.2], "s0": 0.0, "s_min": -1.2,
                "aopc": 0.7333, "abpc": 0.6267, "naopc": 0.6111, "nabpc": 0.5222}


def _volume(array: np.ndarray) -> Volume:
    return Volume(array, (3.0, 2.0, 2.5), (10.0, -20.0, 5.0), RAS_IDENTITY_LPS.copy())


def _maps() -> dict[str, np.ndarray]:
    """CT, units, attribution, ROI and prediction (z, y, x): unit 1 at x < 8, unit 2 at 8 <= x < 16,
    unit 3 a thin slab at z < 2, x >= 16; no unit elsewhere (phi = 0 there)."""
    units = np.zeros(SHAPE_ZYX, np.int32)
    units[:, :, :8] = 1
    units[:, :, 8:16] = 2
    units[:2, :, 16:] = 3
    lookup = np.zeros(len(UNITS) + 1, np.float32)
    for unit in UNITS:
        lookup[unit["id"]] = unit["shap"]
    roi = np.zeros(SHAPE_ZYX, np.uint8)
    roi[4:8, 8:12, 10:14] = 1
    prediction = roi.astype(np.uint8).copy()
    prediction[9:11, 2:5, 18:21] = 1
    return {"ct": np.full(SHAPE_ZYX, CT_HU, np.float32), "units": units, "attribution": lookup[units],
            "roi": roi, "prediction": prediction}


@pytest.fixture()
def explanation_dir(tmp_path):
    maps = _maps()
    ct_path = write_volume(_volume(maps["ct"]), tmp_path / "ct.nii.gz")
    folder = tmp_path / "fp_organs"
    for name in ("attribution", "units", "roi", "prediction"):
        write_volume(_volume(maps[name]), folder / f"{name}.nii.gz")
    units = [dict(u, voxels=int((maps["units"] == u["id"]).sum())) for u in UNITS]
    summary = {
        "version": 1, "segshap_version": __version__,
        "inputs": {"ct": str(ct_path), "target": "spleen", "units": "organs", "value": "fp",
                   "score_region": "box", "budget": 64, "seed": 0},
        "roi": {"voxels": int(maps["roi"].sum()), "bbox_ijk": [[10, 14], [8, 12], [4, 8]], "point_ijk": [11, 9, 5],
                "target": 1},
        "units": units, "base_value": -0.5, "full_value": 0.3,
        "solver": {"method": "exact", "coalitions": SUMMARY_COST["coalitions"],
                   "diagnostics": {"efficiency_residual": 0.0, "heldout_r2": 1.0, "phi_std_error": [0.01, 0.02, 0.03],
                                   "converged": True, "coalitions_needed_forecast": 6}},
        "inference": {"patches_full_grid": 27, "patches_in_support": 12,
                      "patch_forwards": SUMMARY_COST["patch_forwards"],
                      "patch_cache_hits": SUMMARY_COST["patch_cache_hits"],
                      "naive_patch_forwards": SUMMARY_COST["naive_patch_forwards"], "hit_rate": 0.7779},
        "timings_s": {"total": 12.5, "prepare": 2.0, "inference": 10.0, "solver": 0.5},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "faithfulness.json").write_text(json.dumps(FAITHFULNESS))
    return folder


def _decode(png: bytes) -> np.ndarray:
    """PNG bytes -> float RGB(A) array (h, w, 3 or 4) in [0, 1]."""
    assert png.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def _blend(phi_fraction: float | None) -> np.ndarray:
    """Expected RGB of a uniform CT_HU voxel with the overlay at colour-map position phi_fraction (None: none)."""
    grey = np.array(colormaps["gray"](Normalize(*CT_WINDOW_HU)(CT_HU))[:3])
    if phi_fraction is None:
        return grey
    colour = np.array(colormaps[OVERLAY_CMAP](phi_fraction)[:3])
    return OVERLAY_ALPHA * colour + (1 - OVERLAY_ALPHA) * grey


def _count(rgb: np.ndarray, colour: np.ndarray, tol: float = 2.5 / 255) -> int:
    return int((np.abs(rgb[..., :3] - colour) <= tol).all(axis=-1).sum())


def test_overlay_is_centred_on_zero_and_transparent_there():
    maps = _maps()
    rgb = _decode(slice_panel(_volume(maps["ct"]), maps["prediction"], maps["roi"], maps["attribution"], 1,
                              target_name="spleen"))
    assert rgb.shape[0] > 200 and rgb.shape[1] > 600
    # phi = 0 (no unit): the plain CT grey; phi = +max: the top of the colour map
    assert _count(rgb, _blend(None)) > 500
    assert _count(rgb, _blend(1.0)) > 500
    # phi = -0.25 of a range symmetric around 0 sits at 0.375 (pale blue), not at the map's bottom (deep blue)
    assert _count(rgb, _blend(0.375)) > 500
    assert _count(rgb, _blend(0.0)) == 0


@pytest.mark.parametrize("lps_direction", [RAS_IDENTITY_LPS, np.eye(3), np.eye(3)[[2, 0, 1]].T])
def test_views_are_radiological_whatever_the_direction_matrix(lps_direction):
    """The voxel most right, anterior and superior shows top-left in axial and coronal, top-left in sagittal."""
    shape = (5, 6, 7)
    volume = Volume(np.zeros(shape), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), lps_direction)
    ras = volume.ijk_to_ras(np.stack(np.meshgrid(*(np.arange(n) for n in shape[::-1]), indexing="ij"), -1))
    score = ras.sum(-1).transpose(2, 1, 0)                     # (z, y, x): largest at the R, A, S corner
    marker = (score == score.max()).astype(float)
    sar = Reorientation.of(volume).apply(marker)
    for view in VIEWS:
        index = np.argwhere(sar)[0][view.axis]
        assert view_slice(sar, view, index)[0, 0] == 1.0, view.name


def test_bar_chart_and_curves_are_pngs():
    bars = _decode(ranked_bar_chart(UNITS, top=2))
    curves = _decode(curves_figure(FAITHFULNESS, title="spleen, fp"))
    assert bars.shape[1] > 300 and curves.shape[1] > 300
    # the bar chart has red and blue bars
    assert _count(bars, np.array(POSITIVE_COLOUR[:3])) > 50 and _count(bars, np.array(NEGATIVE_COLOUR[:3])) > 50


def test_report_is_self_contained_and_complete(explanation_dir, tmp_path):
    out = write_report([ExplanationFolder(explanation_dir)], tmp_path / "report" / "report.html", "Case <01>",
                       extra={"total wall time": "99.5 s"})
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "<script" not in page and "url(" not in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 3                                      # panel, bar chart, curves
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for source in sources:
        assert _decode(base64.b64decode(source.split(",", 1)[1])).size > 0
    # names escaped, table rows in |phi| order
    rows = re.findall(r'<tr><td>(\d+)</td><td class="name">([^<]*)</td>', page)
    expected = [escape(u["name"]) for u in sorted(UNITS, key=lambda u: -abs(u["shap"]))]
    assert rows == [(str(rank), name) for rank, name in enumerate(expected, start=1)]
    assert "<sigmoid>" not in page and "Case &lt;01&gt;" in page
    # title, cost, faithfulness, footer
    assert "Predicted spleen component (64 voxels)" in page
    assert "1,234 / 98,765" in page and "80.0\u00d7" in page and "78%" in page and "12.5 s" in page
    assert "exact Shapley values" in page
    assert "\u00b10.02" in page and "verdict ok" in page and "verdict no" not in page
    assert page.index("Exact Shapley values") < page.index("<table>")          # the verdict leads
    for key in ("aopc", "abpc", "naopc", "nabpc"):
        assert f"{FAITHFULNESS[key]:.4g}" in page
    assert "CC BY 4.0" in page and "Apache-2.0" in page and f"SegSHAP {__version__}" in page
    assert "99.5 s" in page


def test_report_without_faithfulness_or_ct_still_renders(explanation_dir, tmp_path):
    (explanation_dir / "faithfulness.json").unlink()
    summary = json.loads((explanation_dir / "summary.json").read_text())
    summary["inputs"]["ct"] = str(tmp_path / "moved.nii.gz")
    (explanation_dir / "summary.json").write_text(json.dumps(summary))
    page = write_report([ExplanationFolder(explanation_dir)], tmp_path / "r.html", "t").read_text(encoding="utf-8")
    assert "segshap evaluate" in page and "CT not found" in page
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 2


def test_noise_leads_with_its_verdict_and_ranks_by_the_lower_bound(explanation_dir, tmp_path):
    """A sampled explanation that has not converged: the verdict (with the fix and its cost) comes before the
    table, the rows follow the lower confidence bound, not |phi|, and unsettled signs carry a '?'."""
    summary = json.loads((explanation_dir / "summary.json").read_text())
    # phi 0.05 (kidney_left, id 3) measured tightly; phi 1.0 (spleen) and -0.25 (colon) within noise of 0
    errors = [0.01, 0.6, 0.2]
    bounds = [max(0.0, abs(u["shap"]) - 1.96 * e) for u, e in zip(UNITS, errors)]
    summary["solver"] = {"method": "kernelshap", "coalitions": 6, "resumed_coalitions": 0,
                         "diagnostics": {"heldout_r2": 0.15, "phi_std_error": errors, "converged": False,
                                         "coalitions_needed_forecast": 500, "abs_phi_lower_bound": bounds,
                                         "confidence_z": 1.96, "separated_top_units": 0, "tolerance": 0.01}}
    for unit, error in zip(summary["units"], errors):
        unit["std_error"] = error
    (explanation_dir / "summary.json").write_text(json.dumps(summary))
    page = write_report([ExplanationFolder(explanation_dir)], tmp_path / "r.html", "t").read_text(encoding="utf-8")
    assert page.index("Not converged (held-out R\u00b2 0.15") < page.index("<table>")
    assert page.count("verdict no") == 2                       # the overview and the section
    # the fix: 2^3 = 8 < 500 coalitions, so exact enumeration; 2 more at 1,234 / 6 forwards each, 10 s / 1,234 each
    assert "--budget 8 (exact enumeration): about 2 coalitions, 412 patch forwards, ~3 s on this machine" in page
    rows = re.findall(r'<tr><td>(\d+)</td><td class="name">([^<]*)</td>', page)
    by_bound = [u["name"] for _, u in sorted(zip(bounds, UNITS), key=lambda p: (-p[0], -abs(p[1]["shap"])))]
    assert [name for _, name in rows] == [escape(n) for n in by_bound]
    assert rows[0][1] == "kidney_left"                          # the one settled sign ranks first
    assert "+1?" in page and "+0.05?" not in page
    assert "1,234 patch forwards" not in page and "about 500 coalitions forecast" in page
