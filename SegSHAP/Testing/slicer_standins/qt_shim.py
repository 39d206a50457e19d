"""A ``qt`` module on real PySide6 widgets that behaves like Slicer's PythonQt where SegSHAP.py relies on it.

Why a shim: Slicer's ``qt`` is PythonQt, which no package ships. PySide6 gives the same Qt classes (real widgets,
real signals, real QUiLoader), but PythonQt differs in three ways SegSHAP.py uses, reproduced here:

- Qt properties are Python attributes: ``label.text`` reads the property and ``label.text = "x"`` writes it
  (PySide6 would return the bound method, and the assignment would silently shadow it). ``PythonQtAccess`` routes
  every name that is a Qt property of the object's meta-object through ``QObject.property``/``setProperty``;
  writing a read-only property raises, like PythonQt; a tuple is written as a list (PythonQt converts sequences).
- ``obj.connect("signal(args)", slot)``: PythonQt's string-signature connect, resolved to the PySide signal.
- The widget classes ``qt.QCheckBox`` etc. are the classes the .ui loader instantiates (so the parameter node
  wrapper's exact-type checks ``type(widget) == qt.QCheckBox`` see them, as in Slicer).
Everything else (layouts, QTimer timing, painting, events) is plain PySide6.
"""

from __future__ import annotations

import sys
import types

from PySide6 import QtCore, QtGui, QtWidgets


class PythonQtAccess:
    """Mixin: PythonQt's property-as-attribute access and string-signature ``connect``."""

    def __getattribute__(self, name):
        if name in ("connect", "disconnect"):         # Shiboken would answer with QObject's static connect
            return types.MethodType(getattr(PythonQtAccess, name), self)
        if name[:1] != "_":
            meta = QtCore.QObject.metaObject(self)
            index = meta.indexOfProperty(name)
            if index >= 0:
                return meta.property(index).read(self)
        return super().__getattribute__(name)

    def __setattr__(self, name, value):
        if name[:1] != "_":
            meta = QtCore.QObject.metaObject(self)
            index = meta.indexOfProperty(name)
            if index >= 0:
                prop = meta.property(index)
                if isinstance(value, tuple):          # PythonQt converts any sequence (QStringList, ...)
                    value = list(value)
                if not prop.isWritable() or not prop.write(self, value):
                    raise AttributeError(f"cannot set property {name!r} of {type(self).__name__} to {value!r}")
                return
        super().__setattr__(name, value)

    def connect(self, signature: str, slot) -> bool:
        """PythonQt: ``obj.connect("clicked(bool)", slot)``; the signal must exist on the object."""
        name = signature.split("(", 1)[0]
        signal = getattr(type(self), name, None)
        if not isinstance(signal, QtCore.Signal) and not hasattr(getattr(self, name, None), "connect"):
            raise AttributeError(f"{type(self).__name__} has no signal {signature}")
        getattr(self, name).connect(slot)
        return True

    def disconnect(self, signature: str, slot) -> bool:
        getattr(self, signature.split("(", 1)[0]).disconnect(slot)
        return True


WIDGET_CLASSES = ("QLabel", "QPushButton", "QCheckBox", "QRadioButton", "QSpinBox", "QDoubleSpinBox",
                  "QComboBox", "QLineEdit", "QProgressBar", "QPlainTextEdit", "QTextEdit", "QSlider", "QFrame",
                  "QGroupBox", "QTableView", "QToolButton")


def build() -> types.ModuleType:
    """A fresh ``qt`` module: PythonQt-style subclasses of the widget classes, the rest of PySide6 as is."""
    qt = types.ModuleType("qt")
    for source in (QtCore, QtGui, QtWidgets):
        for name in dir(source):
            if name.startswith("Q") or name == "Qt":
                setattr(qt, name, getattr(source, name))
    for name in WIDGET_CLASSES:
        setattr(qt, name, type(name, (PythonQtAccess, getattr(QtWidgets, name)), {"__module__": "qt"}))
    # qt.QWidget stays the plain base class, so findChildren(qt.QWidget) finds every widget as in PythonQt; a
    # .ui's plain <widget class="QWidget"> is built as this PythonQt-style subclass instead
    qt.PythonQtWidget = type("QWidget", (PythonQtAccess, QtWidgets.QWidget), {"__module__": "qt"})
    qt.QTimer = type("QTimer", (PythonQtAccess, QtCore.QTimer), {"__module__": "qt"})
    qt.QObject = QtCore.QObject
    return qt


def application() -> QtWidgets.QApplication:
    """The process's QApplication (offscreen when no display: set QT_QPA_PLATFORM before the first call)."""
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])


__all__ = ["PythonQtAccess", "WIDGET_CLASSES", "build", "application"]
