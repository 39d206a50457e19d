"""One explanation's results as MRML nodes: the mapping shared by the Slicer logic and the CLI's ``--scene``.

``results_to_scene(scene, result, faithfulness, ct_node)`` adds, in a new subject-hierarchy folder under the
CT's study (named like "SegSHAP hybrid softdice @ ROI (i,j,k)"):

==================  ==========================================================================================
role                node
==================  ==========================================================================================
ct                  the CT (given, or created from ``result.ct``)
prediction          label map of the segmentation the ROI came from, colour table named by the model's classes
roi                 label map of the ROI (1 = the explained component)
units               label map of the units; ``units_colors`` names every entry after its unit
attribution         float volume, phi of each voxel's unit; ``attribution_colors`` = the diverging table,
                    symmetric window, shown as foreground over the CT, legend in description/attributes
                    (the first value function's, when the explanation has several)
attribution_<value> float volume per further value function of the explanation (summary.json's
                    value_functions after the first), displayed like ``attribution`` but not shown
units_table         vtkMRMLTableNode, units with phi, standard error, |phi| lower bound and whether the sign is
                    settled, ranked by phi when the solver converged, else by the lower bound
                    (``SegSHAP.RankedBy``); ``show_value`` refills it for another value function
curves_table,       MoRF/LeRF/random curves (table), chart, one plot series per curve (when faithfulness given)
chart, series_*
roi_point           markups point where the user clicked (when the ROI came from a point)
==================  ==========================================================================================

Every node carries ``SegSHAP.Role`` and ``SegSHAP.RunID`` attributes; the folder carries the run's record.
``result`` is a ``SegSHAPLib.explain.folder.ExplainResult`` or the ``ExplanationOutputs`` read from an output folder.
"""

from __future__ import annotations

import json
import os
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.folder import ExplainResult, ExplanationFolder
from SegSHAPLib.io.image_io import Volume

from . import display, hierarchy, tables
from .display import ROLE
from .scene_io import new_scene, prepare_scene, save_scene
from .volumes import add_point_node, node_ijk_to_ras, volume_to_node, vtk_matrix

RUN_ID = "SegSHAP.RunID"
BACKGROUND_REFERENCE = "SegSHAPBackground"       # node reference attribution -> CT (kept on scene import)
ROLES_ALWAYS = ("ct", "roi", "units", "units_colors", "attribution", "attribution_colors", "units_table")
ROLES_FAITHFULNESS = ("curves_table", "chart")
VERSION_PACKAGES = ("segshap", "numpy", "scipy", "SimpleITK", "torch", "nnunetv2", "slicer-core", "vtk")


# An explain output folder read back is an ExplainResult whose ct/prediction may be None (files gone).
ExplanationOutputs = ExplainResult


def load_output_dir(out_dir: str | os.PathLike, *, ct_path: str | os.PathLike | None = None) -> ExplanationOutputs:
    """An explain output folder read back (``ExplanationFolder.load``): InputError when it is not finished."""
    return ExplanationFolder(out_dir).load(ct_path)


def first_value(result) -> str:
    """The value function shown first: summary.json's value_functions[0] (inputs.value in older folders)."""
    return ExplanationFolder(result.out).value_functions(result.summary)[0]


# ------------------------------------------------------------------------------------------ naming and records
def roi_ijk(result) -> tuple[int, int, int]:
    """The ROI's (i, j, k): summary's roi.point_ijk (the clicked voxel) when present, else the voxel of the ROI
    nearest its centroid."""
    point = (result.summary.get("roi") or {}).get("point_ijk")
    if point:
        return tuple(int(v) for v in point)
    zyx = np.argwhere(np.asarray(result.roi.array) > 0)
    if zyx.size == 0:
        return (0, 0, 0)
    nearest = zyx[np.argmin(((zyx - zyx.mean(axis=0)) ** 2).sum(axis=1))]
    return int(nearest[2]), int(nearest[1]), int(nearest[0])


def run_name(result) -> str:
    """'SegSHAP hybrid softdice @ ROI (i,j,k)' (the value function shown first, '+2' when there are 2 more)."""
    inputs = result.summary.get("inputs", {})
    i, j, k = roi_ijk(result)
    more = len(result.summary.get("value_functions") or [None]) - 1
    value = first_value(result) + (f" +{more}" if more else "")
    return f"SegSHAP {inputs.get('units', '?')} {value} @ ROI ({i},{j},{k})"


def versions(extra: dict | None = None, summary: dict | None = None) -> dict[str, str]:
    """Package versions recorded with a run (read from installed metadata; nothing is imported)."""
    found = {}
    for package in VERSION_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    if summary and summary.get("segshap_version"):
        found["segshap"] = str(summary["segshap_version"])
    if "segshap" not in found:
        from SegSHAPLib import __version__

        found["segshap"] = __version__
    found.update({k: str(v) for k, v in (extra or {}).items()})
    return found


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def run_record(result, faithfulness: dict | None = None, extra_versions: dict | None = None) -> dict[str, str]:
    """The run's attributes (keys without the 'SegSHAP.' prefix): inputs, solver and cost figures, versions."""
    summary = result.summary
    inputs = summary.get("inputs", {})
    solver = summary.get("solver", {})
    inference = summary.get("inference", {})
    roi = summary.get("roi", {})
    record = {
        "Model": inputs.get("model"), "Units": inputs.get("units"), "Value": first_value(result),
        "ValueFunctions": summary.get("value_functions") or [first_value(result)], "SolverStop": solver.get("stop"),
        "Target": roi.get("target", inputs.get("target")), "ScoreRegion": inputs.get("score_region"),
        "Budget": inputs.get("budget"), "Seed": inputs.get("seed"), "MaskValue": inputs.get("mask_value"),
        "Device": inputs.get("device"), "Cache": inputs.get("cache"), "TTA": inputs.get("tta"),
        "FCCScaleMM": inputs.get("fcc_scale_mm"), "Grouping": inputs.get("grouping"),
        "ROIPoint": inputs.get("roi_point"), "PointSpace": inputs.get("point_space"),
        "ROIPointIJK": list(roi_ijk(result)), "ROIVoxels": roi.get("voxels"),
        "NumberOfUnits": len(result.unit_names), "BaseValue": float(result.phi0),
        "FullValue": float(result.full_value), "SumPhi": float(np.sum(result.phi)),
        "MaxAbsPhi": float(np.max(np.abs(result.phi))) if len(result.phi) else 0.0,
        "SolverMethod": solver.get("method"), "Coalitions": solver.get("coalitions"),
        "PatchForwards": inference.get("patch_forwards"), "PatchCacheHits": inference.get("patch_cache_hits"),
        "NaivePatchForwards": inference.get("naive_patch_forwards"), "HitRate": inference.get("hit_rate"),
        "TimeTotalSeconds": (summary.get("timings_s") or {}).get("total"),
        "OutputFolder": str(result.out) if getattr(result, "out", None) else None,
        "Versions": versions(extra_versions, summary),
        "Legend": display.LEGEND_SHORT,
    }
    for key, value in (solver.get("diagnostics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            record[f"Diagnostics.{key}"] = value
    if faithfulness:
        for key in ("aopc", "abpc", "naopc", "nabpc", "steps"):
            if faithfulness.get(key) is not None:
                record[key.upper() if key != "steps" else "FaithfulnessSteps"] = faithfulness[key]
    return {k: _fmt(v) for k, v in record.items() if v is not None}


def model_class_names(model_dir) -> dict[int, str]:
    """Label value -> class name from an nnU-Net model folder's dataset.json ({} when unreadable)."""
    try:
        labels = json.loads((Path(model_dir) / "dataset.json").read_text())["labels"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {int(v): str(k) for k, v in labels.items() if isinstance(v, int)}


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"


# ------------------------------------------------------------------------------------- one value function
def table_ranking(result, value: str) -> dict:
    """``std_error`` and ``by`` for the units table of ``value``: ranked by phi when the verdict
    (``report.verdict``) is converged, else by the |phi| lower bound (noise is never ranked above a sure effect)."""
    from SegSHAPLib.report.verdict import verdict

    answer = (getattr(result, "by_value", None) or {}).get(value)
    errors = None if answer is None else [None if not np.isfinite(e) else float(e) for e in answer.std_error]
    return {"std_error": errors, "by": "phi" if verdict(result.summary, value).converged else "lower_bound"}


def unit_voxels(result) -> np.ndarray:
    """(M,) voxel count of each unit in the result's unit map."""
    count = len(result.unit_names)
    return np.bincount(np.asarray(result.units.array).astype(np.int64).ravel(), minlength=count + 1)[1:count + 1]


def attribution_node_of(nodes: dict, result, value: str):
    """The attribution map node of ``value`` among a run's nodes (``results_to_scene``'s dict)."""
    return nodes["attribution"] if value == first_value(result) else nodes[f"attribution_{value}"]


def show_value(scene, nodes: dict, result, value: str) -> None:
    """Show another value function of the same run, nothing recomputed: its attribution map becomes the slice
    views' foreground and the run's units table is refilled with its phi, standard errors and ranking."""
    if value not in (getattr(result, "by_value", None) or {}):
        raise InputError(f"this run holds no explanation of value function {value!r}")
    answer = result.by_value[value]
    tables.fill_units_table(nodes["units_table"], list(result.unit_names), answer.phi, unit_voxels(result),
                            float(np.prod(result.units.spacing)), **table_ranking(result, value))
    nodes["units_table"].SetAttribute("SegSHAP.Value", value)
    display.set_slice_layers(scene, background_node=nodes.get("ct"),
                             foreground_node=attribution_node_of(nodes, result, value))


# --------------------------------------------------------------------------------------------- the mapping
def _tag(node, role: str, run_id: str) -> None:
    node.SetAttribute(ROLE, role)
    node.SetAttribute(RUN_ID, run_id)


def on_ct_grid(scene, volume: Volume, ct_node, ct_matrix: np.ndarray, name: str, *, labelmap: bool):
    """A node for ``volume`` that overlays ``ct_node`` voxel for voxel: same dimensions, the CT's exact
    IJKToRAS, same parent transform. InputError when the volume is on another grid."""
    ct_image = ct_node.GetImageData()
    dims = tuple(int(d) for d in ct_image.GetDimensions()) if ct_image is not None else None
    if dims != tuple(int(s) for s in volume.array.shape[::-1]):
        raise InputError(f"{name}: size (x,y,z) {volume.array.shape[::-1]} differs from the CT's {dims}")
    if not np.allclose(volume.ijk_to_ras_matrix(), ct_matrix, atol=1e-3):
        raise InputError(f"{name}: not on the CT's voxel grid (IJKToRAS differs); the explanation was computed "
                         "on another image")
    node = volume_to_node(scene, volume, name, labelmap=labelmap)
    node.SetIJKToRASMatrix(vtk_matrix(ct_matrix))
    if ct_node.GetTransformNodeID():
        node.SetAndObserveTransformNodeID(ct_node.GetTransformNodeID())
    return node


def results_to_scene(scene, result, faithfulness: dict | None = None, ct_node=None, *, prediction_node=None,
                     prediction_names: dict[int, str] | None = None, roi_point_ras=None,
                     create_study: bool | None = None, show: bool = True, extra_versions: dict | None = None,
                     units_segmentation: bool = False, name_prefix: str | None = None) -> dict:
    """Add one explanation's results to ``scene`` (see the module docstring for the roles).

    scene:            any vtkMRMLScene (Slicer's ``slicer.mrmlScene`` or ``new_scene()``).
    result:           ExplainResult / ExplanationOutputs.
    faithfulness:     faithfulness.json content or None (then no curves, table or chart).
    ct_node:          the CT already in the scene; None creates one from ``result.ct``.
    prediction_node:  the user's own prediction node (segmentation or label map) - then no prediction label map
                      is added; None adds ``result.prediction`` as a label map.
    prediction_names: class names for the prediction's colour table (default: the model's dataset.json).
    roi_point_ras:    the clicked point (RAS) for a markups point; default: summary inputs when point_space=ras.
    create_study:     make a subject/study for a CT without one (default: only when the CT is created here).
    show:             put CT/attribution into the slice views' background/foreground (when the scene has views).
    extra_versions:   more versions to record (e.g. {"Slicer": "5.8.1"}).
    units_segmentation: also add the units as a segmentation node (segment names = unit names).

    Returns {role: node} plus "folder_item" (subject-hierarchy item id, int) and "run_id" (str)."""
    prepare_scene(scene)
    run_id = _new_run_id()
    inputs = result.summary.get("inputs", {})
    nodes: dict = {}
    created_ct = ct_node is None
    if created_ct:
        if result.ct is None:
            raise InputError("no CT: give ct_node or a result with its CT volume (summary.json's inputs.ct is missing)")
        ct_name = Path(inputs["ct"]).name.split(".")[0] if inputs.get("ct") else "CT"
        ct_node = volume_to_node(scene, result.ct, ct_name)
        display.show_ct(scene, ct_node)
    nodes["ct"] = ct_node
    ct_matrix = node_ijk_to_ras(ct_node, world=False)
    prefix = name_prefix or run_name(result)
    folder = hierarchy.create_run_folder(scene, hierarchy.study_item_for(
        scene, ct_node, create=created_ct if create_study is None else create_study), prefix,
        {"RunID": run_id, **run_record(result, faithfulness, extra_versions)})
    run_label = hierarchy.sh_node(scene).GetItemName(folder)

    if prediction_node is None and getattr(result, "prediction", None) is not None:
        names = prediction_names or model_class_names(inputs.get("model")) or {}
        present = np.unique(np.asarray(result.prediction.array))
        names = {int(v): names.get(int(v), f"class_{int(v)}") for v in present if v > 0} | \
            {k: v for k, v in names.items() if k > 0}
        node = on_ct_grid(scene, result.prediction, ct_node, ct_matrix, f"{run_label} prediction", labelmap=True)
        display.show_label_map(scene, node, display.named_label_color_table(
            scene, names, f"{run_label} prediction classes", role="prediction_colors"), opacity=0.5)
        nodes["prediction"] = node
    elif prediction_node is not None:
        nodes["prediction"] = prediction_node

    target = (result.summary.get("roi") or {}).get("target", inputs.get("target"))
    roi_node = on_ct_grid(scene, result.roi.with_array((np.asarray(result.roi.array) > 0).astype(np.uint8)),
                           ct_node, ct_matrix, f"{run_label} ROI", labelmap=True)
    display.show_label_map(scene, roi_node, display.named_label_color_table(
        scene, {1: f"ROI (target {target})"}, f"{run_label} ROI colours", role="roi_colors"), outline=True)
    nodes["roi"] = roi_node

    unit_labels = np.asarray(result.units.array).astype(np.int32)
    units_node = on_ct_grid(scene, result.units.with_array(unit_labels), ct_node, ct_matrix,
                             f"{run_label} units", labelmap=True)
    units_colors = display.named_label_color_table(scene, list(result.unit_names), f"{run_label} unit names",
                                                   role="units_colors")
    display.show_label_map(scene, units_node, units_colors, opacity=0.5)
    nodes["units"], nodes["units_colors"] = units_node, units_colors

    phi = np.asarray(result.phi, dtype=float)
    attribution = result.attribution.with_array(np.asarray(result.attribution.array).astype(np.float32))
    attribution_node = on_ct_grid(scene, attribution, ct_node, ct_matrix, f"{run_label} attribution",
                                   labelmap=False)
    max_abs = float(np.max(np.abs(phi))) if phi.size else 0.0
    attribution_display = display.show_attribution(scene, attribution_node, max_abs=max_abs, background_node=ct_node)
    attribution_node.SetNodeReferenceID(BACKGROUND_REFERENCE, ct_node.GetID())
    nodes["attribution"] = attribution_node
    nodes["attribution_colors"] = attribution_display.GetColorNode()
    for value, answer in list((getattr(result, "by_value", None) or {}).items())[1:]:
        node = on_ct_grid(scene, answer.attribution.with_array(np.asarray(answer.attribution.array, np.float32)),
                           ct_node, ct_matrix, f"{run_label} attribution ({value})", labelmap=False)
        show_max = float(np.max(np.abs(answer.phi))) if answer.phi.size else 0.0
        display.show_attribution(scene, node, max_abs=show_max, background_node=ct_node,
                                 color_node=nodes["attribution_colors"])
        node.SetNodeReferenceID(BACKGROUND_REFERENCE, ct_node.GetID())
        nodes[f"attribution_{value}"] = node
    attribution_node.SetAttribute("SegSHAP.SummaryJSON", json.dumps(result.summary))

    nodes["units_table"] = tables.units_table(scene, list(result.unit_names), phi, unit_voxels(result),
                                              float(np.prod(result.units.spacing)), f"{run_label} units",
                                              **table_ranking(result, first_value(result)))
    if faithfulness:
        nodes.update(tables.faithfulness_plot(scene, faithfulness, f"{run_label} faithfulness"))

    if roi_point_ras is not None:              # world RAS, as the user placed it
        nodes["roi_point"] = add_point_node(scene, roi_point_ras, f"{run_label} ROI point")
    elif inputs.get("roi_point") is not None:  # in the CT's own frame, as the pipeline received it
        point = inputs["roi_point"] if inputs.get("point_space", "ras") == "ras" else \
            result.roi.ijk_to_ras(np.asarray(inputs["roi_point"], dtype=float))
        nodes["roi_point"] = add_point_node(scene, point, f"{run_label} ROI point")
        if ct_node.GetTransformNodeID():
            nodes["roi_point"].SetAndObserveTransformNodeID(ct_node.GetTransformNodeID())

    if units_segmentation:
        from .volumes import label_volume_to_segmentation

        nodes["units_segmentation"] = label_volume_to_segmentation(scene, units_node, f"{run_label} units (segments)",
                                                                   ct_node)

    for role, node in nodes.items():
        if role in ("ct", "attribution_colors") or (role == "prediction" and prediction_node is not None):
            continue                  # the user's own nodes and the colour table shared by all runs
        _tag(node, role, run_id)
    hierarchy.place_in_folder(scene, folder, [n for r, n in nodes.items()       # data nodes; colour tables
                                              if r not in ("ct", "attribution_colors", "units_colors")  # stay
                                              and not (r == "prediction" and prediction_node is not None)])
    if show:
        display.set_slice_layers(scene, background_node=ct_node, foreground_node=attribution_node)
    nodes["folder_item"] = folder
    nodes["run_id"] = run_id
    return nodes


# ------------------------------------------------------------------------------------- reading a run back
def find_run_nodes(scene, run_id: str | None = None) -> dict:
    """{role: node} of one run (the latest in the scene when ``run_id`` is None), plus the CT (via the
    attribution's recorded background) and the shared diverging colour table."""
    found: dict[str, dict] = {}
    order: list[str] = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        rid = node.GetAttribute(RUN_ID)
        role = node.GetAttribute(ROLE)
        if rid and role:
            if rid not in found:
                found[rid] = {}
                order.append(rid)
            found[rid][role] = node
    if not found:
        return {}
    run_id = run_id or order[-1]                      # scene order = creation order
    nodes = dict(found.get(run_id, {}))
    attribution = nodes.get("attribution")
    if attribution is not None:
        if attribution.GetNodeReference(BACKGROUND_REFERENCE) is not None:
            nodes["ct"] = attribution.GetNodeReference(BACKGROUND_REFERENCE)
        display_node = attribution.GetDisplayNode()
        if display_node is not None and display_node.GetColorNode() is not None:
            nodes["attribution_colors"] = display_node.GetColorNode()
    nodes["run_id"] = run_id
    return nodes


def run_ids(scene) -> list[str]:
    """The scene's SegSHAP run ids in creation order."""
    ids = [scene.GetNthNode(i).GetAttribute(RUN_ID) for i in range(scene.GetNumberOfNodes())]
    return list(dict.fromkeys(i for i in ids if i))


def check_run(scene, run_id: str | None = None, *, expect_faithfulness: bool | None = None) -> list[str]:
    """Problems with one run's nodes in ``scene`` (empty list = complete): every role present, volumes with
    voxels on the CT grid, the attribution's colour table centred on 0 with a symmetric window, unit names in
    the units colour table, a ranked units table with names, plot series pointing at existing table columns."""
    from .display import DIVERGING_SIZE
    from .volumes import same_voxel_grid

    nodes = find_run_nodes(scene, run_id)
    if not nodes:
        return ["no SegSHAP run in the scene"]
    problems = []
    needed = list(ROLES_ALWAYS)
    if expect_faithfulness or (expect_faithfulness is None and "chart" in nodes):
        needed += list(ROLES_FAITHFULNESS)
    problems += [f"missing node: {role}" for role in needed if role not in nodes]
    ct = nodes.get("ct")
    value_maps = [role for role in nodes if role.startswith("attribution_") and role != "attribution_colors"]
    for role in ["roi", "units", "attribution", "prediction"] + value_maps:
        node = nodes.get(role)
        if node is None or not node.IsA("vtkMRMLVolumeNode"):
            continue
        if node.GetImageData() is None:
            problems.append(f"{role}: no voxel data")
        elif ct is not None and ct.GetImageData() is not None and not same_voxel_grid(node, ct):
            problems.append(f"{role}: not on the CT's voxel grid")
    colors = nodes.get("attribution_colors")
    attribution = nodes.get("attribution")
    if colors is not None:
        if colors.GetNumberOfColors() != DIVERGING_SIZE:
            problems.append(f"attribution colours: {colors.GetNumberOfColors()} entries, expected {DIVERGING_SIZE}")
        else:
            centre = [0.0] * 4
            colors.GetColor(DIVERGING_SIZE // 2, centre)
            if not np.allclose(centre[:3], 1.0):
                problems.append("attribution colours: centre entry is not white")
    if attribution is not None and attribution.GetDisplayNode() is not None:
        d = attribution.GetDisplayNode()
        if abs(d.GetLevel()) > 1e-9 or d.GetAutoWindowLevel():
            problems.append("attribution display: window not symmetric about 0")
    units, units_colors = nodes.get("units"), nodes.get("units_colors")
    table = nodes.get("units_table")
    if table is not None:
        rows = tables.table_rows(table)
        if not rows:
            problems.append("units table: no rows")
        else:
            by = table.GetAttribute(tables.RANKED_BY) or "phi"
            key = "phi" if by == "phi" else "abs_phi_lower_bound"
            if [r["rank"] for r in rows] != list(range(1, len(rows) + 1)) or \
                    any(a[key] < b[key] for a, b in zip(rows, rows[1:])):
                problems.append(f"units table: not ranked by {key}")
        if units_colors is not None:
            names = display.color_table_names(units_colors)
            for row in rows:
                if not (0 < row["unit_id"] < len(names)) or names[row["unit_id"]] != row["name"]:
                    problems.append(f"units table/colour table: unit {row['unit_id']} names differ")
                    break
    if units is not None and units_colors is not None:
        d = units.GetDisplayNode()
        if d is None or d.GetColorNodeID() != units_colors.GetID():
            problems.append("units: label map does not use the unit-name colour table")
    curves = nodes.get("curves_table")
    for role in ("series_morf", "series_lerf", "series_random"):
        series = nodes.get(role)
        if series is None:
            continue
        if curves is None or series.GetTableNodeID() != curves.GetID():
            problems.append(f"{role}: does not reference the curves table")
        elif curves.GetTable().GetColumnByName(series.GetYColumnName()) is None or \
                curves.GetTable().GetColumnByName(series.GetXColumnName()) is None:
            problems.append(f"{role}: references a missing column")
    chart = nodes.get("chart")
    if chart is not None:
        ids = {chart.GetNthPlotSeriesNodeID(i) for i in range(chart.GetNumberOfPlotSeriesNodes())}
        for role in ("series_morf", "series_lerf", "series_random"):
            if role in nodes and nodes[role].GetID() not in ids:
                problems.append(f"chart: does not show {role}")
    return problems


# ------------------------------------------------------------------------------------- output folder -> scene
def scene_for_output_dir(out_dir: str | os.PathLike, *, ct_path: str | os.PathLike | None = None, scene=None,
                         extra_versions: dict | None = None):
    """A scene built from an explain output folder (and its faithfulness.json when present). Without the CT
    file the attribution's grid stands in for it (a warning attribute says so). Returns the scene."""
    result = load_output_dir(out_dir, ct_path=ct_path)
    scene = prepare_scene(scene) if scene is not None else new_scene()
    if result.ct is None:
        result.ct = result.attribution.with_array(np.zeros(result.attribution.array.shape, np.int16))
        ct_missing = True
    else:
        ct_missing = False
    nodes = results_to_scene(scene, result, ExplanationFolder(out_dir).faithfulness(), extra_versions=extra_versions)
    if ct_missing:
        nodes["ct"].SetName(scene.GenerateUniqueName("CT missing (zeros on the CT grid)"))
        nodes["ct"].SetAttribute("SegSHAP.Warning", "the CT file named in summary.json was not found")
    return scene


def write_scene_from_output(out_dir: str | os.PathLike, scene_path: str | os.PathLike, *,
                            ct_path: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """What ``segshap explain --scene scene.mrb`` calls: build the scene from ``out_dir``, save it to
    ``scene_path`` (.mrb bundle, or a bundle directory for other paths) and, with ``verify``, reload it in a
    fresh scene and check every node (RuntimeError listing the problems). Returns the written path."""
    scene = scene_for_output_dir(out_dir, ct_path=ct_path)
    written = save_scene(scene, scene_path)
    if verify:
        problems = verify_saved_scene(written)
        if problems:
            raise RuntimeError(f"the saved scene {written} is incomplete: " + "; ".join(problems))
    return written


def verify_saved_scene(path: str | os.PathLike) -> list[str]:
    """Reload a saved scene in a fresh scene and check every run in it (empty list = complete)."""
    from .scene_io import load_scene

    scene = load_scene(path)
    ids = run_ids(scene)
    if not ids:
        return [f"{path}: no SegSHAP run in the reloaded scene"]
    return [f"run {rid}: {p}" for rid in ids for p in check_run(scene, rid)]


__all__ = ["ExplanationOutputs", "load_output_dir", "first_value", "roi_ijk", "run_name", "versions",
           "run_record", "model_class_names", "table_ranking", "unit_voxels",
           "attribution_node_of", "show_value", "on_ct_grid", "results_to_scene", "find_run_nodes", "run_ids", "check_run",
           "scene_for_output_dir", "write_scene_from_output", "verify_saved_scene"]
