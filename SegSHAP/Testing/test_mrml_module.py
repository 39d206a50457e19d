"""SegSHAP.py's logics and module classes, run against a slicer-core scene.

The module is loaded in the stand-in Slicer environment of ``slicer_standins`` (its docstring lists what is real
and what stands in: the MRML scene is slicer-core's, the parameter node follows Slicer's parameterNodeWrapper
rules). This exercises what the widget calls - validation from the parameter node, nodes -> volumes, the request,
the job, results -> nodes, the install logic - and, with the real pipeline (marked slow), the module's own
self-test ``SegSHAPTest``. The widget itself runs under real Qt in test_slicer_widget.py.
"""

from __future__ import annotations

import json
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mrml

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

import slicer_standins  # noqa: E402
from SegSHAPLib import options  # noqa: E402
from SegSHAPLib.errors import InputError  # noqa: E402
from SegSHAPLib.io.image_io import read_volume  # noqa: E402
from SegSHAPMRML import display, panel, results, scene_io, volumes  # noqa: E402
from SegSHAPMRML.results import ExplanationOutputs  # noqa: E402

MODULE_DIR = Path(__file__).resolve().parents[1]
RESOURCES = MODULE_DIR / "Resources"
SAMPLE_CT = RESOURCES / "SampleData" / "example_ct_sm.nii.gz"
SAMPLE_ORGANS = RESOURCES / "SampleData" / "example_ct_sm_totalseg.nii.gz"
DEMO_MODEL = RESOURCES / "DemoModel"
RESUME_BUDGET = 16                 # two solver batches of 8: cancelled after the first, resumed for the second


@pytest.fixture
def module(monkeypatch, tmp_path):
    """SegSHAP.py loaded in the stand-in Slicer environment (``slicer_standins``: real MRML and Qt, Slicer's
    parameterNodeWrapper rules), ``slicer.mrmlScene`` a fresh slicer-core scene."""
    scene = scene_io.new_scene()
    mod_session = slicer_standins.install(monkeypatch, scene, tmp_path)
    mod = slicer_standins.load_module()
    mod.scene, mod.session = scene, mod_session
    return mod


def _load_sample(scene):
    ct = volumes.volume_to_node(scene, read_volume(SAMPLE_CT), "example_ct_sm")
    display.show_ct(scene, ct)
    organs_volume = read_volume(SAMPLE_ORGANS)
    organs = volumes.volume_to_node(scene, organs_volume, "organs", labelmap=True)
    from SegSHAPLib.units.organs import organ_class_names

    names = organ_class_names(SAMPLE_ORGANS)
    display.show_label_map(scene, organs, display.named_label_color_table(scene, names, "TotalSegmentator"))
    spleen = np.argwhere(organs_volume.array == 1)
    k, j, i = spleen[len(spleen) // 2]
    point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "ROI point")
    ras = volumes.node_ijk_to_ras(ct) @ np.array([i, j, k, 1.0])
    point.AddControlPoint(vtk.vtkVector3d(*ras[:3]))
    return ct, organs, point, names


def test_organ_names_of_a_label_map_loaded_from_file(module):
    """A TotalSegmentator file loaded as a label map gets the default colour table; the organ names then come
    from the file (its label table), never from the default table."""
    organs = slicer_standins.load_volume_like_slicer(module.scene, SAMPLE_ORGANS, labelmap=True)
    names = volumes.label_names_of_node(organs)
    assert names[1] == "spleen" and names[5] == "liver" and len(names) == 41
    default_names = display.color_table_names(module.scene.GetNodeByID("vtkMRMLColorTableNodeLabels"))
    assert names[2] != default_names[2]


def _parameters(module, ct, organs, point, **changes):
    p = module.SegSHAPLogic().getParameterNode()
    p.inputVolume, p.organNode, p.roiPoint, p.target, p.budget = ct, organs, point, "spleen", 32
    for key, value in changes.items():
        setattr(p, key, value)
    return p


def test_module_metadata(module):
    parent = types.SimpleNamespace()
    module.SegSHAP(parent)
    assert parent.title == "SegSHAP" and parent.categories == ["Segmentation"]
    assert "Red" in parent.helpText and "Blue" in parent.helpText          # the legend
    assert "10.5281/zenodo.6802613" in parent.acknowledgementText and "Wasserthal" in parent.acknowledgementText
    assert parent.contributors == module.CONTRIBUTORS and "SegSHAP developers" not in parent.contributors
    p = module.SegSHAPLogic().getParameterNode()
    assert p.modelPath == DEMO_MODEL and p.units == "organs" and p.value == options.VALUE and p.device == "Auto"


def test_validation_from_the_parameter_node(module):
    ct, organs, point, _ = _load_sample(module.scene)
    logic = module.SegSHAPLogic()
    assert logic.runLogic.validate(_parameters(module, ct, organs, point)) == []
    problems = logic.runLogic.validate(_parameters(module, None, None, None, units="hybrid"))
    assert any("Select the CT" in p for p in problems)
    assert any("Place a point" in p for p in problems)
    assert any("need an organ segmentation" in p for p in problems)
    assert logic.runLogic.device_choices()[:2] == ["Auto", "CPU"]


def test_slic_units_and_the_removal_operator_reach_the_request(module):
    """The panel's SLIC size and compactness (slic units) and removal operator with its blur sigma (Advanced) become
    the request's, as ``segshap explain --units slic --slic-size-mm ... --removal blur --blur-sigma-mm ...``; a
    non-positive sigma blocks Apply."""
    ct, organs, point, _ = _load_sample(module.scene)
    logic = module.SegSHAPLogic()
    p = _parameters(module, ct, organs, point, device="CPU", units="slic-hybrid", slicSizeMm=40.0,
                    slicCompactness=0.2, removal="blur", blurSigmaMm=15.0)
    assert logic.runLogic.validate(p) == []
    request = logic.runLogic.prepare_run(p, create=False)[0].request
    assert (request.units, request.slic_size_mm, request.slic_compactness, request.removal,
            request.blur_sigma_mm) == ("slic-hybrid", 40.0, 0.2, "blur", 15.0)
    values = logic.runLogic.panel_values(p)
    values.blur_sigma_mm = 0.0
    assert any("blur's sigma" in problem for problem in panel.validate_panel(values))


def test_prepare_run_reads_nodes_into_volumes(module):
    ct, organs, point, names = _load_sample(module.scene)
    logic = module.SegSHAPLogic()
    plan, inputs, note = logic.runLogic.prepare_run(_parameters(module, ct, organs, point, device="CPU", seed=4))
    request = plan.request
    assert note == "running on the CPU" and plan.action == "new" and plan.note == ""
    assert request.device == "cpu" and request.target == "spleen" and request.units == "organs"
    assert request.budget == 32 and request.seed == 4 and request.model == DEMO_MODEL
    assert request.roi_point == pytest.approx(volumes.markups_point_ras(point))
    assert Path(request.out).name == "explanation" and Path(request.out).parent.parent.name == "SegSHAP"
    assert not Path(request.out).exists()                      # run_explain claims it
    assert inputs.ct.same_grid(read_volume(SAMPLE_CT))
    np.testing.assert_array_equal(inputs.organs.array, read_volume(SAMPLE_ORGANS).array)
    assert inputs.organ_names[1] == "spleen" and inputs.organ_names[5] == names[5]
    assert inputs.prediction is None and inputs.roi_mask is None
    # a second run gets its own output folder
    assert logic.runLogic.prepare_run(_parameters(module, ct, organs, point))[0].request.out != request.out


def test_prepare_run_with_segmentations(module):
    scene = module.scene
    ct, organs, point, names = _load_sample(scene)
    organ_segmentation = volumes.label_volume_to_segmentation(scene, organs, "TotalSegmentator segments", ct)
    spleen_only = volumes.node_to_volume(organs)
    spleen_only = spleen_only.with_array((spleen_only.array == 1).astype(np.uint8))
    spleen_labels = volumes.volume_to_node(scene, spleen_only, "spleen labels", labelmap=True)
    display.show_label_map(scene, spleen_labels, display.named_label_color_table(scene, {1: "spleen"}, "n"))
    prediction = volumes.label_volume_to_segmentation(scene, spleen_labels, "my prediction", ct)
    spleen_id = next(iter(volumes.segment_names(prediction)))
    p = _parameters(module, ct, organ_segmentation, point, runModel=False, predictionNode=prediction,
                    roiMode="segment", roiSegmentation=prediction, roiSegmentID=spleen_id, device="CPU")
    assert module.SegSHAPLogic().runLogic.validate(p) == []
    plan, inputs, _ = module.SegSHAPLogic().runLogic.prepare_run(p)
    assert plan.request.roi_point is None
    np.testing.assert_array_equal(inputs.roi_mask.array, spleen_only.array)
    # the prediction's segment named "spleen" gets the model's spleen label value (1)
    np.testing.assert_array_equal(inputs.prediction.array == 1, spleen_only.array == 1)
    # organ names are the segment names (TotalSegmentator's organ names), never "Segment_1"
    assert "spleen" in inputs.organ_names.values() and "liver" in inputs.organ_names.values()
    assert not any(n.startswith("Segment_") for n in inputs.organ_names.values())
    value_of = {n: v for v, n in inputs.organ_names.items()}
    original = read_volume(SAMPLE_ORGANS).array
    np.testing.assert_array_equal(inputs.organs.array == value_of["liver"], original == 5)


def test_transformed_ct_gets_the_point_in_its_own_frame(module):
    scene = module.scene
    ct, organs, point, _ = _load_sample(scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(1, 3, 25.0)
    transform.SetMatrixTransformToParent(shift)
    ct.SetAndObserveTransformNodeID(transform.GetID())
    organs.SetAndObserveTransformNodeID(transform.GetID())
    world = np.array(volumes.markups_point_ras(point)) + [0.0, 25.0, 0.0]
    point.SetNthControlPointPositionWorld(0, *world)
    plan, _, _ = module.SegSHAPLogic().runLogic.prepare_run(_parameters(module, ct, organs, point, device="CPU"))
    assert plan.request.roi_point == pytest.approx(tuple(world - [0.0, 25.0, 0.0]))


def _fake_run(request, *, inputs, progress=None, cancel=None, tolerance=None):
    """Stand-in for run_explain (fast, no model): organ units around the clicked point, made-up phi."""
    ct_volume, organ_names = inputs.ct, inputs.organ_names
    labels = inputs.organs.array
    present = [int(v) for v in np.unique(labels) if v > 0][:6]
    units = np.zeros(labels.shape, np.int32)
    for j, value in enumerate(present):
        units[labels == value] = j + 1
    phi = np.linspace(0.3, -0.2, len(present))
    roi = (labels == 1).astype(np.uint8)
    progress(types.SimpleNamespace(stage="coalitions", done=32, total=32, message="", counters={}))
    summary = {"inputs": request.to_json(), "roi": {"voxels": int(roi.sum()), "target": 1, "point_ijk": [16, 44, 19]},
               "units": [{"id": j + 1, "name": organ_names[v], "voxels": int((units == j + 1).sum()),
                          "shap": float(phi[j])} for j, v in enumerate(present)],
               "solver": {"method": "kernelshap", "coalitions": 32}, "inference": {"patch_forwards": 5},
               "timings_s": {"total": 0.1}}
    return ExplanationOutputs(Path(request.out), ct_volume, ct_volume.with_array(roi), ct_volume.with_array(roi),
                              ct_volume.with_array(units), [organ_names[v] for v in present],
                              ct_volume.with_array(np.concatenate([[0.0], phi]).astype(np.float32)[units]),
                              phi, 0.1, 0.1 + float(phi.sum()), summary)


def test_start_and_finish_map_the_result_to_nodes(module):
    scene = module.scene
    ct, organs, point, _ = _load_sample(scene)
    logic = module.SegSHAPLogic()
    p = _parameters(module, ct, organs, point, device="CPU", faithfulnessSteps=0)
    job, note = logic.runLogic.start_explain(p, run=_fake_run)
    job.wait(30)
    assert job.state == "done", job.error_text
    # the in-memory inputs were written to the runs folder's inputs/<content digest> and the request points at them
    inputs = job.inputs_dir
    assert inputs.parent == logic.runLogic.runs_folder / "inputs" and Path(job.request.out).parent.parent == logic.runLogic.runs_folder
    assert job.request.ct == (inputs / "ct.nii.gz").resolve() and job.request.organs == (inputs / "organs.nii.gz").resolve()
    assert read_volume(job.request.ct).same_grid(read_volume(SAMPLE_CT))
    nodes = logic.runLogic.finish_explain(job, p)
    assert results.check_run(scene, nodes["run_id"]) == []
    assert nodes["ct"] is ct and volumes.same_voxel_grid(nodes["attribution"], ct)
    record = scene.GetSubjectHierarchyNode()
    assert record.GetItemAttribute(nodes["folder_item"], "SegSHAP.Device") == "cpu"
    assert '"Slicer": "5.10.0 (stand-in)"' in record.GetItemAttribute(nodes["folder_item"], "SegSHAP.Versions")
    assert volumes.markups_point_ras(nodes["roi_point"]) == pytest.approx(volumes.markups_point_ras(point))
    names = display.color_table_names(nodes["units_colors"])[1:]
    assert names[0] == "spleen" and not any(n.startswith(("Segment_", "label_")) for n in names)
    # the blocking path used by scripts and the self-test gives a second, separate run
    again = logic.runLogic.run_blocking(p, timeout=30, run=_fake_run)
    assert again["run_id"] != nodes["run_id"] and len(results.run_ids(scene)) == 2


def test_grouping_from_the_parameter_node_reaches_the_request(module, tmp_path):
    ct, organs, point, _ = _load_sample(module.scene)
    logic = module.SegSHAPLogic()
    groups = tmp_path / "groups.json"
    groups.write_text('{"rib cage": ["rib_*"]}')
    p = _parameters(module, ct, organs, point, device="CPU", grouping="from file", groupingFile=Path("."))
    assert any("Choose the organ grouping JSON file" in problem for problem in logic.runLogic.validate(p))
    p.groupingFile = tmp_path / "typo.json"
    assert any("typo.json does not exist" in problem for problem in logic.runLogic.validate(p))
    groups.write_text('["rib_*"]')
    p.groupingFile = groups
    assert any("must be a JSON object" in problem for problem in logic.runLogic.validate(p))
    with pytest.raises(InputError, match="must be a JSON object"):                 # refused before any run
        logic.runLogic.start_explain(p, run=_fake_run)
    groups.write_text('{"rib cage": ["rib_*"]}')
    assert logic.runLogic.validate(p) == []
    assert logic.runLogic.prepare_run(p)[0].request.grouping == str(groups.resolve())
    p.grouping = "default groups"
    assert logic.runLogic.prepare_run(p)[0].request.grouping == "default"
    p.units = "fcc"                                                                 # no organ map is read
    plan, inputs, _ = logic.runLogic.prepare_run(p)
    assert plan.request.grouping is None and inputs.organs is None


def test_failed_job_is_not_mapped(module):
    ct, organs, point, _ = _load_sample(module.scene)
    logic = module.SegSHAPLogic()
    p = _parameters(module, ct, organs, point, device="CPU")

    def broken(request, **kwargs):
        raise RuntimeError("checkpoint_final.pth is corrupt")

    job, _ = logic.runLogic.start_explain(p, run=broken)
    job.wait(30)
    assert job.state == "failed"
    with pytest.raises(RuntimeError, match="checkpoint_final.pth is corrupt"):
        logic.runLogic.finish_explain(job, p)


class _PyTorchUtilsLogic:
    """Stand-in for the PyTorch extension's logic (PyTorchUtils.PyTorchUtilsLogic.installTorch; an extension
    module that only exists in desktop Slicer): records the call."""

    calls: list = []

    def installTorch(self, askConfirmation=False, torchVersionRequirement=None, **kwargs):
        self.calls.append((askConfirmation, torchVersionRequirement))
        return object()


def _missing(deps, *names):
    rows = {name: (minimum, source) for name, minimum, source in
            (*deps.EXTENSION_REQUIREMENTS, *deps.SLICER_REQUIREMENTS, *deps.pip_requirements())}
    return lambda *args: [deps.Requirement(name, rows[name][0], None, rows[name][1]) for name in names]


def test_install_with_nothing_missing_asks_nothing(module, monkeypatch):
    import SegSHAPMRML.deps as deps

    monkeypatch.setattr(deps, "missing_requirements", lambda *args: [])
    assert module.SegSHAPInstallLogic().ensureDependencies() is True
    assert module.session.questions == [] and module.session.pip_installs == []


def test_torch_without_the_pytorch_extension_is_refused_not_pip_installed(module, monkeypatch):
    import SegSHAPMRML.deps as deps

    monkeypatch.setattr(deps, "missing_requirements", _missing(deps, "torch", "nibabel"))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)                  # the extension is not installed
    with pytest.raises(module.InstallError, match="install 'PyTorch' from the Extensions Manager"):
        module.SegSHAPInstallLogic().ensureDependencies()
    assert module.session.questions == [] and module.session.pip_installs == []


def test_one_confirmation_then_each_installer_and_a_restart_prompt(module, monkeypatch, tmp_path):
    """torch through the PyTorch extension, the pip group with one pip_install call whose argument list keeps a
    wheel folder with spaces whole; a replaced imported package asks for a restart."""
    import SegSHAPMRML.deps as deps

    monkeypatch.setattr(deps, "missing_requirements", _missing(deps, "torch", "nibabel", "tqdm"))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=_PyTorchUtilsLogic))
    _PyTorchUtilsLogic.calls = []
    versions = iter([{"numpy": "1.26.0"}, {"numpy": "2.0.0"}])                 # numpy replaced by the install
    monkeypatch.setattr(deps, "installed_versions", lambda: next(versions))
    wheels = tmp_path / "my wheels"
    wheels.mkdir()
    lines = []
    ready = module.SegSHAPInstallLogic().ensureDependencies(wheelFolder=str(wheels), log=lines.append)
    assert ready is False                                                     # restart first
    assert len(module.session.questions) == 2                                # install, then restart
    assert "torch>=2.1 through the PyTorch extension" in module.session.questions[0]
    assert "nibabel>=5, tqdm>=4.66 with pip" in module.session.questions[0]
    assert _PyTorchUtilsLogic.calls == [(False, ">=2.1")]
    assert module.session.pip_installs == [["--find-links", str(wheels), "nibabel>=5", "tqdm>=4.66"]]
    assert module.session.restarts == 1


def test_declining_installs_nothing(module, monkeypatch):
    import SegSHAPMRML.deps as deps

    monkeypatch.setattr(deps, "missing_requirements", _missing(deps, "nibabel"))
    module.session.answers = [False]
    assert module.SegSHAPInstallLogic().ensureDependencies() is False
    assert module.session.pip_installs == [] and module.session.restarts == 0


def test_missing_dependencies_in_testing_mode_never_install(module, monkeypatch):
    import slicer as slicer_module
    import SegSHAPMRML.deps as deps

    monkeypatch.setattr(deps, "missing_requirements", _missing(deps, "nnunetv2"))
    monkeypatch.setattr(slicer_module.app, "testingEnabled", lambda: True)
    with pytest.raises(module.InstallError, match="needs nnunetv2>=2.5"):
        module.SegSHAPInstallLogic().ensureDependencies()
    assert module.session.questions == []


@pytest.mark.slow
def test_self_test_runs_end_to_end(module, monkeypatch):
    """The module's own SegSHAPTest (sample CT, demo model, organ units, budget 16) with the real pipeline."""
    scene = module.scene
    monkeypatch.setattr(scene, "Clear", lambda *a: None, raising=False)
    result = unittest.TestResult()
    module.SegSHAPTest("test_SegSHAP_end_to_end").run(result)
    assert not result.errors and not result.failures, result.errors + result.failures
    assert not result.skipped, result.skipped
    assert len(results.run_ids(scene)) == 1 and results.check_run(scene) == []


def _small_prediction(scene, ct, point):
    """A given prediction (label map node) that is a 5x5x3-voxel spleen cube around the ROI point: no full
    prediction to run, and a small box whose support is 12 of the 60 patches (a cheap real explanation)."""
    ijk = np.linalg.inv(volumes.node_ijk_to_ras(ct)) @ np.array([*volumes.markups_point_ras(point), 1.0])
    i, j, k = (int(round(v)) for v in ijk[:3])
    ct_volume = volumes.node_to_volume(ct)
    labels = np.zeros(ct_volume.array.shape, np.uint8)                           # (z, y, x)
    labels[k - 1:k + 2, j - 2:j + 3, i - 2:i + 3] = 1
    node = volumes.volume_to_node(scene, ct_volume.with_array(labels), "spleen cube", labelmap=True)
    display.show_label_map(scene, node, display.named_label_color_table(scene, {1: "spleen"}, "cube"))
    return node


def _cancel_after_first_batch(request, *, progress, cancel, **kwargs):
    """run_explain with Cancel pressed as soon as the first batch of coalitions is journaled (what a user's
    click does between batches; deterministic here)."""
    from SegSHAPLib.explain.run import run_explain

    def relay(event):
        progress(event)
        if event.stage == "coalitions" and event.done > 0:
            cancel.set()

    return run_explain(request, progress=relay, cancel=cancel, **kwargs)


@pytest.mark.slow
def test_apply_after_cancel_resumes_to_the_uninterrupted_result(module, tmp_path):
    """The real pipeline through the logic (organ units in default groups, a given small prediction): cancel after
    one batch, Apply again -> resumed in the same folder with the uninterrupted run's phi; Apply once more -> the
    finished run shown again, nothing recomputed."""
    from SegSHAPLib.units.grouping import BUILTIN_GROUPINGS
    from SegSHAPLib.explain.journal import journal_entries

    ct, organs, point, _ = _load_sample(module.scene)
    p = _parameters(module, ct, organs, point, device="CPU", budget=RESUME_BUDGET, faithfulnessSteps=0,
                    grouping="default groups", runModel=False,
                    predictionNode=_small_prediction(module.scene, ct, point))
    logic = module.SegSHAPLogic()
    cancelled, _ = logic.runLogic.start_explain(p, run=_cancel_after_first_batch)
    cancelled.wait(600)
    assert cancelled.state == "cancelled", cancelled.error_text + cancelled.error_traceback
    out = Path(cancelled.request.out)
    journaled = len(journal_entries(out))
    assert 0 < journaled < RESUME_BUDGET and not (out / "summary.json").exists()

    resumed, note = logic.runLogic.start_explain(p)
    assert note.startswith(f"resuming: {journaled} coalitions already computed ({out.parent.name})")
    assert resumed.note in note and Path(resumed.request.out) == out
    resumed.wait(600)
    assert resumed.state == "done", resumed.error_text + resumed.error_traceback
    solver = json.loads((out / "summary.json").read_text())["solver"]
    assert solver["resumed_coalitions"] == journaled and solver["coalitions"] > journaled

    uninterrupted = module.SegSHAPLogic(runsFolder=tmp_path / "elsewhere")
    fresh, fresh_note = uninterrupted.runLogic.start_explain(p)
    assert "resuming" not in fresh_note
    fresh.wait(600)
    assert fresh.state == "done", fresh.error_text
    assert fresh.result.summary["solver"]["resumed_coalitions"] == 0
    np.testing.assert_array_equal(resumed.result.phi, fresh.result.phi)
    assert resumed.result.phi0 == fresh.result.phi0 and resumed.result.unit_names == fresh.result.unit_names
    assert set(resumed.result.unit_names) & set(BUILTIN_GROUPINGS["default"])      # the grouping was applied

    shown, note = logic.runLogic.start_explain(p, run=_fake_run)          # identical Apply: read back, never run
    assert "showing its results again" in note and Path(shown.request.out) == out
    shown.wait(60)
    assert shown.state == "done", shown.error_text
    np.testing.assert_array_equal(shown.result.phi, resumed.result.phi)
    nodes = logic.runLogic.finish_explain(shown, p)
    assert results.check_run(module.scene, nodes["run_id"]) == []
