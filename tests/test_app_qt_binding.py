"""The installed Qt binding is one the editor can live with for hours."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402


def test_calls_that_return_nothing_keep_their_reference_to_none(qtbot):
    """PySide6 6.12.0 released a reference to None per such call; on Python < 3.12 the editor then
    aborted after a few minutes of repaints ("deallocating None")."""
    widget = QWidget()
    qtbot.addWidget(widget)
    timer = QTimer()
    before = sys.getrefcount(None)
    for _ in range(2000):
        widget.update()
        timer.start(1000)
    assert abs(sys.getrefcount(None) - before) < 100


def test_the_editor_refuses_the_broken_binding_by_name(monkeypatch):
    import importlib

    import PySide6

    import app

    monkeypatch.setattr(PySide6, "__version__", "6.12.0")
    monkeypatch.setattr(sys, "version_info", (3, 11, 9))
    with pytest.raises(ImportError, match=r"PySide6 6\.12\.0 crashes on Python < 3\.12"):
        importlib.reload(app)
    monkeypatch.undo()
    importlib.reload(app)
