"""Scenes without a Slicer application: create, save as a Slicer scene bundle (.mrb), reload and check.

``slicer-core`` carries the scene's own bundle writer and reader (``vtkMRMLScene.WriteToMRB`` /
``ReadFromMRB``, the same code Slicer's File > Save uses): the .mrb is a zip of ``<name>/<name>.mrml`` plus
``<name>/Data/`` (volumes as .nrrd, tables as .tsv + .schema.tsv, colour tables as .ctbl/.csv, markups as
.mrk.json) that Slicer opens by drag and drop. Reading needs a data-I/O manager with a cache directory, which
``new_scene`` provides (Slicer's own scene has one).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import slicer

# node classes some Slicer modules register at start-up; a bare vtkMRMLScene needs them to save/load them
EXTRA_NODE_CLASSES = ("vtkMRMLColorLegendDisplayNode", "vtkMRMLMarkupsJsonStorageNode",
                      "vtkMRMLMarkupsFiducialDisplayNode", "vtkMRMLSegmentationStorageNode")


def prepare_scene(scene, cache_dir: str | os.PathLike | None = None):
    """Make a scene able to hold, save and reload every SegSHAP node (idempotent; harmless in Slicer).

    Registers node classes some modules add at start-up, adds Slicer's default colour tables when the scene has
    none (so the CT can use 'Grey'), and gives the scene a data-I/O manager with a cache directory (needed to
    read .mrb bundles) when it has none."""
    for cls in EXTRA_NODE_CLASSES:
        if scene.CreateNodeByClass(cls) is None and hasattr(slicer, cls):
            scene.RegisterNodeClass(getattr(slicer, cls)())
    if scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is None:
        color_logic = slicer.vtkMRMLColorLogic()      # adds the default colour nodes (not saved with scenes)
        color_logic.SetMRMLScene(scene)
        color_logic.SetMRMLScene(None)
    manager = scene.GetDataIOManager()
    if manager is None or manager.GetCacheManager() is None or not manager.GetCacheManager().GetRemoteCacheDirectory():
        cache = slicer.vtkCacheManager()
        cache_dir = Path(cache_dir) if cache_dir else _process_cache_dir()
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache.SetRemoteCacheDirectory(str(cache_dir))
        manager = manager or slicer.vtkDataIOManager()
        manager.SetCacheManager(cache)
        scene.SetDataIOManager(manager)             # the scene holds references to both
    return scene


_CACHE_DIR: Path | None = None


def _process_cache_dir() -> Path:
    """One temporary cache folder per process (bundles are unpacked into uniquely named folders inside)."""
    global _CACHE_DIR
    if _CACHE_DIR is None or not _CACHE_DIR.is_dir():
        _CACHE_DIR = Path(tempfile.mkdtemp(prefix="segshap_mrml_cache_"))
        atexit.register(shutil.rmtree, _CACHE_DIR, True)
    return _CACHE_DIR


def new_scene(cache_dir: str | os.PathLike | None = None):
    """An empty ``vtkMRMLScene`` ready for SegSHAP nodes (see ``prepare_scene``), with the selection node a
    Slicer scene always has (markups look their units up there)."""
    scene = prepare_scene(slicer.vtkMRMLScene(), cache_dir)
    if scene.GetNodeByID("vtkMRMLSelectionNodeSingleton") is None:
        scene.AddNode(slicer.vtkMRMLSelectionNode())
    return scene


def _messages():
    return slicer.vtkMRMLMessageCollection() if hasattr(slicer, "vtkMRMLMessageCollection") else None


def _message_text(messages) -> str:
    if messages is None:
        return ""
    return messages.GetAllMessagesAsString().strip()


def save_scene(scene, path: str | os.PathLike) -> Path:
    """Save the scene.

    ``*.mrb``: a Slicer scene bundle (scene.WriteToMRB). Any other path: a bundle directory (created) holding
    ``<dirname>.mrml`` and ``Data/`` (scene.SaveSceneToSlicerDataBundleDirectory). Returns the written path;
    RuntimeError with the scene's messages on failure."""
    path = Path(path).resolve()
    prepare_scene(scene)
    messages = _messages()
    if path.suffix.lower() == ".mrb":
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        ok = scene.WriteToMRB(str(path), None, messages)
        if not ok or not path.is_file():
            ok = _write_mrb_by_hand(scene, path)
        if not ok:
            raise RuntimeError(f"could not write the scene bundle {path}: {_message_text(messages)}")
        return path
    path.mkdir(parents=True, exist_ok=True)
    ok = scene.SaveSceneToSlicerDataBundleDirectory(str(path), None, messages)
    if not ok:
        raise RuntimeError(f"could not write the scene to {path}: {_message_text(messages)}")
    return path / f"{path.name}.mrml"


def _write_mrb_by_hand(scene, path: Path) -> bool:
    """Fallback writer: save a bundle directory and zip it as Slicer does (``<name>/<name>.mrml``, ``Data/``)."""
    with tempfile.TemporaryDirectory(prefix="segshap_mrb_") as tmp:
        bundle = Path(tmp) / path.stem
        bundle.mkdir()
        if not scene.SaveSceneToSlicerDataBundleDirectory(str(bundle), None, _messages()):
            return False
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(bundle, f"{path.stem}/")
            for file in sorted(bundle.rglob("*")):
                archive.write(file, file.relative_to(Path(tmp)).as_posix())
    return path.is_file()


def load_scene(path: str | os.PathLike, scene=None):
    """Load a .mrb bundle, a .mrml file or a bundle directory into ``scene`` (a fresh one by default).
    RuntimeError with the scene's messages when reading fails."""
    path = Path(path).resolve()
    scene = prepare_scene(scene) if scene is not None else new_scene()
    messages = _messages()
    if path.suffix.lower() == ".mrb":
        ok = scene.ReadFromMRB(str(path), True, messages)
    else:
        mrml = path
        if path.is_dir():
            candidates = sorted(path.glob("*.mrml"))
            if not candidates:
                raise RuntimeError(f"{path} holds no .mrml file")
            mrml = candidates[0]
        scene.SetURL(str(mrml))
        ok = scene.Connect(messages)
    if not ok:
        raise RuntimeError(f"could not read the scene {path}: {_message_text(messages)}")
    return scene


def bundle_listing(path: str | os.PathLike) -> list[str]:
    """The file names inside a .mrb (for reports and tests)."""
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


__all__ = ["prepare_scene", "new_scene", "save_scene", "load_scene", "bundle_listing", "EXTRA_NODE_CLASSES"]
