"""SegSHAP: explain an nnU-Net segmentation of a CT with Shapley values over organs / supervoxels.

The widget only wires the panel to a parameter node and calls the logic; the logic converts nodes to plain
volumes, runs the explanation on a worker thread (``SegSHAPMRML.ExplainJob``) and maps the result to nodes
(``SegSHAPMRML.results_to_scene``). Input validation, progress text, device choice, error messages and every
node the run creates are Qt-free code in SegSHAPMRML, tested in CI against the slicer-core wheel.

SegSHAPLib (the core: torch, nnU-Net) is imported only when a run starts, after the dependency check, so the
module loads in any Slicer even before its dependencies are installed.
"""

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Union

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
POLL_INTERVAL_MS = 200

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
        self.parent.contributors = ["SegSHAP developers"]
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


#
# Parameter node
#


@parameterNodeWrapper
class SegSHAPParameterNode:
    """The panel's state (saved with the scene)."""

    inputVolume: vtkMRMLScalarVolumeNode
    modelPath: Path = DEMO_MODEL
    runModel: bool = True
    predictionNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    target: str = options.TARGET
    organNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
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
    value: Annotated[str, Choice(list(options.VALUE_FUNCTIONS))] = options.VALUE
    budget: Annotated[int, WithinRange(options.MIN_BUDGET, 100000)] = options.BUDGET
    seed: Annotated[int, WithinRange(0, 2147483647)] = options.SEED
    device: str = options.PANEL_DEVICE
    faithfulnessSteps: Annotated[int, WithinRange(0, 50)] = options.FAITHFULNESS_STEPS
    maskValue: Annotated[float, WithinRange(-3000.0, 4000.0)] = options.MASK_VALUE
    batchSize: Annotated[int, WithinRange(1, 64)] = options.BATCH_SIZE
    tta: bool = options.TTA
    unitsAsSegmentation: bool = False
    wheelFolder: Path


def pathText(path) -> str:
    """A path parameter as text; "" when unset (the parameter node holds None or Path("."))."""
    return str(path) if path is not None and str(path) not in ("", ".") else ""


#
# SegSHAPWidget
#


class SegSHAPWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin panel: parameter node <-> widgets, Apply/Cancel, progress from the job queue, results view."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._lastNodes = None
        self._observedPointNode = None

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

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.runTotalSegmentatorButton.connect("clicked(bool)", self.onRunTotalSegmentator)
        self.ui.installButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.showCurvesButton.connect("clicked(bool)", self.onShowCurves)
        self.ui.saveSceneButton.connect("clicked(bool)", self.onSaveScene)
        self.ui.roiPointRadioButton.connect("toggled(bool)", self.onRoiModeChanged)
        self.ui.roiPointSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onRoiPointNodeChanged)
        self.ui.roiSegmentSelector.connect("currentSegmentChanged(QString)", self.onRoiSegmentChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.legendLabel.text = LEGEND_HTML

        self.ui.deviceComboBox.clear()
        for choice in self.logic.deviceChoices():
            self.ui.deviceComboBox.addItem(choice)
        self.ui.dependencyStatusLabel.text = self.logic.dependencyStatusText()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGuiState)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
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
        """Widgets the parameter node wrapper does not bind: ROI mode radios, segment selector, device combo."""
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

    def _updateGuiState(self, caller=None, event=None) -> None:
        if self._parameterNode is None or (self._job is not None and self._job.running):
            return
        p = self._parameterNode
        pointMode = p.roiMode == "point"
        self.ui.roiPointSelector.enabled = pointMode
        self.ui.roiPointPlaceWidget.enabled = pointMode
        self.ui.roiSegmentSelector.enabled = not pointMode
        self.ui.predictionSelector.enabled = not p.runModel
        self.ui.fccScaleSpinBox.enabled = p.units in ("fcc", "hybrid")
        organUnits = p.units in ("organs", "hybrid")
        self.ui.groupingLabel.visible = self.ui.groupingComboBox.visible = organUnits
        self.ui.groupingFilePathLineEdit.visible = organUnits and p.grouping == "from file"
        self.ui.dilateSpinBox.enabled = p.scoreRegion == "dilated"
        labels = self.logic.modelLabels(p)
        self.ui.targetLineEdit.toolTip = (_("Classes of this model: ") + ", ".join(
            f"{v}={k}" for k, v in sorted(labels.items(), key=lambda kv: kv[1]) if v)) if labels else \
            _("The class to explain: its label value or its name in the model's dataset.json.")
        problems = self.logic.validate(p)
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = "\n".join(problems) if problems else _("Compute the Shapley attributions")

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

    # ------------------------------------------------------------------------------------ running
    def _setRunning(self, running: bool) -> None:
        for name in ("inputsCollapsibleButton", "roiCollapsibleButton", "explanationCollapsibleButton",
                     "advancedCollapsibleButton", "dependenciesCollapsibleButton"):
            getattr(self.ui, name).enabled = not running
        self.ui.applyButton.text = _("Cancel") if running else _("Explain")
        self.ui.applyButton.enabled = True
        self.ui.progressBar.visible = running
        if running:
            self.ui.progressBar.value = 0
            self.ui.costLabel.text = ""

    def onApplyButton(self) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
            self.ui.statusLabel.text = _("Cancelling after the current batch...")
            self.ui.applyButton.enabled = False
            return
        started = False
        try:
            if not self.logic.ensureDependencies(interactive=True):
                return
            self._job, note = self.logic.startExplain(self._parameterNode)
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

    def onPollJob(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        from SegSHAPMRML.panel import format_status, progress_percent

        progress = [m.event for m in job.poll() if m.kind == "progress"]
        if progress:                        # many events per tick (one per patch forward): show the latest
            self.ui.progressBar.value = progress_percent(progress[-1])
            self.ui.statusLabel.text = format_status(progress[-1], job.note)
        if not job.finished:
            return
        self._timer.stop()
        try:
            if job.state == "done":
                self._lastNodes = self.logic.finishExplain(job, self._parameterNode)
                self._showResults(self._lastNodes, job)
            elif job.state == "cancelled":
                self.ui.statusLabel.text = _("Cancelled: ") + job.error_text + _(
                    " (Explain again with the same inputs resumes it)")
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
        self.ui.statusLabel.text = _("Done: ") + slicer.mrmlScene.GetSubjectHierarchyNode().GetItemName(
            nodes["folder_item"]) + (" - " + job.note if job.note else "")
        self.ui.resultsTableView.setMRMLTableNode(nodes["units_table"])
        self.ui.showCurvesButton.enabled = "chart" in nodes
        self.ui.saveSceneButton.enabled = True
        self.ui.outputFolderLabel.text = _("Output folder: ") + str(job.result.out)
        self.ui.resultsCollapsibleButton.collapsed = False

    def onShowCurves(self) -> None:
        if self._lastNodes and "chart" in self._lastNodes:
            slicer.modules.plots.logic().ShowChartInLayout(self._lastNodes["chart"])

    def onSaveScene(self) -> None:
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Save scene bundle"), "",
                                              _("Slicer scene bundle (*.mrb)"))
        if not path:
            return
        try:
            written = self.logic.saveScene(path)
            self.ui.statusLabel.text = _("Saved ") + str(written)
        except Exception as error:
            self._showError(error)

    def onRunTotalSegmentator(self) -> None:
        try:
            with slicer.util.tryWithErrorDisplay(_("TotalSegmentator failed."), waitCursor=True):
                segmentation = self.logic.runTotalSegmentator(self._parameterNode.inputVolume)
                self._parameterNode.organNode = segmentation
        finally:
            self._updateGuiState()

    def onInstallDependencies(self) -> None:
        self.ui.installLogTextEdit.clear()

        def log(line):
            self.ui.installLogTextEdit.appendPlainText(str(line))
            slicer.app.processEvents()

        try:
            wheels = self._parameterNode.wheelFolder if self._parameterNode else None
            self.logic.installDependencies(wheelFolder=wheels, log=log)
        except Exception as error:
            log(f"ERROR: {error}")
            self._showError(error)
        finally:
            self.ui.dependencyStatusLabel.text = self.logic.dependencyStatusText()
            self._updateGuiState()


#
# SegSHAPLogic
#


class SegSHAPLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable without the panel (scripts, the self-test).

    runsFolder: where the runs live (SegSHAPMRML.runs: ``run-*/explanation`` output folders, ``inputs/``);
    default Slicer's temporary folder / SegSHAP, so a cancelled run is resumed even after a restart."""

    def __init__(self, runsFolder=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runsFolder = Path(runsFolder) if runsFolder else Path(slicer.app.temporaryPath) / "SegSHAP"

    def getParameterNode(self):
        return SegSHAPParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------------------- dependencies
    def dependencyStatusText(self) -> str:
        from SegSHAPMRML.deps import status_text

        return status_text()

    def missingDependencies(self) -> list:
        from SegSHAPMRML.deps import missing_requirements

        return missing_requirements()

    def ensureDependencies(self, interactive: bool = True) -> bool:
        """True when everything is installed; otherwise (interactive) ask once and run the install step."""
        missing = self.missingDependencies()
        if not missing:
            return True
        names = ", ".join(r.name for r in missing)
        if not interactive or slicer.app.testingEnabled():
            raise RuntimeError(f"SegSHAP needs {names}; install them in the Dependencies section first")
        if not slicer.util.confirmOkCancelDisplay(
                _("SegSHAP needs Python packages that are not installed yet: {names}. Install them now? This "
                  "downloads several hundred MB (PyTorch) and may take minutes; pip's output is shown in the "
                  "Dependencies section.").format(names=names), _("Install dependencies")):
            return False
        self.installDependencies(log=logging.info)
        still = self.missingDependencies()
        if still:
            raise RuntimeError("still missing after installation: " + ", ".join(r.name for r in still))
        return True

    def installDependencies(self, wheelFolder=None, log=print, offline: bool = False) -> None:
        """Install what is missing: PyTorch through the PyTorch extension when installed (it picks the right
        CUDA build), the rest with pip (from ``wheelFolder`` when given), logging pip's output line by line."""
        from SegSHAPMRML.deps import missing_requirements, pip_arguments

        missing = missing_requirements()
        if not missing:
            log("All dependencies are installed.")
            return
        wheelFolder = pathText(wheelFolder) or None
        if any(r.name == "torch" for r in missing) and not wheelFolder:
            try:
                import PyTorchUtils
            except ImportError:
                PyTorchUtils = None
            if PyTorchUtils is not None:
                log("Installing PyTorch through the PyTorch extension...")
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                                      torchVersionRequirement=">=2.1")
                if torch is None:
                    raise RuntimeError("PyTorch was not installed (cancelled or failed in the PyTorch extension)")
                missing = [r for r in missing_requirements() if r.name != "torch"]
        specs = [r.spec for r in missing]
        if not specs:
            return
        args = pip_arguments(specs, wheelFolder, offline)
        log("pip " + " ".join(args))
        if wheelFolder is None and hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):
            slicer.packaging.pip_ensure(specs, requester="SegSHAP", skip_packages=["SimpleITK"])
        elif hasattr(slicer.util, "executePythonModule"):
            slicer.util.executePythonModule("pip", args, blocking=True, logCallback=log)
        else:
            slicer.util.pip_install(" ".join(args[1:]))
        log("Done.")

    # ---------------------------------------------------------------------------------- validation
    def panelValues(self, p):
        """The parameter node as SegSHAPMRML.panel.PanelValues (no node is read here beyond presence)."""
        from SegSHAPMRML.panel import PanelValues

        point = None
        if p.roiMode == "point" and p.roiPoint is not None and p.roiPoint.GetNumberOfControlPoints() > 0:
            from SegSHAPMRML.volumes import markups_point_ras

            point = markups_point_ras(p.roiPoint)
        return PanelValues(
            has_ct=p.inputVolume is not None, model_dir=pathText(p.modelPath), run_model=bool(p.runModel),
            has_prediction=p.predictionNode is not None, has_organs=p.organNode is not None,
            target=p.target, roi_mode=p.roiMode, roi_point_ras=point,
            has_roi_segment=p.roiSegmentation is not None and bool(p.roiSegmentID),
            units=p.units, fcc_scale_mm=p.fccScaleMm, grouping=p.grouping, grouping_file=pathText(p.groupingFile),
            value=p.value, score_region=p.scoreRegion,
            dilate_mm=p.dilateMm, budget=p.budget, seed=p.seed, mask_value=p.maskValue, device=p.device,
            batch_size=p.batchSize, tta=p.tta, faithfulness_steps=p.faithfulnessSteps)

    def modelLabels(self, p) -> dict:
        from SegSHAPMRML.panel import model_labels

        model = pathText(p.modelPath) if p is not None else ""
        return model_labels(model) if model else {}

    def validate(self, p) -> list:
        from SegSHAPMRML.panel import validate_panel

        if p is None:
            return [_("no parameter node")]
        return validate_panel(self.panelValues(p))

    def deviceChoices(self) -> list:
        from SegSHAPMRML.deps import installed_version
        from SegSHAPMRML.panel import device_choices

        # counting GPUs imports torch: only when it is installed (never at module import)
        return device_choices(None if installed_version("torch") else 0)

    # ------------------------------------------------------------------------------------- running
    def prepareRun(self, p):
        """Read the nodes into plain volumes (main thread) and choose the run folder -> (RunPlan, CaseInputs,
        device note). The plan resumes an unfinished run of the same inputs, shows a finished one with the same
        budget and seed again, or starts a new run folder (SegSHAPMRML.runs)."""
        from SegSHAPLib.errors import InputError
        from SegSHAPLib.explain.case_inputs import CaseInputs
        from SegSHAPMRML import panel, runs, volumes

        values = self.panelValues(p)
        problems = panel.validate_panel(values)
        if problems:
            raise InputError("\n".join(problems))
        device, note = panel.choose_device(values.device, logger=logging.getLogger("SegSHAP"))
        ct = p.inputVolume
        kwargs = {"ct": volumes.node_to_volume(ct)}
        point_local = None
        if values.roi_mode == "point":
            point_local = volumes.point_in_node_frame(ct, values.roi_point_ras)
        else:
            kwargs["roi_mask"] = volumes.segment_to_mask_volume(p.roiSegmentation, p.roiSegmentID, ct)
        if not values.run_model:
            kwargs["prediction"] = self._labelVolume(p.predictionNode, ct, panel.model_labels(values.model_dir))[0]
        if p.organNode is not None and values.units in panel.ORGAN_UNIT_TYPES:
            kwargs["organs"], kwargs["organ_names"] = self._labelVolume(p.organNode, ct, None)
        request = panel.build_request(values, self.runsFolder, device=device, roi_point_ras=point_local)
        inputs = CaseInputs(**kwargs)
        return runs.plan_run(self.runsFolder, request, inputs), inputs, note

    @staticmethod
    def _labelVolume(node, ctNode, labelValues):
        from SegSHAPMRML import volumes

        if node.IsA("vtkMRMLSegmentationNode"):
            return volumes.segmentation_to_label_volume(node, ctNode, label_values=labelValues)
        return volumes.node_to_volume(node), volumes.label_names_of_node(node)

    def startExplain(self, p, run=None):
        """Start the explanation on a worker thread -> (ExplainJob, status note: resume/show note and device).
        ``run`` replaces run_explain (scripting/tests); a finished run shown again is read back, never run."""
        from SegSHAPMRML import runs
        from SegSHAPMRML.job import ExplainJob

        plan, inputs, note = self.prepareRun(p)
        logging.info("SegSHAP: %s; %s; output in %s", plan.note or "new run", note, plan.request.out)
        replay = plan.action == "show"
        job = ExplainJob(plan.request, run=runs.replay_finished if replay else run,
                         evaluate=runs.stored_or_new_faithfulness, faithfulness_steps=p.faithfulnessSteps,
                         inputs_dir=plan.inputs_dir, note=plan.note, inputs=None if replay else inputs)
        job.roi_point_ras = self.panelValues(p).roi_point_ras
        return job.start(), "; ".join(text for text in (plan.note, note) if text)

    def finishExplain(self, job, p) -> dict:
        """Map a finished job's result to nodes (main thread)."""
        from SegSHAPMRML.results import results_to_scene

        if job.state != "done":
            raise RuntimeError(job.error_text or f"the run ended as {job.state}")
        return results_to_scene(
            slicer.mrmlScene, job.result, job.faithfulness, ct_node=p.inputVolume,
            prediction_node=None if p.runModel else p.predictionNode,
            roi_point_ras=getattr(job, "roi_point_ras", None),
            extra_versions={"Slicer": slicer.app.applicationVersion,
                            "SlicerRevision": slicer.app.repositoryRevision},
            units_segmentation=bool(p.unitsAsSegmentation))

    def runBlocking(self, p, timeout: float | None = None, run=None) -> dict:
        """Start, wait and map (scripts and the self-test; the panel uses the non-blocking path)."""
        job, _note = self.startExplain(p, run=run)
        job.wait(timeout)
        if not job.finished:
            job.cancel()
            raise RuntimeError(f"SegSHAP did not finish within {timeout} s")
        return self.finishExplain(job, p)

    def saveScene(self, path) -> Path:
        from SegSHAPMRML.scene_io import save_scene

        return save_scene(slicer.mrmlScene, path)

    def runTotalSegmentator(self, ctNode):
        """Organ segmentation with the TotalSegmentator extension (fast mode); its segment names are organ names."""
        if ctNode is None:
            raise ValueError("select the CT first")
        try:
            logic = slicer.util.getModuleLogic("TotalSegmentator")
        except Exception:
            logic = None
        if logic is None:
            raise RuntimeError("the TotalSegmentator extension is not installed; install it from the Extensions "
                               "Manager, or select an existing organ segmentation")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                          f"{ctNode.GetName()} TotalSegmentator")
        logic.setupPythonRequirements()
        logic.process(ctNode, segmentation, quality="fast", task="total")
        return segmentation


#
# SegSHAPTest
#


class SegSHAPTest(ScriptedLoadableModuleTest):
    """Self-test: bundled sample CT + demo model, organ units, budget 16, no network, no modal dialog, nothing
    installed (skipped when the dependencies are missing). Runs in a fresh runs folder, so it always computes
    (never shows an earlier run again). Seconds on a GPU; on a CPU the demo model's preparation dominates
    (about 0.5-1.5 min on a 2-core machine)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegSHAP_end_to_end()

    def test_SegSHAP_end_to_end(self):
        import tempfile

        logic = SegSHAPLogic(runsFolder=tempfile.mkdtemp(prefix="SegSHAPTest-"))
        missing = logic.missingDependencies()
        if missing:
            self.skipTest("dependencies not installed (" + ", ".join(r.name for r in missing) +
                          "); the self-test never installs anything")
        import numpy as np

        from SegSHAPMRML import check_run
        from SegSHAPMRML.volumes import array_from_node, node_ijk_to_ras

        self.delayDisplay("Loading the sample CT and its organ map")
        ct = slicer.util.loadVolume(str(SAMPLE_CT))
        organs = slicer.util.loadLabelVolume(str(SAMPLE_ORGANS))
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
        self.assertEqual(logic.validate(p), [])

        self.delayDisplay("Explaining (organ units, budget 16)")
        started = time.time()
        nodes = logic.runBlocking(p, timeout=600)
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
