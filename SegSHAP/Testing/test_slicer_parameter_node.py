"""SegSHAP's parameter node under the rules of Slicer's parameterNodeWrapper, on a slicer-core scene.

The wrapper is the stand-in in ``slicer_standins/parameter_node_wrapper.py`` (Slicer's package ships only with
desktop Slicer; its module docstring cites the Slicer function behind each rule). The first tests show that the
stand-in REJECTS what Slicer rejects - above all the parameter node SegSHAP shipped before (a union of node types
without None), which Slicer refuses when it writes the defaults at creation - so a pass here means something.

The same contract tests also run against Slicer's OWN package when ``SLICER_SOURCE_DIR`` names a Slicer source
checkout (``Base/Python/slicer/parameterNodeWrapper`` is imported from it, on the same slicer-core scene and qt
shim); CI has no copy of Slicer's source, so there they are skipped with that reason. Run locally e.g. with
``git archive v5.10.0 Base/Python/slicer/parameterNodeWrapper`` of Slicer's repository unpacked in a folder.
"""


import os
import typing
from pathlib import Path
from typing import Annotated, Optional, Union

import pytest

pytestmark = pytest.mark.mrml

slicer = pytest.importorskip("slicer")
pytest.importorskip("PySide6")

import slicer_standins  # noqa: E402
from slicer_standins import parameter_node_wrapper as pnw  # noqa: E402
from SegSHAPMRML import scene_io  # noqa: E402
from SegSHAPLib import options  # noqa: E402


@pytest.fixture
def scene():
    return scene_io.new_scene()


@pytest.fixture(params=["stand-in", "Slicer's own"])
def wrapper(request, monkeypatch, scene, tmp_path):
    """The wrapper package the contract tests run against (installed as slicer.parameterNodeWrapper, with the
    rest of the stand-in Slicer environment)."""
    slicer_standins.install(monkeypatch, scene, tmp_path)
    if request.param == "stand-in":
        return pnw
    if not os.environ.get("SLICER_SOURCE_DIR"):
        pytest.skip("SLICER_SOURCE_DIR is not set: the cross-check against Slicer's own parameterNodeWrapper needs a "
                    "copy of Slicer's source (not available on CI)")
    return slicer_standins.use_slicer_wrapper(monkeypatch, os.environ["SLICER_SOURCE_DIR"])


def _node(scene):
    return scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")


def test_a_union_of_nodes_without_none_fails_at_creation_as_in_slicer(wrapper, scene):
    """SegSHAP's former declaration: Slicer writes the default (None) at creation and UnionSerializer refuses it."""

    @wrapper.parameterNodeWrapper
    class Former:
        organNode: Union[slicer.vtkMRMLSegmentationNode, slicer.vtkMRMLLabelMapVolumeNode]

    with pytest.raises(TypeError, match="Unable to write value 'None'"):
        Former(_node(scene))

    @wrapper.parameterNodeWrapper
    class Fixed:
        organNode: Optional[Union[slicer.vtkMRMLSegmentationNode, slicer.vtkMRMLLabelMapVolumeNode]]

    p = Fixed(_node(scene))
    assert p.organNode is None
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    p.organNode = labels
    assert p.organNode is labels and p.parameterNode.GetNodeReference("organNode.1") is labels
    with pytest.raises(TypeError):
        p.organNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")     # not a member of the union
    p.organNode = None
    assert p.organNode is None


def test_the_stand_in_rejects_what_slicer_rejects(wrapper, scene):
    @wrapper.parameterNodeWrapper
    class P:
        count: Annotated[int, wrapper.WithinRange(1, 5)] = 2
        ratio: Annotated[float, wrapper.Minimum(0.0)] = 0.5
        mode: Annotated[str, wrapper.Choice(["a", "b"])] = "a"
        name: str
        folder: Path
        flag: bool
        volume: slicer.vtkMRMLScalarVolumeNode

    p = P(_node(scene))
    assert (p.count, p.ratio, p.mode, p.name, p.folder, p.flag, p.volume) == (2, 0.5, "a", "", Path("."), False, None)
    for name, bad, error in (("count", 9, ValueError), ("count", 2.5, TypeError), ("count", None, ValueError),
                             ("ratio", -1.0, ValueError), ("mode", "c", ValueError), ("name", None, ValueError),
                             ("name", 3, TypeError), ("folder", "x", TypeError), ("flag", None, ValueError),
                             ("volume", scene.AddNewNodeByClass("vtkMRMLSegmentationNode"), TypeError)):
        with pytest.raises(error):
            setattr(p, name, bad)
    p.ratio = 2                                    # an int is a valid float (IsInstance((int, float)))
    p.volume = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")   # a subclass is a valid node
    assert p.ratio == 2.0 and p.volume.IsA("vtkMRMLLabelMapVolumeNode")

    @wrapper.parameterNodeWrapper
    class BadDefault:
        count: Annotated[int, wrapper.WithinRange(1, 5)] = 0          # written at creation -> refused

    with pytest.raises(ValueError, match="within range"):
        BadDefault(_node(scene))
    with pytest.raises(Exception, match="Unable to create serializer"):
        @wrapper.parameterNodeWrapper
        class NoSerializer:
            thing: complex
    with pytest.raises(ValueError, match="reserved name"):
        @wrapper.parameterNodeWrapper
        class Reserved:
            x: int

            def setValue(self):
                pass
    with pytest.raises(ValueError, match="Cannot find a param"):
        p.getValue("missing")


def test_segshap_parameter_node_defaults_and_storage(wrapper, scene):
    """The module's parameter node: created with every default written (nothing refused), stored as Slicer
    stores it, and read back by a second wrapper on the same node (a scene reopened)."""
    module = slicer_standins.load_module()
    logic = module.SegSHAPLogic()
    p = logic.getParameterNode()
    node = p.parameterNode
    assert node.GetAttribute("ModuleName") == "SegSHAP" and node.GetSingletonTag() == "SegSHAP"
    assert p.predictionNode is None and p.organNode is None and p.inputVolume is None
    assert p.modelPath == module.DEMO_MODEL and p.units == "organs" and p.budget == 256 and p.groupingFile == Path(".")
    assert node.GetParameter("units") == "organs" and node.HasParameter("organNode.2")     # None member of the union
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    p.inputVolume, p.organNode, p.units, p.budget = ct, seg, "hybrid", 64
    again = logic.getParameterNode()
    assert again.parameterNode is node
    assert (again.inputVolume, again.organNode, again.units, again.budget) == (ct, seg, "hybrid", 64)
    with pytest.raises(ValueError):
        again.budget = 4                                # WithinRange(8, ...)
    with pytest.raises(TypeError):
        again.predictionNode = ct                       # a scalar volume is neither a segmentation nor a label map


def test_every_parameter_has_a_serializer_and_every_bound_widget_a_connector(wrapper, scene):
    """Each SlicerParameterName in SegSHAP.ui meets a connector for its parameter's type (Slicer raises at
    connectGui otherwise); node combo boxes get their node types from the annotation."""
    module = slicer_standins.load_module()
    import qt

    ui_widget = slicer.util.loadUI(str(slicer_standins.MODULE_DIR / "Resources" / "UI" / "SegSHAP.ui"))
    ui = slicer.util.childWidgetVariables(ui_widget)
    p = module.SegSHAPLogic().getParameterNode()
    tag = p.connectGui(ui)
    connectors = p._guis[tag][0] if hasattr(p, "_guis") else p._parameterGUIs[tag]      # stand-in / Slicer
    bound = {w.property("SlicerParameterName") for w in ui_widget.findChildren(qt.QWidget)} - {None}
    assert set(connectors) == bound and len(bound) == 28
    assert list(ui.organSelector.nodeTypes) == ["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"]
    assert [ui.unitsComboBox.itemText(i) for i in range(ui.unitsComboBox.count)] == list(options.UNIT_TYPES)
    assert typing.get_origin(module.SegSHAPParameterNode.dataType("organNode")) is Union


def _python39():
    """A real Python 3.9 interpreter (pyenv's, not its shim), or None."""
    import shutil

    candidates = sorted(Path("/root/.pyenv/versions").glob("3.9*/bin/python")) if Path("/root/.pyenv").is_dir() else []
    found = [str(p) for p in candidates] + [shutil.which("python3.9")]
    return next((p for p in found if p and "shims" not in p), None)


def test_the_module_file_imports_on_python_39():
    """Slicer 5.8 ships Python 3.9. SegSHAP.py must compile there, and no annotation evaluated at import (function
    signatures, the parameter node's members read by typing.get_type_hints) may use ``X | Y``, which 3.9 cannot
    evaluate (py_compile alone would not see that)."""
    import ast
    import subprocess

    source = (slicer_standins.MODULE_DIR / "SegSHAP.py").read_text()
    tree = ast.parse(source)
    assert not any(isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in tree.body)
    annotations = [a for node in ast.walk(tree) for a in (
        [node.annotation] if isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation is not None else
        [node.returns] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns else [])]
    pipes = [ast.unparse(a) for a in annotations if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                                                        for n in ast.walk(a))]
    assert len(annotations) > 30 and pipes == [], f"annotations 3.9 cannot evaluate: {pipes}"
    python39 = _python39()
    if python39 is None:
        pytest.skip("no Python 3.9 interpreter here to compile SegSHAP.py with (the annotation check ran)")
    result = subprocess.run([python39, "-m", "py_compile", str(slicer_standins.MODULE_DIR / "SegSHAP.py")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
