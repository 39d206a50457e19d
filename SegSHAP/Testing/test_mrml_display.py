"""Colour tables and display: diverging table centred on 0, symmetric window, attribution over the CT voxel for
voxel, named unit colours, legend, slice views."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.mrml

slicer = pytest.importorskip("slicer")

from SegSHAPMRML import display, results, scene_io, volumes  # noqa: E402
from SegSHAPMRML.testing import PHI, UNIT_NAMES, synthetic_faithfulness, synthetic_result  # noqa: E402


@pytest.fixture
def scene():
    return scene_io.new_scene()


@pytest.fixture
def run(scene):
    return results.results_to_scene(scene, synthetic_result(), synthetic_faithfulness())


def test_diverging_values_centred_on_zero():
    rgba = display.diverging_colour_values()
    n = len(rgba)
    centre = n // 2
    assert n % 2 == 1
    np.testing.assert_allclose(rgba[centre, :3], [1, 1, 1])          # white at phi = 0 ...
    assert rgba[centre, 3] == 0.0                                     # ... and see-through
    np.testing.assert_allclose(rgba[0, :3], [0, 0, 1])                # full blue at -max|phi|
    np.testing.assert_allclose(rgba[-1, :3], [1, 0, 0])               # full red at +max|phi|
    # symmetric: entry centre-d is the blue twin of entry centre+d's red
    for d in range(1, centre + 1):
        np.testing.assert_allclose(rgba[centre - d, [0, 1, 2]], rgba[centre + d, [2, 1, 0]])
    assert np.all(rgba[np.arange(n) != centre, 3] == 1.0)
    # monotone: red channel grows, blue channel falls along the table
    assert np.all(np.diff(rgba[:, 0]) >= 0) and np.all(np.diff(rgba[:, 2]) <= 0)


def test_diverging_table_node(scene):
    node = display.diverging_color_table(scene)
    assert node.GetNumberOfColors() == display.DIVERGING_SIZE
    rgba = [0.0] * 4
    node.GetColor(display.DIVERGING_SIZE // 2, rgba)
    assert rgba == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert "Red" in node.GetDescription() and "Blue" in node.GetDescription()
    assert display.diverging_color_table(scene) is node or display.diverging_color_table(scene).GetID() == node.GetID()


def test_symmetric_window():
    assert display.symmetric_window(0.25) == (0.5, 0.0)
    assert display.symmetric_window(-0.25) == (0.5, 0.0)
    window, level = display.symmetric_window(0.0)                      # all phi 0: still a valid window
    assert window > 0 and level == 0


def test_attribution_display(run):
    attribution = run["attribution"]
    d = attribution.GetDisplayNode()
    max_abs = float(np.max(np.abs(PHI)))
    assert d.GetColorNodeID() == run["attribution_colors"].GetID()
    assert not d.GetAutoWindowLevel()
    assert d.GetLevel() == pytest.approx(0.0)
    assert d.GetWindow() == pytest.approx(2 * max_abs)
    assert d.GetWindowLevelMin() == pytest.approx(-max_abs) and d.GetWindowLevelMax() == pytest.approx(max_abs)
    # legend: what red and blue mean, on the node and as attributes
    assert "Red" in attribution.GetDescription() and "Blue" in attribution.GetDescription()
    assert attribution.GetAttribute("SegSHAP.Legend") == display.LEGEND
    assert attribution.GetAttribute("SegSHAP.Display.Layer") == "foreground"
    assert attribution.GetAttribute("SegSHAP.Display.BackgroundVolumeID") == run["ct"].GetID()


def test_attribution_overlays_ct_voxel_for_voxel(run):
    ct, attribution = run["ct"], run["attribution"]
    assert attribution.GetImageData().GetDimensions() == ct.GetImageData().GetDimensions()
    np.testing.assert_array_equal(volumes.node_ijk_to_ras(attribution), volumes.node_ijk_to_ras(ct))
    result = synthetic_result()
    np.testing.assert_allclose(volumes.node_ijk_to_ras(ct), result.ct.ijk_to_ras_matrix(), atol=1e-9)
    np.testing.assert_array_equal(volumes.array_from_node(attribution), result.attribution.array)
    for role in ("units", "roi", "prediction"):
        assert volumes.same_voxel_grid(run[role], ct), role
    assert attribution.GetImageData().GetScalarTypeAsString() == "float"


def test_units_colour_table_names_are_unit_names(run):
    colours = run["units_colors"]
    names = display.color_table_names(colours)
    assert names[1:] == list(UNIT_NAMES)
    assert not any(n.startswith("Segment_") for n in names)
    assert run["units"].GetDisplayNode().GetColorNodeID() == colours.GetID()
    rgba = [0.0] * 4
    colours.GetColor(0, rgba)
    assert rgba[3] == 0.0                                               # background transparent


def test_prediction_colours_use_class_names(scene, tmp_path):
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "spleen": 1}}')
    result = synthetic_result()
    result.summary["inputs"]["model"] = str(tmp_path)
    nodes = results.results_to_scene(scene, result)
    assert display.color_table_names(nodes["prediction"].GetDisplayNode().GetColorNode())[1] == "spleen"


def test_slice_views_show_attribution_over_ct(scene):
    composites = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    nodes = results.results_to_scene(scene, synthetic_result())
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == nodes["ct"].GetID()
        assert composite.GetForegroundVolumeID() == nodes["attribution"].GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(display.FOREGROUND_OPACITY)


def test_scene_without_views_records_the_intent(scene):
    assert display.set_slice_layers(scene, background_node=None) == 0
    nodes = results.results_to_scene(scene, synthetic_result())
    assert nodes["attribution"].GetAttribute("SegSHAP.Display.ForegroundOpacity") == f"{display.FOREGROUND_OPACITY:g}"


def test_colour_legend_node(run):
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(run["attribution"])
    assert legend is not None and legend.GetTitleText() == "phi (SHAP)"


def test_two_runs_share_the_diverging_table(scene):
    a = results.results_to_scene(scene, synthetic_result())
    b = results.results_to_scene(scene, synthetic_result(), ct_node=a["ct"])
    assert a["attribution_colors"].GetID() == b["attribution_colors"].GetID()
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") - _default_colour_tables(scene) == 1 + 2 * 3


def _default_colour_tables(scene) -> int:
    """Slicer's own default colour tables (not saved with scenes)."""
    return sum(1 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode"))
               if not scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode").GetSaveWithScene())
