"""The log dock: timestamped messages from the app and, through ``QtLogHandler``, from Python logging."""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QDockWidget, QPlainTextEdit, QWidget

LEVELS = ("info", "warning", "error")
MAX_LINES = 5000
"""older lines are dropped beyond this, so a long session's log does not grow without end"""
_COLOURS = {"warning": QColor("#b26a00"), "error": QColor("#c62828")}


class LogDock(QDockWidget):
    """A dock titled "Log" with one read-only line per message; warnings and errors are coloured."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Log", parent)
        self.setObjectName("LogDock")  # QMainWindow.saveState() identifies docks by object name
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LINES)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setWidget(self.text)

    def log(self, message: str, level: str = "info") -> None:
        """Append ``message`` as "HH:MM:SS level: message" (``level``: info, warning or error)."""
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}; got {level!r}")
        bar = self.text.verticalScrollBar()
        following = bar.value() == bar.maximum()  # keep up with new lines unless the user scrolled back
        line_format = QTextCharFormat()
        if level in _COLOURS:
            line_format.setForeground(_COLOURS[level])
        cursor = QTextCursor(self.text.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if not self.text.document().isEmpty():
            cursor.insertBlock()
        cursor.insertText(f"{time.strftime('%H:%M:%S')} {level}: {message}", line_format)
        if following:
            bar.setValue(bar.maximum())


def level_name(levelno: int) -> str:
    """The dock's level for a logging level number."""
    if levelno >= logging.ERROR:
        return "error"
    return "warning" if levelno >= logging.WARNING else "info"


class _Bridge(QObject):
    """Carries records to the UI thread: a signal emitted on a worker thread is queued to its receiver's."""

    record = Signal(str, str)  # message, level


class QtLogHandler(logging.Handler):
    """Forwards Python logging records to a LogDock, from any thread.

    Attach it to the loggers whose messages belong in the dock, e.g.
    ``logging.getLogger("engine").addHandler(QtLogHandler(dock))``.
    """

    def __init__(self, dock: LogDock, level: int = logging.INFO) -> None:
        super().__init__(level)
        # not parented to the dock: a record logged after the dock is gone then finds no receiver instead of
        # a deleted C++ object
        self._bridge = _Bridge()
        self._bridge.record.connect(dock.log)  # direct on the UI thread, queued from others
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102 - logging.Handler API
        try:
            self._bridge.record.emit(self.format(record), level_name(record.levelno))
        except Exception:  # noqa: BLE001 - logging must never raise into the code that logs
            self.handleError(record)
