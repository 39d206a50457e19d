"""SegSHAP: explain an nnU-Net segmentation of a CT with Shapley values over organs / supervoxels.

Three parts, as SlicerNNUNet splits its module: the widget (this file) only wires the panel to the parameter node
and calls two logics it is given, each behind a ``typing.Protocol``:

- ``RunLogic`` (default ``SegSHAPMRML.run_logic.ExplainRunLogic``, Qt-free): validation, the run's request, the
  background job (injectable; default a child process, ``SegSHAPMRML.process_job.ProcessExplainJob``, whose
  output the run log box shows), results -> nodes, TotalSegmentator.
- ``InstallLogic`` (default ``SegSHAPInstallLogic`` below): the dependency status and the one-confirmation
  install through the PyTorch and NNUNet extensions and pip (its Qt-free parts in ``SegSHAPMRML.deps``).

SegSHAPLib (torch, nnU-Net) is imported only when a run starts, after the dependency check, so the module loads in
any Slicer >= 5.10 before its dependencies are installed. This file keeps to Python 3.9 syntax (``Optional``, no
``X | None``), so that an older Slicer reports the version problem instead of a syntax error.
"""

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Optional, Protocol, Union

import qt
import slicer
import vtk
from slicer import (vtkMRMLLabelMapVolumeNode, vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode,
                    vtkMRMLSegmentationNode)
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

MODULE_DIR = Path(__file__).resolve().parent
if str(MODULE_DIR) not in sys.path:            # SegSHAPLib and SegSHAPMRML live next to this file
    sys.path.insert(0, str(MODULE_DIR))

from SegSHAPLib import options  # noqa: E402  (choices and defaults only: no torch, no nnU-Net)

DEMO_MODEL = MODULE_DIR / "Resources" / "DemoModel"
SAMPLE_CT = MODULE_DIR / "Resources" / "SampleData" / "example_ct_sm.nii.gz"
SAMPLE_ORGANS = MODULE_DIR / "Resources" / "SampleData" / "example_ct_sm_totalseg.nii.gz"
# name in the Sample Data module, file, node name, is a label map, SHA256 (SampleData checks it)
SAMPLE_DATA = (
    ("SegSHAP abdominal CT", SAMPLE_CT, "example_ct_sm", False,
     "e50c00b2914e2cac0aaee8e7f3b5f57d44d9f21bfd5c0577271c54c0cb49e9fb"),
    ("SegSHAP organ map (TotalSegmentator)", SAMPLE_ORGANS, "example_ct_sm_totalseg", True,
     "8be652475a4aaae83103a66bfb3345314b1fc06742807a06cf5005f7a7913a2d"),
)
POLL_INTERVAL_MS = 200
CONTRIBUTORS = ["R. Coimbra Brioso", "G. Sichili", "D. Dei", "N. Lambri", "P. Mancosu", "M. Scorsetti", "D. Loiacono"]

LEGEND_HTML = _(
    "<p><b>Reading the result.</b> The attribution map is shown over the CT. "
    "<span style='color:#d62728'><b>Red</b></span>: keeping this unit raises the model's score for the selected "
    "structure, i.e. the unit supports the segmentation. <span style='color:#1f5fbf'><b>Blue</b></span>: keeping "
    "it lowers the score (the segmentation would be stronger without it). Clear/white: no measurable effect, or "
    "not a unit. The colour scale is symmetric, from -max|phi| to +max|phi|; the units table lists every unit "
    "ranked by phi.</p>")


#
# SegSHAP
#


class SegSHAP(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegSHAP")
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = list(CONTRIBUTORS)
        self.parent.helpText = _(
            "<p>Explains an nnU-Net segmentation of a CT: which organs or regions around a structure make the "
            "network segment it. Place a point on the structure (or pick a segment), choose the units "
            "(organs, FCC supervoxels or hybrid) and a value function, and click Explain. Shapley values are "
            "estimated with KernelSHAP over the units, with a patch cache that reuses nnU-Net's sliding-window "
            "computations.</p>") + LEGEND_HTML + _(
            "<p>Each run's results go into their own folder in the Data module (named after units, value "
            "function and ROI), with the run's settings and versions recorded as attributes.</p>")
        self.parent.acknowledgementText = _(
            "<p>The bundled sample CT and its organ map come from the TotalSegmentator repository (Apache-2.0); "
            "the image is from the TotalSegmentator CT dataset (Zenodo 10.5281/zenodo.6802613, CC BY 4.0). Cite: "
            "Wasserthal et al., \"TotalSegmentator: Robust Segmentation of 104 Anatomic Structures in CT Images\", "
            "Radiology: Artificial Intelligence 2023. nnU-Net: Isensee et al., Nature Methods 2021.</p>")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The bundled sample CT and its organ map in the Sample Data module (category SegSHAP). The files ship with
    the extension, so the URIs are file: URIs (SampleData downloads them into its cache with urllib, as its own
    tests do with local files) and the checksums are verified."""
    import SampleData

    for name, path, nodeName, labelmap, sha256 in SAMPLE_DATA:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="SegSHAP", sampleName=name, uris=path.as_uri(), fileNames=path.name, nodeNames=nodeName,
            checksums=f"SHA256:{sha256}", loadFileProperties={"labelmap": True} if labelmap else {},
            thumbnailFileName=str(MODULE_DIR / "Resources" / "Icons" / "SegSHAP.png"))


#
# Parameter node
#


@parameterNodeWrapper
class SegSHAPParameterNode:
    """The panel's state (saved with the scene).

    Slicer's parameterNodeWrapper writes every parameter's default when the node is created; a node parameter's
    default is None, so a union of node types must include None (``Optional[Union[...]]``), or creation raises."""

    inputVolume: vtkMRMLScalarVolumeNode
    modelPath: Path = DEMO_MODEL
    runModel: bool = True
    predictionNode: Optional[Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]]
    target: str = options.TARGET
    organNode: Optional[Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]]
    roiMode: Annotated[str, Choice(list(options.ROI_MODES))] = options.ROI_MODE
    roiPoint: vtkMRMLMarkupsFiducialNode
    roiSegmentation: vtkMRMLSegmentationNode
    roiSegmentID: str = ""
    scoreRegion: Annotated[str, Choice(list(options.SCORE_REGIONS))] = options.SCORE_REGION
    dilateMm: Annotated[float, WithinRange(0.5, 100.0)] = options.DILATE_MM
    units: Annotated[str, Choice(list(options.UNIT_TYPES))] = options.UNITS
    fccScaleMm: Annotated[float, WithinRange(5.0, 200.0)] = options.FCC_SCALE_MM
    grouping: Annotated[str, Choice(list(options.GROUPING_CHOICES))] = options.GROUPING_CHOICE
    groupingFile: Path
    value: Annotated[str, Choice(list(options.VALUE_CHOICES))] = options.VALUE
    budget: Annotated[int, WithinRange(options.MIN_BUDGET, 100000)] = options.BUDGET
    budgetAuto: bool = options.PANEL_BUDGET_AUTO
    tolerance: Annotated[float, WithinRange(0.0001, 0.5)] = options.TOLERANCE
    seed: Annotated[int, WithinRange(0, 2147483647)] = options.SEED
    device: str = options.PANEL_DEVICE
    faithfulnessSteps: Annotated[int, WithinRange(0, 50)] = options.FAITHFULNESS_STEPS
    maskValue: Annotated[float, WithinRange(-3000.0, 4000.0)] = options.MASK_VALUE
    slicSizeMm: Annotated[float, WithinRange(5.0, 200.0)] = options.SLIC_SIZE_MM
    slicCompactness: Annotated[float, WithinRange(0.001, 10.0)] = options.SLIC_COMPACTNESS
    removal: Annotated[str, Choice(list(options.REMOVALS))] = options.REMOVAL
    blurSigmaMm: Annotated[float, WithinRange(0.5, 200.0)] = options.BLUR_SIGMA_MM
    batchSize: Annotated[int, WithinRange(1, 64)] = options.BATCH_SIZE
    tta: bool = options.TTA
    checkpoint: str = options.CHECKPOINT
    unitsAsSegmentation: bool = False
    wheelFolder: Path


#
# The two logics the widget is given
#


class RunLogic(Protocol):
    """What the widget asks of the run logic (``SegSHAPMRML.run_logic.ExplainRunLogic``; Qt-free)."""

    def validate(self, p) -> list: ...

    def model_labels(self, p) -> dict: ...

    def device_choices(self) -> list: ...

    def checkpoint_choices(self, p) -> list: ...

    def start_explain(self, p, run=None) -> tuple: ...         # (job with poll()/cancel(), status note);
    # the job may also have new_log_lines() -> list of str (a child process's output)

    def start_refine(self, p, parent_out, organs: list) -> tuple: ...      # zoom into a finished organ run

    def start_estimate(self, p): ...           # a started cost preview: poll() -> ended; .estimate / .error_text

    def finish_explain(self, job, p) -> dict: ...

    def save_scene(self, path) -> Path: ...

    def run_total_segmentator(self, ct_node, total_segmentator_logic, cpu: bool = False): ...


class InstallLogic(Protocol):
    """What the widget asks of the install logic (``SegSHAPInstallLogic``)."""

    def statusText(self) -> str: ...

    def missing(self) -> list: ...

    def ensureDependencies(self, wheelFolder: str = "", log=None) -> bool: ...


#
# SegSHAPWidget
#


class SegSHAPWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin panel: parameter node <-> widgets, Apply/Cancel, progress from the job, results view.

    runLogic, installLogic: the logics to call (see the Protocols above); default the module's own. Slicer builds
    the widget with ``SegSHAPWidget(parent)``; tests and scripts pass their own."""

    def __init__(self, parent=None, runLogic: Optional[RunLogic] = None,
                 installLogic: Optional[InstallLogic] = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.runLogic = runLogic
        self.installLogic = installLogic
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._lastNodes = None
        self._observedPointNode = None
        self._checkpointsOfModel = None        # the model folder the checkpoint combo was filled from
        self._live = None                      # SegSHAPMRML.live.LiveView of the running job
        self._lastResult = None                # the last run's ExplainResult (value switch, refine)
        self._estimate = None                  # SegSHAPMRML.cost_estimate.CostEstimateJob while one runs

    _POINT_EVENTS = (slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                     slicer.vtkMRMLMarkupsNode.PointPositionUndefinedEvent,
                     slicer.vtkMRMLMarkupsNode.PointRemovedEvent)

    # ----------------------------------------------------------------------------------------- set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegSHAP.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegSHAPLogic()
        self.runLogic = self.runLogic or self.logic.runLogic
        self.installLogic = self.installLogic or SegSHAPInstallLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.estimateButton.connect("clicked(bool)", self.onEstimateButton)
        self.ui.runTotalSegmentatorButton.connect("clicked(bool)", self.onRunTotalSegmentator)
        self.ui.installButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.showCurvesButton.connect("clicked(bool)", self.onShowCurves)
        self.ui.saveSceneButton.connect("clicked(bool)", self.onSaveScene)
        self.ui.roiPointRadioButton.connect("toggled(bool)", self.onRoiModeChanged)
        self.ui.roiPointSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onRoiPointNodeChanged)
        self.ui.roiSegmentSelector.connect("currentSegmentChanged(QString)", self.onRoiSegmentChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.checkpointComboBox.connect("currentTextChanged(QString)", self.onCheckpointChanged)
        self.ui.shownValueComboBox.connect("currentTextChanged(QString)", self.onShownValueChanged)
        self.ui.refineButton.connect("clicked(bool)", self.onRefineButton)
        self.ui.resultsTableView.connect("selectionChanged()", self._updateRefineButton)
        self.ui.legendLabel.text = LEGEND_HTML

        self._refreshDependencies()
        self.initializeParameterNode()

    def _refreshDependencies(self) -> None:
        """Dependency line and device list (GPUs appear once torch is installed)."""
        self.ui.dependencyStatusLabel.text = self.installLogic.statusText()
        wasBlocked = self.ui.deviceComboBox.blockSignals(True)
        self.ui.deviceComboBox.clear()
        for choice in self.runLogic.device_choices():
            self.ui.deviceComboBox.addItem(choice)
        self.ui.deviceComboBox.blockSignals(wasBlocked)
        if self._parameterNode:
            self._syncManualWidgets()

    def cleanup(self) -> None:
        self._dropJob()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGuiState)

    def onSceneStartClose(self, caller, event) -> None:
        """The scene is about to be emptied: a running job is cancelled (its journal keeps every computed
        coalition; Apply on the same inputs resumes) and never mapped to nodes, so no error pops up."""
        if self._job is not None and self._job.running:
            self.ui.statusLabel.text = _("Scene closed: the run was cancelled (Explain again resumes it)")
        self._dropJob()
        self._live, self._lastNodes, self._lastResult = None, None, None      # their nodes go with the scene
        self.ui.shownValueComboBox.clear()
        self.ui.verdictLabel.text = ""
        self.setParameterNode(None)

    def _dropJob(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self._estimate is not None:
            self._estimate.cancel()
            self._estimate = None
        if self._job is not None and self._job.running:
            self._job.cancel()
        if self._job is not None:
            self._job = None
            self._setRunning(False)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGuiState)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGuiState)
            self._syncManualWidgets()
            self._updateGuiState()

    def _syncManualWidgets(self) -> None:
        """Widgets the parameter node wrapper does not bind: ROI mode radios, segment selector, device and
        checkpoint combos."""
        p = self._parameterNode
        self.ui.roiPointRadioButton.checked = p.roiMode == "point"
        self.ui.roiSegmentRadioButton.checked = p.roiMode == "segment"
        self.ui.roiPointPlaceWidget.setCurrentNode(p.roiPoint)
        if p.roiSegmentation:
            self.ui.roiSegmentSelector.setCurrentNode(p.roiSegmentation)
            if p.roiSegmentID:
                self.ui.roiSegmentSelector.setCurrentSegmentID(p.roiSegmentID)
        index = self.ui.deviceComboBox.findText(p.device)
        self.ui.deviceComboBox.currentIndex = index if index >= 0 else 0
        self._checkpointsOfModel = None
        self._refreshCheckpointChoices()

    def _refreshCheckpointChoices(self) -> None:
        """Fill the editable checkpoint combo with the model folder's fold_X/*.pth names when the folder changed;
        its text is the parameter node's checkpoint (a name not in the folder stays, validation names it)."""
        p = self._parameterNode
        model = str(p.modelPath or "")
        combo = self.ui.checkpointComboBox
        if model == self._checkpointsOfModel and combo.currentText == p.checkpoint:
            return
        wasBlocked = combo.blockSignals(True)
        if model != self._checkpointsOfModel:
            self._checkpointsOfModel = model
            combo.clear()
            for name in self.runLogic.checkpoint_choices(p):
                combo.addItem(name)
        combo.setCurrentText(p.checkpoint)
        combo.blockSignals(wasBlocked)

    def _updateGuiState(self, caller=None, event=None) -> None:
        if self._parameterNode is None or (self._job is not None and self._job.running):
            return
        p = self._parameterNode
        pointMode = p.roiMode == "point"
        self.ui.roiPointSelector.enabled = pointMode
        self.ui.roiPointPlaceWidget.enabled = pointMode
        self.ui.roiSegmentSelector.enabled = not pointMode
        self.ui.predictionSelector.enabled = not p.runModel
        self.ui.fccScaleSpinBox.enabled = p.units in ("fcc", "hybrid", "organs")     # organs: the cells of a Refine
        slicUnits = p.units in options.SLIC_UNIT_TYPES
        self.ui.slicSizeSpinBox.enabled = self.ui.slicCompactnessSpinBox.enabled = slicUnits
        self.ui.blurSigmaSpinBox.enabled = p.removal == "blur"
        self.ui.maskValueSpinBox.enabled = p.removal == "constant"
        organUnits = p.units in options.ORGAN_UNIT_TYPES
        self.ui.groupingLabel.visible = self.ui.groupingComboBox.visible = organUnits
        self.ui.groupingFilePathLineEdit.visible = organUnits and p.grouping == "from file"
        self.ui.dilateSpinBox.enabled = p.scoreRegion == "dilated"
        self.ui.toleranceSpinBox.enabled = p.budgetAuto
        self._refreshCheckpointChoices()
        labels = self.runLogic.model_labels(p)
        self.ui.targetLineEdit.toolTip = (_("Classes of this model: ") + ", ".join(
            f"{v}={k}" for k, v in sorted(labels.items(), key=lambda kv: kv[1]) if v)) if labels else \
            _("The class to explain: its label value or its name in the model's dataset.json.")
        problems = self.runLogic.validate(p)
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = "\n".join(problems) if problems else _("Compute the Shapley attributions")
        self.ui.estimateButton.enabled = not problems and self._estimate is None

    # ---------------------------------------------------------------------------- manual bindings
    def onRoiModeChanged(self, pointChecked) -> None:
        if self._parameterNode:
            self._parameterNode.roiMode = "point" if self.ui.roiPointRadioButton.checked else "segment"

    def onRoiPointNodeChanged(self, node) -> None:
        """Follow the point list: placing, moving or deleting its point re-checks whether Apply is possible."""
        self.ui.roiPointPlaceWidget.setCurrentNode(node)
        if self._observedPointNode is not None:
            for event in self._POINT_EVENTS:
                self.removeObserver(self._observedPointNode, event, self._updateGuiState)
        self._observedPointNode = node
        if node is not None:
            for event in self._POINT_EVENTS:
                self.addObserver(node, event, self._updateGuiState)
        self._updateGuiState()

    def onRoiSegmentChanged(self, segmentID) -> None:
        if self._parameterNode:
            self._parameterNode.roiSegmentation = self.ui.roiSegmentSelector.currentNode()
            self._parameterNode.roiSegmentID = segmentID or ""

    def onDeviceChanged(self, index) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemText(index)

    def onCheckpointChanged(self, text) -> None:
        if self._parameterNode:
            self._parameterNode.checkpoint = text

    # ------------------------------------------------------------------------------------ running
    def _setRunning(self, running: bool) -> None:
        for name in ("inputsCollapsibleButton", "roiCollapsibleButton", "explanationCollapsibleButton",
                     "advancedCollapsibleButton", "dependenciesCollapsibleButton"):
            getattr(self.ui, name).enabled = not running
        self.ui.applyButton.text = _("Cancel") if running else _("Explain")
        self.ui.applyButton.enabled = True
        self.ui.estimateButton.enabled = False
        self.ui.progressBar.visible = running
        self.ui.refineButton.enabled = False
        self.ui.shownValueComboBox.enabled = not running and self.ui.shownValueComboBox.count > 1
        if running:
            self.ui.progressBar.value = 0
            self.ui.costLabel.text = ""
            self.ui.verdictLabel.text = ""
            self.ui.runLogTextEdit.clear()
        else:
            self._updateRefineButton()

    def onApplyButton(self) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
            self.ui.statusLabel.text = _("Cancelling after the current batch...")
            self.ui.applyButton.enabled = False
            return
        if self._estimate is not None:
            self._estimate.cancel()
            self._estimate = None
        self._startJob(lambda: self.runLogic.start_explain(self._parameterNode))

    def onEstimateButton(self) -> None:
        """Count what Apply would run (units, coalitions, patch forwards, time) in a child process; the panel
        stays usable meanwhile, and Apply cancels the count."""
        try:
            if not self._ensureDependencies():
                return
            self._estimate = self.runLogic.start_estimate(self._parameterNode)
            self.ui.estimateButton.enabled = False
            self.ui.costLabel.text = _("Estimating the cost (loading the model and preparing the case)...")
            self._timer.start()
        except Exception as error:
            self._estimate = None
            self._showError(error)

    def _pollEstimate(self) -> None:
        """Show the cost preview once its process has ended."""
        if self._estimate is None or not self._estimate.poll():
            return
        from SegSHAPMRML.cost_estimate import format_estimate

        estimate, self._estimate = self._estimate, None
        if estimate.estimate is not None:
            self.ui.costLabel.text = format_estimate(estimate.estimate)
        else:
            self.ui.costLabel.text = _("No estimate: ") + estimate.error_text
        self._updateGuiState()

    def onRefineButton(self) -> None:
        """Zoom into the organs selected in the units table of the last (organ-unit) run."""
        organs = self._selectedUnitNames()
        self._startJob(lambda: self.runLogic.start_refine(self._parameterNode, self._lastResult.out, organs))

    def _startJob(self, start) -> None:
        """Start a job with ``start()`` -> (job, note); the live view follows its estimates."""
        from SegSHAPMRML.live import LiveView

        started = False
        try:
            if not self._ensureDependencies():
                return
            self._dropLive()
            self._job, note = start()
            self._live = LiveView(slicer.mrmlScene, self._parameterNode.inputVolume, self._job.request.out,
                                  value=self._parameterNode.value if self._parameterNode.value != "all" else None)
            self.ui.statusLabel.text = note
            self._setRunning(True)
            self._timer.start()
            started = True
        except Exception as error:
            self._showError(error)
        finally:
            if not started:
                self._setRunning(False)
                self._updateGuiState()

    def _dropLive(self) -> None:
        """Remove the previous run's live nodes (a cancelled run leaves its last estimate on view until then)."""
        if self._live is not None:
            self._live.remove()
            self._live = None

    def _ensureDependencies(self) -> bool:
        """True when every dependency is there (installing them after one confirmation if not)."""
        if not self.installLogic.missing():
            return True
        wheels = pathText(self._parameterNode.wheelFolder) if self._parameterNode else ""
        ready = self.installLogic.ensureDependencies(wheelFolder=wheels, log=self._appendInstallLog)
        self._refreshDependencies()
        return ready

    def onPollJob(self) -> None:
        self._pollEstimate()
        job = self._job
        if job is None:
            if self._estimate is None:
                self._timer.stop()
            return
        from SegSHAPMRML.panel import format_status, progress_percent

        progress = [m.event for m in job.poll() if m.kind == "progress"]
        self._showRunLog(job)
        if progress:                        # many events per tick (one per patch forward): show the latest
            self.ui.progressBar.value = progress_percent(progress[-1])
            self.ui.statusLabel.text = format_status(progress[-1], job.note)
            self._showLiveEstimate([e.estimate for e in progress if e.estimate is not None])
        if not job.finished:
            return
        self._timer.stop()
        try:
            if job.state == "done":
                self._dropLive()
                self._lastNodes = self.runLogic.finish_explain(job, self._parameterNode)
                self._lastResult = job.result
                self._showResults(self._lastNodes, job)
            elif job.state == "cancelled":
                if self._live is not None:
                    self._live.paint()
                self.ui.statusLabel.text = _("Cancelled: ") + job.error_text + _(
                    " (Explain again with the same inputs resumes it") + (
                    _("; the last estimate stays on view)") if self._live is not None and self._live.paints else ")")
            else:
                logging.error("SegSHAP failed:\n%s", job.error_text)
                slicer.util.errorDisplay(_("SegSHAP failed:\n") + job.error_text, detailedText=job.error_traceback)
                self.ui.statusLabel.text = _("Failed: ") + job.error_text.splitlines()[0]
        except Exception as error:
            self._showError(error)
        finally:
            self._job = None
            self._setRunning(False)
            self._updateGuiState()

    def _showLiveEstimate(self, estimates) -> None:
        """Repaint the overlay and the ranked table from the newest estimate (at most every few seconds), with
        what the estimate says of its own convergence."""
        if self._live is None or not estimates:
            return
        if self._live.offer(estimates[-1]):
            from SegSHAPMRML.panel import live_verdict

            self.ui.resultsTableView.setMRMLTableNode(self._live.nodes["units_table"])
            self.ui.resultsCollapsibleButton.collapsed = False
            self.ui.verdictLabel.text = live_verdict(estimates[-1], self._live.value)

    def _showRunLog(self, job) -> None:
        """Append what the run's process wrote since the last tick (``job.new_log_lines()``; a job that runs in
        this process has no such log) to the run log box."""
        for line in job.new_log_lines() if hasattr(job, "new_log_lines") else []:
            self.ui.runLogTextEdit.appendPlainText(line)

    def _showError(self, error) -> None:
        from SegSHAPMRML.panel import error_message

        import traceback

        text = error_message(error)
        logging.error("SegSHAP: %s\n%s", text, traceback.format_exc())
        slicer.util.errorDisplay(_("SegSHAP: ") + text, detailedText=traceback.format_exc())
        self.ui.statusLabel.text = text.splitlines()[0] if text else ""

    def _showResults(self, nodes, job) -> None:
        from SegSHAPMRML.panel import format_cost

        self.ui.costLabel.text = format_cost(job.result.summary)
        values = list(getattr(job.result, "by_value", None) or [])
        combo = self.ui.shownValueComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for value in values:
            combo.addItem(value)
        combo.blockSignals(wasBlocked)
        combo.enabled = len(values) > 1
        self._showVerdict(values[0] if values else None)
        self.ui.statusLabel.text = _("Done: ") + slicer.mrmlScene.GetSubjectHierarchyNode().GetItemName(
            nodes["folder_item"]) + (" - " + job.note if job.note else "")
        self.ui.resultsTableView.setMRMLTableNode(nodes["units_table"])
        self.ui.showCurvesButton.enabled = "chart" in nodes
        self.ui.saveSceneButton.enabled = True
        self.ui.outputFolderLabel.text = _("Output folder: ") + str(job.result.out)
        self.ui.resultsCollapsibleButton.collapsed = False

    def onShownValueChanged(self, value) -> None:
        """Show another value function of the last run (computed from the same coalitions: nothing runs)."""
        if not value or self._lastNodes is None or self._lastResult is None:
            return
        from SegSHAPMRML.results import show_value

        try:
            show_value(slicer.mrmlScene, self._lastNodes, self._lastResult, value)
            self.ui.resultsTableView.setMRMLTableNode(self._lastNodes["units_table"])
            self._showVerdict(value)
        except Exception as error:
            self._showError(error)

    def _showVerdict(self, value) -> None:
        """The verdict of the shown value function leads the results: converged or not, and what fixes it."""
        from SegSHAPMRML.panel import result_verdict

        self.ui.verdictLabel.text = result_verdict(self._lastResult.summary, value) if value else ""

    def _selectedUnitNames(self) -> list:
        """Names of the units whose rows are selected in the results table (Slicer's qMRMLTableView: the view
        shows a sort proxy of its qMRMLTableModel; a model row is the MRML table's row when column titles are
        the header, as the units table sets)."""
        from SegSHAPMRML.tables import table_rows

        view = self.ui.resultsTableView
        table = view.mrmlTableNode()
        if table is None or view.selectionModel() is None:
            return []
        rows = table_rows(table)
        picked = set()
        for index in view.selectionModel().selectedIndexes():
            row = view.tableModel().mrmlTableRowIndex(view.sortFilterProxyModel().mapToSource(index))
            if 0 <= row < len(rows):
                picked.add(row)
        return [rows[row]["name"] for row in sorted(picked)]

    def _updateRefineButton(self) -> None:
        """Refine is possible on the rows of a finished organ-unit run (not a zoom), when no job runs."""
        result = self._lastResult
        inputs = (result.summary.get("inputs") or {}) if result is not None else {}
        organRun = inputs.get("units") == "organs" and not inputs.get("refine")
        shown = self._lastNodes is not None and self.ui.resultsTableView.mrmlTableNode() is self._lastNodes.get(
            "units_table")
        idle = self._job is None or not self._job.running
        self.ui.refineButton.enabled = bool(organRun and shown and idle and self._selectedUnitNames())

    def onShowCurves(self) -> None:
        if self._lastNodes and "chart" in self._lastNodes:
            slicer.modules.plots.logic().ShowChartInLayout(self._lastNodes["chart"])

    def onSaveScene(self) -> None:
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Save scene bundle"), "",
                                              _("Slicer scene bundle (*.mrb)"))
        if not path:
            return
        try:
            written = self.runLogic.save_scene(path)
            self.ui.statusLabel.text = _("Saved ") + str(written)
        except Exception as error:
            self._showError(error)

    def onRunTotalSegmentator(self) -> None:
        try:
            with slicer.util.tryWithErrorDisplay(_("TotalSegmentator failed."), waitCursor=True):
                try:
                    totalSegmentator = slicer.util.getModuleLogic("TotalSegmentator")
                except Exception:
                    raise RuntimeError(_("The TotalSegmentator extension is not installed: install it from the "
                                         "Extensions Manager, or select an existing organ segmentation")) from None
                totalSegmentator.setupPythonRequirements()
                self._parameterNode.organNode = self.runLogic.run_total_segmentator(
                    self._parameterNode.inputVolume, totalSegmentator, cpu=self._parameterNode.device == "CPU")
        finally:
            self._updateGuiState()

    def _appendInstallLog(self, line) -> None:
        self.ui.installLogTextEdit.appendPlainText(str(line))
        slicer.app.processEvents()

    def onInstallDependencies(self) -> None:
        self.ui.installLogTextEdit.clear()
        try:
            wheels = pathText(self._parameterNode.wheelFolder) if self._parameterNode else ""
            if self.installLogic.ensureDependencies(wheelFolder=wheels, log=self._appendInstallLog):
                self._appendInstallLog(_("All dependencies are installed."))
        except Exception as error:
            self._appendInstallLog(f"ERROR: {error}")
            self._showError(error)
        finally:
            self._refreshDependencies()
            self._updateGuiState()


def pathText(path) -> str:
    """A path parameter as text; "" when unset (``SegSHAPMRML.run_logic.path_text``)."""
    from SegSHAPMRML.run_logic import path_text

    return path_text(path)


#
# SegSHAPLogic
#


class SegSHAPLogic(ScriptedLoadableModuleLogic):
    """The module's logic for scripts and the self-test: the parameter node and the run logic on Slicer's scene.

    runsFolder: where the runs live (``run-*/explanation`` output folders, ``inputs/``); default Slicer's temporary
    folder / SegSHAP, so a cancelled run is resumed even after a restart.
    jobFactory: the background job class (default ``SegSHAPMRML.run_logic.default_job``: a child process for new and
    resumed runs, the in-process ``SegSHAPMRML.job.ExplainJob`` for a finished run shown again)."""

    def __init__(self, runsFolder=None, jobFactory=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from SegSHAPMRML.run_logic import ExplainRunLogic

        self.runLogic = ExplainRunLogic(
            slicer.mrmlScene, Path(runsFolder) if runsFolder else Path(slicer.app.temporaryPath) / "SegSHAP",
            versions={"Slicer": slicer.app.applicationVersion, "SlicerRevision": slicer.app.repositoryRevision},
            job_factory=jobFactory)

    def getParameterNode(self):
        return SegSHAPParameterNode(super().getParameterNode())


class InstallError(RuntimeError):
    """An install step that cannot go on; ``restartRequired`` when Slicer must restart first."""

    def __init__(self, message: str, restartRequired: bool = False) -> None:
        super().__init__(message)
        self.restartRequired = restartRequired


class SegSHAPInstallLogic:
    """Installs what SegSHAP needs the way SlicerTotalSegmentator does: PyTorch only through the PyTorch extension
    (``PyTorchUtils``), nnunetv2 through the NNUNet extension (``SlicerNNUNetLib.InstallLogic``), the rest of
    ``Resources/requirements.txt`` with pip; one confirmation for all of it, and a restart prompt when a package
    that was already imported was replaced. The plan and the checks are ``SegSHAPMRML.deps`` (Qt-free)."""

    def statusText(self) -> str:
        from SegSHAPMRML.deps import status_text

        return status_text()

    def missing(self) -> list:
        from SegSHAPMRML.deps import missing_requirements

        return missing_requirements()

    def ensureDependencies(self, wheelFolder: str = "", log=None) -> bool:
        """Install what is missing after one confirmation -> True when everything is there; False when the user
        declined or Slicer must restart first. Raises InstallError when an extension it needs is missing."""
        from SegSHAPMRML import deps

        log = log or logging.info
        missing = deps.missing_requirements()
        if not missing:
            return True
        groups = deps.by_source(missing)
        names = ", ".join(r.spec for r in missing)
        if slicer.app.testingEnabled():
            raise InstallError(f"SegSHAP needs {names}; the self-test never installs anything")
        if deps.SLICER in groups:
            raise InstallError(", ".join(r.spec for r in groups[deps.SLICER]) + " ship with Slicer but are "
                               "missing or too old here: SegSHAP needs Slicer 5.10 or later")
        torchLogic = self._torchLogic() if deps.TORCH in groups else None
        nnunetLogic = self._nnunetLogic() if deps.NNUNET in groups else None
        if not slicer.util.confirmOkCancelDisplay(deps.confirmation_text(missing), _("Install dependencies")):
            return False
        before = deps.installed_versions()
        for requirement in groups.get(deps.TORCH, []):
            log(f"Installing {requirement.spec} through the PyTorch extension...")
            if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=f">={requirement.minimum}") is None:
                raise InstallError("PyTorch was not installed (see the PyTorch Util module)")
        for requirement in groups.get(deps.NNUNET, []):
            log(f"Installing {requirement.spec} through the NNUNet extension...")
            if not nnunetLogic.setupPythonRequirements(requirement.spec):
                raise InstallError("nnunetv2 was not installed (see the nnUNet module's install log)")
            if nnunetLogic.needsRestart:
                return self._askRestart([("nnunetv2", None, requirement.spec)])
        if deps.PIP in groups:
            self._pipInstall([r.spec for r in groups[deps.PIP]], wheelFolder, log)
        replaced = deps.replaced_imported(before, deps.installed_versions())
        if replaced:
            return self._askRestart(replaced)
        still = deps.missing_requirements()
        if still:
            raise InstallError("still missing after installation: " + ", ".join(r.spec for r in still))
        log("Done.")
        return True

    @staticmethod
    def _torchLogic():
        try:
            import PyTorchUtils
        except ImportError:
            raise InstallError("SegSHAP needs the PyTorch extension to install PyTorch: install 'PyTorch' from the "
                               "Extensions Manager, restart Slicer, then click Install again") from None
        return PyTorchUtils.PyTorchUtilsLogic()

    @staticmethod
    def _nnunetLogic():
        try:
            import SlicerNNUNetLib
        except ImportError:
            raise InstallError("SegSHAP needs the NNUNet extension to install nnunetv2: install 'NNUNet' from the "
                               "Extensions Manager, restart Slicer, then click Install again") from None
        return SlicerNNUNetLib.InstallLogic(doAskConfirmation=False)

    @staticmethod
    def _pipInstall(specs: list, wheelFolder: str, log) -> None:
        """pip through Slicer: ``slicer.packaging.pip_ensure`` (Slicer >= 5.12) unless installing from a wheel
        folder, else ``slicer.util.pip_install`` with an argument list (each item quoted: paths with spaces)."""
        from SegSHAPMRML.deps import pip_arguments

        try:
            import slicer.packaging as packaging                # a submodule: `import slicer` does not load it
        except ImportError:
            packaging = None
        if not wheelFolder and packaging is not None and hasattr(packaging, "pip_ensure"):
            log("pip_ensure " + " ".join(specs))
            packaging.pip_ensure(specs, prompt_install=False, prompt_restart=False, requester="SegSHAP")
        else:
            args = pip_arguments(specs, wheelFolder or None)
            log("pip install " + " ".join(args))
            slicer.util.pip_install(args)

    @staticmethod
    def _askRestart(replaced) -> bool:
        """Packages already imported were replaced: Slicer must restart before they can be used."""
        detail = "\n".join(f"{name}: {old or '-'} -> {new}" for name, old, new in replaced)
        logging.info("SegSHAP: restart needed after installing:\n%s", detail)
        if slicer.util.confirmOkCancelDisplay(
                _("The dependencies were installed, but packages that were already loaded changed. Slicer must "
                  "restart to use them. Restart now?"), _("Restart Slicer"), detailedText=detail):
            slicer.util.restart()
        return False


#
# SegSHAPTest
#


class SegSHAPTest(ScriptedLoadableModuleTest):
    """Self-test in two parts.

    - ``test_SegSHAP_panel`` (no torch needed): the parameter node under Slicer's real wrapper, validation, the
      widget's set-up and its binding to the parameter node, the Sample Data registration.
    - ``test_SegSHAP_end_to_end`` (when the dependencies are installed; skipped, saying so, otherwise): bundled
      sample CT + demo model, organ units, budget 16, no network, no modal dialog, in a fresh runs folder (so it
      always computes). Seconds on a GPU; about 0.5-1.5 min on a 2-core CPU.
    Nothing is ever installed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegSHAP_panel()
        self.setUp()
        self.test_SegSHAP_end_to_end()

    def _loadSample(self):
        ct = slicer.util.loadVolume(str(SAMPLE_CT))
        organs = slicer.util.loadLabelVolume(str(SAMPLE_ORGANS))
        return ct, organs

    def test_SegSHAP_panel(self):
        import tempfile

        self.delayDisplay("Parameter node, validation and widget set-up (no dependencies needed)")
        logic = SegSHAPLogic(runsFolder=tempfile.mkdtemp(prefix="SegSHAPTest-"))
        p = logic.getParameterNode()
        self.assertIsNone(p.predictionNode)
        self.assertIsNone(p.organNode)
        self.assertEqual((p.units, p.value, p.budget, p.modelPath), ("organs", options.VALUE, 256, DEMO_MODEL))
        problems = logic.runLogic.validate(p)
        self.assertTrue(any("CT" in problem for problem in problems), problems)
        ct, organs = self._loadSample()
        p.inputVolume, p.organNode = ct, organs
        self.assertIs(p.organNode, organs)
        p.organNode = None                                   # Optional[...]: None is a value like any other
        self.assertIsNone(p.organNode)
        with self.assertRaises(ValueError):
            p.units = "voxels"

        widget = SegSHAPWidget()
        widget.setup()
        widget.enter()
        self.assertIs(widget._parameterNode.inputVolume, ct)
        self.assertIs(widget.ui.ctSelector.currentNode(), ct)
        widget._parameterNode.units = "hybrid"
        self.assertEqual(widget.ui.unitsComboBox.currentText, "hybrid")
        self.assertFalse(widget.ui.applyButton.enabled)      # no ROI point yet
        widget.exit()
        widget.cleanup()

        registerSampleData()
        import SampleData

        sources = [source.sampleName for source in slicer.modules.sampleDataSources.get("SegSHAP", [])]
        self.assertEqual(sources, [row[0] for row in SAMPLE_DATA])
        self.delayDisplay("Panel part passed")

    def test_SegSHAP_end_to_end(self):
        import tempfile

        logic = SegSHAPLogic(runsFolder=tempfile.mkdtemp(prefix="SegSHAPTest-"))
        missing = SegSHAPInstallLogic().missing()
        if missing:
            self.skipTest("dependencies not installed (" + ", ".join(r.name for r in missing) +
                          "); the self-test never installs anything")
        import numpy as np

        from SegSHAPMRML import check_run
        from SegSHAPMRML.volumes import array_from_node, node_ijk_to_ras

        self.delayDisplay("Loading the sample CT and its organ map")
        ct, organs = self._loadSample()
        labels = array_from_node(organs)
        spleen = np.argwhere(labels == 1)                  # TotalSegmentator label 1 = spleen
        self.assertGreater(len(spleen), 0)
        k, j, i = spleen[len(spleen) // 2]
        ras = node_ijk_to_ras(ct, world=False) @ np.array([i, j, k, 1.0])
        point = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "ROI point")
        point.AddControlPoint(vtk.vtkVector3d(*ras[:3]))

        p = logic.getParameterNode()
        p.inputVolume, p.modelPath, p.runModel = ct, DEMO_MODEL, True
        p.organNode, p.target, p.roiMode, p.roiPoint = organs, "spleen", "point", point
        p.units, p.value, p.budget, p.seed, p.device, p.faithfulnessSteps = "organs", "softdice", 16, 0, "Auto", 0
        self.assertEqual(logic.runLogic.validate(p), [])

        self.delayDisplay("Explaining (organ units, budget 16)")
        started = time.time()
        nodes = logic.runLogic.run_blocking(p, timeout=600)
        logging.info("SegSHAP self-test run: %.1f s", time.time() - started)

        self.assertEqual(check_run(slicer.mrmlScene, nodes["run_id"]), [])
        attribution, units = nodes["attribution"], nodes["units"]
        self.assertEqual(attribution.GetImageData().GetDimensions(), ct.GetImageData().GetDimensions())
        table = nodes["units_table"]
        names = {int(table.GetCellText(r, 1)): table.GetCellText(r, 2) for r in range(table.GetNumberOfRows())}
        self.assertTrue(names and not any(n.startswith("Segment_") for n in names.values()))
        self.assertIn("spleen", names.values())
        colors = units.GetDisplayNode().GetColorNode()
        self.assertEqual({uid: colors.GetColorName(uid) for uid in names}, names)
        folder = nodes["folder_item"]
        sh = slicer.mrmlScene.GetSubjectHierarchyNode()
        self.assertTrue(sh.GetItemName(folder).startswith("SegSHAP organs softdice @ ROI ("))
        self.assertEqual(sh.GetItemAttribute(folder, "SegSHAP.Budget"), "16")
        self.delayDisplay("SegSHAP self-test passed")
