"""The live view of a running explanation (``SegSHAPMRML.live.LiveView``) on a slicer-core scene: the estimate painted
over the CT on its voxel grid, the ranked table with the unsettled signs marked, repaints throttled, the table alone
until the unit map is there, and nothing left behind. Estimates have the shape ``ProgressEvent.estimate`` has
(``shapley.kernelshap.LiveEstimate.to_json`` plus the unit names)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.mrml

slicer = pytest.importorskip("slicer")

from SegSHAPLib.io.image_io import write_volume  # noqa: E402
from SegSHAPMRML import display, results, scene_io, tables, volumes  # noqa: E402
from SegSHAPMRML.live import LIVE_ROLE_PREFIX, LiveView  # noqa: E402
from SegSHAPMRML.panel import live_verdict  # noqa: E402
from SegSHAPMRML.testing import UNIT_NAMES, synthetic_result  # noqa: E402


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def estimate(phi, std_error, coalitions=16, converged=False, value="softdice"):
    return {"coalitions": coalitions, "total": 256, "units": list(UNIT_NAMES),
            "values": {value: {"phi0": 0.1, "phi": list(phi), "std_error": list(std_error), "converged": converged,
                               "coalitions_needed_forecast": 4000}}}


@pytest.fixture
def live_case(tmp_path):
    scene = scene_io.new_scene()
    result = synthetic_result()
    ct = volumes.volume_to_node(scene, result.ct, "CT")
    display.show_ct(scene, ct)
    out = tmp_path / "explanation"
    out.mkdir()
    return scene, ct, out, result


def test_the_estimate_is_painted_on_the_ct_grid_and_ranked_by_what_is_sure(live_case):
    scene, ct, out, result = live_case
    write_volume(result.units, out / "units.nii.gz")
    clock = Clock()
    live = LiveView(scene, ct, out, clock=clock)
    phi, errors = [0.05, -0.30, 0.20, 0.01, 0.0], [0.04, 0.10, 0.02, None, 0.01]
    assert live.offer(estimate(phi, errors))
    node = live.nodes["attribution"]
    assert node.GetAttribute("SegSHAP.Role") == LIVE_ROLE_PREFIX + "attribution"
    assert volumes.same_voxel_grid(node, ct)
    labels = np.asarray(result.units.array)
    painted = volumes.array_from_node(node)
    assert np.allclose(painted, np.concatenate([[0.0], phi]).astype(np.float32)[labels])
    assert display.symmetric_window(0.30) == (node.GetDisplayNode().GetWindow(), node.GetDisplayNode().GetLevel())

    rows = tables.table_rows(live.nodes["units_table"])
    assert live.nodes["units_table"].GetAttribute(tables.RANKED_BY) == "lower_bound"
    # lower bounds: 0.05-1.96*0.04 < 0 -> 0; 0.30-0.196 = 0.104; 0.20-0.039 = 0.161; None -> 0; 0 -> 0
    assert [r["name"] for r in rows[:2]] == ["stomach", "kidney_left"]
    assert {r["name"]: r["sign"] for r in rows} == {"stomach": "settled", "kidney_left": "settled",
                                                    "spleen": "not yet", "colon": "not yet", "rib cage": "not yet"}
    assert np.isnan(next(r["std_error"] for r in rows if r["name"] == "colon"))
    assert results.check_run(scene) == ["no SegSHAP run in the scene"]        # live nodes are not a run

    # a newer estimate within the refresh interval is kept, painted once the interval has passed
    phi2 = [0.06, -0.25, 0.22, 0.0, 0.0]
    assert not live.offer(estimate(phi2, [0.001] * 5, coalitions=24, converged=True))
    assert np.allclose(volumes.array_from_node(node), np.concatenate([[0.0], phi]).astype(np.float32)[labels])
    clock.now += live.refresh_s
    assert live.offer(None) and live.paints == 2 and live.nodes["attribution"] is node
    assert np.allclose(volumes.array_from_node(node), np.concatenate([[0.0], phi2]).astype(np.float32)[labels])
    rows = tables.table_rows(live.nodes["units_table"])
    assert live.nodes["units_table"].GetAttribute(tables.RANKED_BY) == "phi"           # converged: by phi
    assert [r["name"] for r in rows] == ["stomach", "spleen", "colon", "rib cage", "kidney_left"]

    live.remove()
    assert live.nodes == {} and scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == 0
    assert node.GetScene() is None


def test_before_the_unit_map_exists_only_the_table_is_filled(live_case):
    scene, ct, out, result = live_case
    live = LiveView(scene, ct, out, clock=Clock())
    live.offer(estimate([0.1, 0.0, 0.0, 0.0, -0.1], [0.01] * 5))
    assert "attribution" not in live.nodes and len(tables.table_rows(live.nodes["units_table"])) == 5
    other = result.units.with_array(np.minimum(np.asarray(result.units.array), 3))     # another run's map: 3 units
    write_volume(other, out / "units.nii.gz")
    live.paint()
    assert "attribution" not in live.nodes
    write_volume(result.units, out / "units.nii.gz")
    live.paint()
    assert volumes.same_voxel_grid(live.nodes["attribution"], ct)


def test_a_unit_map_off_the_ct_grid_never_becomes_an_overlay(live_case):
    scene, ct, out, result = live_case
    shifted = result.units.with_array(np.asarray(result.units.array))
    shifted.origin = tuple(v + 5.0 for v in shifted.origin)
    write_volume(shifted, out / "units.nii.gz")
    live = LiveView(scene, ct, out, clock=Clock())
    live.offer(estimate([0.1, 0.0, 0.0, 0.0, -0.1], [0.01] * 5))
    assert live.overlay_refused and "attribution" not in live.nodes and "units_table" in live.nodes


def test_the_live_verdict_says_whether_the_estimate_can_be_read_yet():
    text = live_verdict(estimate([0.05, -0.30, 0.20, 0.01, 0.0], [0.04, 0.10, 0.02, None, 0.01]))
    assert text.startswith("Live estimate (softdice), 16/256 coalitions: not converged yet - 2 of 5 units")
    assert "4,000 coalitions" in text
    assert "converged (every standard error" in live_verdict(estimate([0.1] * 5, [0.0] * 5, converged=True))
