"""Units ranked by phi (table node) and the faithfulness curves (table + plot series + chart)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.mrml

slicer = pytest.importorskip("slicer")

from SegSHAPMRML import results, scene_io, tables  # noqa: E402
from SegSHAPMRML.testing import PHI, UNIT_NAMES, synthetic_faithfulness, synthetic_result  # noqa: E402


def test_rank_units_orders_by_phi_and_shares_abs_phi():
    rows = tables.rank_units(["a", "b", "c", "d"], [0.1, -0.4, 0.3, 0.1], [10, 20, 30, 40], voxel_volume_mm3=2.0)
    assert [r["name"] for r in rows] == ["c", "a", "d", "b"]             # phi descending, ties by unit id
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert [r["unit_id"] for r in rows] == [3, 1, 4, 2]
    assert sum(r["share_abs_phi"] for r in rows) == pytest.approx(1.0)
    assert rows[-1]["share_abs_phi"] == pytest.approx(0.4 / 0.9)
    assert rows[0]["volume_ml"] == pytest.approx(30 * 2.0 / 1000)
    with pytest.raises(ValueError):
        tables.rank_units(["a"], [0.1, 0.2], [1, 2], 1.0)
    assert all(r["share_abs_phi"] == 0.0 for r in tables.rank_units(["a", "b"], [0.0, 0.0], [1, 1], 1.0))


def test_units_table_node():
    scene = scene_io.new_scene()
    nodes = results.results_to_scene(scene, synthetic_result())
    table = nodes["units_table"]
    assert table.IsA("vtkMRMLTableNode")
    columns = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert columns == [c[0] for c in tables.UNIT_COLUMNS]
    assert table.GetColumnTitle("share_abs_phi") == "share of |phi|"
    rows = tables.table_rows(table)
    assert len(rows) == len(UNIT_NAMES)
    assert [r["phi"] for r in rows] == sorted(PHI, reverse=True)
    assert rows[0]["name"] == UNIT_NAMES[int(np.argmax(PHI))]
    by_id = {r["unit_id"]: r for r in rows}
    units = synthetic_result().units
    for unit_id, row in by_id.items():
        assert row["name"] == UNIT_NAMES[unit_id - 1]
        assert row["voxels"] == int((units.array == unit_id).sum())
        assert row["volume_ml"] == pytest.approx(row["voxels"] * np.prod(units.spacing) / 1000)
    assert table.GetAttribute("SegSHAP.Role") == "units_table"


def test_faithfulness_plot_series_reference_table_columns():
    scene = scene_io.new_scene()
    faithfulness = synthetic_faithfulness(steps=4)
    nodes = tables.faithfulness_plot(scene, faithfulness, "f")
    table, chart = nodes["curves_table"], nodes["chart"]
    rows = tables.table_rows(table)
    assert [r["fraction_removed"] for r in rows] == pytest.approx(faithfulness["fraction_removed"])
    assert [r["morf"] for r in rows] == pytest.approx(faithfulness["morf"])
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    for curve in ("morf", "lerf", "random"):
        series = nodes[f"series_{curve}"]
        assert series.GetTableNodeID() == table.GetID()
        assert series.GetXColumnName() == "fraction_removed"
        assert series.GetYColumnName() == curve
        assert table.GetTable().GetColumnByName(curve) is not None
        assert chart.HasPlotSeriesNodeID(series.GetID())
    assert "AOPC" in chart.GetTitle() and "ABPC" in chart.GetTitle()
    assert float(chart.GetAttribute("SegSHAP.aopc")) == pytest.approx(faithfulness["aopc"], rel=1e-5)


def test_faithfulness_with_missing_curve_and_bad_lengths():
    scene = scene_io.new_scene()
    faithfulness = synthetic_faithfulness(steps=2)
    faithfulness.pop("random")
    nodes = tables.faithfulness_plot(scene, faithfulness, "f")
    assert "series_random" not in nodes and nodes["chart"].GetNumberOfPlotSeriesNodes() == 2
    rows = tables.curves_from_faithfulness(faithfulness)
    assert math.isnan(rows[0]["random"])
    faithfulness["lerf"] = faithfulness["lerf"][:-1]
    with pytest.raises(ValueError, match="lerf"):
        tables.curves_from_faithfulness(faithfulness)


def test_faithfulness_summary_text():
    assert tables.faithfulness_summary({"aopc": 0.1234567, "abpc": 0.5, "naopc": None}) == "AOPC 0.1235 - ABPC 0.5"
