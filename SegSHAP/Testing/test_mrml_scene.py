"""Subject-hierarchy folders per run, the scene bundle (.mrb) written and reloaded in a fresh scene, and the
output-folder -> scene path the CLI's ``--scene`` uses."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

pytestmark = pytest.mark.mrml

slicer = pytest.importorskip("slicer")

from SegSHAPLib.errors import InputError  # noqa: E402
from SegSHAPMRML import display, hierarchy, results, scene_io, tables, volumes  # noqa: E402
from SegSHAPMRML.testing import (PHI, UNIT_NAMES, synthetic_faithfulness, synthetic_result,  # noqa: E402
                                 write_synthetic_output)

EXPECTED_ROLES = {"roi", "units", "units_colors", "attribution", "units_table", "curves_table", "chart",
                  "series_morf", "series_lerf", "series_random", "prediction", "roi_point"}


def test_run_folder_under_the_ct_study_with_record():
    scene = scene_io.new_scene()
    result = synthetic_result()
    nodes = results.results_to_scene(scene, result, synthetic_faithfulness(),
                                     extra_versions={"Slicer": "5.x-test"})
    sh = scene.GetSubjectHierarchyNode()
    folder = nodes["folder_item"]
    i, j, k = result.summary["roi"]["point_ijk"]
    assert sh.GetItemName(folder) == f"SegSHAP organs softdice @ ROI ({i},{j},{k})"
    study = sh.GetItemParent(folder)
    assert sh.GetItemLevel(study) == slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    assert sh.GetItemParent(sh.GetItemByDataNode(nodes["ct"])) == study           # the CT's own study
    record = hierarchy.folder_attributes(scene, folder)
    for key, value in {"Budget": "32", "Seed": "0", "MaskValue": "-1024", "Device": "cpu", "Units": "organs",
                       "Value": "softdice", "SolverMethod": "exact", "Coalitions": "32"}.items():
        assert record[key] == value, key
    versions = json.loads(record["Versions"])
    assert versions["segshap"] == "0.1.0" and versions["Slicer"] == "5.x-test" and "numpy" in versions
    assert float(record["AOPC"]) == pytest.approx(synthetic_faithfulness()["aopc"], rel=1e-5)
    in_folder = {n.GetID() for n in hierarchy.folder_nodes(scene, folder)}
    for role in EXPECTED_ROLES:
        assert (nodes[role].GetID() in in_folder) == (role != "units_colors"), role   # colour tables stay out
        assert nodes[role].GetAttribute("SegSHAP.RunID") == nodes["run_id"]
    assert results.check_run(scene) == []


def test_existing_ct_study_is_used_and_two_runs_never_overwrite():
    scene = scene_io.new_scene()
    result = synthetic_result()
    ct = volumes.volume_to_node(scene, result.ct, "patient CT")
    sh = scene.GetSubjectHierarchyNode()
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1"), "CT study")
    sh.CreateItem(study, ct)
    first = results.results_to_scene(scene, result, ct_node=ct)
    second = results.results_to_scene(scene, result, synthetic_faithfulness(), ct_node=ct)
    assert first["run_id"] != second["run_id"]
    assert sh.GetItemParent(first["folder_item"]) == study == sh.GetItemParent(second["folder_item"])
    assert sh.GetItemName(second["folder_item"]) == sh.GetItemName(first["folder_item"]) + " (2)"
    for role in ("attribution", "units", "roi", "units_table"):
        assert first[role].GetID() != second[role].GetID()
        assert first[role].GetName() != second[role].GetName()
    assert results.run_ids(scene) == [first["run_id"], second["run_id"]]
    assert results.find_run_nodes(scene)["run_id"] == second["run_id"]          # latest by default
    assert results.find_run_nodes(scene, first["run_id"])["attribution"].GetID() == first["attribution"].GetID()
    assert results.check_run(scene, first["run_id"]) == [] and results.check_run(scene, second["run_id"]) == []
    assert len(hierarchy.run_folders(scene)) == 2


def test_ct_without_study_is_not_moved():
    scene = scene_io.new_scene()
    result = synthetic_result()
    ct = volumes.volume_to_node(scene, result.ct, "CT")
    nodes = results.results_to_scene(scene, result, ct_node=ct)
    sh = scene.GetSubjectHierarchyNode()
    assert sh.GetItemParent(sh.GetItemByDataNode(ct)) == sh.GetSceneItemID()
    assert sh.GetItemParent(nodes["folder_item"]) == sh.GetSceneItemID()


def test_user_prediction_node_is_kept_and_not_duplicated():
    scene = scene_io.new_scene()
    result = synthetic_result()
    ct = volumes.volume_to_node(scene, result.ct, "CT")
    own = volumes.volume_to_node(scene, result.prediction, "my prediction", labelmap=True)
    nodes = results.results_to_scene(scene, result, ct_node=ct, prediction_node=own)
    assert nodes["prediction"] is own and own.GetAttribute("SegSHAP.Role") is None
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 3       # own + ROI + units


def test_result_on_another_grid_is_refused():
    scene = scene_io.new_scene()
    result = synthetic_result()
    other = synthetic_result(origin=(0.0, 0.0, 0.0))
    ct = volumes.volume_to_node(scene, other.ct, "other CT")
    with pytest.raises(InputError, match="not on the CT's voxel grid"):
        results.results_to_scene(scene, result, ct_node=ct)


def test_units_as_segmentation_keep_unit_names():
    scene = scene_io.new_scene()
    nodes = results.results_to_scene(scene, synthetic_result(), units_segmentation=True)
    assert sorted(volumes.segment_names(nodes["units_segmentation"]).values()) == sorted(UNIT_NAMES)


def _assert_reloaded_run_complete(scene, expected_faithfulness=True):
    nodes = results.find_run_nodes(scene)
    assert results.check_run(scene, expect_faithfulness=expected_faithfulness) == []
    assert EXPECTED_ROLES <= set(nodes) if expected_faithfulness else True
    assert nodes["ct"] is not None
    # voxels and geometry survive
    result = synthetic_result()
    for role in ("attribution", "units", "roi", "prediction"):
        volume = volumes.node_to_volume(nodes[role])
        assert volume.same_grid(result.ct, tol=1e-5), role
        np.testing.assert_array_equal(volume.array, getattr(result, role).array.astype(volume.array.dtype))
    assert nodes["attribution"].GetImageData().GetScalarTypeAsString() == "float"
    # the colour table, its centre and the display settings survive
    colours = nodes["attribution_colors"]
    assert colours.GetNumberOfColors() == display.DIVERGING_SIZE
    centre = [0.0] * 4
    colours.GetColor(display.DIVERGING_SIZE // 2, centre)
    assert centre == pytest.approx([1.0, 1.0, 1.0, 0.0], abs=1e-3)
    end = [0.0] * 4
    colours.GetColor(display.DIVERGING_SIZE - 1, end)
    assert end == pytest.approx([1.0, 0.0, 0.0, 1.0], abs=1e-3)
    d = nodes["attribution"].GetDisplayNode()
    assert d.GetWindow() == pytest.approx(2 * max(abs(p) for p in PHI)) and d.GetLevel() == pytest.approx(0.0)
    assert "Red" in nodes["attribution"].GetDescription()
    assert display.color_table_names(nodes["units_colors"])[1:] == list(UNIT_NAMES)
    # the table survives with its types and order
    rows = tables.table_rows(nodes["units_table"])
    assert [r["phi"] for r in rows] == pytest.approx(sorted(PHI, reverse=True))
    assert isinstance(rows[0]["unit_id"], int) and isinstance(rows[0]["name"], str)
    # the run's folder and record survive
    folder = hierarchy.run_folders(scene)[-1]
    record = hierarchy.folder_attributes(scene, folder)
    assert record["RunID"] == nodes["run_id"] and record["Budget"] == "32"
    assert scene.GetSubjectHierarchyNode().GetItemName(folder).startswith("SegSHAP organs softdice @ ROI (")
    return nodes


def test_mrb_round_trip(tmp_path):
    scene = scene_io.new_scene()
    made = results.results_to_scene(scene, synthetic_result(), synthetic_faithfulness())
    path = scene_io.save_scene(scene, tmp_path / "run.mrb")
    assert path.is_file()
    names = scene_io.bundle_listing(path)
    assert "run/run.mrml" in names and any(n.startswith("run/Data/") and n.endswith(".nrrd") for n in names)
    assert any(n.endswith(".tsv") for n in names) and any(n.endswith(".csv") for n in names)   # table, colours
    reloaded = scene_io.load_scene(path)
    nodes = _assert_reloaded_run_complete(reloaded)
    assert nodes["run_id"] == made["run_id"]
    assert nodes["chart"].GetNumberOfPlotSeriesNodes() == 3
    assert volumes.markups_point_ras(nodes["roi_point"]) == pytest.approx(
        synthetic_result().summary["inputs"]["roi_point"])
    assert results.verify_saved_scene(path) == []


def test_bundle_directory_round_trip(tmp_path):
    scene = scene_io.new_scene()
    results.results_to_scene(scene, synthetic_result(), synthetic_faithfulness())
    mrml = scene_io.save_scene(scene, tmp_path / "bundle")
    assert mrml == (tmp_path / "bundle" / "bundle.mrml").resolve() and mrml.is_file()
    assert (tmp_path / "bundle" / "Data").is_dir()
    _assert_reloaded_run_complete(scene_io.load_scene(tmp_path / "bundle"))


def test_two_runs_survive_a_reload(tmp_path):
    scene = scene_io.new_scene()
    first = results.results_to_scene(scene, synthetic_result())
    results.results_to_scene(scene, synthetic_result(), synthetic_faithfulness(), ct_node=first["ct"])
    reloaded = scene_io.load_scene(scene_io.save_scene(scene, tmp_path / "two.mrb"))
    assert len(results.run_ids(reloaded)) == 2
    assert all(results.check_run(reloaded, rid) == [] for rid in results.run_ids(reloaded))
    assert len(hierarchy.run_folders(reloaded)) == 2


def test_check_run_reports_problems():
    scene = scene_io.new_scene()
    nodes = results.results_to_scene(scene, synthetic_result(), synthetic_faithfulness())
    nodes["attribution"].GetDisplayNode().SetWindowLevel(1.0, 0.3)
    nodes["series_lerf"].SetYColumnName("nope")
    scene.RemoveNode(nodes["units_table"])
    problems = results.check_run(scene)
    assert "missing node: units_table" in problems
    assert "attribution display: window not symmetric about 0" in problems
    assert "series_lerf: references a missing column" in problems
    assert results.check_run(scene_io.new_scene()) == ["no SegSHAP run in the scene"]


def test_write_scene_from_output_folder(tmp_path):
    """The CLI path: explain output folder -> scene.mrb, reloaded and checked."""
    out = tmp_path / "explain_out"
    write_synthetic_output(out)
    written = results.write_scene_from_output(out, tmp_path / "scene.mrb")
    assert written == (tmp_path / "scene.mrb").resolve()
    reloaded = scene_io.load_scene(written)
    nodes = _assert_reloaded_run_complete(reloaded)
    assert nodes["ct"].GetName() == "explain_out_ct"
    assert np.array_equal(volumes.array_from_node(nodes["ct"]), synthetic_result().ct.array)
    record = hierarchy.folder_attributes(reloaded, hierarchy.run_folders(reloaded)[-1])
    assert record["OutputFolder"] == str(out)


def test_scene_for_output_dir_without_ct_file_or_faithfulness(tmp_path):
    out = tmp_path / "o"
    write_synthetic_output(out, with_ct_file=False, faithfulness=False)
    scene = results.scene_for_output_dir(out)
    nodes = results.find_run_nodes(scene)
    assert "chart" not in nodes and results.check_run(scene) == []
    assert nodes["ct"].GetAttribute("SegSHAP.Warning")


def test_incomplete_output_folder_is_an_input_error(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(InputError, match="missing attribution.nii.gz"):
        results.load_output_dir(tmp_path)


def test_output_dir_reads_back_as_result(tmp_path):
    written = write_synthetic_output(tmp_path / "o")
    loaded = results.load_output_dir(tmp_path / "o")
    assert loaded.unit_names == list(UNIT_NAMES)
    np.testing.assert_allclose(loaded.phi, PHI)
    assert loaded.phi0 == pytest.approx(written.phi0) and loaded.ct is not None and loaded.prediction is not None
    assert zipfile.is_zipfile(results.write_scene_from_output(tmp_path / "o", tmp_path / "s.mrb", verify=False))


def test_fallback_mrb_writer_makes_a_bundle_slicer_reads(tmp_path):
    """If the scene's own bundle writer fails, the .mrml + Data/ directory is zipped the way Slicer's MRB is
    (``<name>/<name>.mrml``, ``<name>/Data/...``) and reads back with every node."""
    scene = scene_io.new_scene()
    results.results_to_scene(scene, synthetic_result(), synthetic_faithfulness())
    scene.WriteToMRB = lambda *args: False                  # force the fallback for this scene object
    path = scene_io.save_scene(scene, tmp_path / "fallback.mrb")
    names = scene_io.bundle_listing(path)
    assert "fallback/fallback.mrml" in names and any(n.startswith("fallback/Data/") for n in names)
    _assert_reloaded_run_complete(scene_io.load_scene(path))
