"""SegSHAPMRML: the Qt-free MRML adapter layer between the Slicer module (SegSHAP.py) and the core (SegSHAPLib).

Dependency direction: SegSHAP.py (Qt, MRML) -> SegSHAPMRML -> SegSHAPLib. This package uses only what the
``slicer-core`` wheel provides (MRML scene, nodes, logic classes; no qt, ctk or slicer.util GUI helpers), so CI
runs it; SegSHAPLib never imports it.

Modules (imported on first use, so the Qt-free helpers ``panel``/``job``/``deps`` load without MRML):
- ``volumes``:   Volume <-> volume nodes (IJKToRAS), segmentation -> label Volume, markups -> RAS point.
- ``display``:   diverging colour table centred on 0, symmetric window, foreground over the CT, named label tables.
- ``tables``:    units ranked by phi (table node), MoRF/LeRF/random curves (table + plot series + chart).
- ``hierarchy``: one subject-hierarchy folder per run under the CT's study, with the run's record.
- ``results``:   ``results_to_scene`` (the mapping used by the Slicer logic and the CLI's ``--scene``),
                 ``scene_for_output_dir``, ``write_scene_from_output``, ``check_run``.
- ``scene_io``:  ``new_scene``, ``save_scene`` (.mrb), ``load_scene``.
- ``panel``:     input validation, ExplainRequest from panel values, progress text, device choice, OOM advice.
- ``job``:       ``ExplainJob``: run_explain on a worker thread, messages through a queue, cancel.
- ``run_logic``: ``ExplainRunLogic``, the panel's Qt-free run logic (validate, start, finish, TotalSegmentator),
                 given the scene, the runs folder and the job class.
- ``runs``:      ``plan_run``: the panel's run folder for a request - new, the unfinished run it resumes, or the
                 finished run it shows again.
- ``deps``:      what SegSHAP needs in Slicer and which installer each needs (PyTorch / NNUNet extension, pip from
                 Resources/requirements.txt, Slicer's own), the one confirmation, the restart check.

The CLI's ``segshap explain ... --scene scene.mrb`` calls
``SegSHAPMRML.write_scene_from_output(out_dir, scene_path)``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # volumes
    "node_to_volume": "volumes", "volume_to_node": "volumes", "update_node_from_volume": "volumes",
    "array_from_node": "volumes", "node_ijk_to_ras": "volumes", "same_voxel_grid": "volumes",
    "segmentation_to_label_volume": "volumes", "organ_segment_name": "volumes", "segment_to_mask_volume": "volumes", "segment_names": "volumes",
    "label_names_of_node": "volumes", "label_volume_to_segmentation": "volumes", "markups_point_ras": "volumes",
    "point_in_node_frame": "volumes",
    # display
    "diverging_color_table": "display", "show_attribution": "display", "named_label_color_table": "display",
    "set_slice_layers": "display", "symmetric_window": "display", "LEGEND": "display",
    # tables
    "units_table": "tables", "rank_units": "tables", "faithfulness_plot": "tables", "table_rows": "tables",
    # hierarchy
    "study_item_for": "hierarchy", "create_run_folder": "hierarchy", "folder_attributes": "hierarchy",
    "run_folders": "hierarchy",
    # results
    "results_to_scene": "results", "scene_for_output_dir": "results", "write_scene_from_output": "results",
    "load_output_dir": "results", "find_run_nodes": "results", "check_run": "results", "run_ids": "results",
    "verify_saved_scene": "results", "ExplanationOutputs": "results", "run_name": "results",
    # scene_io
    "new_scene": "scene_io", "prepare_scene": "scene_io", "save_scene": "scene_io", "load_scene": "scene_io",
    # panel
    "PanelValues": "panel", "validate_panel": "panel", "build_request": "panel", "build_request_kwargs": "panel",
    "format_progress": "panel", "progress_percent": "panel", "choose_device": "panel", "device_choices": "panel",
    "is_out_of_memory": "panel", "error_message": "panel", "model_labels": "panel",
    # job
    "ExplainJob": "job", "JobMessage": "job",
    # runs
    "plan_run": "runs", "RunPlan": "runs",
    # deps
    "missing_requirements": "deps", "requirement_status": "deps", "pip_arguments": "deps",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'SegSHAPMRML' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
