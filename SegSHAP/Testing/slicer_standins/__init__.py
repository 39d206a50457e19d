"""A desktop-Slicer environment for SegSHAP.py in tests: what is real, what stands in, and why.

Real: the MRML scene, nodes, ``slicer.util.VTKObservationMixin`` and ``NodeModify`` (slicer-core wheel); Qt
(PySide6, offscreen): every standard widget, signal, timer and ``QUiLoader`` building the real SegSHAP.ui;
SegSHAP.py, SegSHAPMRML, SegSHAPLib and the explanation job.

Stand-ins (desktop Slicer's Python and C++ widgets ship with no package), each following Slicer's source:
- ``qt``: PySide6 with PythonQt's attribute access and string connect (``qt_shim``).
- CTK / qMRML / qSlicer widget classes of the .ui (``widgets``), with their headers' properties and signals.
- ``slicer.parameterNodeWrapper`` (``parameter_node_wrapper``): Slicer's serializer, validator and connector
  rules; it rejects what Slicer rejects (see its tests).
- ``slicer.ScriptedLoadableModule`` (below): ``ScriptedLoadableModuleWidget.__init__`` (parent widget and layout,
  module name), ``ScriptedLoadableModuleLogic.getParameterNode`` (the singleton ``vtkMRMLScriptedModuleNode``
  tagged with the module name), from Base/Python/slicer/ScriptedLoadableModule.py v5.10.0; the developer
  section (reload/test buttons) is left out.
- ``SampleData`` (Modules/Scripted/SampleData/SampleData.py v5.10.0): ``SampleDataLogic.
  registerCustomSampleDataSource`` files the source under ``slicer.modules.sampleDataSources[category]`` with
  the same keyword arguments; downloading is not reproduced.
- ``slicer.util`` GUI and IO helpers (``loadVolume``, ``loadLabelVolume``, ``loadUI``, ``childWidgetVariables``, ``errorDisplay``, ``confirmOkCancelDisplay``,
  ``tryWithErrorDisplay``, ``getModuleLogic``, ``pip_install``, ``restart``): dialogs are recorded in
  ``SlicerSession`` (answers scripted by the test) instead of shown; ``slicer.app`` (temporary path, versions,
  ``testingEnabled``, ``processEvents``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
import unittest
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2]


class SlicerSession:
    """What the module showed or asked during a test, and the answers it gets."""

    def __init__(self):
        self.errors: list[str] = []                   # errorDisplay texts
        self.questions: list[str] = []                # confirmOkCancelDisplay texts
        self.answers: list[bool] = []                 # popped per question; True when empty
        self.pip_installs: list[list] = []
        self.restarts = 0
        self.module_logics: dict = {}                 # getModuleLogic(name) -> logic; missing -> RuntimeError


def _scripted_module(qt, slicer):
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = self.__class__.__name__

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.moduleName = self.__class__.__name__
            if self.moduleName.endswith("Widget"):
                self.moduleName = self.moduleName[:-6]
            if not parent:
                self.parent = slicer.qMRMLWidget()
                self.parent.setLayout(qt.QVBoxLayout())
                self.parent.setMRMLScene(slicer.mrmlScene)
            else:
                self.parent = parent
            self.layout = self.parent.layout()

        def resourcePath(self, filename):
            return str(MODULE_DIR / "Resources" / filename)

        def setup(self):
            pass

        def cleanup(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = self.__class__.__name__
            if self.moduleName.endswith("Logic"):
                self.moduleName = self.moduleName[:-5]

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return slicer.mrmlScene.AddNode(node)

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, requestedDelay=None, msec=None):
            print(message)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(module, cls.__name__, cls)
    return module


def load_volume_like_slicer(scene, path, labelmap: bool):
    """What ``slicer.util.loadVolume``/``loadLabelVolume`` leave behind (slicer-core has no IO manager): the node
    named after the file, a storage node holding the file name, for a label map Slicer's default 'Labels' colour
    table (which knows nothing of the file's organ names)."""
    from SegSHAPLib.io.image_io import read_volume
    from SegSHAPMRML import display, volumes

    node = volumes.volume_to_node(scene, read_volume(path), Path(path).name.split(".")[0], labelmap=labelmap)
    node.AddDefaultStorageNode()
    node.GetStorageNode().SetFileName(str(path))
    if labelmap:
        display.show_label_map(scene, node, scene.GetNodeByID("vtkMRMLColorTableNodeLabels"))
    else:
        display.show_ct(scene, node)
    return node


def _sample_data(slicer):
    module = types.ModuleType("SampleData")
    fields = ("sampleName", "uris", "fileNames", "nodeNames", "checksums", "loadFiles", "loadFileProperties",
              "thumbnailFileName", "loadFileTypes", "customDownloader")

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                           nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                           loadFileTypes=None, loadFiles=None, loadFileProperties={},
                                           checksums=None, loadFileType=None):
            values = dict(locals())
            source = types.SimpleNamespace(**{name: values[name] for name in fields})
            sources = slicer.modules.__dict__.setdefault("sampleDataSources", {}).setdefault(category, [])
            if not any(vars(known) == vars(source) for known in sources):
                sources.append(source)

    module.SampleDataLogic = SampleDataLogic
    return module


def install(monkeypatch, scene, tmp_path, session: SlicerSession | None = None) -> SlicerSession:
    """Put the stand-ins in place for one test (undone by ``monkeypatch``) -> the session record."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import slicer
    import slicer.util

    from . import parameter_node_wrapper, qt_shim, widgets

    session = session or SlicerSession()
    app = qt_shim.application()
    qt = qt_shim.build()
    ctk = types.ModuleType("ctk")
    for name in ("ctkCollapsibleButton", "ctkPathLineEdit"):
        setattr(ctk, name, widgets.CUSTOM_WIDGETS[name])
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    for name, module in {"qt": qt, "ctk": ctk, "slicer.i18n": i18n,
                         "slicer.ScriptedLoadableModule": _scripted_module(qt, slicer),
                         "slicer.parameterNodeWrapper": parameter_node_wrapper,
                         "SampleData": _sample_data(slicer)}.items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in ("qSlicerScriptedLoadableModuleWidget", "qMRMLWidget", "qMRMLNodeComboBox", "qSlicerMarkupsPlaceWidget", "qMRMLSegmentSelectorWidget",
                 "qMRMLTableView", "qSlicerWidget"):
        monkeypatch.setattr(slicer, name, widgets.CUSTOM_WIDGETS[name], raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(
        temporaryPath=str(tmp_path), applicationVersion="5.10.0 (stand-in)", repositoryRevision="stand-in",
        testingEnabled=lambda: False, processEvents=app.processEvents, connect=lambda *args: True), raising=False)

    def confirm(text, windowTitle=None, parent=None, **kwargs):
        session.questions.append(text)
        return session.answers.pop(0) if session.answers else True

    def error_display(text, windowTitle=None, parent=None, **kwargs):
        session.errors.append(text)

    @contextlib.contextmanager
    def try_with_error_display(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as error:
            if show:
                error_display(f"{message}\n{error}" if message else str(error))

    def get_module_logic(name):
        if name not in session.module_logics:
            raise RuntimeError(f"Could not find module widget representation with name '{name}'")
        return session.module_logics[name]

    def pip_install(requirements):
        session.pip_installs.append(requirements)

    def restart():
        session.restarts += 1

    for name, value in {"loadUI": lambda path: widgets.load_ui(path, qt),
                        "childWidgetVariables": widgets.child_widget_variables, "errorDisplay": error_display,
                        "confirmOkCancelDisplay": confirm, "tryWithErrorDisplay": try_with_error_display,
                        "getModuleLogic": get_module_logic, "mainWindow": lambda: None,
                        "pip_install": pip_install, "restart": restart,
                        "loadVolume": lambda path, *a, **k: load_volume_like_slicer(slicer.mrmlScene, path, False),
                        "loadLabelVolume": lambda path, *a, **k: load_volume_like_slicer(slicer.mrmlScene, path, True),
                        }.items():
        monkeypatch.setattr(slicer.util, name, value, raising=False)
    return session


def use_slicer_wrapper(monkeypatch, slicer_source_dir):
    """Replace the stand-in by Slicer's OWN parameterNodeWrapper package, imported from a Slicer source checkout
    (``Base/Python/slicer/parameterNodeWrapper``), after ``install``. Widget classes its connectors name that
    SegSHAP.ui does not use get placeholder classes (never instantiated). For cross-checks where a copy of
    Slicer's source exists (``SLICER_SOURCE_DIR``); CI has none."""
    import importlib.util

    import slicer

    for stale in [name for name in sys.modules if name.startswith("slicer.parameterNodeWrapper.")]:
        monkeypatch.delitem(sys.modules, stale)          # submodules imported with an earlier test's qt shim
    def placeholder(name):
        if not name.startswith("ctk"):
            raise AttributeError(name)
        return type(name, (), {})

    sys.modules["ctk"].__getattr__ = placeholder
    for name in ("qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget"):
        monkeypatch.setattr(slicer, name, type(name, (), {}), raising=False)
    folder = Path(slicer_source_dir) / "Base" / "Python" / "slicer" / "parameterNodeWrapper"
    spec = importlib.util.spec_from_file_location("slicer.parameterNodeWrapper", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", package)
    spec.loader.exec_module(package)
    return package


def load_module(name: str = "SegSHAP_under_test"):
    """SegSHAP.py imported afresh (after ``install``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, MODULE_DIR / "SegSHAP.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


__all__ = ["SlicerSession", "install", "use_slicer_wrapper", "load_module", "load_volume_like_slicer", "MODULE_DIR"]
