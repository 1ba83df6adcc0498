"""The editor window: a live viewport in the middle, point-and-type editing, the dataset strip,
jobs and the log around it; a second tab holds the Portrait workspace.

Every long piece of work (opening a project, training, editing, previews, exports) runs as an
engine job on a JobRunner, so the window never waits on the engine.  While a train or edit job
runs, its model is shared with the viewport through a LiveField: the viewport renders it
between optimisation steps and refreshes as it improves.  Heavy modules (torch, the engine's
fields) are imported when first needed, after the window is on screen.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PySide6.QtCore import QEventLoop, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDockWidget, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QLabel, QLineEdit, QMainWindow, QMessageBox, QPushButton, QTabWidget,
                               QToolBar, QWidget)

from app.dataset_strip import DatasetStrip
from app.dialogs import ExportDialog, SettingsDialog, show_error
from app.edit_panel import EditPanel, PreviewDialog
from app.jobs_panel import JobsPanel
from app.log_dock import LogDock, QtLogHandler
from app.portrait_workspace import PortraitWorkspace
from app.project_session import ProjectSession, check_dataset_folder, create_project, open_job, unique_folder
from app.render_service import RenderService
from app.settings import AppSettings
from app.viewport import Viewport
from app.widgets import error_label, row
from app.worker import JobRunner
from engine.core.errors import UserInputError
from engine.core.jobs import Preview

if TYPE_CHECKING:
    from engine.editing.idu import EditConfig

RENDER_MODE_LABELS = {"rgb": "RGB", "depth": "Depth", "accumulation": "Accumulation"}
LIVE_REFRESH_MS = 1000
"""while a job trains the field, the viewport re-renders its view this often (a low-resolution frame)"""
CAMERA_HOLD_S = 0.3
"""training steps wait this long after the camera last moved, so dragging stays smooth"""
FULL_SIDE_IDLE, FULL_SIDE_BUSY = 512, 256
"""longer side of the frame shown when the camera rests: smaller while a job shares the CPU"""
RIGHT_DOCK_WIDTH, BOTTOM_DOCK_HEIGHT = 400, 250
"""first layout of the docks (users can resize them; the window restores what they chose)"""


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


class NewProjectDialog(QDialog):
    """Chooses the capture, the project folder and how to load the images."""

    def __init__(self, data: str, projects_root: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New project")
        self.data_edit = QLineEdit(data)
        self.root_edit = QLineEdit()
        self.downscale = QDoubleSpinBox()
        self.downscale.setRange(1, 16)
        self.downscale.setValue(1)
        self.downscale.setToolTip("resample the images by this factor on load (large photos train faster at 2-4)")
        browse_data, browse_root = QPushButton("Browse…"), QPushButton("Browse…")
        browse_data.clicked.connect(self._browse_data)
        browse_root.clicked.connect(self._browse_root)
        self._projects_root = projects_root
        self.error_label = error_label()
        form = QFormLayout(self)
        form.addRow("Capture folder:", row(self.data_edit, browse_data))
        form.addRow("Project folder:", row(self.root_edit, browse_root))
        form.addRow("Downscale images:", self.downscale)
        form.addRow(self.error_label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.data_edit.textChanged.connect(self._suggest_root)
        self._suggest_root()

    def _suggest_root(self) -> None:
        name = Path(self.data_edit.text().strip() or "project").name or "project"
        self.root_edit.setText(str(unique_folder(self._projects_root, name)))

    def _browse_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Capture folder (transforms.json)", self.data_edit.text())
        if folder:
            self.data_edit.setText(folder)

    def _browse_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the project", str(self._projects_root))
        if folder:
            self.root_edit.setText(str(unique_folder(Path(folder), Path(self.data_edit.text()).name or "project")))

    def accept(self) -> None:
        try:
            check_dataset_folder(self.data_edit.text().strip())
        except UserInputError as exc:
            self.error_label.setText(str(exc))
            return
        super().accept()


class MainWindow(QMainWindow):
    """The Retouch3D editor window."""

    def __init__(self, settings: AppSettings | None = None, projects_root: Path | None = None) -> None:
        super().__init__()
        self.settings = settings or AppSettings()
        self.projects_root = projects_root or Path.home() / "Retouch3D"
        self.session: ProjectSession | None = None
        self.runner: JobRunner | None = None
        self.job_kind = ""
        self.dirty = False
        self._live_version = -1
        self._preview_dialog: PreviewDialog | None = None
        self._export_dialog: ExportDialog | None = None
        self.setWindowTitle("Retouch3D")
        self.setAcceptDrops(True)
        self.resize(1400, 900)

        self.viewport = Viewport()
        self.portrait = PortraitWorkspace(self.settings, self.run_job, _ENGINE_READY.wait)
        self.portrait.error.connect(lambda message, details: self.show_error(message, details))
        self.workspaces = QTabWidget()
        self.workspaces.setDocumentMode(True)
        self.workspaces.addTab(self.viewport.widget(), "Scene")
        self.workspaces.addTab(self.portrait, "Portrait")
        self.setCentralWidget(self.workspaces)
        self.service = RenderService()
        self.viewport.attach(self.service, lambda: self.render_mode)
        self.service.failed.connect(lambda msg: self.log.log(msg, "error"))
        self.service.picked.connect(self._on_picked)
        self.viewport.clicked.connect(self._on_viewport_clicked)
        self.viewport.camera_changed.connect(self._on_camera_changed)

        self.edit_panel = EditPanel()
        self.edit_panel.set_default_model(self.settings.ip2p_model, self.settings.ip2p_config_dir)
        self.edit_panel.apply_requested.connect(self.apply_edit)
        self.edit_panel.preview_requested.connect(self.show_edit_preview)
        self.edit_panel.region_changed.connect(self._on_region_changed)
        self.jobs_panel = JobsPanel()
        self.strip = DatasetStrip()
        self.strip.snap_requested.connect(self.snap_to_view)
        self.strip.edits_changed.connect(lambda view: self.log.log(f"view {view}: edit version changed"))
        self.log = LogDock(self)
        self._log_handler = QtLogHandler(self.log)
        for name in ("app", "engine"):
            logging.getLogger(name).addHandler(self._log_handler)
        self._add_dock("Point and type", self.edit_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("Jobs", self.jobs_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("Dataset", self.strip, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log)
        self.tabifyDockWidget(self.docks["Dataset"], self.log)
        self.docks["Dataset"].raise_()
        self.resizeDocks([self.docks["Point and type"]], [RIGHT_DOCK_WIDTH], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Dataset"]], [BOTTOM_DOCK_HEIGHT], Qt.Orientation.Vertical)

        self._build_actions()
        self._build_menus_and_toolbar()
        self.statusBar().showMessage("Open a project, or drop a capture folder here to start one")
        self.viewport.set_show_frustums(True)
        self.viewport.set_show_box(True)
        self.viewport.set_show_axes(True)

        self._live_timer = QTimer(self)
        self._live_timer.setInterval(LIVE_REFRESH_MS)
        self._live_timer.timeout.connect(self._refresh_if_changed)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.timeout.connect(self._autosave)
        self._apply_autosave_interval()
        geometry = self.settings.window_geometry
        if not geometry.isEmpty():
            self.restoreGeometry(geometry)
            self.restoreState(self.settings.window_state)
        self._update_actions()
        if not _ENGINE_READY.is_set():
            threading.Thread(target=_warm_up_engine, daemon=True, name="engine warm-up").start()

    # ----------------------------------------------------------------------------------- layout
    def _add_dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks = getattr(self, "docks", {})
        self.docks[title] = dock

    def _action(self, text: str, slot: Callable, shortcut: QKeySequence | str | None = None,
                checkable: bool = False, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setCheckable(checkable)
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        Std = QKeySequence.StandardKey
        self.new_action = self._action("&New project from capture…", self.new_project_dialog, Std.New,
                                       tip="Start a project from a capture folder (or drop the folder on the window)")
        self.open_action = self._action("&Open project…", self.open_project_dialog, Std.Open)
        self.save_action = self._action("&Save", self.save_project, Std.Save)
        self.export_action = self._action("&Export…", self.export_dialog, "Ctrl+E")
        self.quit_action = self._action("&Quit", self.close, Std.Quit)
        self.settings_action = self._action("&Settings…", self.settings_dialog, Std.Preferences)
        self.undo_action = self.strip.undo_stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcut(QKeySequence(Std.Undo))
        self.redo_action = self.strip.undo_stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcut(QKeySequence(Std.Redo))
        self.train_action = self._action("&Train", self.train, "Ctrl+T", tip="Train (or keep training) the field")
        self.pause_action = self._action("&Pause / resume", self._toggle_pause, "Ctrl+P")
        self.cancel_action = self._action("&Cancel job", self.cancel_job, "Ctrl+.")
        self.reset_view_action = self._action("&Reset view", self.viewport.reset_view, "Home")
        self.scene_action = self._action("&Scene editor", lambda: self.workspaces.setCurrentIndex(0),
                                         tip="The captured scene: train, point and type, export")
        self.portrait_action = self._action("P&ortrait workspace", self.show_portrait,
                                            tip="Sample and orbit 3D portrait heads, render orbit videos")
        self.overlay_actions = {}
        for name, label, setter in (("frustums", "Training &cameras", self.viewport.set_show_frustums),
                                    ("box", "Scene &box", self.viewport.set_show_box),
                                    ("axes", "&Axes", self.viewport.set_show_axes)):
            action = QAction(label, self)
            action.setCheckable(True)
            action.setChecked(True)
            action.toggled.connect(setter)
            self.overlay_actions[name] = action
        self.mode_group = QActionGroup(self)
        self.mode_actions = {}
        for i, (mode, label) in enumerate(RENDER_MODE_LABELS.items()):
            action = self._action(label, lambda _=False, m=mode: self.set_render_mode(m), f"Ctrl+{i + 1}", True)
            self.mode_group.addAction(action)
            self.mode_actions[mode] = action
        self.mode_actions["rgb"].setChecked(True)

    def _build_menus_and_toolbar(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.new_action, self.open_action])
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addActions([self.save_action, self.export_action])
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        edit_menu = bar.addMenu("&Edit")
        edit_menu.addActions([self.undo_action, self.redo_action])
        edit_menu.addSeparator()
        edit_menu.addAction(self.settings_action)
        view_menu = bar.addMenu("&View")
        view_menu.addActions([self.scene_action, self.portrait_action])
        view_menu.addSeparator()
        view_menu.addActions(list(self.mode_actions.values()))
        view_menu.addSeparator()
        view_menu.addActions(list(self.overlay_actions.values()))
        view_menu.addSeparator()
        view_menu.addAction(self.reset_view_action)
        self.snap_menu = view_menu.addMenu("&Snap to training camera")
        self.snap_menu.aboutToShow.connect(self._fill_snap_menu)
        view_menu.addSeparator()
        for dock in list(self.docks.values()) + [self.log]:
            view_menu.addAction(dock.toggleViewAction())
        job_menu = bar.addMenu("&Job")
        job_menu.addActions([self.train_action, self.pause_action, self.cancel_action])

        tools = QToolBar("Main")
        tools.setObjectName("Main toolbar")
        tools.setIconSize(QSize(16, 16))
        self.addToolBar(tools)
        tools.addActions([self.new_action, self.open_action, self.save_action])
        tools.addSeparator()
        tools.addWidget(QLabel(" Train for "))
        self.train_minutes = QDoubleSpinBox()
        self.train_minutes.setRange(0.1, 600)
        self.train_minutes.setValue(3.0)
        self.train_minutes.setSuffix(" min")
        tools.addWidget(self.train_minutes)
        tools.addAction(self.train_action)
        tools.addSeparator()
        self.mode_combo = QComboBox()
        for mode, label in RENDER_MODE_LABELS.items():
            self.mode_combo.addItem(label, mode)
        self.mode_combo.currentIndexChanged.connect(lambda _: self.set_render_mode(self.mode_combo.currentData()))
        tools.addWidget(QLabel(" View "))
        tools.addWidget(self.mode_combo)
        tools.addAction(self.reset_view_action)
        tools.addSeparator()
        tools.addAction(self.export_action)

    def _update_actions(self) -> None:
        has_project = self.session is not None
        busy = self.busy
        trained = has_project and self.session.trained
        self.save_action.setEnabled(has_project)
        self.train_action.setEnabled(has_project and not busy)
        self.export_action.setEnabled(trained and not busy)
        self.pause_action.setEnabled(busy)
        self.cancel_action.setEnabled(busy)
        self.new_action.setEnabled(not busy)
        self.open_action.setEnabled(not busy)
        self.recent_menu.setEnabled(not busy)
        self.edit_panel.set_busy(busy or not trained)
        self.strip.setEnabled(has_project)
        self.strip.set_history_locked(busy and self.job_kind == "edit")
        history = has_project and not self.strip.history_locked
        self.undo_action.setEnabled(history and self.strip.undo_stack.canUndo())
        self.redo_action.setEnabled(history and self.strip.undo_stack.canRedo())
        title = "Retouch3D"
        if has_project:
            title = f"{self.session.name}{' *' if self.dirty else ''} — Retouch3D"
        self.setWindowTitle(title)

    # ------------------------------------------------------------------------------- properties
    @property
    def busy(self) -> bool:
        return self.runner is not None and self.runner.running

    @property
    def idle(self) -> bool:
        """No job runs and the window has handled the last one's end: a job's thread stops before its finished
        signal reaches the window, which only then takes the job's results (the opened session, the trained flag)."""
        return not self.busy and not self.job_kind

    @property
    def render_mode(self) -> str:
        return self.mode_combo.currentData() if hasattr(self, "mode_combo") else "rgb"

    def set_render_mode(self, mode: str) -> None:
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(mode))
        self.mode_actions[mode].setChecked(True)
        self.viewport.refresh()

    def show_portrait(self) -> None:
        """Switch to the Portrait workspace (the first time, it loads the embedded prior)."""
        self.workspaces.setCurrentWidget(self.portrait)

    def mark_dirty(self) -> None:
        if self.session is not None and not self.dirty:
            self.dirty = True
            self._update_actions()

    # ---------------------------------------------------------------------------------- projects
    def new_project_dialog(self, data: str = "") -> None:
        if not self._maybe_save():
            return
        dialog = NewProjectDialog(data, self.projects_root, self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.new_project(dialog.data_edit.text().strip(), dialog.root_edit.text().strip(),
                             dialog.downscale.value())

    def new_project(self, data: str | Path, root: str | Path | None = None, downscale: float = 1.0,
                    then: Callable[[], None] | None = None) -> bool:
        """Create a project for the capture ``data`` and open it; a clear error when it is not a capture."""
        try:
            root = create_project(data, root or unique_folder(self.projects_root, Path(data).name), downscale)
        except UserInputError as exc:
            self.show_error(str(exc))
            return False
        self.log.log(f"new project {root} for the capture {data}")
        self.open_project(root, check_unsaved=False, then=then)
        return True

    def start_demo(self) -> None:
        """Build the procedural demo capture, start a project on it and train (the ``demo`` command)."""
        from engine.scene.procedural import DemoSceneConfig, write_demo_dataset

        data = write_demo_dataset(self.projects_root / "demo-data", DemoSceneConfig())
        self.edit_panel.instruction_edit.setText("make it look like a bronze statue")
        self.new_project(data, unique_folder(self.projects_root, "demo"), then=self.train)

    def open_project_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a Retouch3D project", str(self.projects_root))
        if folder:
            self.open_project(folder)

    def open_project(self, root: str | Path, check_unsaved: bool = True,
                     then: Callable[[], None] | None = None) -> None:
        """Load a project off the UI thread; on success its field, edits and settings are shown (then ``then``)."""
        if self.busy:
            self.show_error("Finish or cancel the running job before opening another project.")
            return
        if check_unsaved and not self._maybe_save():
            return
        root = Path(root)
        from engine.core.project import Project

        project = Project(root)
        try:
            project.read_manifest()
        except UserInputError as exc:
            if project.exists() and project._backup_readable() and self.ask(
                    "Damaged project", f"{exc}\n\nRestore the last good copy of the project file?"):
                project.restore_backup()
                self.log.log(f"{project.manifest_path}: restored from {project.backup_path.name}", "warning")
            else:
                self.show_error(str(exc))
                return
        result: dict = {}
        self.statusBar().showMessage(f"Opening {root}…")
        def done(ok: bool) -> None:
            if ok:
                self._show_session(result["session"])
                if then is not None:
                    then()

        self.run_job("open", f"Opening {root.name}", lambda cancel: open_job(root, result), on_done=done)

    def _show_session(self, session: ProjectSession) -> None:
        from engine.scene.viewer import FieldView, camera_fov_y_deg, home_camera

        self.session = session
        self.dirty = False
        self.settings.add_recent(session.root)
        for warning in session.warnings:
            self.log.log(warning, "warning")
        dataset = session.dataset
        self.service.set_field(FieldView(live=session.live) if session.trained else None)
        home = home_camera(dataset)
        self.viewport.set_home(home)
        train = dataset.cameras.subset(dataset.train_indices)
        fovs = np.array([camera_fov_y_deg(train, i) for i in range(len(train))])
        self.viewport.set_frustums(train.c2w, fovs, float(train.width[0] / train.height[0]), None)
        self.viewport.set_box(np.full(3, -1.0), np.full(3, 1.0))
        self.strip.set_views(session.view_names, [dataset.images[i] for i in dataset.train_indices],
                             self._store())
        self.edit_panel.set_default_radius(round(0.25 / dataset.scale, 4))
        self._restore_app_state(session.app_state(), home)
        self.dirty = False
        self.statusBar().showMessage(f"{session.root}: " + ("trained field loaded" if session.trained else
                                                            "not trained yet — press Train"))
        self.log.log(f"opened {session.root}")
        self._update_actions()
        self.viewport.refresh()

    def _store(self):
        from engine.editing.store import EditStore

        return EditStore(self.session.root)

    def _restore_app_state(self, state: dict, home) -> None:
        from engine.scene.orbit import OrbitCamera

        self.edit_panel.restore(state.get("edit_panel", {}))
        cam = state.get("camera")
        if cam:
            try:
                self.viewport.set_camera(OrbitCamera(np.array(cam["target"], float), float(cam["distance"]),
                                                     np.array(cam["rotation"], float), float(cam["fov_y_deg"])),
                                         by_user=False)
            except (KeyError, TypeError, ValueError):
                self.viewport.set_camera(home, by_user=False)
        else:
            self.viewport.set_camera(home, by_user=False)
        self.set_render_mode(state.get("render_mode", "rgb") if state.get("render_mode") in RENDER_MODE_LABELS
                             else "rgb")
        for name, action in self.overlay_actions.items():
            action.setChecked(bool(state.get("overlays", {}).get(name, True)))
        self.train_minutes.setValue(float(state.get("train_minutes", self.train_minutes.value())))

    def app_state(self) -> dict:
        """What the window saves in the project (JSON-friendly)."""
        cam = self.viewport.camera
        return {"edit_panel": self.edit_panel.state(), "render_mode": self.render_mode,
                "camera": {"target": cam.target.tolist(), "distance": cam.distance, "rotation": cam.rotation.tolist(),
                           "fov_y_deg": cam.fov_y_deg},
                "overlays": {name: action.isChecked() for name, action in self.overlay_actions.items()},
                "train_minutes": self.train_minutes.value()}

    def save_project(self) -> bool:
        if self.session is None:
            return True
        try:
            self.session.save(self.app_state())
        except (OSError, UserInputError) as exc:
            self.show_error(f"Could not save the project: {exc}")
            return False
        self.dirty = False
        self.statusBar().showMessage(f"Saved {self.session.root}", 3000)
        self._update_actions()
        return True

    def _autosave(self) -> None:
        if self.dirty and self.session is not None:
            self.save_project()
            self.log.log("autosaved")

    def _apply_autosave_interval(self) -> None:
        minutes = self.settings.autosave_minutes
        if minutes > 0:
            self._autosave_timer.start(int(minutes * 60_000))
        else:
            self._autosave_timer.stop()

    def _maybe_save(self) -> bool:
        """Ask about unsaved changes; False when the user cancels what they were doing."""
        if not self.dirty or self.session is None:
            return True
        answer = self.ask_save()
        if answer == QMessageBox.StandardButton.Save:
            return self.save_project()
        return answer == QMessageBox.StandardButton.Discard

    def ask_save(self) -> QMessageBox.StandardButton:
        """The unsaved-changes question (tests replace it)."""
        return QMessageBox.question(self, "Unsaved changes", f"Save the changes to {self.session.name}?",
                                    QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                                    | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save)

    def ask(self, title: str, text: str) -> bool:
        """A yes/no question (tests replace it)."""
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    def show_error(self, message: str, details: str = "") -> None:
        self.log.log(message, "error")
        self.last_error = message
        show_error(self, message, details)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_projects
        for path in recent:
            self.recent_menu.addAction(path, lambda p=path: self.open_project(p))
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)

    # ------------------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self.open_dropped(urls[0])

    def open_dropped(self, path: str | Path) -> None:
        """A dropped project folder opens; a dropped capture folder starts a new project."""
        path = Path(path)
        from engine.core.project import MANIFEST_NAME

        if (path / MANIFEST_NAME).exists():
            self.open_project(path)
            return
        try:
            check_dataset_folder(path)
        except UserInputError as exc:
            self.show_error(str(exc))
            return
        if self._maybe_save():
            self.new_project(path)

    # ----------------------------------------------------------------------------------- jobs
    def run_job(self, kind: str, title: str, make_job, on_done: Callable[[bool], None] | None = None,
                on_preview: Callable[[Preview], None] | None = None) -> JobRunner | None:
        """Start an engine job on a worker thread, shown in the jobs panel."""
        if self.busy:
            self.show_error(f"A {self.job_kind} job is running; wait for it or cancel it first.")
            return None
        runner = JobRunner(_after_warm_up(make_job), min_preview_interval=0.25, parent=self)
        self.runner, self.job_kind = runner, kind
        self.jobs_panel.attach(runner, title)
        runner.warning.connect(lambda message: self.log.log(message, "warning"))
        runner.failed.connect(self.show_error)
        runner.artifact.connect(lambda a: self.log.log(f"wrote {a.path} ({a.kind})"))
        if on_preview is not None:
            runner.preview.connect(on_preview)

        def finished(ok: bool) -> None:
            if self.runner is runner:
                self.job_kind = ""
            self._live_timer.stop()
            self.service.max_side = FULL_SIDE_IDLE
            self.log.log(f"{title}: " + ("done" if ok else "stopped"))
            if on_done is not None:
                on_done(ok)
            self._update_actions()

        runner.finished.connect(finished)
        self.service.max_side = FULL_SIDE_BUSY
        runner.start()
        self._update_actions()
        return runner

    def _toggle_pause(self) -> None:
        if self.runner is None or not self.runner.running:
            return
        if self.runner.paused:
            self.runner.resume()
        else:
            self.runner.pause()

    def cancel_job(self) -> None:
        if self.busy:
            self.runner.cancel()

    def wait_for_job(self, timeout_s: float = 60.0) -> bool:
        """Keep the UI alive until the running job ends (closing the window, tests)."""
        deadline = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < deadline:
            loop = QEventLoop()
            QTimer.singleShot(20, loop.quit)
            loop.exec()
        return not self.busy

    def train(self) -> None:
        """Train the field (or keep training it) for the minutes chosen in the toolbar."""
        if self.session is None:
            return
        from engine.scene.trainer import train_more_job
        from engine.scene.viewer import FieldView

        minutes = self.train_minutes.value()
        session = self.session
        self.service.set_field(FieldView(live=session.live))
        self._start_live_refresh()
        self.statusBar().showMessage(f"{session.root}: training")

        def done(ok: bool) -> None:
            session.trained = session.live.ready
            self.viewport.refresh()
            self.statusBar().showMessage(f"{session.root}: " + ("trained" if ok else "training stopped; Train resumes it"))
            from engine.core.project import Project

            session.manifest = Project(session.root).read_manifest()

        self.run_job("train", f"Training {session.name}",
                     lambda cancel: train_more_job(session.root, minutes, cancel, live=session.live), on_done=done)

    def _start_live_refresh(self) -> None:
        self._live_version = -1
        self._live_timer.start()

    def _refresh_if_changed(self) -> None:
        if self.session is not None and self.session.live.ready and self.session.live.version != self._live_version:
            self._live_version = self.session.live.version
            self.viewport.refresh(quick=True)

    # ------------------------------------------------------------------------------- editing
    def _on_camera_changed(self, camera, moving: bool) -> None:
        if moving and self.session is not None:
            self.session.live.hold(CAMERA_HOLD_S)

    def _on_viewport_clicked(self, x: float, y: float) -> None:
        if self.session is None or not self.session.trained:
            self.statusBar().showMessage("Train the field first, then click the object to edit", 4000)
            return
        self.service.pick(self.viewport.camera, self.viewport.width(), self.viewport.height(), x, y)

    def _on_picked(self, point) -> None:
        if point is None:
            self.statusBar().showMessage("That pixel looks at empty space; click on the object to edit", 4000)
            return
        from engine.scene.picking import scene_to_capture

        capture, _ = scene_to_capture(self.session.dataset, point, 1.0)
        self.edit_panel.set_region_point(tuple(float(v) for v in capture))

    def _on_region_changed(self, point, radius: float) -> None:
        self.mark_dirty()
        if point is None or self.session is None:
            self.viewport.set_region(None, 0.0)
            return
        from engine.scene.picking import capture_to_scene

        centre, scene_radius = capture_to_scene(self.session.dataset, tuple(point), radius)
        self.viewport.set_region(centre, scene_radius)

    def _edit_config(self, options: "EditConfig") -> "EditConfig":
        """The panel's edit on this project, with the devices and presets from Settings."""
        return dataclasses.replace(options, project=str(self.session.root), device=self.settings.resolved_device(),
                                   memory=self.settings.memory_preset, precision=self.settings.precision,
                                   lpips_backbone=self.settings.lpips_backbone)

    def apply_edit(self, options) -> None:
        """Start Instruct-NeRF2NeRF's Iterative Dataset Update with the panel's instruction and region."""
        if self.session is None or not self.session.trained:
            self.show_error("Train the field before editing it.")
            return
        from engine.editing.idu import edit_job

        cfg = self._edit_config(options)
        session = self.session
        self.save_project()
        self._start_live_refresh()

        def on_preview(event: Preview) -> None:
            view = event.camera.get("view")
            if view:
                self.strip.refresh_view(view)

        def done(ok: bool) -> None:
            self.strip.refresh_all()
            self.viewport.refresh()

        self.run_job("edit", f"Editing: {cfg.instruction}", lambda cancel: edit_job(cfg, cancel, live=session.live),
                     on_done=done, on_preview=on_preview)

    def show_edit_preview(self, options) -> None:
        """Edit the current view in 2D only (the scene does not change) and show it beside the render."""
        if self.session is None or not self.session.trained:
            self.show_error("Train the field before previewing an edit.")
            return
        from engine.editing.preview import edit_preview_job
        from engine.scene.viewer import FieldView

        view = FieldView(live=self.session.live)
        camera = self.viewport.camera.copy()
        aspect = max(self.viewport.width(), 1) / max(self.viewport.height(), 1)
        cfg = self._edit_config(options)

        def show(event: Preview) -> None:
            half = event.image.shape[1] // 2
            if self._preview_dialog is None:
                self._preview_dialog = PreviewDialog(cfg.instruction, self)
            self._preview_dialog.set_instruction(cfg.instruction)
            self._preview_dialog.set_images(event.image[:, :half], event.image[:, half:])
            self._preview_dialog.show()

        self.run_job("preview", f"Preview: {cfg.instruction}",
                     lambda cancel: edit_preview_job(view, camera, aspect, cfg, cancel), on_preview=show)

    def snap_to_view(self, name: str) -> None:
        if self.session is None:
            return
        from engine.scene.viewer import camera_fov_y_deg

        dataset = self.session.dataset
        frame = [p.stem for p in dataset.image_paths].index(name)
        self.viewport.snap_to(dataset.cameras.c2w[frame], camera_fov_y_deg(dataset.cameras, frame))

    def _fill_snap_menu(self) -> None:
        self.snap_menu.clear()
        if self.session is None:
            self.snap_menu.addAction("(no project)").setEnabled(False)
            return
        for name in self.session.view_names:
            self.snap_menu.addAction(name, lambda n=name: self.snap_to_view(n))

    # -------------------------------------------------------------------------------- export
    def export_dialog(self) -> None:
        if self.session is None:
            return
        dialog = ExportDialog(self.session.root, self)
        self._export_dialog = dialog
        dialog.export_requested.connect(self.export)
        dialog.cancel_requested.connect(self.cancel_job)
        dialog.show()

    def export(self, cfg) -> JobRunner | None:
        """Run an export job; its progress shows in the export dialog when one is open."""
        from engine.export import export_job

        dialog = self._export_dialog
        written: list[str] = []

        def done(ok: bool) -> None:
            if dialog is None:
                return
            if ok and written:
                dialog.set_done(written[-1])
                if dialog.open_folder_when_done:
                    dialog.open_folder()
            elif not ok:
                dialog.set_failed("The export was cancelled." if runner.cancel_token.cancelled
                                  else "The export stopped with an error (see the message).")

        runner = self.run_job("export", f"Export {cfg.what}", lambda cancel: export_job(cfg, cancel), on_done=done)
        if runner is None:
            return None
        runner.artifact.connect(lambda a: written.append(str(a.path)))
        if dialog is not None:
            runner.progress.connect(lambda p: dialog.set_progress(
                p.fraction if p.fraction is not None else (p.step / p.total if p.total else 0.0), p.message))
        return runner

    # ------------------------------------------------------------------------------ settings
    def settings_dialog(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.edit_panel.set_default_model(self.settings.ip2p_model, self.settings.ip2p_config_dir)
            self._apply_autosave_interval()

    # -------------------------------------------------------------------------------- closing
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.busy:
            if not self.ask("A job is running", f"The {self.job_kind} job is still running. Cancel it and close? "
                            "It saves a checkpoint first, so it can be resumed."):
                event.ignore()
                return
            self.runner.cancel()
            self.wait_for_job(timeout_s=120)
            if self.session is not None:
                self.save_project()
        elif not self._maybe_save():
            event.ignore()
            return
        self.settings.window_geometry = self.saveGeometry()
        self.settings.window_state = self.saveState()
        self.settings.sync()
        self.service.stop()
        self.portrait.stop()
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
