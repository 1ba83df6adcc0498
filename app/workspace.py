"""What every workspace of the window is: a central widget with its own docks, toolbar and menus, shown only
while its tab is current, and talking to the window through ``app.core.host.WorkspaceHost``."""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QMenu, QTabWidget, QToolBar, QWidget

from app.config_form import MethodPanel

from app.core.host import WorkspaceHost

if TYPE_CHECKING:
    from app.worker import JobRunner
    from engine.methods import Method


@dataclass(frozen=True)
class DockSpec:
    """A dock a workspace wants beside it: its title (also its saved-layout name), its widget, where it goes."""

    title: str
    widget: QWidget
    area: Qt.DockWidgetArea
    size: int = 0
    """first width (left / right) or height (top / bottom) in pixels; 0: Qt's choice"""


class Workspace(QWidget):
    """A tab of the window.  Subclasses fill ``docks``, ``toolbar`` and ``menus`` in their constructor; the window
    adds them and shows them only while the workspace is current.

    ``engines`` holds a page per engine of the workspace: the panels a subclass adds (``add_panel``), then, when the
    workspace is first shown, a form and a Run button (MethodPanel) for every method registered for it
    (engine.methods) that has no controls of its own here.  Registering a method is all it takes to offer it.
    """

    name = ""
    """its key in the project's saved window state"""
    title = ""
    """its tab's label"""

    def __init__(self, host: WorkspaceHost, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.docks: list[DockSpec] = []
        self.toolbar: QToolBar | None = None
        self.menus: list[QMenu] = []
        self.engines = QTabWidget()
        self.panels: dict[str, QWidget] = {}
        """the pages of ``engines`` by name (a registered method's name: its controls)"""
        self._methods_added = False

    own_methods: frozenset[str] = frozenset()
    """registered methods this workspace drives with controls of its own (elsewhere than ``engines``)"""

    def methods_without_panels(self) -> list["Method"]:
        """Registered methods of this workspace that get a form (the registry is light: no engine is imported)."""
        from engine.methods import METHODS

        return [method for method in METHODS.values() if method.workspace == self.name
                and method.name not in self.own_methods and method.name not in self.panels]

    def add_panel(self, name: str, panel: QWidget) -> None:
        self.panels[name] = panel
        self.engines.addTab(panel, name)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._methods_added:
            self._methods_added = True
            self._add_method_panels()

    def _add_method_panels(self) -> None:
        """Forms for the registered methods without a panel: their configs import the engine, so this waits,
        without blocking the UI, for the window's warm-up."""
        if not self.host.engine_ready():
            QTimer.singleShot(100, self._add_method_panels)
            return
        for method in self.methods_without_panels():
            panel = MethodPanel(method)
            panel.run_requested.connect(lambda config, m=method: self.run_method(m, config))
            self.add_panel(method.name, panel)

    def run_method(self, method: "Method", config: Any) -> "JobRunner | None":
        """Run a registered method's job with ``config``, as the command line does (one run of each at a time)."""
        job = method.job_function()
        return self.host.run_job(method.name, f"{method.name}: {method.summary}", lambda cancel: job(config, cancel),
                                 frozenset({f"method:{method.name}"}))

    def update_actions(self) -> None:
        """Enable what can be done now (the window calls it when a job starts or ends, or the project changes)."""

    def state(self) -> dict:
        """What the workspace saves in the project (JSON-friendly)."""
        return {}

    def stop(self) -> None:
        """End the workspace's threads (the window is closing)."""
