"""Static checks of the Slicer module that needs a desktop Slicer to run: the .ui file against SegSHAP.py (every
``self.ui.<name>`` exists, every parameter binding has a fitting widget), the icon, and the layering rules
(SegSHAP.py -> SegSHAPMRML -> SegSHAPLib; the core never imports slicer, the adapters never import Qt)."""

from __future__ import annotations

import ast
import re
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

pytestmark = pytest.mark.mrml

MODULE_DIR = Path(__file__).resolve().parents[1]
MODULE_PY = MODULE_DIR / "SegSHAP.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SegSHAP.ui"
ICON = MODULE_DIR / "Resources" / "Icons" / "SegSHAP.png"
QT_WIDGETS = {"QLabel", "QCheckBox", "QLineEdit", "QPushButton", "QComboBox", "QSpinBox", "QDoubleSpinBox",
              "QRadioButton", "QProgressBar", "QPlainTextEdit", "QWidget"}


@pytest.fixture(scope="module")
def ui():
    return ElementTree.parse(UI_FILE).getroot()


@pytest.fixture(scope="module")
def widgets(ui):
    return {w.get("name"): w for w in ui.iter("widget")}


@pytest.fixture(scope="module")
def module_ast():
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"), filename=str(MODULE_PY))


def _parameter_fields(tree) -> dict[str, str]:
    """Field name -> annotation source of the @parameterNodeWrapper class."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "SegSHAPParameterNode":
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("SegSHAPParameterNode not found")


def _property(widget, name):
    for p in widget.findall("property"):
        if p.get("name") == name:
            return p
    return None


def test_ui_is_valid_designer_xml(ui):
    assert ui.tag == "ui" and ui.get("version") == "4.0"
    top = ui.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "SegSHAP"
    names = [w.get("name") for w in ui.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"


def test_every_ui_name_used_by_the_widget_exists(widgets):
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))
    assert used, "SegSHAP.py uses no self.ui names?"
    missing = sorted(used - set(widgets))
    assert not missing, f"SegSHAP.py uses self.ui.{missing} which the .ui file does not define"


def test_required_panel_elements(widgets):
    for name in ("ctSelector", "predictionSelector", "runModelCheckBox", "modelPathLineEdit", "organSelector",
                 "runTotalSegmentatorButton", "targetLineEdit", "roiPointSelector", "roiPointPlaceWidget",
                 "groupingLabel", "groupingComboBox", "groupingFilePathLineEdit",
                 "roiSegmentSelector", "unitsComboBox", "fccScaleSpinBox", "valueComboBox", "scoreRegionComboBox",
                 "budgetSpinBox", "seedSpinBox", "deviceComboBox", "checkpointComboBox", "applyButton", "progressBar", "statusLabel",
                 "costLabel", "resultsTableView", "legendLabel", "installButton", "wheelFolderPathLineEdit",
                 "installLogTextEdit", "runLogTextEdit"):
        assert name in widgets, name
    assert widgets["runLogTextEdit"].get("class") == "QPlainTextEdit"
    read_only = widgets["runLogTextEdit"].find("property[@name='readOnly']/bool")
    assert read_only is not None and read_only.text == "true", "the run log box must be read-only"
    assert widgets["modelPathLineEdit"].get("class") == "ctkPathLineEdit"
    assert widgets["roiPointPlaceWidget"].get("class") == "qSlicerMarkupsPlaceWidget"
    assert widgets["groupingFilePathLineEdit"].get("class") == "ctkPathLineEdit"


def test_checkpoint_combo_is_editable_and_filled_by_the_widget(widgets):
    """Any checkpoint name may be typed (nnU-Net's -chk takes any file); the items are the model folder's
    fold_X/*.pth names, which SegSHAP.py fills in, so the .ui holds none and binds no parameter (not a Choice)."""
    combo = widgets["checkpointComboBox"]
    properties = {p.get("name"): p for p in combo.findall("property")}
    assert combo.get("class") == "QComboBox" and properties["editable"].findtext("bool") == "true"
    assert combo.findall("item") == [] and "SlicerParameterName" not in properties


def test_custom_widgets_declared_and_connected_to_the_scene(ui, widgets):
    declared = {c.find("class").text for c in ui.find("customwidgets")}
    used = {w.get("class") for w in widgets.values()}
    assert used - QT_WIDGETS <= declared, used - QT_WIDGETS - declared
    connected = {c.find("receiver").text for c in ui.find("connections")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"}
    for name, widget in widgets.items():
        if widget.get("class").startswith(("qMRML", "qSlicer")) and name != "SegSHAP":
            assert name in connected, f"{name} never gets the scene"


def test_module_classes_follow_the_slicer_convention(module_ast):
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in module_ast.body if isinstance(n, ast.ClassDef)}
    assert classes["SegSHAP"] == ["ScriptedLoadableModule"]
    assert classes["SegSHAPWidget"][0] == "ScriptedLoadableModuleWidget"
    assert classes["SegSHAPLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["SegSHAPTest"] == ["ScriptedLoadableModuleTest"]
    text = MODULE_PY.read_text(encoding="utf-8")
    assert 'categories = ["Segmentation"]' in text
    assert 'loadUI(self.resourcePath("UI/SegSHAP.ui"))' in text
    assert "@parameterNodeWrapper" in text and "qt.QTimer()" in text


def _imports(tree, top_level_only=False):
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_module_imports_the_core_lazily(module_ast):
    """At import time SegSHAP.py reads only the options module (no imports, checked in test_options.py), so the
    module loads in any Slicer before the core's dependencies are installed."""
    top = _imports(module_ast, top_level_only=True) - {"SegSHAPLib", "SegSHAPLib.options"}
    assert not any(name.startswith(("SegSHAPLib", "SegSHAPMRML", "torch", "nnunetv2", "numpy")) for name in top), top


def test_mrml_adapters_never_import_qt():
    for path in sorted((MODULE_DIR / "SegSHAPMRML").glob("*.py")):
        names = _imports(ast.parse(path.read_text(encoding="utf-8")))
        bad = {n for n in names if n.split(".")[0] in ("qt", "ctk", "PythonQt") or n.startswith("slicer.util")}
        assert not bad, f"{path.name} imports {bad}"


def test_core_never_imports_slicer():
    """The core never imports slicer/vtk/qt; only the CLI may reach the MRML layer, lazily, for --scene."""
    for path in sorted((MODULE_DIR / "SegSHAPLib").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        anywhere, top = _imports(tree), _imports(tree, top_level_only=True)
        bad = {n for n in anywhere if n.split(".")[0] in ("slicer", "vtk", "vtkmodules", "qt", "ctk")}
        bad |= {n for n in (top if path.parent.name == "cli" else anywhere) if n.split(".")[0] == "SegSHAPMRML"}
        assert not bad, f"{path.relative_to(MODULE_DIR)} imports {bad}"


def test_module_compiles():
    compile(MODULE_PY.read_text(encoding="utf-8"), str(MODULE_PY), "exec")


def test_icon_is_a_128_px_png():
    data = ICON.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth) == (128, 128, 8) and colour_type in (2, 6)
