"""Colour tables and display settings for SegSHAP results (Qt-free, ``slicer-core`` MRML only).

- The attribution map uses one diverging colour table centred on 0: blue = negative phi, white = 0 (fully
  transparent, so the CT shows through everywhere a unit has no effect and outside the units), red = positive.
  Its display node has a symmetric window [-max|phi|, +max|phi|] (level 0), so phi = 0 is the table's centre.
- Units and predictions are label maps whose colour tables name every entry (unit names, organ names from
  TotalSegmentator, model class names), so Slicer's data probe shows names, never "Segment_1".
- The attribution is shown as the foreground layer over the CT in every slice view: the scene's slice composite
  nodes are set when the scene has any (a running Slicer); the intent is also recorded as node attributes
  (``SegSHAP.Display.*``) so a scene built without views (CLI ``--scene``) says what to show.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import slicer

ROLE = "SegSHAP.Role"
DIVERGING_ROLE = "diverging_colors"
DIVERGING_NAME = "SegSHAP phi (blue - white - red)"
DIVERGING_SIZE = 255           # odd: entry 127 is exactly phi = 0
FOREGROUND_OPACITY = 0.6

LEGEND = ("SegSHAP attribution (Shapley value phi of each unit, painted on its voxels). "
          "Red: keeping this unit raises the model's score for the selected structure (the unit supports the "
          "segmentation). Blue: keeping it lowers the score (removing it would strengthen the segmentation). "
          "White/transparent: no measurable effect, or not a unit. The colour scale is symmetric, "
          "from -max|phi| (full blue) to +max|phi| (full red).")
LEGEND_SHORT = "red: supports the segmentation - blue: works against it - clear: no effect"


def _colour(t: float) -> tuple[float, float, float]:
    """t in [-1, 1] -> RGB: -1 blue (0, 0, 1), 0 white, +1 red (1, 0, 0), linear in between."""
    t = float(np.clip(t, -1.0, 1.0))
    if t < 0:
        return 1.0 + t, 1.0 + t, 1.0
    return 1.0, 1.0 - t, 1.0 - t


def diverging_colour_values(size: int = DIVERGING_SIZE) -> np.ndarray:
    """(size, 4) RGBA of the diverging table; the centre entry is white with alpha 0, all others opaque."""
    if size % 2 == 0 or size < 3:
        raise ValueError("the diverging table needs an odd number of entries >= 3 (so 0 has its own entry)")
    centre = size // 2
    rgba = np.ones((size, 4))
    for index in range(size):
        rgba[index, :3] = _colour((index - centre) / centre)
    rgba[centre, 3] = 0.0
    return rgba


def diverging_color_table(scene, name: str = DIVERGING_NAME):
    """The scene's SegSHAP diverging colour table node (created once per scene, shared by all runs; the
    symmetric window of each attribution map adapts it to that run's max|phi|)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode")
        if node.GetAttribute(ROLE) == DIVERGING_ROLE and node.GetNumberOfColors() == DIVERGING_SIZE:
            return node
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetHideFromEditors(False)        # listed in the Colors module and saved in the bundle's Data folder
    node.SetNumberOfColors(DIVERGING_SIZE)
    centre = DIVERGING_SIZE // 2
    for index, (r, g, b, a) in enumerate(diverging_colour_values()):
        t = (index - centre) / centre
        label = "phi = 0 (no effect)" if index == centre else f"phi = {t:+.3f} x max|phi|"
        node.SetColor(index, label, r, g, b, a)
    node.SetAttribute(ROLE, DIVERGING_ROLE)
    node.SetAttribute("SegSHAP.Legend", LEGEND)
    node.SetDescription(LEGEND)
    return node


def distinct_colours(count: int, seed_hue: float = 0.1) -> np.ndarray:
    """(count, 3) RGB colours, well separated hues (golden-ratio walk), alternating lightness."""
    colours = np.zeros((count, 3))
    for index in range(count):
        hue = (seed_hue + index * 0.618033988749895) % 1.0
        lightness = 0.5 if index % 2 == 0 else 0.62
        colours[index] = colorsys.hls_to_rgb(hue, lightness, 0.75)
    return colours


def named_label_color_table(scene, names: Sequence[str] | dict[int, str], name: str, *, role: str | None = None,
                            background: str = "background"):
    """A colour table whose entry v is named after label v. ``names`` is a list (entry j+1 = names[j]) or a
    {value: name} dict. Entry 0 is the transparent background; unnamed entries in between are transparent."""
    mapping = {j + 1: n for j, n in enumerate(names)} if not isinstance(names, dict) else dict(names)
    mapping.pop(0, None)
    size = max(mapping, default=0) + 1
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", scene.GenerateUniqueName(name))
    node.SetTypeToUser()
    node.SetHideFromEditors(False)
    node.SetNumberOfColors(size)
    node.SetColor(0, background, 0.0, 0.0, 0.0, 0.0)
    colours = distinct_colours(size)
    for value in range(1, size):
        if value in mapping:
            r, g, b = colours[value - 1]
            node.SetColor(value, str(mapping[value]), r, g, b, 1.0)
        else:
            node.SetColor(value, "", 0.0, 0.0, 0.0, 0.0)
            if hasattr(node, "SetColorDefined"):
                node.SetColorDefined(value, False)
    if role:
        node.SetAttribute(ROLE, role)
    return node


def color_table_names(color_node) -> list[str]:
    """Entry names of a colour table, entry 0 first."""
    return [color_node.GetColorName(i) for i in range(color_node.GetNumberOfColors())]


def add_display_node(scene, volume_node, color_node, *, labelmap: bool):
    """Give a volume node a display node with an explicit colour table (no default colour node lookup)."""
    display = volume_node.GetDisplayNode()
    if display is None:
        cls = "vtkMRMLLabelMapVolumeDisplayNode" if labelmap else "vtkMRMLScalarVolumeDisplayNode"
        display = scene.AddNewNodeByClass(cls)
        volume_node.SetAndObserveDisplayNodeID(display.GetID())
    display.SetAndObserveColorNodeID(color_node.GetID())
    return display


def show_label_map(scene, label_node, color_node, *, outline: bool = False, opacity: float = 1.0):
    """Display a label map with its named colour table."""
    display = add_display_node(scene, label_node, color_node, labelmap=True)
    display.SetOpacity(opacity)
    if hasattr(display, "SetSliceIntersectionThickness") and outline:
        display.SetSliceIntersectionThickness(2)
    return display


def symmetric_window(max_abs: float) -> tuple[float, float]:
    """(window, level) of the attribution display: [-max_abs, +max_abs] -> level 0, window 2 max_abs
    (a tiny positive window when every phi is 0, so the display stays valid)."""
    max_abs = float(abs(max_abs))
    if not np.isfinite(max_abs) or max_abs <= 0:
        max_abs = 1e-6
    return 2.0 * max_abs, 0.0


def show_attribution(scene, attribution_node, *, max_abs: float, background_node=None,
                     opacity: float = FOREGROUND_OPACITY, color_node=None, legend: bool = True):
    """Display settings of the attribution volume: diverging colour table, symmetric window, no auto W/L,
    no interpolation (units have sharp borders); shown as foreground over ``background_node``.

    Returns the display node."""
    color_node = color_node or diverging_color_table(scene)
    display = add_display_node(scene, attribution_node, color_node, labelmap=False)
    window, level = symmetric_window(max_abs)
    display.AutoWindowLevelOff()
    display.SetWindowLevel(window, level)
    display.AutoThresholdOff()
    display.ApplyThresholdOff()
    display.SetInterpolate(0)
    attribution_node.SetDescription(LEGEND)
    attribution_node.SetAttribute("SegSHAP.Legend", LEGEND)
    attribution_node.SetAttribute("SegSHAP.LegendShort", LEGEND_SHORT)
    attribution_node.SetAttribute("SegSHAP.Window", f"[{-window / 2:.6g}, {window / 2:.6g}]")
    attribution_node.SetAttribute("SegSHAP.Display.Layer", "foreground")
    attribution_node.SetAttribute("SegSHAP.Display.ForegroundOpacity", f"{opacity:g}")
    if background_node is not None:
        attribution_node.SetAttribute("SegSHAP.Display.BackgroundVolumeID", background_node.GetID())
    if legend:
        add_color_legend(attribution_node, "phi (SHAP)")
    return display


def add_color_legend(displayable_node, title: str):
    """A colour legend (vtkMRMLColorLegendDisplayNode) for the node when the scene knows that class; None
    otherwise. Slicer draws it in the views where the node is shown."""
    scene = displayable_node.GetScene()
    if scene is None or scene.CreateNodeByClass("vtkMRMLColorLegendDisplayNode") is None:
        return None
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(displayable_node)
    if legend is not None:
        legend.SetTitleText(title)
        legend.SetVisibility(True)
    return legend


def set_slice_layers(scene, *, background_node=None, foreground_node=None, label_node=None,
                     foreground_opacity: float = FOREGROUND_OPACITY) -> int:
    """Put the volumes in every slice view's layers (vtkMRMLSliceCompositeNode). Returns how many views were
    set; 0 in a scene without views, where the intent stays recorded in the node attributes."""
    count = 0
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if background_node is not None:
            composite.SetBackgroundVolumeID(background_node.GetID())
        if foreground_node is not None:
            composite.SetForegroundVolumeID(foreground_node.GetID())
            composite.SetForegroundOpacity(foreground_opacity)
        if label_node is not None:
            composite.SetLabelVolumeID(label_node.GetID())
        count += 1
    return count


def show_ct(scene, ct_node):
    """A CT display node with Slicer's grey table and an abdomen window, when the CT has none yet."""
    display = ct_node.GetDisplayNode()
    if display is None:
        display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
        ct_node.SetAndObserveDisplayNodeID(display.GetID())
        grey = scene.GetNodeByID("vtkMRMLColorTableNodeGrey")
        display.SetAndObserveColorNodeID(grey.GetID() if grey is not None else "vtkMRMLColorTableNodeGrey")
        display.AutoWindowLevelOff()
        display.SetWindowLevel(400.0, 40.0)
    return display


__all__ = ["ROLE", "LEGEND", "LEGEND_SHORT", "DIVERGING_SIZE", "DIVERGING_NAME", "diverging_colour_values",
           "diverging_color_table", "distinct_colours", "named_label_color_table", "color_table_names",
           "add_display_node", "show_label_map", "symmetric_window", "show_attribution", "add_color_legend",
           "set_slice_layers", "show_ct"]
