"""The panel's run logic, Qt-free: parameter node -> validation, request, background job, result nodes.

``ExplainRunLogic`` is what the SegSHAP widget calls to validate, start, poll and map an explanation. It takes the
MRML scene and the runs folder as arguments (no ``slicer.app``, no Qt, no dialogs), so CI runs it on a slicer-core
scene exactly as Slicer does. The job that runs the explanation is injected (``job_factory``); the default runs
new and resumed explanations out of process (``process_job.ProcessExplainJob`` under PythonSlicer) and replays a
finished run in process (``job.ExplainJob``): both have the same ``start()/poll()/cancel()/wait()`` shape.

``p`` everywhere is the module's parameter node (``SegSHAPParameterNode`` in SegSHAP.py): an object with the
attributes inputVolume, modelPath, runModel, predictionNode, target, organNode, roiMode, roiPoint, roiSegmentation,
roiSegmentID, scoreRegion, dilateMm, units, fccScaleMm, grouping, groupingFile, value, budget, budgetAuto, tolerance,
seed, slicSizeMm, slicCompactness, removal, blurSigmaMm, device,
faithfulnessSteps, maskValue, batchSize, tta, checkpoint, unitsAsSegmentation.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from . import panel

LOG = logging.getLogger("SegSHAP")


def path_text(path) -> str:
    """A path parameter as text; "" when unset (Slicer's PathSerializer default is ``Path()``, i.e. ".")."""
    return str(path) if path is not None and str(path) not in ("", ".") else ""


def python_for_runs() -> str:
    """The interpreter a panel run's child process uses: Slicer's ``PythonSlicer`` launcher when it is on the PATH
    (it sets up Slicer's Python environment, as ``slicer.util.pip_install`` uses it), else this process's own."""
    return shutil.which("PythonSlicer") or sys.executable


def default_job(request, *, run: Callable | None = None, evaluate: Callable | None = None,
                faithfulness_steps: int = 0, inputs_dir=None, note: str = "", inputs=None,
                tolerance: float | None = None):
    """The panel's job for a run: new and resumed runs compute in a child process (``ProcessExplainJob`` with
    ``python_for_runs()``), so a crash or out-of-memory ends the child, never Slicer; a given ``run`` (a finished
    run shown again, ``runs.replay_finished``, which only reads the folder back; or a script's own function) runs
    in this process (``ExplainJob``)."""
    if run is not None:
        from .job import ExplainJob

        return ExplainJob(request, run=run, evaluate=evaluate, faithfulness_steps=faithfulness_steps,
                          inputs_dir=inputs_dir, note=note, inputs=inputs, tolerance=tolerance)
    from .process_job import ProcessExplainJob

    return ProcessExplainJob(request, python=python_for_runs(), inputs_dir=inputs_dir, note=note,
                             faithfulness_steps=faithfulness_steps, inputs=inputs, tolerance=tolerance)


class ExplainRunLogic:
    """Validate, start, finish explanations for one scene.

    scene:        the MRML scene the nodes live in and results go to.
    runs_folder:  where runs live (``runs.plan_run``: ``run-*/explanation`` output folders, ``inputs/``).
    versions:     extra name -> version pairs recorded with each run (e.g. the Slicer version).
    job_factory:  ``job_factory(request, run=..., evaluate=..., faithfulness_steps=..., inputs_dir=..., note=...,
                  inputs=CaseInputs)`` -> a job with ``start() poll() cancel() wait()``; default ``default_job``
                  (``ProcessExplainJob``, a child process, for new and resumed runs; the in-process ``ExplainJob``
                  when a ``run`` is given: a finished run shown again, or a script's function).
    """

    def __init__(self, scene, runs_folder, versions: dict | None = None, job_factory: Callable | None = None):
        self.scene = scene
        self.runs_folder = Path(runs_folder)
        self.versions = dict(versions or {})
        self.job_factory = job_factory

    # ---------------------------------------------------------------------------------- validation
    def panel_values(self, p) -> panel.PanelValues:
        """The parameter node as ``panel.PanelValues`` (nodes are only checked for presence, the point read)."""
        point = None
        if p.roiMode == "point" and p.roiPoint is not None and p.roiPoint.GetNumberOfControlPoints() > 0:
            from .volumes import markups_point_ras

            point = markups_point_ras(p.roiPoint)
        return panel.PanelValues(
            has_ct=p.inputVolume is not None, model_dir=path_text(p.modelPath), run_model=bool(p.runModel),
            has_prediction=p.predictionNode is not None, has_organs=p.organNode is not None,
            target=p.target, roi_mode=p.roiMode, roi_point_ras=point,
            has_roi_segment=p.roiSegmentation is not None and bool(p.roiSegmentID),
            units=p.units, fcc_scale_mm=p.fccScaleMm, grouping=p.grouping, grouping_file=path_text(p.groupingFile),
            value=p.value, score_region=p.scoreRegion,
            dilate_mm=p.dilateMm, budget=p.budget, budget_auto=bool(p.budgetAuto), tolerance=p.tolerance,
            seed=p.seed, mask_value=p.maskValue, device=p.device, batch_size=p.batchSize, tta=p.tta,
            checkpoint=p.checkpoint, faithfulness_steps=p.faithfulnessSteps, slic_size_mm=p.slicSizeMm,
            slic_compactness=p.slicCompactness, removal=p.removal, blur_sigma_mm=p.blurSigmaMm)

    def validate(self, p) -> list[str]:
        """Problems that block Apply, one sentence each; [] when the run can start."""
        if p is None:
            return ["no parameter node"]
        return panel.validate_panel(self.panel_values(p))

    @staticmethod
    def model_labels(p) -> dict[str, int]:
        model = path_text(p.modelPath) if p is not None else ""
        return panel.model_labels(model) if model else {}

    @staticmethod
    def checkpoint_choices(p) -> list[str]:
        """The checkpoint file names in the model folder's fold_X (for the editable checkpoint combo)."""
        model = path_text(p.modelPath) if p is not None else ""
        return panel.checkpoint_choices(model) if model else []

    @staticmethod
    def device_choices() -> list[str]:
        """Auto, CPU and one entry per CUDA device; GPUs are counted (torch imported) only when torch is installed,
        so call it again after an install."""
        from .deps import installed_version

        return panel.device_choices(None if installed_version("torch") else 0)

    # ------------------------------------------------------------------------------------ running
    def prepare_run(self, p, create: bool = True):
        """Read the nodes into plain volumes and choose the run folder -> (RunPlan, CaseInputs, device note).
        The plan resumes an unfinished run of the same inputs, shows a finished one with the same budget and seed
        again, or starts a new run folder (``runs.plan_run``; ``create=False``: nothing is written)."""
        from SegSHAPLib.errors import InputError
        from SegSHAPLib.explain.case_inputs import CaseInputs

        from . import runs, volumes

        values = self.panel_values(p)
        problems = panel.validate_panel(values)
        if problems:
            raise InputError("\n".join(problems))
        device, note = panel.choose_device(values.device, logger=LOG)
        ct = p.inputVolume
        kwargs = {"ct": volumes.node_to_volume(ct)}
        point_local = None
        if values.roi_mode == "point":
            point_local = volumes.point_in_node_frame(ct, values.roi_point_ras)
        else:
            kwargs["roi_mask"] = volumes.segment_to_mask_volume(p.roiSegmentation, p.roiSegmentID, ct)
        if not values.run_model:
            kwargs["prediction"] = _label_volume(p.predictionNode, ct, panel.model_labels(values.model_dir))[0]
        if p.organNode is not None and values.units in panel.ORGAN_UNIT_TYPES:
            kwargs["organs"], kwargs["organ_names"] = _label_volume(p.organNode, ct, None)
        request = panel.build_request(values, self.runs_folder, device=device, roi_point_ras=point_local)
        inputs = CaseInputs(**kwargs)
        return runs.plan_run(self.runs_folder, request, inputs, create=create), inputs, note

    def start_explain(self, p, run: Callable | None = None):
        """Start the explanation -> (job, status note: resume/show note and device). ``run`` replaces run_explain
        (scripting, tests); a finished run shown again is read back, never run."""
        from . import runs

        plan, inputs, note = self.prepare_run(p)
        LOG.info("SegSHAP: %s; %s; output in %s", plan.note or "new run", note, plan.request.out)
        replay = plan.action == "show"
        factory = self.job_factory or default_job
        job = factory(plan.request, run=runs.replay_finished if replay else run,
                      evaluate=runs.stored_or_new_faithfulness, faithfulness_steps=p.faithfulnessSteps,
                      inputs_dir=plan.inputs_dir, note=plan.note, inputs=None if replay else inputs,
                      tolerance=panel.stop_tolerance(self.panel_values(p)))
        job.roi_point_ras = self.panel_values(p).roi_point_ras
        return job.start(), "; ".join(text for text in (plan.note, note) if text)

    def start_estimate(self, p):
        """The cost of what Apply would run, counted in a child process (``segshap explain --dry-run``, nothing
        run, nothing written to a run folder) -> a started ``cost_estimate.CostEstimateJob``. The in-memory inputs
        are written as the run would write them (the same content-named files), so the run reuses them."""
        from .cost_estimate import CostEstimateJob

        plan, inputs, _note = self.prepare_run(p, create=False)
        request = inputs.persist(plan.request, plan.inputs_dir)
        return CostEstimateJob(request, python=python_for_runs(), folder=self.runs_folder / "estimates",
                               tolerance=panel.stop_tolerance(self.panel_values(p))).start()

    def start_refine(self, p, parent_out, organs: list[str]):
        """Zoom into a finished organ-unit run: explain it again with ``organs`` (names of its units) split into
        cells of the panel's FCC scale, every other organ kept whole, with the panel's value function, budget,
        stop rule, seed and device and the parent's inputs (its files) -> (job, status note). The parent's
        coalitions are reused where the plans coincide; an interrupted zoom resumes like any run."""
        import dataclasses

        from SegSHAPLib.errors import InputError
        from SegSHAPLib.explain.refine import parent_request, resolve_refinement

        from . import runs

        if not organs:
            raise InputError("select the organs to refine in the units table first")
        values = self.panel_values(p)
        device, device_note = panel.choose_device(values.device, logger=LOG)
        parent = Path(parent_out)
        request = resolve_refinement(dataclasses.replace(
            parent_request(parent), out=parent, refine=parent, refine_organs=list(organs), refine_top=None,
            fcc_scale_mm=float(values.fcc_scale_mm), value=values.value, budget=int(values.budget),
            seed=int(values.seed), device=device, batch_size=int(values.batch_size), tta=bool(values.tta)))
        plan = runs.plan_run(self.runs_folder, request)
        LOG.info("SegSHAP zoom into %s: %s; output in %s", ", ".join(organs), plan.note or "new run", plan.request.out)
        factory = self.job_factory or default_job
        job = factory(plan.request, run=runs.replay_finished if plan.action == "show" else None,
                      evaluate=runs.stored_or_new_faithfulness, faithfulness_steps=p.faithfulnessSteps,
                      inputs_dir=None, note=plan.note, inputs=None, tolerance=panel.stop_tolerance(values))
        job.roi_point_ras = None
        note = f"zoom into {', '.join(organs)}"
        return job.start(), "; ".join(text for text in (note, plan.note, device_note) if text)

    def finish_explain(self, job, p) -> dict:
        """Map a finished job's result to nodes -> ``results_to_scene``'s dict of nodes."""
        from .results import results_to_scene

        if job.state != "done":
            raise RuntimeError(job.error_text or f"the run ended as {job.state}")
        return results_to_scene(
            self.scene, job.result, job.faithfulness, ct_node=p.inputVolume,
            prediction_node=None if p.runModel else p.predictionNode,
            roi_point_ras=getattr(job, "roi_point_ras", None), extra_versions=self.versions,
            units_segmentation=bool(p.unitsAsSegmentation))

    def run_blocking(self, p, timeout: float | None = None, run: Callable | None = None) -> dict:
        """Start, wait and map (scripts and the self-test; the panel uses the non-blocking path)."""
        job, _note = self.start_explain(p, run=run)
        job.wait(timeout)
        if not job.finished:
            job.cancel()
            raise RuntimeError(f"SegSHAP did not finish within {timeout} s")
        return self.finish_explain(job, p)

    def save_scene(self, path) -> Path:
        from .scene_io import save_scene

        return save_scene(self.scene, path)

    def run_total_segmentator(self, ct_node, total_segmentator_logic, cpu: bool = False):
        """Organ segmentation by the TotalSegmentator extension's logic -> a new segmentation node.

        Called so that both the extension's 5.8 branch (``process(inputVolume, outputSegmentation, fast=True,
        cpu=False, task=None, ...)``) and its main branch (``process(inputVolume, outputSegmentation,
        quality=None, cpu=False, task=None, ...)``, where ``True`` means "fast") accept it: the third argument
        positionally as ``True``. Segments keep TotalSegmentator's raw class names (``useStandardSegmentNames =
        False``), the names the organ groupings are written in."""
        if ct_node is None:
            raise ValueError("select the CT first")
        segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{ct_node.GetName()} TotalSegmentator")
        total_segmentator_logic.useStandardSegmentNames = False
        total_segmentator_logic.process(ct_node, segmentation, True, cpu, task="total")
        return segmentation


def _label_volume(node, ct_node, label_values):
    """A segmentation or label map node -> (label Volume on the CT's grid, {label: name})."""
    from . import volumes

    if node.IsA("vtkMRMLSegmentationNode"):
        return volumes.segmentation_to_label_volume(node, ct_node, label_values=label_values)
    return volumes.node_to_volume(node), volumes.label_names_of_node(node)


__all__ = ["ExplainRunLogic", "default_job", "path_text", "python_for_runs"]
