"""The real pipeline through the MRML layer: the demo nnU-Net model on the sample CT (organ units, small
budget) run by ``ExplainJob`` exactly as the panel does, mapped to nodes, saved as .mrb and reloaded; and the
CLI's ``--scene`` path (output folder -> .mrb). Slow: it runs the network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.mrml, pytest.mark.slow]

slicer = pytest.importorskip("slicer")
pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

from SegSHAPLib.explain.case_inputs import CaseInputs  # noqa: E402
from SegSHAPLib.io.image_io import read_volume  # noqa: E402
from SegSHAPMRML import hierarchy, panel, results, scene_io, tables, volumes  # noqa: E402
from SegSHAPMRML.job import ExplainJob  # noqa: E402

RESOURCES = Path(__file__).resolve().parents[1] / "Resources"
SAMPLE_CT = RESOURCES / "SampleData" / "example_ct_sm.nii.gz"
SAMPLE_ORGANS = RESOURCES / "SampleData" / "example_ct_sm_totalseg.nii.gz"
DEMO_MODEL = RESOURCES / "DemoModel"
BUDGET = 8


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """One real explanation through the job (what the panel's Apply does after reading the nodes)."""
    scene = scene_io.new_scene()
    ct_node = volumes.volume_to_node(scene, read_volume(SAMPLE_CT), "example_ct_sm")
    organs_volume = read_volume(SAMPLE_ORGANS)
    organs_node = volumes.volume_to_node(scene, organs_volume, "organs", labelmap=True)
    organs_node.AddDefaultStorageNode()
    organs_node.GetStorageNode().SetFileName(str(SAMPLE_ORGANS))
    spleen = np.argwhere(organs_volume.array == 1)
    k, j, i = spleen[len(spleen) // 2]
    ras = tuple((volumes.node_ijk_to_ras(ct_node) @ np.array([i, j, k, 1.0]))[:3])
    values = panel.PanelValues(has_ct=True, model_dir=str(DEMO_MODEL), has_organs=True, target="spleen",
                               roi_point_ras=ras, units="organs", value="softdice", budget=BUDGET, device="CPU",
                               faithfulness_steps=1)
    assert panel.validate_panel(values) == []
    device, _ = panel.choose_device(values.device)
    request = panel.build_request(values, tmp_path_factory.mktemp("e2e") / "out", device=device)
    inputs = CaseInputs(ct=volumes.node_to_volume(ct_node), organs=volumes.node_to_volume(organs_node),
                        organ_names=volumes.label_names_of_node(organs_node))
    job = ExplainJob(request, faithfulness_steps=1, inputs=inputs).start()
    messages = job.wait(3600)
    assert job.state == "done", job.error_text + "\n" + job.error_traceback
    return scene, ct_node, job, messages


def test_job_reports_progress_and_result(finished_job):
    _, _, job, messages = finished_job
    progress = [m.event for m in messages if m.kind == "progress"]
    assert progress and progress[0].stage == "prepare"
    coalitions = [e for e in progress if e.stage == "coalitions"]
    assert coalitions and coalitions[-1].done == coalitions[-1].total
    assert panel.format_progress(coalitions[-1]).startswith(f"coalitions {coalitions[-1].done}/")
    assert messages[-1].kind == "result"
    assert job.result.summary["solver"]["coalitions"] <= BUDGET
    assert job.faithfulness is not None and len(job.faithfulness["morf"]) == 2           # steps = 1


def test_result_nodes_overlay_the_ct_and_survive_a_reload(finished_job, tmp_path):
    scene, ct_node, job, _ = finished_job
    nodes = results.results_to_scene(scene, job.result, job.faithfulness, ct_node=ct_node)
    assert results.check_run(scene, nodes["run_id"], expect_faithfulness=True) == []
    assert volumes.same_voxel_grid(nodes["attribution"], ct_node)
    np.testing.assert_allclose(volumes.node_ijk_to_ras(nodes["attribution"]), job.result.ct.ijk_to_ras_matrix(),
                               atol=1e-6)
    rows = tables.table_rows(nodes["units_table"])
    assert "spleen" in {r["name"] for r in rows}
    assert not any(r["name"].startswith(("Segment_", "label_")) for r in rows)
    assert sum(r["phi"] for r in rows) == pytest.approx(job.result.full_value - job.result.phi0, abs=1e-6)
    path = scene_io.save_scene(scene, tmp_path / "e2e.mrb")
    assert results.verify_saved_scene(path) == []
    reloaded = scene_io.load_scene(path)
    record = hierarchy.folder_attributes(reloaded, hierarchy.run_folders(reloaded)[-1])
    assert record["Budget"] == str(BUDGET) and record["Units"] == "organs" and record["Device"] == "cpu"
    assert json.loads(record["Versions"])["torch"]


def test_cli_scene_from_the_output_folder(finished_job, tmp_path):
    """What `segshap explain ... --scene scene.mrb` calls after the run."""
    _, _, job, _ = finished_job
    written = results.write_scene_from_output(job.result.out, tmp_path / "cli.mrb")
    reloaded = scene_io.load_scene(written)
    nodes = results.find_run_nodes(reloaded)
    assert results.check_run(reloaded) == [] and "chart" in nodes
    assert volumes.node_to_volume(nodes["attribution"]).same_grid(read_volume(SAMPLE_CT), tol=1e-4)
