"""Qt-free panel helpers: input validation, the ExplainRequest, progress text, device choice, error messages."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from SegSHAPMRML import panel
from SegSHAPMRML.panel import PanelValues

pytestmark = pytest.mark.mrml

DEMO_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "DemoModel"


def _ready(**changes) -> PanelValues:
    values = PanelValues(has_ct=True, model_dir=str(DEMO_MODEL), has_organs=True, target="spleen",
                         roi_point_ras=(-129.9, 143.3, 151.3))
    return dataclasses.replace(values, **changes)


def test_ready_panel_has_no_problems():
    assert panel.validate_panel(_ready()) == []
    assert panel.validate_panel(_ready(target="1")) == []


@pytest.mark.parametrize("changes,expected", [
    (dict(has_ct=False), "Select the CT volume"),
    (dict(model_dir=""), "Choose the nnU-Net model folder"),
    (dict(model_dir="/no/such/folder"), "does not exist"),
    (dict(run_model=False), "Select a prediction"),
    (dict(target=""), "Enter the target class"),
    (dict(target="liver"), "not a foreground class of the model; choose one of 1=spleen"),
    (dict(target="0"), "not a foreground class"),
    (dict(roi_point_ras=None), "Place a point on the structure"),
    (dict(roi_mode="segment"), "Select the segment"),
    (dict(has_organs=False), "'organs' units need an organ segmentation"),
    (dict(units="hybrid", has_organs=False), "'hybrid' units need an organ segmentation"),
    (dict(units="fcc", fcc_scale_mm=0.0), "FCC cell scale must be a positive"),
    (dict(value="fp", score_region="component"), "identically 0"),
    (dict(score_region="dilated", dilate_mm=0.0), "dilation"),
    (dict(budget=2), "at least 8"),
    (dict(device="tpu"), "Unknown device 'tpu'"),
])
def test_problems_are_reported_clearly(changes, expected):
    problems = panel.validate_panel(_ready(**changes))
    assert any(expected in p for p in problems), problems
    assert all(p.endswith(".") for p in problems)


def test_model_folder_without_checkpoint(tmp_path):
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "a": 1}}')
    (tmp_path / "plans.json").write_text("{}")
    assert "checkpoint_final.pth" in panel.model_folder_problem(str(tmp_path))
    assert panel.model_folder_problem(str(DEMO_MODEL)) is None
    assert panel.model_labels(str(DEMO_MODEL)) == {"background": 0, "spleen": 1}
    assert panel.model_labels(str(tmp_path / "none")) == {}


def test_checkpoint_choice_is_validated_and_reaches_the_request(tmp_path):
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "a": 1}}')
    (tmp_path / "plans.json").write_text("{}")
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "fold_0" / "checkpoint_best.pth").write_bytes(b"")
    problem = panel.model_folder_problem(str(tmp_path))
    assert "checkpoint_final.pth" in problem and "checkpoint_best.pth" in problem
    assert panel.model_folder_problem(str(tmp_path), "checkpoint_best.pth") is None
    problems = panel.validate_panel(_ready(model_dir=str(tmp_path), checkpoint="checkpoint_best.pth"))
    assert not any("checkpoint" in p for p in problems), problems
    assert panel.build_request_kwargs(_ready(checkpoint="checkpoint_best.pth"), tmp_path)["checkpoint"] == \
        "checkpoint_best.pth"
    assert panel.build_request_kwargs(_ready(), tmp_path)["checkpoint"] == "checkpoint_final.pth"


def test_fcc_units_need_no_organs():
    assert panel.validate_panel(_ready(units="fcc", has_organs=False)) == []
    assert panel.validate_panel(_ready(units="hybrid", has_organs=False, run_totalsegmentator=True)) == []


def test_request_kwargs_match_explain_request_fields(tmp_path):
    kwargs = panel.build_request_kwargs(_ready(units="hybrid", value="dice", budget=64, seed=3, device="cuda:1",
                                               mask_value=-1000.0, tta=True, grouping="default groups"), tmp_path / "o",
                                        device="cpu", roi_point_ras=(1.0, 2.0, 3.0))
    explain = pytest.importorskip("SegSHAPLib.explain.request")
    fields = {f.name for f in dataclasses.fields(explain.ExplainRequest)}
    assert set(kwargs) <= fields                              # every key is a request field (flag name)
    request = panel.build_request(_ready(), tmp_path / "o")
    assert isinstance(request, explain.ExplainRequest)
    assert kwargs["roi_point"] == (1.0, 2.0, 3.0) and kwargs["point_space"] == "ras"
    assert kwargs["device"] == "cpu" and kwargs["units"] == "hybrid" and kwargs["value"] == "dice"
    assert kwargs["budget"] == 64 and kwargs["seed"] == 3 and kwargs["mask_value"] == -1000.0 and kwargs["tta"]
    assert kwargs["grouping"] == "default" and kwargs["model"] == DEMO_MODEL and kwargs["out"] == tmp_path / "o"
    assert kwargs["ct"] is None and kwargs["organs"] is None                # volumes go in memory
    assert panel.build_request_kwargs(_ready(roi_mode="segment"), tmp_path)["roi_point"] is None
    assert panel.build_request_kwargs(_ready(device="Auto"), tmp_path)["device"] == "auto"


@pytest.mark.parametrize("content,expected", [
    (None, "does not exist"),
    ("{not json", "is not valid JSON"),
    ('{"rib cage": "rib_*"}', 'must be a JSON object {"group name": ["glob pattern", ...]'),
])
def test_a_bad_grouping_file_is_refused_before_the_run(tmp_path, content, expected):
    path = tmp_path / "groups.json"
    if content is not None:
        path.write_text(content)
    problems = panel.validate_panel(_ready(grouping="from file", grouping_file=str(path)))
    assert len(problems) == 1 and expected in problems[0] and problems[0].endswith("."), problems
    assert problems[0][0].isupper()
    # the same file is irrelevant to fcc units (no organ map, no grouping)
    assert panel.validate_panel(_ready(units="fcc", grouping="from file", grouping_file=str(path))) == []


def test_grouping_choices_become_the_grouping_argument(tmp_path):
    path = tmp_path / "groups.json"
    path.write_text('{"rib cage": ["rib_*", "sternum"]}')
    from_file = _ready(units="hybrid", grouping="from file", grouping_file=str(path))
    assert panel.validate_panel(from_file) == []
    assert panel.build_request_kwargs(from_file, tmp_path)["grouping"] == str(path.resolve())
    assert panel.build_request_kwargs(_ready(grouping="default groups"), tmp_path)["grouping"] == "default"
    assert panel.build_request_kwargs(_ready(), tmp_path)["grouping"] is None             # individual organs
    assert panel.build_request_kwargs(_ready(units="fcc", grouping="default groups"), tmp_path)["grouping"] is None
    assert "Choose the organ grouping JSON file" in panel.validate_panel(_ready(grouping="from file"))[0]
    assert "Unknown organ grouping 'coarse'" in panel.validate_panel(_ready(grouping="coarse"))[0]


def _event(stage, done, total, message="", **counters):
    return SimpleNamespace(stage=stage, done=done, total=total, message=message, counters=counters)


def test_progress_text():
    event = _event("coalitions", 120, 256, coalitions=120, patch_forwards=1234, patch_cache_hits=8000,
                   hit_rate=0.8666, eta_s=42.4)
    assert panel.format_progress(event) == "coalitions 120/256 - patch forwards 1,234 - hit rate 87% - ETA 0:42"
    assert panel.format_progress(_event("coalitions", 1, 10, eta_s=None)) == "coalitions 1/10 - ETA ?"
    assert panel.format_progress(_event("prepare", 0, 1, "loading the model")) == "preparing: loading the model"
    assert panel.format_progress(_event("verify", 2, 5, "checking")) == "verifying: checking (2/5)"
    assert panel.format_duration(3725) == "1:02:05" and panel.format_duration(None) == "?"
    resuming = "resuming: 8 coalitions already computed (run-1)"
    assert panel.format_status(event, resuming) == resuming + " - " + panel.format_progress(event)
    assert panel.format_status(event) == panel.format_progress(event)


def test_cost_text_names_resumed_coalitions():
    summary = {"solver": {"coalitions": 64, "method": "kernelshap", "resumed_coalitions": 8},
               "inference": {"patch_forwards": 1234, "hit_rate": 0.87}, "timings_s": {"total": 41.6}}
    assert panel.format_cost(summary) == ("64 coalitions (kernelshap, 8 resumed) - 1,234 patch forwards "
                                          "(87% cache hits) - 42 s")
    summary["solver"]["resumed_coalitions"] = 0
    assert panel.format_cost(summary).startswith("64 coalitions (kernelshap) - ")


def test_progress_percent():
    assert panel.progress_percent(_event("prepare", 0, 1)) == 0
    assert panel.progress_percent(_event("coalitions", 0, 256)) == 5
    assert panel.progress_percent(_event("coalitions", 128, 256)) == 50
    assert panel.progress_percent(_event("coalitions", 256, 256)) == 95
    assert panel.progress_percent(_event("write", 1, 1)) == 100
    assert panel.progress_percent(_event("coalitions", 5, 0)) == 5


def test_device_choices_and_choice(caplog):
    assert panel.device_choices(0) == ["Auto", "CPU"]
    assert panel.device_choices(2) == ["Auto", "CPU", "cuda:0", "cuda:1"]
    assert panel.choose_device("CPU", cuda_count=2)[0] == "cpu"
    assert panel.choose_device("Auto", cuda_count=1)[0] == "cuda:0"
    assert panel.choose_device("cuda:1", cuda_count=2)[0] == "cuda:1"
    with caplog.at_level(logging.INFO):
        device, note = panel.choose_device("Auto", cuda_count=0)
    assert device == "cpu" and "no CUDA GPU" in note and "no CUDA GPU" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        device, note = panel.choose_device("cuda:3", cuda_count=1)
    assert device == "cpu" and "falling back to the CPU" in note
    assert any(r.levelno == logging.WARNING and "cuda:3" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError):
        panel.choose_device("quantum")


def test_out_of_memory_is_caught_with_a_suggestion():
    class OutOfMemoryError(RuntimeError):          # the name torch.cuda.OutOfMemoryError has
        pass

    for error in (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError(),
                  RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")):
        assert panel.is_out_of_memory(error)
    assert not panel.is_out_of_memory(ValueError("bad value"))
    text = panel.error_message(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                               device="cuda:0", batch_size=4)
    assert text.startswith("Out of memory on cuda:0: OutOfMemoryError: CUDA out of memory")
    assert "batch size" in text and "CPU" in text


def test_error_messages_keep_the_real_text():
    from SegSHAPLib.errors import Cancelled, InputError

    assert panel.error_message(InputError("target 'x' is not a foreground class")) == \
        "target 'x' is not a foreground class"
    assert panel.error_message(KeyError("plans")) == "KeyError: 'plans'"
    assert panel.error_message(Cancelled("12 coalitions journaled")).startswith("Cancelled.")


def test_package_exports_resolve_and_helpers_load_without_mrml():
    """``from SegSHAPMRML import ExplainJob`` (the panel/job/deps helpers) loads neither slicer nor torch; every
    name in ``SegSHAPMRML.__all__`` resolves."""
    import subprocess
    import sys

    code = ("import sys, SegSHAPMRML\n"
            "from SegSHAPMRML import ExplainJob, validate_panel, format_progress, choose_device, pip_arguments\n"
            "assert not {'slicer', 'torch', 'vtk'} & set(sys.modules), sorted({'slicer', 'torch', 'vtk'} & set(sys.modules))\n"
            "missing = [n for n in SegSHAPMRML.__all__ if getattr(SegSHAPMRML, n, None) is None]\n"
            "assert not missing, missing\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_pip_arguments_are_a_list_that_keeps_paths_whole(tmp_path):
    """slicer.util.pip_install(list) quotes each item itself: a wheel folder with spaces stays one argument."""
    from SegSHAPMRML import deps

    folder = tmp_path / "my wheels"
    folder.mkdir()
    assert deps.pip_arguments(["nibabel>=5"]) == ["nibabel>=5"]
    assert deps.pip_arguments(["nibabel>=5"], folder, offline=True) == [
        "--find-links", str(folder), "--no-index", "nibabel>=5"]
    with pytest.raises(ValueError, match="does not exist"):
        deps.pip_arguments(["x"], tmp_path / "missing")


def test_requirements_each_have_one_installer(tmp_path):
    """torch only through the PyTorch extension, nnunetv2 only through the NNUNet extension, numpy and SimpleITK
    never (Slicer's own), the rest from Resources/requirements.txt with pip."""
    from SegSHAPMRML import deps

    status = {r.name: r for r in deps.requirement_status()}
    assert status["torch"].source == deps.TORCH and status["nnunetv2"].source == deps.NNUNET
    assert status["SimpleITK"].source == status["numpy"].source == deps.SLICER
    assert {name for name, _, _ in deps.pip_requirements()} == {"scipy", "nibabel", "tqdm", "matplotlib", "scikit-image"}
    assert status["numpy"].satisfied and "numpy" in deps.status_text()
    assert not deps.Requirement("torch", "2.1", None).satisfied
    assert not deps.Requirement("scipy", "1.11", "1.9.3").satisfied
    assert deps.Requirement("torch", "2.1", "2.13.0+cpu", deps.TORCH).satisfied
    missing = [deps.Requirement("tqdm", "4.66", None), deps.Requirement("torch", "2.1", None, deps.TORCH),
               deps.Requirement("nnunetv2", "2.5", None, deps.NNUNET)]
    assert list(deps.by_source(missing)) == [deps.TORCH, deps.NNUNET, deps.PIP]
    text = deps.confirmation_text(missing)
    assert "torch>=2.1 through the PyTorch extension" in text and "tqdm>=4.66 with pip" in text
    bad = tmp_path / "requirements.txt"
    bad.write_text("# ok\nscipy>=1.11\ntorch\n")
    with pytest.raises(ValueError, match="requirements.txt:3: expected 'name>=version'"):
        deps.pip_requirements(bad)


def test_a_replaced_package_that_was_imported_needs_a_restart():
    """numpy is imported in this process: a changed numpy version means restart; a changed version of a package
    whose modules are not imported does not; a fresh install of an imported package does."""
    import numpy  # noqa: F401

    from SegSHAPMRML import deps

    after = {"numpy": "9.0", "pip": "99.0"}
    replaced = deps.replaced_imported({"numpy": "1.26.0", "pip": "1.0"}, after, modules={"numpy": object()})
    assert replaced == [("numpy", "1.26.0", "9.0")]
    assert deps.replaced_imported({}, after, modules={"numpy": object()}) == [("numpy", None, "9.0")]
    assert deps.replaced_imported(after, after, modules={"numpy": object()}) == []
    assert deps.installed_versions()["numpy"] == numpy.__version__
