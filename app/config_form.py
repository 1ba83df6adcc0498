"""A form made from a config dataclass: a widget per settable field (engine.core.config.settable_fields), its
field docstring as the tooltip, so a setting is described once for the command line and the window; and the
panel that runs a registered method from its config's form."""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

from app.widgets import error_label
from engine.core.config import field_docs, settable_fields
from engine.core.errors import UserInputError


def _editor(kind: type, value: Any) -> QWidget:
    """The widget for one field: a spin box for numbers, a check box for flags, a line for text."""
    if kind is bool:
        editor = QCheckBox()
        editor.setChecked(bool(value))
    elif kind is str:
        editor = QLineEdit("" if value in (None, dataclasses.MISSING) else str(value))
    elif kind is int:
        editor = QSpinBox()
        editor.setRange(0, 2**31 - 1)
        editor.setValue(value)
    else:
        editor = QDoubleSpinBox()
        editor.setDecimals(3)
        editor.setRange(0.0, 1e6)
        editor.setSingleStep(0.1)
        editor.setValue(value)
    return editor


def _value(editor: QWidget) -> Any:
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    if isinstance(editor, QLineEdit):
        return editor.text().strip()
    return editor.value()


class ConfigForm(QWidget):
    """A widget per settable field of a config dataclass, its docstring as the tooltip.  Numbers without a
    default value (an optional count left unset) are not shown: a spin box shows a number, not "unset"."""

    def __init__(self, config_type: type, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._config_type = config_type
        docs = field_docs(config_type)
        self.editors: dict[str, QWidget] = {}
        self._required: list[str] = []
        self._optional: set[str] = set()  # default None: an empty line means None
        form = QFormLayout(self)
        for field, kind in settable_fields(config_type):
            if field.default is not dataclasses.MISSING:
                value = field.default
            elif field.default_factory is not dataclasses.MISSING:
                value = field.default_factory()
            else:
                value = dataclasses.MISSING
                self._required.append(field.name)
            if kind in (int, float) and value in (None, dataclasses.MISSING):
                continue
            if value is None:
                self._optional.add(field.name)
            editor = _editor(kind, value)
            editor.setToolTip(docs.get(field.name, ""))
            label = QLabel(field.name.replace("_", " ").capitalize() + ":")
            label.setToolTip(editor.toolTip())
            form.addRow(label, editor)
            self.editors[field.name] = editor

    def config(self) -> Any:
        """The dataclass with the values shown (its defaults for the fields not shown); a required field left
        empty is a UserInputError naming it."""
        values = {name: _value(editor) for name, editor in self.editors.items()}
        values.update({name: None for name in self._optional if values[name] == ""})
        missing = [name for name in self._required if values.get(name) in ("", None)]
        if missing:
            raise UserInputError(f"fill in {', '.join(name.replace('_', ' ') for name in missing)}")
        return self._config_type(**values)


class MethodPanel(QWidget):
    """A registered method (engine.methods) as a form and a Run button; ``run_requested`` carries its config.
    The window runs the method's job with it, as the command line does."""

    run_requested = Signal(object)  # the method's config, built from the form

    def __init__(self, method, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.method = method
        self.form = ConfigForm(method.config_class())
        self.error_label = error_label()
        self.run_button = QPushButton(f"Run {method.name}")
        self.run_button.setToolTip(method.summary)
        self.run_button.clicked.connect(self._run)
        layout = QVBoxLayout(self)
        summary = QLabel(method.summary[0].upper() + method.summary[1:])
        summary.setWordWrap(True)
        layout.addWidget(summary)
        layout.addWidget(self.form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.run_button)

    def _run(self) -> None:
        try:
            config = self.form.config()
        except UserInputError as exc:
            self.error_label.setText(str(exc))
            self.error_label.show()
            return
        self.error_label.hide()
        self.run_requested.emit(config)
