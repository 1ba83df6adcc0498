"""A form made from a config dataclass: a spin box per numeric field, its field docstring as the tooltip
(engine.core.config), so a setting is described once for the command line and the window."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDoubleSpinBox, QFormLayout, QLabel, QSpinBox, QWidget

from engine.core.config import field_docs, settable_fields


class ConfigForm(QWidget):
    """Spin boxes for the numeric settable fields of a config dataclass (``engine.core.config.settable_fields``),
    with its field docstrings as tooltips."""

    def __init__(self, config_type: type, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._config_type = config_type
        defaults = config_type()
        docs = field_docs(config_type)
        self.editors: dict[str, QSpinBox | QDoubleSpinBox] = {}
        form = QFormLayout(self)
        for field, kind in settable_fields(config_type):
            value = getattr(defaults, field.name)
            if kind not in (int, float) or value is None:  # a spin box shows a number, not "unset"
                continue
            if kind is int:
                editor = QSpinBox()
                editor.setRange(0, 2**31 - 1)
            else:
                editor = QDoubleSpinBox()
                editor.setDecimals(3)
                editor.setRange(0.0, 1e6)
                editor.setSingleStep(0.1)
            editor.setValue(value)
            editor.setToolTip(docs.get(field.name, ""))
            label = QLabel(field.name.replace("_", " ").capitalize() + ":")
            label.setToolTip(editor.toolTip())
            form.addRow(label, editor)
            self.editors[field.name] = editor

    def config(self) -> Any:
        """The dataclass with the values shown (its defaults for the fields not shown)."""
        return self._config_type(**{name: editor.value() for name, editor in self.editors.items()})
