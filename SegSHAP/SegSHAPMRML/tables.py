"""Table and plot nodes: units ranked by phi, and the MoRF / LeRF / random faithfulness curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import slicer
import vtk

from .display import ROLE

# (column name, vtk array class, title shown in Slicer's table view, description)
UNIT_COLUMNS = (
    ("rank", vtk.vtkIntArray, "rank", "1 = largest phi (most supporting unit)"),
    ("unit_id", vtk.vtkIntArray, "unit id", "value of the unit in the units label map"),
    ("name", vtk.vtkStringArray, "name", "unit name (organ name, FCC cell or cell/organ)"),
    ("voxels", vtk.vtkIntArray, "voxels", "number of CT voxels in the unit"),
    ("volume_ml", vtk.vtkDoubleArray, "volume (ml)", "unit volume in millilitres"),
    ("phi", vtk.vtkDoubleArray, "phi", "Shapley value: change of the score the unit is responsible for"),
    ("share_abs_phi", vtk.vtkDoubleArray, "share of |phi|", "|phi| / sum of |phi| over all units"),
    ("std_error", vtk.vtkDoubleArray, "SE", "standard error of phi (0 when exact; NaN when the coalitions so far "
                                            "cannot estimate it)"),
    ("abs_phi_lower_bound", vtk.vtkDoubleArray, "|phi| lower bound",
     "max(0, |phi| - z SE), z = 1.96: how large the unit's effect is at least (the ranking of a run that has not "
     "converged)"),
    ("sign", vtk.vtkStringArray, "sign", "'settled' when the 95% interval of phi excludes 0, else 'not yet'"),
)
RANK_BY = ("phi", "lower_bound")        # the table's order: phi (converged answers), |phi| lower bound (others)
RANKED_BY = "SegSHAP.RankedBy"          # table node attribute: which of RANK_BY
CURVE_COLUMNS = ("fraction_removed", "morf", "lerf", "random")
CURVE_STYLE = {            # series colour (RGB) and line style per curve
    "morf": ((0.84, 0.15, 0.16), "solid", "MoRF (most relevant removed first)"),
    "lerf": ((0.12, 0.35, 0.75), "solid", "LeRF (least relevant removed first)"),
    "random": ((0.45, 0.45, 0.45), "dash", "random order"),
}


def rank_units(unit_names: Sequence[str], phi: Sequence[float], voxels: Sequence[int],
               voxel_volume_mm3: float, std_error: Sequence[float | None] | None = None,
               by: str = "phi") -> list[dict]:
    """Rows of the unit table (pure Python, no MRML). ``std_error`` (M,): None or NaN where not estimable; omitted
    = exact (0). ``by`` "phi": largest phi first; "lower_bound": largest |phi| lower bound first (then |phi|), the
    order that does not rank noise above a sure effect. Ties by unit id."""
    from SegSHAPLib.shapley.diagnostics import abs_phi_lower_bound

    if by not in RANK_BY:
        raise ValueError(f"rank by {by!r}: use one of {RANK_BY}")
    phi = np.asarray(phi, dtype=float)
    voxels = np.asarray(voxels, dtype=np.int64)
    errors = np.zeros_like(phi) if std_error is None else \
        np.array([np.nan if e is None else float(e) for e in std_error], dtype=float)
    if not (len(unit_names) == phi.size == voxels.size == errors.size):
        raise ValueError(f"{len(unit_names)} names, {phi.size} phi values, {voxels.size} voxel counts and "
                         f"{errors.size} standard errors differ")
    lower = abs_phi_lower_bound(phi, errors)
    total = float(np.abs(phi).sum())
    key = (lambda j: (-phi[j], j)) if by == "phi" else (lambda j: (-lower[j], -abs(phi[j]), j))
    order = sorted(range(phi.size), key=key)
    return [{"rank": rank + 1, "unit_id": j + 1, "name": str(unit_names[j]), "voxels": int(voxels[j]),
             "volume_ml": float(voxels[j]) * voxel_volume_mm3 / 1000.0, "phi": float(phi[j]),
             "share_abs_phi": float(abs(phi[j]) / total) if total > 0 else 0.0, "std_error": float(errors[j]),
             "abs_phi_lower_bound": float(lower[j]), "sign": "settled" if lower[j] > 0 else "not yet"}
            for rank, j in enumerate(order)]


def _fill_table(table_node, columns: Sequence[tuple[str, type]], rows: Sequence[dict]) -> None:
    table = table_node.GetTable()
    table.Initialize()
    for name, cls, *_ in columns:
        array = cls()
        array.SetName(name)
        array.SetNumberOfValues(len(rows))
        for index, row in enumerate(rows):
            array.SetValue(index, row[name] if cls is not vtk.vtkStringArray else str(row[name]))
        table.AddColumn(array)
    table_node.Modified()


def units_table(scene, unit_names: Sequence[str], phi: Sequence[float], voxels: Sequence[int],
                voxel_volume_mm3: float, name: str = "SegSHAP units", *, std_error=None, by: str = "phi"):
    """A vtkMRMLTableNode of the units ranked ``by`` phi or by the |phi| lower bound (columns: ``UNIT_COLUMNS``;
    ``rank_units`` for the arguments)."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    for column, _cls, title, description in UNIT_COLUMNS:
        node.SetColumnTitle(column, title)
        node.SetColumnDescription(column, description)
    node.SetColumnUnitLabel("volume_ml", "ml")
    node.SetUseColumnTitleAsColumnHeader(True)
    node.SetLocked(True)
    node.SetAttribute(ROLE, "units_table")
    fill_units_table(node, unit_names, phi, voxels, voxel_volume_mm3, std_error=std_error, by=by)
    return node


def fill_units_table(node, unit_names: Sequence[str], phi: Sequence[float], voxels: Sequence[int],
                     voxel_volume_mm3: float, *, std_error=None, by: str = "phi") -> None:
    """Refill a units table in place (a live estimate, another value function); its ``RANKED_BY`` attribute
    says the order."""
    _fill_table(node, UNIT_COLUMNS, rank_units(unit_names, phi, voxels, voxel_volume_mm3, std_error, by))
    node.SetAttribute(RANKED_BY, by)


def table_rows(table_node) -> list[dict]:
    """A table node's rows as dicts (column name -> value, numbers as float/int, strings as str)."""
    table = table_node.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for column in columns:
            if isinstance(column, vtk.vtkStringArray):
                row[column.GetName()] = column.GetValue(r)
            elif isinstance(column, vtk.vtkDataArray) and column.GetDataType() in (vtk.VTK_FLOAT, vtk.VTK_DOUBLE):
                row[column.GetName()] = float(column.GetValue(r))
            else:
                row[column.GetName()] = int(column.GetValue(r))
        rows.append(row)
    return rows


def curves_from_faithfulness(faithfulness: dict) -> list[dict]:
    """faithfulness.json -> rows (fraction_removed, morf, lerf, random); a missing curve is NaN."""
    steps = len(faithfulness.get("morf") or [])
    fractions = faithfulness.get("fraction_removed") or list(np.linspace(0.0, 1.0, steps))
    n = len(fractions)
    for key in ("morf", "lerf", "random"):
        values = faithfulness.get(key)
        if values is not None and len(values) != n:
            raise ValueError(f"faithfulness curve {key!r} has {len(values)} points, fraction_removed has {n}")
    return [{"fraction_removed": float(fractions[k]),
             **{key: float(faithfulness[key][k]) if faithfulness.get(key) is not None and faithfulness[key][k]
                is not None else float("nan") for key in ("morf", "lerf", "random")}}
            for k in range(n)]


def faithfulness_summary(faithfulness: dict) -> str:
    """'AOPC 0.123 - ABPC 0.456 - nAOPC ... - nABPC ...' (the figures present)."""
    parts = []
    for key, label in (("aopc", "AOPC"), ("abpc", "ABPC"), ("naopc", "nAOPC"), ("nabpc", "nABPC")):
        value = faithfulness.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            parts.append(f"{label} {value:.4g}")
    return " - ".join(parts)


def faithfulness_plot(scene, faithfulness: dict, name: str = "SegSHAP faithfulness") -> dict:
    """Curves as a table node + one vtkMRMLPlotSeriesNode per curve + a vtkMRMLPlotChartNode.

    Returns {"curves_table": table, "chart": chart, "series_morf": ..., "series_lerf": ..., "series_random": ...}
    (series only for curves present)."""
    rows = curves_from_faithfulness(faithfulness)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{name} curves"))
    present = [c for c in ("morf", "lerf", "random") if faithfulness.get(c) is not None]
    _fill_table(table, [("fraction_removed", vtk.vtkDoubleArray)] + [(c, vtk.vtkDoubleArray) for c in present], rows)
    table.SetColumnTitle("fraction_removed", "fraction of units removed")
    for c in present:
        table.SetColumnTitle(c, CURVE_STYLE[c][2])
    table.SetLocked(True)
    table.SetAttribute(ROLE, "curves_table")

    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
    figures = faithfulness_summary(faithfulness)
    chart.SetTitle(f"Faithfulness: {figures}" if figures else "Faithfulness")
    chart.SetXAxisTitle("fraction of units removed")
    chart.SetYAxisTitle("score s(k)")
    chart.SetLegendVisibility(True)
    chart.SetAttribute(ROLE, "chart")
    nodes = {"curves_table": table, "chart": chart}
    for curve in present:
        colour, style, label = CURVE_STYLE[curve]
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(f"{name} {curve}"))
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("fraction_removed")
        series.SetYColumnName(curve)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash if style == "dash"
                            else slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
        series.SetColor(*colour)
        series.SetAttribute(ROLE, f"series_{curve}")
        series.SetAttribute("SegSHAP.Curve", label)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        nodes[f"series_{curve}"] = series
    for key in ("steps", "s0", "s_min", "aopc", "abpc", "naopc", "nabpc"):
        if key in faithfulness and faithfulness[key] is not None:
            chart.SetAttribute(f"SegSHAP.{key}", f"{faithfulness[key]:.6g}" if isinstance(faithfulness[key], float)
                               else str(faithfulness[key]))
    return nodes


__all__ = ["UNIT_COLUMNS", "RANK_BY", "RANKED_BY", "CURVE_COLUMNS", "rank_units", "units_table", "fill_units_table",
           "table_rows", "curves_from_faithfulness",
           "faithfulness_summary", "faithfulness_plot"]
