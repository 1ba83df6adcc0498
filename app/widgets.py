"""Small widgets and conversions every panel shares: one row layout, one error line, one image conversion."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from engine.core.imaging import to_uint8

ERROR_STYLE = "color: #c62828;"
"""how every error line is drawn (a red that reads on light and dark themes)"""


def row(*widgets: QWidget) -> QWidget:
    """Widgets side by side as one form row, the first one stretching (a path and its Browse… buttons)."""
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if i == 0 else 0)
    return holder


def error_label() -> QLabel:
    """A hidden, wrapping, selectable error line (shown with its text when something is wrong)."""
    label = QLabel()
    label.setStyleSheet(ERROR_STYLE)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.hide()
    return label


def numpy_to_qimage(image: np.ndarray) -> QImage:
    """An HxWx3 image (uint8, or float in [0, 1]) as a QImage that owns its pixels (Qt must not point into
    numpy memory, which may go away)."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {array.shape} and dtype {array.dtype}")
    if array.dtype != np.uint8:
        array = to_uint8(array.astype(np.float32))
    pixels = np.ascontiguousarray(array)
    height, width = pixels.shape[:2]
    return QImage(pixels.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
