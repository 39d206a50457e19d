"""The real SegSHAPWidget under a real Qt (PySide6, offscreen) with the real SegSHAP.ui, on a slicer-core scene.

Stand-ins, and why: see ``slicer_standins/__init__.py`` (PythonQt's ``qt`` as a thin shim on PySide6; the CTK,
qMRML and qSlicer widget classes with their C++ headers' properties and signals; Slicer's parameterNodeWrapper
rules; dialogs recorded instead of shown). Everything else is real: QUiLoader builds SegSHAP.ui, the widget's
QTimer polls the real in-process ``ExplainJob`` running the real demo nnU-Net on a cropped CT
(conftest.CROPPED_CASES, two sliding-window patches), the results become slicer-core nodes. One test leaves the job
factory at its default: the real ``ProcessExplainJob`` runs ``segshap explain`` in a child process of this
interpreter (PythonSlicer in Slicer), and its output reaches the run log box.

The walk: set-up -> parameter node <-> widgets -> Apply -> progress -> Cancel after the first batch -> Apply again
(resumes the journal) -> result nodes and table -> Apply with another seed -> scene closed during the run (no
error pop-up, the job cancelled, a fresh parameter node bound).

With ``SLICER_SOURCE_DIR`` naming a Slicer source checkout, the same tests run with Slicer's own
parameterNodeWrapper package instead of the stand-in (see test_slicer_parameter_node.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mrml

slicer = pytest.importorskip("slicer")
pytest.importorskip("PySide6")
vtk = pytest.importorskip("vtk")

import slicer_standins  # noqa: E402
from conftest import CROPPED_CASES  # noqa: E402
from SegSHAPLib.io.image_io import read_volume  # noqa: E402
from SegSHAPMRML import display, results, scene_io, tables, volumes  # noqa: E402
from SegSHAPMRML import panel as panel_module  # noqa: E402

BUDGET = 16                                   # two solver batches of 8


class Gate:
    """A job factory (the run logic's injection point) whose run waits after the first journaled batch until the
    test releases it: the test can click Cancel at a known moment, deterministically."""

    def __init__(self):
        self.reached, self.release, self.runs = threading.Event(), threading.Event(), 0

    def job_factory(self, request, run=None, **kwargs):
        from SegSHAPMRML.job import ExplainJob

        return ExplainJob(request, run=self._gated if run is None else run, **kwargs)

    def _gated(self, request, *, progress, cancel, **kwargs):
        from SegSHAPLib.explain.run import run_explain

        self.runs += 1

        def relay(event):
            progress(event)
            if event.stage == "coalitions" and event.done > 0 and not self.reached.is_set():
                self.reached.set()
                self.release.wait(120)

        return run_explain(request, progress=relay, cancel=cancel, **kwargs)


def _process_until(condition, app, timeout=300.0):
    """Run the Qt event loop (the widget's QTimer polls the job) until ``condition()`` or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the panel")
        app.processEvents()
        time.sleep(0.02)


def _load_case(scene, cropped_cases):
    ct = volumes.volume_to_node(scene, read_volume(cropped_cases / "spleen_ct.nii.gz"), "spleen crop")
    display.show_ct(scene, ct)
    organs_path = cropped_cases / "spleen_organs.nii.gz"
    organs = volumes.volume_to_node(scene, read_volume(organs_path), "organs", labelmap=True)
    from SegSHAPLib.units.organs import organ_class_names

    display.show_label_map(scene, organs, display.named_label_color_table(scene, organ_class_names(organs_path), "TS"))
    point = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "ROI point")
    point.AddControlPoint(vtk.vtkVector3d(*(float(v) for v in CROPPED_CASES["spleen"][1].split(","))))
    return ct, organs, point


def _fill_inputs(ui, organs, point) -> None:
    """The widgets a planner sets for a quick run on the cropped case: organ map, ROI point, budget, no curves, CPU."""
    ui.organSelector.setCurrentNode(organs)
    ui.roiPointSelector.setCurrentNode(point)
    ui.budgetSpinBox.value = BUDGET
    ui.faithfulnessStepsSpinBox.value = 0
    ui.deviceComboBox.currentIndex = 1


@pytest.fixture
def panel(monkeypatch, tmp_path, cropped_cases):
    scene = scene_io.new_scene()
    session = slicer_standins.install(monkeypatch, scene, tmp_path)
    if os.environ.get("SLICER_SOURCE_DIR"):              # cross-check with Slicer's own parameterNodeWrapper
        slicer_standins.use_slicer_wrapper(monkeypatch, os.environ["SLICER_SOURCE_DIR"])
    module = slicer_standins.load_module()
    from SegSHAPMRML.run_logic import ExplainRunLogic
    from slicer_standins import qt_shim

    gate = Gate()
    ct, organs, point = _load_case(scene, cropped_cases)
    parent = slicer.qSlicerScriptedLoadableModuleWidget()
    parent.setEntered(True)
    widget = module.SegSHAPWidget(parent, runLogic=ExplainRunLogic(scene, tmp_path / "runs",
                                                                    job_factory=gate.job_factory))
    widget.setup()
    yield widget, scene, session, gate, (ct, organs, point), qt_shim.application()
    gate.release.set()
    widget.cleanup()


def test_the_panel_from_set_up_to_scene_close(panel):
    widget, scene, session, gate, (ct, organs, point), app = panel
    ui, p = widget.ui, widget._parameterNode

    # set-up: the .ui's custom widgets are the stand-ins, nothing undeclared was set, the CT was picked up
    from slicer_standins.widgets import undeclared_properties

    assert undeclared_properties(widget.parent) == {}
    assert p.inputVolume is ct and ui.ctSelector.currentNode() is ct
    assert [ui.deviceComboBox.itemText(i) for i in range(ui.deviceComboBox.count)][:2] == ["Auto", "CPU"]
    assert "torch" in ui.dependencyStatusLabel.text and "missing" not in ui.dependencyStatusLabel.text
    assert not ui.applyButton.enabled and "point" in ui.applyButton.toolTip.lower()   # no ROI point yet

    # widgets -> parameter node (the wrapper's connectors), and back
    ui.organSelector.setCurrentNode(organs)
    ui.budgetSpinBox.value = BUDGET
    ui.faithfulnessStepsSpinBox.value = 0
    ui.deviceComboBox.currentIndex = 1
    ui.roiPointSelector.setCurrentNode(point)
    assert (p.organNode, p.budget, p.faithfulnessSteps, p.device, p.roiPoint) == (organs, BUDGET, 0, "CPU", point)
    p.units = "slic"
    assert ui.unitsComboBox.currentText == "slic" and ui.slicSizeSpinBox.enabled and not ui.fccScaleSpinBox.enabled
    p.units = "organs"                                             # the FCC scale is the cell size of a Refine
    assert ui.unitsComboBox.currentText == "organs" and ui.fccScaleSpinBox.enabled and not ui.slicSizeSpinBox.enabled
    assert ui.applyButton.enabled, ui.applyButton.toolTip

    # Apply -> progress; Cancel after the first batch
    progress_values = []
    ui.progressBar.valueChanged.connect(progress_values.append)
    ui.applyButton.click()
    assert ui.applyButton.text == "Cancel" and not ui.inputsCollapsibleButton.enabled
    _process_until(gate.reached.is_set, app)
    _process_until(lambda: any(v > 0 for v in progress_values), app)
    # the first estimate is on view while the run goes on: the overlay on the CT's grid and the ranked table
    _process_until(lambda: widget._live is not None and widget._live.paints > 0, app)
    live = widget._live.nodes
    assert ui.resultsTableView.mrmlTableNode() is live["units_table"] and tables.table_rows(live["units_table"])
    assert volumes.same_voxel_grid(live["attribution"], ct)
    assert re.match(r"Live estimate \(softdice\), \d+/16 coalitions: ", ui.verdictLabel.text), ui.verdictLabel.text
    ui.applyButton.click()                                         # Cancel
    assert ui.statusLabel.text.startswith("Cancelling")
    gate.release.set()
    _process_until(lambda: widget._job is None, app)
    assert ui.statusLabel.text.startswith("Cancelled") and ui.applyButton.text == "Explain"
    assert "the last estimate stays on view" in ui.statusLabel.text and live["attribution"].GetScene() is scene
    assert session.errors == []
    out = next((widget.runLogic.runs_folder).glob("run-*/explanation"))
    assert not (out / "summary.json").exists()

    # Apply again: the same inputs resume the journal in the same folder -> result nodes
    ui.applyButton.click()
    assert "resuming" in ui.statusLabel.text
    _process_until(lambda: widget._job is None, app)
    assert session.errors == [], session.errors
    assert ui.statusLabel.text.startswith("Done: SegSHAP organs softdice"), ui.statusLabel.text
    assert (out / "summary.json").exists() and gate.runs == 2
    table = ui.resultsTableView.mrmlTableNode()
    assert table is widget._lastNodes["units_table"] and table.GetNumberOfRows() > 0
    assert "coalitions" in ui.costLabel.text and not ui.resultsCollapsibleButton.collapsed
    assert results.check_run(scene, widget._lastNodes["run_id"]) == []
    assert volumes.same_voxel_grid(widget._lastNodes["attribution"], ct)
    assert live["attribution"].GetScene() is None and widget._live is None      # the final nodes replaced them

    # Apply with another seed, then close the scene while it runs: no pop-up, the job is cancelled
    gate.reached.clear()
    gate.release.clear()
    ui.seedSpinBox.value = 7
    ui.applyButton.click()
    job = widget._job
    _process_until(gate.reached.is_set, app)
    scene.Clear(0)
    gate.release.set()
    job.wait(120)
    assert job.state == "cancelled" and widget._job is None
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    assert session.errors == []
    assert ui.applyButton.text == "Explain" and ui.inputsCollapsibleButton.enabled
    fresh = widget._parameterNode                  # the singleton parameter node survives Clear(0), rebound
    assert fresh is not None and fresh.inputVolume is None and ui.ctSelector.currentNode() is None
    fresh.budget = 40
    assert ui.budgetSpinBox.value == 40


def test_switching_the_value_function_and_refining_selected_organs(panel):
    """After a run (every value function, until converged at most 16 coalitions): the value combo lists the
    value functions computed, switching one refills the table and puts its map in the slice views without a run;
    selecting table rows (Slicer's qMRMLTableView: rows of its sort proxy -> MRML table rows) enables Refine, which
    zooms into exactly those organs, reusing the organ run's coalitions."""
    widget, scene, session, gate, (ct, organs, point), app = panel
    gate.release.set()
    ui, p = widget.ui, widget._parameterNode
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")         # a slice view, as Slicer's layout has
    assert p.budgetAuto and p.value == "all" and ui.toleranceSpinBox.enabled
    _fill_inputs(ui, organs, point)
    ui.applyButton.click()
    _process_until(lambda: widget._job is None, app)
    assert session.errors == [] and ui.statusLabel.text.startswith("Done"), ui.statusLabel.text
    nodes, result = widget._lastNodes, widget._lastResult
    summary = result.summary
    assert summary["solver"]["budget_rule"] == "auto" and summary["solver"]["stop"] in ("converged", "budget")
    values = summary["value_functions"]
    combo = ui.shownValueComboBox
    assert [combo.itemText(i) for i in range(combo.count)] == values and len(values) > 1 and combo.enabled
    assert ui.verdictLabel.text.startswith(f"{values[0]}: ")
    assert composite.GetForegroundVolumeID() == nodes["attribution"].GetID()

    combo.currentIndex = 1                                                # switch: nothing runs
    second = values[1]
    table = ui.resultsTableView.mrmlTableNode()
    assert table is nodes["units_table"] and table.GetAttribute("SegSHAP.Value") == second
    shown = {r["name"]: r["phi"] for r in tables.table_rows(table)}
    assert shown == pytest.approx(dict(zip(result.unit_names, result.by_value[second].phi)))
    assert composite.GetForegroundVolumeID() == nodes[f"attribution_{second}"].GetID()
    assert ui.verdictLabel.text.startswith(f"{second}: ") and widget._job is None
    assert results.check_run(scene, nodes["run_id"]) == []

    # select two rows of the table -> Refine zooms into those organs
    assert not ui.refineButton.enabled
    view = ui.resultsTableView
    rows = tables.table_rows(table)
    names = [rows[0]["name"], rows[1]["name"]]
    for row in (0, 1):
        source = view.tableModel().index(row, 0)
        view.selectionModel().select(view.sortFilterProxyModel().mapFromSource(source),
                                     qt_selection_flags().Select)
    assert ui.refineButton.enabled
    assert widget._selectedUnitNames() == names
    organ_run = result.out
    ui.refineButton.click()
    assert widget._job is not None and "zoom into" in ui.statusLabel.text
    _process_until(lambda: widget._job is None, app)
    assert session.errors == [] and ui.statusLabel.text.startswith("Done"), ui.statusLabel.text
    zoom = widget._lastResult.summary
    assert zoom["refine"]["organs"] == [n for n in result.unit_names if n in names]
    assert zoom["refine"]["parent"] == str(organ_run.resolve()) and zoom["refine"]["reused_coalitions"] > 0
    assert not ui.refineButton.enabled                                    # a zoom is not refined again
    assert results.check_run(scene, widget._lastNodes["run_id"]) == []


def qt_selection_flags():
    from PySide6.QtCore import QItemSelectionModel

    return QItemSelectionModel.SelectionFlag


def test_the_default_job_runs_out_of_process_and_shows_its_output(panel):
    """No job factory injected: a new run computes in a child process (``run_logic.default_job`` ->
    ``ProcessExplainJob``), the run log box shows what the child wrote, the result becomes nodes; Apply again with the
    same inputs shows the finished run again in this process (``ExplainJob`` replaying the folder)."""
    from SegSHAPMRML.job import ExplainJob
    from SegSHAPMRML.process_job import ProcessExplainJob

    widget, scene, session, gate, (ct, organs, point), app = panel
    widget.runLogic.job_factory = None
    ui = widget.ui
    _fill_inputs(ui, organs, point)
    ui.applyButton.click()
    job = widget._job
    assert isinstance(job, ProcessExplainJob) and ui.runLogTextEdit.toPlainText() == ""
    _process_until(lambda: widget._job is None, app)
    assert session.errors == [], session.errors
    assert job.state == "done" and job.process.returncode == 0 and gate.runs == 0
    assert ui.statusLabel.text.startswith("Done: SegSHAP organs softdice"), ui.statusLabel.text
    log = ui.runLogTextEdit.toPlainText()
    assert ui.runLogTextEdit.readOnly
    assert f"-> {job.out}" in log, log                       # the CLI's summary line, written by the child
    assert log.splitlines() == job.log_path.read_text().splitlines()
    assert results.check_run(scene, widget._lastNodes["run_id"]) == []

    ui.applyButton.click()
    assert isinstance(widget._job, ExplainJob), type(widget._job)
    _process_until(lambda: widget._job is None, app)
    assert session.errors == [] and ui.statusLabel.text.startswith("Done"), ui.statusLabel.text


def test_a_failed_run_shows_one_error_and_the_panel_recovers(panel, monkeypatch):
    widget, scene, session, gate, (ct, organs, point), app = panel
    ui = widget.ui
    ui.organSelector.setCurrentNode(organs)
    ui.roiPointSelector.setCurrentNode(point)
    ui.faithfulnessStepsSpinBox.value = 0
    ui.deviceComboBox.currentIndex = 1
    p = widget._parameterNode
    p.target = "no such class"
    assert not ui.applyButton.enabled                    # the model's dataset.json has no such class
    p.target = "spleen"
    ui.modelPathLineEdit.currentPath = str(Path(ui.modelPathLineEdit.currentPath) / "missing")
    assert not ui.applyButton.enabled and "model" in ui.applyButton.toolTip.lower()
    p.modelPath = slicer_standins.MODULE_DIR / "Resources" / "DemoModel"
    assert ui.applyButton.enabled

    def broken(request, **kwargs):
        raise RuntimeError("checkpoint_final.pth is corrupt")

    monkeypatch.setattr(gate, "_gated", broken)
    ui.applyButton.click()
    _process_until(lambda: widget._job is None, app)
    assert len(session.errors) == 1 and "checkpoint_final.pth is corrupt" in session.errors[0]
    assert ui.statusLabel.text.startswith("Failed") and ui.applyButton.text == "Explain" and ui.applyButton.enabled


def test_the_checkpoint_combo_offers_the_folds_checkpoints_and_reaches_the_request(panel, tmp_path):
    """The editable Checkpoint combo lists the model folder's fold_X/*.pth names, follows the model folder, binds
    the parameter node's ``checkpoint`` both ways and reaches PanelValues and the request; a name no fold holds
    blocks Apply with a tooltip naming the ones there."""
    widget, scene, session, gate, (ct, organs, point), app = panel
    ui, p = widget.ui, widget._parameterNode
    combo = ui.checkpointComboBox
    demo = slicer_standins.MODULE_DIR / "Resources" / "DemoModel"
    assert [combo.itemText(i) for i in range(combo.count)] == ["checkpoint_final.pth"]
    assert combo.currentText == p.checkpoint == "checkpoint_final.pth"

    early_stopped = tmp_path / "early_stopped_model"          # the demo's files, one fold also holding a best one
    (early_stopped / "fold_0").mkdir(parents=True)
    for name in ("dataset.json", "plans.json"):
        (early_stopped / name).symlink_to(demo / name)
    for name in ("checkpoint_final.pth", "checkpoint_best.pth"):
        (early_stopped / "fold_0" / name).symlink_to(demo / "fold_0" / "checkpoint_final.pth")
    ui.organSelector.setCurrentNode(organs)
    ui.roiPointSelector.setCurrentNode(point)
    p.modelPath = early_stopped
    assert [combo.itemText(i) for i in range(combo.count)] == ["checkpoint_best.pth", "checkpoint_final.pth"]

    combo.currentIndex = 0                                     # widget -> node -> panel values -> request
    assert p.checkpoint == "checkpoint_best.pth" and ui.applyButton.enabled, ui.applyButton.toolTip
    values = widget.runLogic.panel_values(p)
    assert values.checkpoint == "checkpoint_best.pth"
    assert panel_module.build_request(values, tmp_path / "out").checkpoint == "checkpoint_best.pth"

    combo.setCurrentText("checkpoint_latest.pth")              # typed: a name no fold holds
    assert p.checkpoint == "checkpoint_latest.pth" and not ui.applyButton.enabled
    assert "checkpoint_latest.pth" in ui.applyButton.toolTip and "checkpoint_best.pth" in ui.applyButton.toolTip
    p.checkpoint = "checkpoint_final.pth"                      # node -> widget
    assert combo.currentText == "checkpoint_final.pth" and ui.applyButton.enabled
    p.modelPath = demo                                         # another folder: its names replace the list
    assert [combo.itemText(i) for i in range(combo.count)] == ["checkpoint_final.pth"]
    assert session.errors == []


def test_total_segmentator_is_called_the_way_both_extension_branches_accept(panel):
    """The TotalSegmentator extension's logic (a stand-in recording the call; the extension needs desktop Slicer):
    third argument positional True (5.8 branch: ``fast``; main: ``quality``, True meaning "fast"), raw class
    names (``useStandardSegmentNames = False``), the new segmentation becomes the organ node."""
    widget, scene, session, gate, (ct, organs, point), app = panel
    calls = []

    class TotalSegmentatorLogic:
        useStandardSegmentNames = True

        def setupPythonRequirements(self, upgrade=False):
            calls.append("setup")

        def process(self, inputVolume, outputSegmentation, fastOrQuality=None, cpu=False, task=None, **kwargs):
            calls.append((inputVolume, fastOrQuality, cpu, task, self.useStandardSegmentNames))

    ui = widget.ui
    ui.runTotalSegmentatorButton.click()
    assert "TotalSegmentator extension is not installed" in session.errors[-1]
    session.module_logics["TotalSegmentator"] = TotalSegmentatorLogic()
    ui.deviceComboBox.currentIndex = 1
    ui.runTotalSegmentatorButton.click()
    assert calls == ["setup", (ct, True, True, "total", False)]
    assert widget._parameterNode.organNode.IsA("vtkMRMLSegmentationNode")
    assert ui.organSelector.currentNode() is widget._parameterNode.organNode
    assert len(session.errors) == 1


def test_sample_data_registration_and_the_self_test_panel_part(panel):
    """The module's own self-test, the part that needs no torch (parameter node, validation, widget set-up,
    Sample Data), run in this environment; the Sample Data sources point at the bundled files."""
    import unittest

    widget, scene, session, gate, _, app = panel
    SegSHAPTest = type(widget).__init__.__globals__["SegSHAPTest"]          # the loaded SegSHAP.py's class
    result = unittest.TestResult()
    SegSHAPTest("test_SegSHAP_panel").run(result)
    assert not result.errors and not result.failures, result.errors + result.failures
    sources = slicer.modules.sampleDataSources["SegSHAP"]
    for source in sources:
        path = Path(source.uris.replace("file://", ""))
        assert path.is_file() and source.fileNames == path.name
        assert source.checksums == "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert np.array([s.loadFileProperties.get("labelmap", False) for s in sources]).tolist() == [False, True]
