"""The editor window: a shell of workspaces (Scene, Portrait) around one open project, with the Jobs panel and
the log shared by all of them.

The window owns what every workspace shares: the project's lifecycle (new, open, save, autosave, the unsaved-
changes question), the jobs (each on its own JobRunner, with its own row in the Jobs panel; jobs that hold no
lane in common run side by side, app.core.jobs), the menus, and the errors.  A workspace brings its own central
widget, docks, toolbar and menu, shown only while its tab is current, and reaches the window through the small
``app.core.host.WorkspaceHost`` protocol.  Heavy modules (torch, the engine) are imported in the background
after the window is on screen.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QEventLoop, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QDialog, QDockWidget, QMainWindow, QTabWidget, QToolBar

from app.core.jobs import EXPORT, SCENE, JobLanes, RunningJob, refusal
from app.core.project_session import ProjectSession
from app.dialogs import SettingsDialog, show_error
from app.jobs_panel import JobsPanel
from app.log_dock import LogDock, QtLogHandler
from app.project_lifecycle import ProjectLifecycle
from app.portrait.workspace import PortraitWorkspace
from app.scene.workspace import SceneWorkspace
from app.settings import AppSettings
from app.worker import JobRunner
from app.workspace import Workspace
from engine.core.jobs import Preview

log = logging.getLogger(__name__)

_ENGINE_READY = threading.Event()


def _warm_up_engine() -> None:
    """Import torch and the engine in the background, so the first Open does not wait on them.

    Jobs start only after it (``_after_warm_up``): torch imports parts of itself lazily (the
    first optimizer pulls in torch._dynamo and triton), and two threads importing those C
    extensions at once crash the process.
    """
    try:
        import torch

        import engine.editing.idu  # noqa: F401
        import engine.export  # noqa: F401  (with the trainer)

        torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its lazy imports, here and now
    finally:
        _ENGINE_READY.set()


def _after_warm_up(make_job):
    """``make_job`` run on the worker thread once the engine's modules are loaded."""

    def make(cancel):
        _ENGINE_READY.wait()
        yield from make_job(cancel)

    return make


class MainWindow(ProjectLifecycle, QMainWindow):
    """The Retouch3D editor window (the WorkspaceHost of its workspaces)."""

    def __init__(self, settings: AppSettings | None = None, projects_root: Path | None = None) -> None:
        super().__init__()
        self.settings = settings or AppSettings()
        self.projects_root = projects_root or Path.home() / "Retouch3D"
        self.session: ProjectSession | None = None
        self.lanes = JobLanes()
        self.dirty = False
        self.setWindowTitle("Retouch3D")
        self.setAcceptDrops(True)
        self.resize(1400, 900)

        self.log = LogDock(self)
        self._log_handler = QtLogHandler(self.log)
        for name in ("app", "engine"):
            logging.getLogger(name).addHandler(self._log_handler)
        self.jobs_panel = JobsPanel()
        self.scene = SceneWorkspace(self, self.settings)
        self.portrait = PortraitWorkspace(self, self.settings, _ENGINE_READY)
        self.workspaces: list[Workspace] = [self.scene, self.portrait]
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for workspace in self.workspaces:
            self.tabs.addTab(workspace, workspace.title)
        self.setCentralWidget(self.tabs)

        self._build_actions()
        self._build_menus_and_toolbar()
        self.docks: dict[str, QDockWidget] = {}
        self._workspace_docks: dict[str, list[QDockWidget]] = {}
        for workspace in self.workspaces:
            self._workspace_docks[workspace.name] = [self._add_dock(spec.title, spec.widget, spec.area, spec.size)
                                                     for spec in workspace.docks]
        self._add_dock("Jobs", self.jobs_panel, Qt.DockWidgetArea.RightDockWidgetArea, 0)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log)
        if "Dataset" in self.docks:
            self.tabifyDockWidget(self.docks["Dataset"], self.log)
            self.docks["Dataset"].raise_()
        self.statusBar().showMessage("Open a project, or drop a capture folder here to start one")

        self._autosave_timer = QTimer(self)
        self._autosave_timer.timeout.connect(self._autosave)
        self._apply_autosave_interval()
        geometry = self.settings.window_geometry
        if not geometry.isEmpty():
            self.restoreGeometry(geometry)
            self.restoreState(self.settings.window_state)
        self._hidden_by_user: set[str] = set()
        for workspace in self.workspaces:  # what the restored layout closed
            self._note_hidden_docks(workspace)
        self._current: Workspace | None = None
        self.tabs.currentChanged.connect(self._show_workspace)
        self._show_workspace(self.tabs.currentIndex())
        self._update_actions()
        if not _ENGINE_READY.is_set():
            threading.Thread(target=_warm_up_engine, daemon=True, name="engine warm-up").start()

    # ----------------------------------------------------------------------------------- layout
    def _add_dock(self, title: str, widget, area: Qt.DockWidgetArea, size: int) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        if size:
            horizontal = area in (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea)
            self.resizeDocks([dock], [size], Qt.Orientation.Horizontal if horizontal else Qt.Orientation.Vertical)
        self.docks[title] = dock
        return dock

    def _action(self, text: str, slot: Callable, shortcut: QKeySequence | str | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        Std = QKeySequence.StandardKey
        self.new_action = self._action("&New project from capture…", self.new_project_dialog, Std.New,
                                       tip="Start a project from a capture folder (or drop the folder on the window)")
        self.open_action = self._action("&Open project…", self.open_project_dialog, Std.Open)
        self.save_action = self._action("&Save", self.save_project, Std.Save)
        self.quit_action = self._action("&Quit", self.close, Std.Quit)
        self.settings_action = self._action("&Settings…", self.settings_dialog, Std.Preferences)
        self.pause_action = self._action("&Pause / resume the newest job", self._toggle_pause, "Ctrl+P")
        self.cancel_action = self._action("&Cancel the newest job", self.cancel_job, "Ctrl+.")
        self.workspace_actions = [
            self._action(f"&{workspace.title} workspace", lambda _=False, w=workspace: self.tabs.setCurrentWidget(w),
                         f"Ctrl+Shift+{i + 1}") for i, workspace in enumerate(self.workspaces)]

    def _build_menus_and_toolbar(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.new_action, self.open_action])
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addAction(self.save_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        edit_menu = bar.addMenu("&Edit")
        edit_menu.addAction(self.settings_action)
        self.view_menu = bar.addMenu("&View")
        self.view_menu.addActions(self.workspace_actions)
        self.view_menu.addSeparator()
        job_menu = bar.addMenu("&Job")
        job_menu.addActions([self.pause_action, self.cancel_action])
        for workspace in self.workspaces:
            for menu in workspace.menus:
                bar.insertMenu(job_menu.menuAction(), menu)
        tools = QToolBar("Project")
        tools.setObjectName("Main toolbar")
        tools.setIconSize(QSize(16, 16))
        tools.addActions([self.new_action, self.open_action, self.save_action])
        self.addToolBar(tools)
        for workspace in self.workspaces:
            if workspace.toolbar is not None:
                self.addToolBar(workspace.toolbar)

    def _show_workspace(self, index: int) -> None:
        """Show the docks, toolbar and menus of the current workspace only; a dock the user closed stays closed
        when its workspace comes back (``_hidden_by_user``, read as the workspace is left)."""
        current = self.tabs.widget(index)
        if self._current is not None and self._current is not current:
            self._note_hidden_docks(self._current)
        self._current = current
        for workspace in self.workspaces:
            active = workspace is current
            for dock in self._workspace_docks[workspace.name]:
                dock.setVisible(active and dock.objectName() not in self._hidden_by_user)
                dock.toggleViewAction().setVisible(active)
            if workspace.toolbar is not None:
                workspace.toolbar.setVisible(active)
            for menu in workspace.menus:
                menu.menuAction().setVisible(active)
        self.view_menu.clear()
        self.view_menu.addActions(self.workspace_actions)
        self.view_menu.addSeparator()
        for dock in self._workspace_docks[current.name] + [self.docks["Jobs"], self.log]:
            self.view_menu.addAction(dock.toggleViewAction())

    def _note_hidden_docks(self, workspace: Workspace) -> None:
        for dock in self._workspace_docks[workspace.name]:
            (self._hidden_by_user.add if dock.isHidden() else self._hidden_by_user.discard)(dock.objectName())

    def _update_actions(self) -> None:
        has_project = self.session is not None
        project_jobs = self.lanes.blocker(frozenset({SCENE, EXPORT}))
        self.save_action.setEnabled(has_project)
        for action in (self.new_action, self.open_action, self.recent_menu.menuAction()):
            action.setEnabled(project_jobs is None)
        self.pause_action.setEnabled(self.busy)
        self.cancel_action.setEnabled(self.busy)
        for workspace in self.workspaces:
            workspace.update_actions()
        title = "Retouch3D"
        if has_project:
            title = f"{self.session.name}{' *' if self.dirty else ''} — Retouch3D"
        self.setWindowTitle(title)

    # --------------------------------------------------------------------------- the host protocol
    @property
    def busy(self) -> bool:
        """A job is running."""
        return any(job.runner.running for job in self.lanes.jobs)

    @property
    def idle(self) -> bool:
        """No job runs and the window has handled the last one's end: a job's thread stops before its finished
        signal reaches the window, which only then takes the job's results (the opened session, the trained flag)."""
        return not self.lanes

    def holding(self, lane: str) -> str:
        job = self.lanes.holding(lane)
        return job.kind if job is not None else ""

    def jobs_running(self) -> int:
        return len(self.lanes)

    def engine_ready(self) -> bool:
        return _ENGINE_READY.is_set()

    def mark_dirty(self) -> None:
        if self.session is not None and not self.dirty:
            self.dirty = True
            self._update_actions()

    def show_error(self, message: str, details: str = "") -> None:
        self.log.log(message, "error")
        self.last_error = message
        show_error(self, message, details)

    def show_status(self, message: str, timeout_ms: int = 0) -> None:
        self.statusBar().showMessage(message, timeout_ms)

    def run_job(self, kind: str, title: str, make_job, lanes: frozenset[str],
                on_done: Callable[[bool], None] | None = None,
                on_preview: Callable[[Preview], None] | None = None) -> JobRunner | None:
        """Start an engine job on a worker thread with its own row in the Jobs panel (None: refused, and why)."""
        blocker = self.lanes.blocker(lanes)
        if blocker is not None:
            self.show_error(refusal(kind, blocker))
            return None
        runner = JobRunner(_after_warm_up(make_job), min_preview_interval=0.25, parent=self)
        self.lanes.add(RunningJob(kind, title, lanes, runner))
        self.jobs_panel.attach(runner, title)
        runner.warning.connect(lambda message: self.log.log(message, "warning"))
        runner.failed.connect(self.show_error)
        runner.artifact.connect(lambda a: self.log.log(f"wrote {a.path} ({a.kind})"))
        if on_preview is not None:
            runner.preview.connect(on_preview)

        def finished(ok: bool) -> None:
            self.lanes.remove(runner)
            self.log.log(f"{title}: " + ("done" if ok else "stopped"))
            if on_done is not None:
                on_done(ok)
            self._update_actions()

        runner.finished.connect(finished)
        runner.start()
        self._update_actions()
        return runner

    def cancel(self, lane: str) -> None:
        job = self.lanes.holding(lane)
        if job is not None:
            job.runner.cancel()

    def _newest_running(self) -> JobRunner | None:
        return next((job.runner for job in reversed(self.lanes.jobs) if job.runner.running), None)

    def _toggle_pause(self) -> None:
        runner = self._newest_running()
        if runner is not None:
            row = self.jobs_panel.row_of(runner)
            row.pause_button.toggle()  # the row keeps its elapsed time and button in step

    def cancel_job(self) -> None:
        """Cancel the newest running job."""
        runner = self._newest_running()
        if runner is not None:
            runner.cancel()

    def cancel_all_jobs(self) -> None:
        for job in self.lanes.jobs:
            job.runner.cancel()

    def wait_for_job(self, timeout_s: float = 60.0) -> bool:
        """Keep the UI alive until every job has ended (closing the window, tests)."""
        deadline = time.monotonic() + timeout_s
        while not self.idle and time.monotonic() < deadline:
            loop = QEventLoop()
            QTimer.singleShot(20, loop.quit)
            loop.exec()
        return self.idle

    # ------------------------------------------------------------------------------ settings
    def settings_dialog(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.scene.settings_changed()
            self._apply_autosave_interval()

    # -------------------------------------------------------------------------------- closing
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.busy:
            kinds = " and ".join(self.lanes.kinds())
            if not self.ask("A job is running", f"The {kinds} job is still running. Cancel it and close? "
                            "A training or an edit saves a checkpoint first, so it can be resumed."):
                event.ignore()
                return
            self.cancel_all_jobs()
            self.wait_for_job(timeout_s=120)
            if self.session is not None:
                self.save_project()
        elif not self._maybe_save():
            event.ignore()
            return
        self._note_hidden_docks(self._current)
        for workspace in self.workspaces:  # the layout is saved as the user left it, not as the current tab shows it
            for dock in self._workspace_docks[workspace.name]:
                dock.setVisible(dock.objectName() not in self._hidden_by_user)
        self.settings.window_geometry = self.saveGeometry()
        self.settings.window_state = self.saveState()
        self.settings.sync()
        for workspace in self.workspaces:
            workspace.stop()
        for name in ("app", "engine"):
            logging.getLogger(name).removeHandler(self._log_handler)
        event.accept()


def run(argv: list[str] | None = None, demo: bool = False) -> int:
    """Open the editor window (``demo``: on a new project of the procedural demo scene, training)."""
    import sys

    from PySide6.QtWidgets import QApplication

    from app.settings import APPLICATION, ORGANIZATION

    app = QApplication.instance() or QApplication(sys.argv[:1] + list(argv or []))
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    window = MainWindow()
    window.show()
    if demo:
        QTimer.singleShot(0, window.start_demo)
    probe = os.environ.get("RETOUCH3D_STARTUP_PROBE")
    if probe:  # the startup benchmark: note when the shown window's first events are handled, then quit
        QTimer.singleShot(0, lambda: (Path(probe).write_text(f"{time.time()}\n"), window.close()))
    return app.exec()
