"""Stand-in for Slicer's ``slicer.parameterNodeWrapper``, written from its source, never copied.

Why a stand-in: the real package ships only inside desktop Slicer (Base/Python/slicer/parameterNodeWrapper/) and
CI has no network to fetch it. This double follows the rules of Slicer/Slicer main (583e9b3, Aug 2026); the
serializer, validator and GUI-connector rules used here are identical in v5.10.0 (only wrapper.py's
``types.UnionType`` conversion differs). Each rule names the Slicer file and function it comes from. It stores
values in the real ``vtkMRMLScriptedModuleNode`` of the slicer-core wheel with the same parameter names and node
references as Slicer, so a scene saved here reads back the same there.

What it rejects, as Slicer does:
- writing each parameter's default when the wrapper is created (wrapper.py ``_initMethod``): a default the
  parameter's own validators refuse fails at creation;
- a node parameter defaults to None (serializers.py ``NodeSerializer.default``), a ``Union`` defaults to its first
  member's default unless it is ``Optional[X]`` (``UnionSerializer.default``), so ``Union[NodeA, NodeB]`` without
  None cannot be written at creation: ``UnionSerializer._findBestSerializer`` raises
  ``TypeError: Unable to write value 'None'``;
- int/float/str/bool/Path refuse None (``NotNone``) and other types (``IsInstance``); float accepts int;
- ``Choice``, ``WithinRange``, ``Minimum``, ``Maximum``, ``Exclude`` (validators.py) run on every write, after the
  type's own validators (``ValidatedSerializer`` flattening);
- a type without a serializer raises at class creation (serializers.py ``_makeAppropriateSerializer``);
- reserved member names (wrapper.py ``_processClass.checkedSetAttr``); unknown names in getValue/setValue and
  GUI bindings (``_checkParamName``);
- GUI connectors match the widget's exact class (guiConnectors.py ``canRepresent``: ``type(widget) == ...``);
  a QComboBox needs a ``Choice`` annotation and is refilled with the choices; a qMRMLNodeComboBox gets its
  ``nodeTypes`` from the annotation (``getNodeTypes``); a pairing with no connector raises RuntimeError.

Narrower than Slicer (so it can only reject more, never accept more): list/tuple/dict/enum/Any/QColor/parameterPack
types raise NotImplementedError (SegSHAP's parameter node uses none); values are read from the node on every access
instead of through ``_CachedParameterWrapper`` (same values; Slicer refreshes its cache on every node Modified).
"""

from __future__ import annotations

import logging
import pathlib
import types
import typing

import slicer
import vtk

SlicerParameterNamePropertyName = "SlicerParameterName"          # wrapper.py


# ---------------------------------------------------------------------------------------- validators.py
class Validator:
    def validate(self, value) -> None:
        raise NotImplementedError


class NotNone(Validator):
    def validate(self, value) -> None:
        if value is None:
            raise ValueError("Value must not be None")


class IsNone(Validator):
    def validate(self, value) -> None:
        if value is not None:
            raise ValueError("Value must be None")


class IsInstance(Validator):
    """None passes (validators.py ``IsInstance.validate``); NotNone is a separate validator."""

    def __init__(self, classtype):
        self.classtype = classtype

    def validate(self, value) -> None:
        if value is not None and not isinstance(value, self.classtype):
            raise TypeError(f"Value must be of type '{self.classtype}', is type '{type(value)}' value '{value}'")


class WithinRange(Validator):
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class Minimum(Validator):
    def __init__(self, minimum):
        self.minimum = minimum

    def validate(self, value) -> None:
        if value < self.minimum:
            raise ValueError(f"Value must be greater than {self.minimum}, is {value}")


class Maximum(Validator):
    def __init__(self, maximum):
        self.maximum = maximum

    def validate(self, value) -> None:
        if value > self.maximum:
            raise ValueError(f"Value must be less than {self.maximum}, is {value}")


class Choice(Validator):
    def __init__(self, choices):
        self.choices = choices

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class Exclude(Validator):
    def __init__(self, excludedValues):
        self.excludedValues = excludedValues

    def validate(self, value) -> None:
        if value in self.excludedValues:
            raise ValueError(f"Value is {value}, but must not be an excluded value: {self.excludedValues}")


class Default:
    """default.py: an annotation giving the default (or a generator of it)."""

    def __init__(self, value=None, *, generator=None):
        self._value, self._generator = value, generator

    @property
    def value(self):
        return self._generator() if self._generator else self._value


# -------------------------------------------------------------------------------------------- util.py
def splitAnnotations(possiblyAnnotatedType):
    """(type, annotations) of a possibly ``Annotated`` type."""
    args = typing.get_args(typing.Annotated[possiblyAnnotatedType, "stub annotation"])
    return args[0], list(args[1:-1])


def unannotatedType(possiblyAnnotatedType):
    return splitAnnotations(possiblyAnnotatedType)[0]


def _findFirst(annotations, kind):
    return next((a for a in annotations if isinstance(a, kind)), None)


def _isNodeClass(type_) -> bool:
    return isinstance(type_, type) and issubclass(type_, slicer.vtkMRMLNode)


def isNodeOrUnionOfNodes(datatype) -> bool:
    """util.py ``isNodeOrUnionOfNodes``: a node class, or a Union of node classes and None."""
    base = unannotatedType(datatype)
    if _isNodeClass(base):
        return True
    if typing.get_origin(base) == typing.Union:
        return all(arg is type(None) or _isNodeClass(unannotatedType(arg)) for arg in typing.get_args(base))
    return False


def getNodeTypes(datatype) -> tuple[str, ...]:
    """util.py ``getNodeTypes``: the MRML class names of a node type or a union of them."""
    base = unannotatedType(datatype)
    if _isNodeClass(base):
        return (base().GetClassName(),)
    if typing.get_origin(base) == typing.Union:
        return tuple(arg().GetClassName() for arg in map(unannotatedType, typing.get_args(base)) if _isNodeClass(arg))
    raise TypeError(f"Cannot handle type {datatype}")


# --------------------------------------------------------------------------------------- serializers.py
class _Serializer:
    """A base serializer with the validators its ``create`` adds (NotNone/IsInstance...)."""

    validators: list = []

    def validate(self, value) -> None:
        for validator in self.validators:
            validator.validate(value)

    def isIn(self, node, name) -> bool:
        return node.HasParameter(name)

    def remove(self, node, name) -> None:
        node.UnsetParameter(name)


class _Number(_Serializer):
    @staticmethod
    def canSerialize(type_) -> bool:
        return type_ in (int, float)

    def __init__(self, type_):
        self.type = type_
        self.validators = [NotNone(), IsInstance((int, float) if type_ == float else int)]

    def default(self):
        return 0

    def write(self, node, name, value) -> None:
        node.SetParameter(name, str(value))

    def read(self, node, name):
        return self.type(node.GetParameter(name))


class _String(_Serializer):
    @staticmethod
    def canSerialize(type_) -> bool:
        return type_ == str

    def __init__(self, type_):
        self.validators = [NotNone(), IsInstance(str)]

    def default(self):
        return ""

    def write(self, node, name, value) -> None:
        node.SetParameter(name, str(value))

    def read(self, node, name):
        return node.GetParameter(name)


class _Path(_Serializer):
    @staticmethod
    def canSerialize(type_) -> bool:
        return type_ in (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath,
                         pathlib.PurePath, pathlib.PurePosixPath, pathlib.PureWindowsPath)

    def __init__(self, type_):
        self.type = type_
        self.validators = [NotNone(), IsInstance(type_)]

    def default(self):
        return self.type()

    def write(self, node, name, value) -> None:
        node.SetParameter(name, str(value))

    def read(self, node, name):
        return self.type(node.GetParameter(name))


class _Bool(_Serializer):
    @staticmethod
    def canSerialize(type_) -> bool:
        return type_ == bool

    def __init__(self, type_=bool):
        self.validators = [NotNone(), IsInstance(bool)]

    def default(self):
        return False

    def write(self, node, name, value) -> None:
        node.SetParameter(name, "True" if value else "False")

    def read(self, node, name):
        return node.GetParameter(name) == "True"


class _Node(_Serializer):
    """serializers.py ``NodeSerializer``: only IsInstance (None allowed), stored as a node reference plus an
    empty parameter of the same name (so ``isIn`` can tell None from absent)."""

    @staticmethod
    def canSerialize(type_) -> bool:
        return _isNodeClass(type_)

    def __init__(self, type_):
        self.validators = [IsInstance(type_)]

    def default(self):
        return None

    def write(self, node, name, value) -> None:
        node.SetParameter(name, "")
        node.SetNodeReferenceID(name, value.GetID() if value is not None else None)

    def read(self, node, name):
        return node.GetNodeReference(name)

    def remove(self, node, name) -> None:
        node.UnsetParameter(name)
        node.RemoveNodeReferenceIDs(name)


class _None(_Serializer):
    @staticmethod
    def canSerialize(type_) -> bool:
        return type_ is type(None)

    def __init__(self, type_=None):
        self.validators = [IsNone()]

    def default(self):
        return None

    def write(self, node, name, value) -> None:
        node.SetParameter(name, "True")

    def read(self, node, name):
        return None


class _Validated:
    """serializers.py ``ValidatedSerializer``: the base serializer's validators, then the annotation's."""

    def __init__(self, base, validators=()):
        self.base = base
        self.validators = list(base.validators) + list(validators)

    def validate(self, value) -> None:
        for validator in self.validators:
            validator.validate(value)

    def default(self):
        return self.base.default()

    def isIn(self, node, name) -> bool:
        return self.base.isIn(node, name)

    def write(self, node, name, value) -> None:
        self.validate(value)
        self.base.write(node, name, value)

    def read(self, node, name):
        return self.base.read(node, name)

    def remove(self, node, name) -> None:
        self.base.remove(node, name)


class _Union(_Serializer):
    """serializers.py ``UnionSerializer``: member i stored under ``name.i``."""

    validators: list = []

    def __init__(self, type_):
        self.members = [createSerializer(arg) for arg in typing.get_args(type_)]

    def default(self):
        if len(self.members) == 2 and isinstance(self.members[1].base, _None):
            return None                                    # Optional[X]
        return self.members[0].default()

    def isIn(self, node, name) -> bool:
        return any(member.isIn(node, f"{name}.{i}") for i, member in enumerate(self.members))

    def _findBestSerializer(self, value):
        raised = None
        for index, member in enumerate(self.members):
            if member.base.canSerialize(type(value)):
                try:
                    member.validate(value)
                    return index, member
                except Exception as error:
                    raised = error
        if raised is not None:
            raise raised
        raise TypeError(f"Unable to write value '{value}' of type '{type(value)}'")

    def write(self, node, name, value) -> None:
        index, member = self._findBestSerializer(value)
        self.remove(node, name)
        member.write(node, f"{name}.{index}", value)

    def read(self, node, name):
        for index, member in enumerate(self.members):
            if member.isIn(node, f"{name}.{index}"):
                return member.read(node, f"{name}.{index}")
        raise KeyError(f"Unable to find value for name: {name}")

    def remove(self, node, name) -> None:
        for index, member in enumerate(self.members):
            member.remove(node, f"{name}.{index}")


_SERIALIZERS = (_Number, _String, _Path, _Bool, _Node, _None)


def createSerializer(annotatedType) -> _Validated:
    """serializers.py ``createSerializer``: the type's serializer wrapped with the annotation's validators."""
    type_, annotations = splitAnnotations(annotatedType)
    if hasattr(types, "UnionType") and isinstance(type_, types.UnionType):
        type_ = typing.Union[typing.get_args(type_)]
    validators = [a for a in annotations if isinstance(a, Validator)]
    if typing.get_origin(type_) == typing.Union:
        return _Validated(_Union(type_), validators)
    for kind in _SERIALIZERS:
        if kind.canSerialize(type_):
            return _Validated(kind(type_), validators)
    if typing.get_origin(type_) in (list, tuple, dict) or type_ in (list, tuple, dict, typing.Any) or (
            isinstance(type_, type) and type_.__module__ not in ("builtins", "pathlib") and not _isNodeClass(type_)):
        raise NotImplementedError(f"the parameterNodeWrapper stand-in does not implement {type_!r} (Slicer has "
                                  "serializers for lists, tuples, dicts, enums, Any, QColor, parameter packs)")
    raise Exception(f"Unable to create serializer for type: {type_}")


# -------------------------------------------------------------------------------------------- wrapper.py
RESERVED = ("allParameters", "_is_parameter_node_wrapper", "default", "isCached", "dataType", "getValue",
            "setValue", "connectGui", "connectParametersToGui", "disconnectGui", "StartModify", "EndModify",
            "AddObserver", "RemoveObserver", "Modified")


class _Parameter:
    def __init__(self, name, annotatedType, serializer, default):
        self.name, self.annotatedType, self.serializer, self.default = name, annotatedType, serializer, default


def parameterNodeWrapper(classtype=None):
    """Class decorator (wrapper.py ``parameterNodeWrapper`` / ``_processClass``)."""

    def wrap(cls):
        return _processClass(cls)

    return wrap if classtype is None else wrap(classtype)


def _processClass(cls):
    allParameters = {}
    for name, annotatedType in typing.get_type_hints(cls, include_extras=True).items():
        try:
            serializer = createSerializer(annotatedType)
        except Exception as error:
            raise Exception(f"Unable to create serializer for {cls} member {name}") from error
        _, annotations = splitAnnotations(annotatedType)
        if hasattr(cls, name):
            default = Default(getattr(cls, name))
        else:
            default = _findFirst(annotations, Default) or Default(serializer.default())
        unused = [a for a in annotations if not isinstance(a, (Validator, Default))]
        if unused:
            logging.warning(f"Unused annotations: {unused}")
        allParameters[name] = _Parameter(name, annotatedType, serializer, default)
        setattr(cls, name, property(lambda self, n=name: self.getValue(n),
                                    lambda self, value, n=name: self.setValue(n, value)))
    for reserved in RESERVED:
        if hasattr(cls, reserved):
            raise ValueError(f"Cannot use reserved name '{reserved}' in a parameterNodeWrapper")
    cls.allParameters = allParameters
    cls._is_parameter_node_wrapper = True
    cls.__init__ = _init
    for method in (_default, isCached, getValue, setValue, connectGui, connectParametersToGui, disconnectGui,
                   StartModify, EndModify, AddObserver, RemoveObserver, Modified):
        setattr(cls, method.__name__.lstrip("_"), method)
    cls.dataType = staticmethod(lambda name: _checkParamName(cls, name).annotatedType)
    return cls


def _init(self, parameterNode, prefix=None):
    """wrapper.py ``_initMethod``: every parameter absent from the node gets its default written (validated)."""
    self.parameterNode = parameterNode
    self._prefix = prefix or ""
    self._guis = {}
    self._nextTag = 0
    self._updatingGui = False
    for parameter in self.allParameters.values():
        key = self._prefix + parameter.name
        if not parameter.serializer.isIn(parameterNode, key):
            parameter.serializer.write(parameterNode, key, parameter.default.value)


def _checkParamName(selfOrClass, name) -> _Parameter:
    if name not in selfOrClass.allParameters:
        raise ValueError(f"Cannot find a param with the given name: {name}")
    return selfOrClass.allParameters[name]


def _default(self, name):
    return _checkParamName(self, name).default


def isCached(self, name) -> bool:
    _checkParamName(self, name)
    return False


def getValue(self, name):
    parameter = _checkParamName(self, name)
    key = self._prefix + name
    if not parameter.serializer.isIn(self.parameterNode, key):            # wrapper.py _Parameter.read
        parameter.serializer.write(self.parameterNode, key, parameter.default.value)
    return parameter.serializer.read(self.parameterNode, key)


def setValue(self, name, value):
    parameter = _checkParamName(self, name)
    wasModifying = self.parameterNode.StartModify()
    try:
        parameter.serializer.write(self.parameterNode, self._prefix + name, value)
    finally:
        self.parameterNode.EndModify(wasModifying)


def StartModify(self):
    return self.parameterNode.StartModify()


def EndModify(self, wasModified):
    return self.parameterNode.EndModify(wasModified)


def AddObserver(self, event, callback, priority=0.0):
    return self.parameterNode.AddObserver(event, callback, priority)


def RemoveObserver(self, tag):
    self.parameterNode.RemoveObserver(tag)


def Modified(self):
    self.parameterNode.Modified()


def connectGui(self, gui):
    """wrapper.py ``_connectGui``: widgets carrying the SlicerParameterName dynamic property, found among a
    widget's children or the values of a namespace (``slicer.util.childWidgetVariables``)."""
    if getattr(gui, "isWidgetType", lambda: False)():
        import qt

        candidates = gui.findChildren(qt.QWidget)
    else:
        candidates = list(vars(gui).values())
    mapping = {}
    for widget in candidates:
        name = widget.property(SlicerParameterNamePropertyName)
        if name:
            mapping[name] = widget
    return connectParametersToGui(self, mapping)


def connectParametersToGui(self, mapping):
    """wrapper.py ``_connectParametersToGui``: a connector per widget; parameter -> widget now, widget ->
    parameter on each change, parameter -> every widget on each node Modified."""
    for name in mapping:
        _checkParamName(self, name)
    connectors = {name: createGuiConnector(widget, self.dataType(name)) for name, widget in mapping.items()}
    for name, connector in connectors.items():
        connector.write(self.getValue(name))
        connector.onChanged(_guiToParameter(self, name, connector))
    tag = self._nextTag
    self._nextTag += 1
    observer = self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: _updateGui(self))
    self._guis[tag] = (connectors, observer)
    return tag


def _guiToParameter(self, name, connector):
    def callback(*args):
        if not self._updatingGui:
            self.setValue(name, connector.read())

    return callback


def _updateGui(self):
    if self._updatingGui:
        return
    self._updatingGui = True
    try:
        for connectors, _ in list(self._guis.values()):
            for name, connector in connectors.items():
                connector.write(self.getValue(name))
    finally:
        self._updatingGui = False


def disconnectGui(self, tag):
    if tag in self._guis:
        connectors, observer = self._guis.pop(tag)
        for connector in connectors.values():
            connector.onChanged(None)
        self.parameterNode.RemoveObserver(observer)


# ------------------------------------------------------------------------------------- guiConnectors.py
class _Connector:
    signal = ""

    def __init__(self, widget, datatype):
        self.widget, self.datatype = widget, datatype
        self._callback = None

    def onChanged(self, callback):
        signal = getattr(self.widget, self.signal)
        if self._callback is not None:
            signal.disconnect(self._callback)
        self._callback = callback
        if callback is not None:
            signal.connect(callback)


class _CheckBoxBool(_Connector):
    signal = "stateChanged"

    @staticmethod
    def canRepresent(widget, datatype, qt, ctk, slicer_) -> bool:
        return unannotatedType(datatype) == bool and type(widget) in (qt.QCheckBox, getattr(ctk, "ctkCheckBox", None))

    def read(self):
        return self.widget.checked

    def write(self, value):
        self.widget.checked = value


class _SpinBoxInt(_Connector):
    signal = "valueChanged"

    @staticmethod
    def canRepresent(widget, datatype, qt, ctk, slicer_) -> bool:
        return unannotatedType(datatype) == int and type(widget) in (qt.QSlider, qt.QSpinBox)

    def __init__(self, widget, datatype):
        super().__init__(widget, datatype)
        annotations = splitAnnotations(datatype)[1]
        within, low, high = (_findFirst(annotations, k) for k in (WithinRange, Minimum, Maximum))
        if within is not None:
            widget.setRange(within.minimum, within.maximum)
        else:
            widget.setMinimum(low.minimum if low is not None else -(2 ** 31))
            widget.setMaximum(high.maximum if high is not None else 2 ** 31 - 1)

    def read(self):
        return self.widget.value

    def write(self, value):
        self.widget.value = value


class _DoubleSpinBoxFloat(_Connector):
    signal = "valueChanged"

    @staticmethod
    def canRepresent(widget, datatype, qt, ctk, slicer_) -> bool:
        return unannotatedType(datatype) in (float, int) and type(widget) in (
            qt.QDoubleSpinBox, getattr(ctk, "ctkSliderWidget", None), getattr(ctk, "ctkDoubleSpinBox", None))

    def __init__(self, widget, datatype):
        super().__init__(widget, datatype)
        self.isInteger = unannotatedType(datatype) == int
        if self.isInteger:
            widget.decimals = 0
        annotations = splitAnnotations(datatype)[1]
        within, low, high = (_findFirst(annotations, k) for k in (WithinRange, Minimum, Maximum))
        widget.minimum = within.minimum if within else (low.minimum if low else float("-inf"))
        widget.maximum = within.maximum if within else (high.maximum if high else float("inf"))

    def read(self):
        return int(self.widget.value) if self.isInteger else self.widget.value

    def write(self, value):
        self.widget.value = int(value) if self.isInteger else value


class _ComboBoxChoice(_Connector):
    signal = "currentIndexChanged"

    @staticmethod
    def canRepresent(widget, datatype, qt, ctk, slicer_) -> bool:
        return type(widget) in (qt.QComboBox, getattr(ctk, "ctkComboBox", None)) and \
            unannotatedType(datatype) in (int, float, str, bool)

    def __init__(self, widget, datatype):
        super().__init__(widget, datatype)
        choice = _findFirst(splitAnnotations(datatype)[1], Choice)
        if choice is None:
            raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
        self.choices = choice.choices
        widget.clear()
        for value in self.choices:
            widget.addItem(str(value))

    def read(self):
        return self.choices[self.widget.currentIndex]

    def write(self, value):
        if value not in self.choices:
            raise ValueError(f"Unable to find value {value} in choices {self.choices}")
        self.widget.currentIndex = list(self.choices).index(value)


class _LineEditStr(_Connector):
    signal = "textChanged"

    @staticmethod
    def canRepresent(widget, datatype, qt, ctk, slicer_) -> bool:
        return type(widget) == qt.QLineEdit and unannotatedType(datatype) == str

    def read(self):
        return self.widget.text

    def write(self, value):
        if value != self.widget.text:
            self.widget.text = value


class _PathLineEditPath(_Connector):
    signal = "currentPathChanged"

    @staticmethod
    def canRepresent(widget, datatype, qt, ctk, slicer_) -> bool:
        return type(widget) == ctk.ctkPathLineEdit and _Path.canSerialize(unannotatedType(datatype))

    def read(self):
        return unannotatedType(self.datatype)(self.widget.currentPath)

    def write(self, value):
        self.widget.currentPath = str(value)


class _NodeComboBoxNode(_Connector):
    signal = "currentNodeChanged"

    @staticmethod
    def canRepresent(widget, datatype, qt, ctk, slicer_) -> bool:
        return type(widget) == slicer_.qMRMLNodeComboBox and isNodeOrUnionOfNodes(datatype)

    def __init__(self, widget, datatype):
        super().__init__(widget, datatype)
        widget.nodeTypes = list(getNodeTypes(datatype))

    def read(self):
        return self.widget.currentNode()

    def write(self, value):
        self.widget.setCurrentNode(value)


_CONNECTORS = (_CheckBoxBool, _SpinBoxInt, _DoubleSpinBoxFloat, _ComboBoxChoice, _LineEditStr, _PathLineEditPath,
               _NodeComboBoxNode)


def createGuiConnector(widget, datatype):
    """guiConnectors.py ``createGuiConnector``: the first connector whose exact widget class and data type fit."""
    import ctk
    import qt

    for connector in _CONNECTORS:
        if connector.canRepresent(widget, datatype, qt, ctk, slicer):
            return connector(widget, datatype)
    raise RuntimeError(f"Unable to create GUI connector from datatype '{datatype}' to widget type '{type(widget)}'.")


__all__ = ["parameterNodeWrapper", "Default", "Validator", "NotNone", "IsInstance", "WithinRange", "Minimum",
           "Maximum", "Choice", "Exclude", "createGuiConnector", "isNodeOrUnionOfNodes", "getNodeTypes",
           "SlicerParameterNamePropertyName"]
