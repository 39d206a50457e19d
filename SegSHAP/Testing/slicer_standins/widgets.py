"""Stand-ins for the CTK / qMRML / qSlicer widget classes of SegSHAP.ui, and a .ui loader that builds the real
SegSHAP.ui with them on real PySide6.

Why stand-ins: these C++ classes ship only inside desktop Slicer. Each stand-in declares, as Qt properties and
signals, exactly what its C++ header declares for the parts the panel uses (headers read at Slicer main 583e9b3
and commontk/CTK 868d56c):

- ``ctkCollapsibleButton`` (CTK Libs/Widgets/ctkCollapsibleButton.h, a QAbstractButton): ``collapsed``,
  ``collapsedHeight``, ``flat``; signal ``contentsCollapsed(bool)``.
- ``ctkPathLineEdit`` (ctkPathLineEdit.h): ``currentPath``, ``filters`` (the ``Filter`` flags), ``nameFilters``,
  ``label``, ``showBrowseButton``, ``showHistoryButton``, ``settingKey``; signals ``currentPathChanged(QString)``,
  ``validInputChanged(bool)``.
- ``qMRMLWidget`` (Slicer Libs/MRML/Widgets/qMRMLWidget.h) and ``qSlicerWidget``: slot ``setMRMLScene``, signal
  ``mrmlSceneChanged(vtkMRMLScene*)``.
- ``qMRMLNodeComboBox`` (qMRMLNodeComboBox.h): ``nodeTypes``, ``showHidden``, ``showChildNodeTypes``,
  ``noneEnabled``, ``addEnabled``, ``removeEnabled``, ``editEnabled``, ``renameEnabled``, ``noneDisplay``,
  ``baseName``, ``selectNodeUponCreation``, ``currentNodeID``; ``currentNode()``, ``setCurrentNode(node)``,
  ``setMRMLScene``; signals ``currentNodeChanged(vtkMRMLNode*)``, ``currentNodeIDChanged(QString)``,
  ``nodeAdded(vtkMRMLNode*)``. Behaviour kept: only nodes of ``nodeTypes`` (and their subclasses when
  ``showChildNodeTypes``) can be current; with ``noneEnabled`` false the first fitting node of the scene is
  selected, and a removed current node is replaced.
- ``qSlicerMarkupsPlaceWidget`` (Modules/Loadable/Markups/Widgets/qSlicerMarkupsPlaceWidget.h): ``buttonsVisible``,
  ``placeMultipleMarkups`` (``PlaceMultipleMarkupsType`` enum), ``placeModeEnabled``; ``setCurrentNode``,
  ``currentNode()``; signal ``activeMarkupsPlaceModeChanged(bool)``.
- ``qMRMLSegmentSelectorWidget`` (Libs/MRML/Widgets/qMRMLSegmentSelectorWidget.h): ``noneEnabled``,
  ``editEnabled``, ``segmentationNodeSelectorVisible``, ``multiSelection``, ``horizontalLayout``;
  ``currentNode()``, ``currentNodeID()``, ``currentSegmentID()``, ``setCurrentNode``, ``setCurrentSegmentID``;
  signals ``currentNodeChanged(vtkMRMLNode*)``, ``currentSegmentChanged(QString)``.
- ``qMRMLTableView`` (qMRMLTableView.h, a QTableView): ``transposed``, ``firstRowLocked``,
  ``firstColumnLocked``; ``setMRMLTableNode``, ``mrmlTableNode()``, ``setMRMLScene``, ``tableModel()`` (a
  qMRMLTableModel with ``mrmlTableRowIndex``, qMRMLTableModel.h), ``sortFilterProxyModel()``; signal
  ``selectionChanged()``.
Not reproduced: their drawing, menus and dialogs (nothing the panel's logic reads). Overloaded C++ signals keep
the overload the panel connects to (``currentNodeChanged(vtkMRMLNode*)``).

The loader: ``QUiLoader`` cannot read a C++ enum or flag value of a Python-declared property, so ``<enum>`` and
``<set>`` values are resolved here against the stand-in's enum (an unknown name fails), and the .ui's
``<connections>`` (signal and slot signatures) are made with PythonQt's string connect, as uic does in Slicer.
``undeclared_properties(root)`` lists properties the .ui set that the class does not declare (QUiLoader silently
makes them dynamic properties; only ``SlicerParameterName`` may be dynamic).
"""

from __future__ import annotations

import types
import xml.etree.ElementTree as ElementTree

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import Property, Signal
from PySide6.QtUiTools import QUiLoader

from .qt_shim import PythonQtAccess


def _prop(type_, name, default, notify=None, on_set=None):
    """A Qt property backed by ``self._values[name]`` (optionally calling ``on_set(self, value)``)."""

    def getter(self):
        return self._values.get(name, default)

    def setter(self, value):
        self._values[name] = value
        if on_set is not None:
            on_set(self, value)

    return Property(type_, getter, setter, notify=notify) if notify else Property(type_, getter, setter)


class _StandIn(PythonQtAccess):
    """Per-instance store of the declared property values."""

    def _init_values(self):
        self._values = {}


# ------------------------------------------------------------------------------------------------- CTK
class ctkCollapsibleButton(_StandIn, QtWidgets.QPushButton):
    contentsCollapsed = Signal(bool)

    def __init__(self, parent=None):
        QtWidgets.QPushButton.__init__(self, parent)
        self._init_values()

    def _set_collapsed(self, value):
        self.contentsCollapsed.emit(bool(value))

    collapsed = _prop(bool, "collapsed", False, on_set=_set_collapsed)
    collapsedHeight = _prop(int, "collapsedHeight", 14)
    flat = _prop(bool, "flat", False)


class ctkPathLineEdit(_StandIn, QtWidgets.QWidget):
    currentPathChanged = Signal(str)
    validInputChanged = Signal(bool)
    ENUMS = {"Filter": {"Dirs": 0x001, "Files": 0x002, "Drives": 0x004, "NoSymLinks": 0x008,
                        "AllEntries": 0x007, "TypeMask": 0x00f, "Readable": 0x010, "Writable": 0x020,
                        "Executable": 0x040, "PermissionMask": 0x070, "Modified": 0x080, "Hidden": 0x100,
                        "System": 0x200, "AccessMask": 0x3F0, "AllDirs": 0x400, "CaseSensitive": 0x800,
                        "NoDotAndDotDot": 0x1000, "NoDot": 0x2000, "NoDotDot": 0x4000, "NoFilter": -1}}
    ENUM_OF_PROPERTY = {"filters": "Filter"}

    def __init__(self, parent=None):
        QtWidgets.QWidget.__init__(self, parent)
        self._init_values()

    def _get_path(self):
        return self._values.get("currentPath", "")

    def _set_path(self, path):
        if path != self._values.get("currentPath", ""):
            self._values["currentPath"] = path
            self.currentPathChanged.emit(path)

    def setCurrentPath(self, path):
        self._set_path(path)

    currentPath = Property(str, _get_path, _set_path)
    filters = _prop(int, "filters", 0x007 | 0x010)
    nameFilters = _prop("QStringList", "nameFilters", [])
    label = _prop(str, "label", "")
    settingKey = _prop(str, "settingKey", "")
    showBrowseButton = _prop(bool, "showBrowseButton", True)
    showHistoryButton = _prop(bool, "showHistoryButton", True)


# ------------------------------------------------------------------------------------------------ qMRML
class qMRMLWidget(_StandIn, QtWidgets.QWidget):
    mrmlSceneChanged = Signal(object)

    def __init__(self, parent=None):
        QtWidgets.QWidget.__init__(self, parent)
        self._init_values()
        self._scene = None

    def setMRMLScene(self, scene):
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qSlicerWidget(qMRMLWidget):
    pass


class qSlicerScriptedLoadableModuleWidget(qSlicerWidget):
    """The module panel Slicer gives a scripted widget as parent (Base/QTGUI/qSlicerAbstractModuleWidget.h:
    read-only ``isEntered``; Slicer sets it on enter/exit, the test through ``setEntered``)."""

    def __init__(self, parent=None):
        qSlicerWidget.__init__(self, parent)
        self._entered = False
        self.setLayout(QtWidgets.QVBoxLayout())

    isEntered = Property(bool, lambda self: self._entered)

    def setEntered(self, entered: bool):
        self._entered = bool(entered)


class qMRMLNodeComboBox(_StandIn, QtWidgets.QWidget):
    currentNodeChanged = Signal(object)
    currentNodeIDChanged = Signal(str)
    nodeAdded = Signal(object)
    nodeAboutToBeRemoved = Signal(object)

    def __init__(self, parent=None):
        QtWidgets.QWidget.__init__(self, parent)
        self._init_values()
        self._scene = None
        self._current = None
        self._observers = []

    def _refresh(self, *args):
        if self._current is None and not self._values.get("noneEnabled", False):
            nodes = self.nodes()
            if nodes:
                self.setCurrentNode(nodes[0])

    nodeTypes = _prop("QStringList", "nodeTypes", [], on_set=_refresh)
    showHidden = _prop(bool, "showHidden", False)
    showChildNodeTypes = _prop(bool, "showChildNodeTypes", True)
    noneEnabled = _prop(bool, "noneEnabled", False, on_set=_refresh)
    addEnabled = _prop(bool, "addEnabled", True)
    removeEnabled = _prop(bool, "removeEnabled", True)
    editEnabled = _prop(bool, "editEnabled", False)
    renameEnabled = _prop(bool, "renameEnabled", False)
    noneDisplay = _prop(str, "noneDisplay", "None")
    baseName = _prop(str, "baseName", "")
    selectNodeUponCreation = _prop(bool, "selectNodeUponCreation", True)

    def _get_id(self):
        return self._current.GetID() if self._current is not None else ""

    def _set_id(self, node_id):
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if self._scene and node_id else None)

    currentNodeID = Property(str, _get_id, _set_id)

    def _fits(self, node) -> bool:
        types_ = self._values.get("nodeTypes", [])
        if not types_ or node is None:
            return False
        if self._values.get("showChildNodeTypes", True):
            return any(node.IsA(t) for t in types_)
        return node.GetClassName() in types_

    def nodes(self) -> list:
        """The scene's nodes this combo box lists (in scene order)."""
        if self._scene is None:
            return []
        found = []
        for index in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(index)
            if self._fits(node) and (self._values.get("showHidden", False) or not node.GetHideFromEditors()):
                found.append(node)
        return found

    def setMRMLScene(self, scene):
        for tag in self._observers:
            self._scene.RemoveObserver(tag)
        self._scene = scene
        self._observers = [] if scene is None else [
            scene.AddObserver(scene.NodeAddedEvent, self._onNodeAdded),
            scene.AddObserver(scene.NodeRemovedEvent, self._onNodeRemoved)]
        if scene is not None:          # like qvtkConnect, the scene observations end with the widget
            tags = list(self._observers)
            self.destroyed.connect(lambda *args: [scene.RemoveObserver(tag) for tag in tags])
        self.setCurrentNode(None)
        self._refresh()

    def _onNodeAdded(self, caller, event):
        self._refresh()

    def _onNodeRemoved(self, caller, event):
        if self._current is not None and not self._scene.IsNodePresent(self._current):
            self.setCurrentNode(None)
            self._refresh()

    def currentNode(self):
        return self._current

    def setCurrentNode(self, node):
        if isinstance(node, str):
            node = self._scene.GetNodeByID(node) if self._scene else None
        if node is not None and (not self._fits(node) or self._scene is None or not self._scene.IsNodePresent(node)):
            node = None
        if node is self._current:
            return
        self._current = node
        self.currentNodeChanged.emit(node)
        self.currentNodeIDChanged.emit(self._get_id())


class qSlicerMarkupsPlaceWidget(qSlicerWidget):
    activeMarkupsPlaceModeChanged = Signal(bool)
    ENUMS = {"PlaceMultipleMarkupsType": {"ShowPlaceMultipleMarkupsOption": 0, "HidePlaceMultipleMarkupsOption": 1,
                                          "ForcePlaceSingleMarkup": 2, "ForcePlaceMultipleMarkups": 3}}
    ENUM_OF_PROPERTY = {"placeMultipleMarkups": "PlaceMultipleMarkupsType"}

    def __init__(self, parent=None):
        qSlicerWidget.__init__(self, parent)
        self._node = None

    buttonsVisible = _prop(bool, "buttonsVisible", True)
    placeMultipleMarkups = _prop(int, "placeMultipleMarkups", 0)
    placeModeEnabled = _prop(bool, "placeModeEnabled", False)
    placeModePersistency = _prop(bool, "placeModePersistency", False)
    deleteAllControlPointsOptionVisible = _prop(bool, "deleteAllControlPointsOptionVisible", True)

    def setCurrentNode(self, node):
        self._node = node

    def currentNode(self):
        return self._node


class qMRMLSegmentSelectorWidget(qMRMLWidget):
    currentNodeChanged = Signal(object)
    currentSegmentChanged = Signal(str)
    segmentSelectionChanged = Signal(list)

    def __init__(self, parent=None):
        qMRMLWidget.__init__(self, parent)
        self._node = None
        self._segment = ""

    noneEnabled = _prop(bool, "noneEnabled", False)
    editEnabled = _prop(bool, "editEnabled", False)
    segmentationNodeSelectorVisible = _prop(bool, "segmentationNodeSelectorVisible", True)
    multiSelection = _prop(bool, "multiSelection", False)
    horizontalLayout = _prop(bool, "horizontalLayout", False)

    def currentNode(self):
        return self._node

    def currentNodeID(self):
        return self._node.GetID() if self._node is not None else ""

    def segmentIDs(self) -> list:
        if self._node is None:
            return []
        segmentation = self._node.GetSegmentation()
        return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]

    def currentSegmentID(self):
        return self._segment

    def setCurrentNode(self, node):
        if node is not None and not node.IsA("vtkMRMLSegmentationNode"):
            node = None
        if node is self._node:
            return
        self._node = node
        self.currentNodeChanged.emit(node)
        ids = self.segmentIDs()
        self.setCurrentSegmentID(ids[0] if ids and not self._values.get("noneEnabled", False) else "")

    def setCurrentSegmentID(self, segment_id):
        if segment_id and segment_id not in self.segmentIDs():
            return
        if segment_id != self._segment:
            self._segment = segment_id
            self.currentSegmentChanged.emit(segment_id)


class qMRMLTableModel(QtGui.QStandardItemModel):
    """qMRMLTableModel.h's part the panel uses: the cells of a vtkMRMLTableNode, refreshed when the node is
    modified, and ``mrmlTableRowIndex(index)``: the model row itself when the node uses its column titles as the
    header (``GetUseColumnTitleAsColumnHeader``), else the row - 1 (the first model row shows the titles), as
    qMRMLTableModel.cxx computes it (not transposed)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._node, self._observer = None, None

    def setMRMLTableNode(self, node):
        if self._node is not None:
            self._node.RemoveObserver(self._observer)
        self._node = node
        self._observer = node.AddObserver("ModifiedEvent", lambda *args: self._refill()) if node is not None else None
        self._refill()

    def _refill(self):
        self.clear()
        if self._node is None:
            return
        table = self._node.GetTable()
        header = self._node.GetUseColumnTitleAsColumnHeader()
        columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
        rows = [] if header else [[column.GetName() for column in columns]]
        rows += [[str(column.GetValue(r)) for column in columns] for r in range(table.GetNumberOfRows())]
        for cells in rows:
            self.appendRow([QtGui.QStandardItem(text) for text in cells])

    def mrmlTableRowIndex(self, index):
        if self._node is None:
            return -1
        return index.row() if self._node.GetUseColumnTitleAsColumnHeader() else index.row() - 1


class qMRMLTableView(_StandIn, QtWidgets.QTableView):
    """qMRMLTableView.h: the view shows a QSortFilterProxyModel (``sortFilterProxyModel()``) of its
    qMRMLTableModel (``tableModel()``), and emits ``selectionChanged()`` (no arguments) when the selected cells
    change."""

    mrmlSceneChanged = Signal(object)
    selectionChanged = Signal()              # the C++ header's overload the panel connects to

    def __init__(self, parent=None):
        QtWidgets.QTableView.__init__(self, parent)
        self._init_values()
        self._table = None
        self._model = qMRMLTableModel(self)
        self._proxy = QtCore.QSortFilterProxyModel(self)
        self._proxy.setSourceModel(self._model)
        self.setModel(self._proxy)
        self.selectionModel().selectionChanged.connect(lambda *args: self.selectionChanged.emit())

    transposed = _prop(bool, "transposed", False)
    firstRowLocked = _prop(bool, "firstRowLocked", False)
    firstColumnLocked = _prop(bool, "firstColumnLocked", False)

    def setMRMLScene(self, scene):
        self.mrmlSceneChanged.emit(scene)

    def setMRMLTableNode(self, node):
        if node is not None and not node.IsA("vtkMRMLTableNode"):
            raise TypeError(f"setMRMLTableNode: {node.GetClassName()} is not a vtkMRMLTableNode")
        self._table = node
        self._model.setMRMLTableNode(node)

    def mrmlTableNode(self):
        return self._table

    def tableModel(self):
        return self._model

    def sortFilterProxyModel(self):
        return self._proxy


CUSTOM_WIDGETS = {cls.__name__: cls for cls in (ctkCollapsibleButton, ctkPathLineEdit, qMRMLWidget, qSlicerWidget,
                                                 qSlicerScriptedLoadableModuleWidget,
                                                 qMRMLNodeComboBox, qSlicerMarkupsPlaceWidget,
                                                 qMRMLSegmentSelectorWidget, qMRMLTableView)}


class _Loader(QUiLoader):
    def __init__(self, qt):
        super().__init__()
        self.qt = qt

    def createWidget(self, class_name, parent=None, name=""):
        cls = CUSTOM_WIDGETS.get(class_name) or (self.qt.PythonQtWidget if class_name == "QWidget"
                                                 else getattr(self.qt, class_name, None))
        if cls is None or not issubclass(cls, PythonQtAccess):
            raise TypeError(f"the .ui uses {class_name}, which neither the qt shim nor the stand-ins provide")
        widget = cls(parent)
        widget.setObjectName(name)
        return widget


def _enum_value(cls, text: str) -> int:
    """'ctkPathLineEdit::Files|ctkPathLineEdit::Readable' -> the flags' value from the stand-in's enum table."""
    value = 0
    for item in text.split("|"):
        scope, _, member = item.strip().rpartition("::")
        table = {k: v for enum in getattr(cls, "ENUMS", {}).values() for k, v in enum.items()}
        if scope != cls.__name__ or member not in table:
            raise ValueError(f"{cls.__name__} has no enum value {item!r}")
        value |= table[member]
    return value


def load_ui(path, qt):
    """Build a .ui file with QUiLoader and the stand-ins -> the top widget (``slicer.util.loadUI``)."""
    root = ElementTree.parse(path).getroot()
    deferred = []                                  # (object name, property, int value) of enum/flag properties
    for element in root.iter("widget"):
        cls = CUSTOM_WIDGETS.get(element.get("class"))
        for prop in list(element.findall("property")):
            value = prop.find("enum") if prop.find("enum") is not None else prop.find("set")
            if cls is not None and value is not None:
                if prop.get("name") not in getattr(cls, "ENUM_OF_PROPERTY", {}):
                    raise ValueError(f"{cls.__name__} declares no enum property {prop.get('name')!r}")
                deferred.append((element.get("name"), prop.get("name"), _enum_value(cls, value.text)))
                element.remove(prop)
    connections = root.find("connections")
    if connections is not None:                    # made below with the PythonQt-style connect
        root.remove(connections)
    data = QtCore.QByteArray(ElementTree.tostring(root))
    buffer = QtCore.QBuffer(data)
    buffer.open(QtCore.QIODevice.ReadOnly)
    widget = _Loader(qt).load(buffer)
    if widget is None:
        raise RuntimeError(f"QUiLoader could not build {path}")
    for name, prop, value in deferred:
        setattr(_child(widget, name), prop, value)
    for connection in ([] if connections is None else connections.iter("connection")):
        sender, receiver = _child(widget, connection.findtext("sender")), _child(widget, connection.findtext("receiver"))
        slot = connection.findtext("slot").split("(", 1)[0]
        sender.connect(connection.findtext("signal"), getattr(receiver, slot))
    return widget


def _child(top, name):
    if QtCore.QObject.objectName(top) == name:
        return top
    found = top.findChild(QtCore.QObject, name)
    if found is None:
        raise LookupError(f"no object named {name!r} in the .ui")
    return found


def undeclared_properties(top) -> dict[str, list[str]]:
    """Object name -> properties the .ui set that its class does not declare (became dynamic properties)."""
    found = {}
    for widget in [top, *top.findChildren(QtWidgets.QWidget)]:
        names = [bytes(n).decode() for n in widget.dynamicPropertyNames()]
        extra = [n for n in names if n != "SlicerParameterName" and not n.startswith("_")]
        if extra:
            found[QtCore.QObject.objectName(widget)] = extra
    return found


def child_widget_variables(top):
    """``slicer.util.childWidgetVariables``: a namespace of every named child widget."""
    children = {QtCore.QObject.objectName(child): child for child in top.findChildren(QtCore.QObject)}
    return types.SimpleNamespace(**{name: child for name, child in children.items() if name})


__all__ = ["CUSTOM_WIDGETS", "load_ui", "undeclared_properties", "child_widget_variables"] + list(CUSTOM_WIDGETS)
