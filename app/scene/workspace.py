"""The Scene workspace: the open project's field live in the viewport, point-and-type editing, the dataset
strip, training and export.

Every long piece of work (training, editing, previews, exports) runs as an engine job through the window
(``WorkspaceHost.run_job``), so nothing here waits on the engine.  While a train or edit job runs, its model is
shared with the viewport through a LiveField: the viewport renders it between optimisation steps and refreshes as
it improves.  Heavy modules (torch, the engine's fields) are imported when first needed.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QLabel, QMenu, QToolBar, QVBoxLayout, QWidget

from app.core.host import WorkspaceHost
from app.core.jobs import EXPORT, SCENE
from app.core.project_session import ProjectSession
from app.dialogs import ExportDialog
from app.scene.dataset_strip import DatasetStrip
from app.scene.edit_panel import EditPanel, PreviewDialog
from app.scene.render_service import RenderService
from app.scene.viewport import Viewport
from app.settings import AppSettings
from app.workspace import DockSpec, Workspace
from engine.core.jobs import Preview

if TYPE_CHECKING:
    from app.worker import JobRunner
    from engine.editing.idu import EditConfig

log = logging.getLogger(__name__)

RENDER_MODE_LABELS = {"rgb": "RGB", "depth": "Depth", "accumulation": "Accumulation"}
LIVE_REFRESH_MS = 1000
"""while a job trains the field, the viewport re-renders its view this often (a low-resolution frame)"""
CAMERA_HOLD_S = 0.3
"""training steps wait this long after the camera last moved, so dragging stays smooth"""
FULL_SIDE_IDLE, FULL_SIDE_BUSY = 512, 256
"""longer side of the frame shown when the camera rests: smaller while a job shares the CPU"""
RIGHT_DOCK_WIDTH, BOTTOM_DOCK_HEIGHT = 400, 250
"""first layout of the docks (users can resize them; the window restores what they chose)"""


def _action(parent: QWidget, text: str, slot, shortcut: QKeySequence | str | None = None, checkable: bool = False,
            tip: str = "") -> QAction:
    action = QAction(text, parent)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.setCheckable(checkable)
    action.setStatusTip(tip)
    action.triggered.connect(slot)
    return action


class SceneWorkspace(Workspace):
    """The captured scene of the open project (``session``): train it, edit it by point and type, export it."""

    name = "scene"
    title = "Scene"
    own_methods = frozenset({"train", "edit"})
    """training from the toolbar, editing from the Point and type panel"""

    def __init__(self, host: WorkspaceHost, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(host, parent)
        self.settings = settings
        self.session: ProjectSession | None = None
        self._live_version = -1
        self._preview_dialog: PreviewDialog | None = None
        self._export_dialog: ExportDialog | None = None

        self.viewport = Viewport()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.viewport.widget())
        self.service = RenderService()
        self.viewport.attach(self.service, lambda: self.render_mode)
        self.service.failed.connect(log.error)
        self.service.picked.connect(self._on_picked)
        self.viewport.clicked.connect(self._on_viewport_clicked)
        self.viewport.camera_changed.connect(self._on_camera_changed)
        self.viewport.set_show_frustums(True)
        self.viewport.set_show_box(True)
        self.viewport.set_show_axes(True)

        self.edit_panel = EditPanel()
        self.edit_panel.set_default_model(settings.ip2p_model, settings.ip2p_config_dir)
        self.edit_panel.apply_requested.connect(self.apply_edit)
        self.edit_panel.preview_requested.connect(self.show_edit_preview)
        self.edit_panel.region_changed.connect(self._on_region_changed)
        self.strip = DatasetStrip()
        self.strip.snap_requested.connect(self.snap_to_view)
        self.strip.edits_changed.connect(lambda view: log.info("view %s: edit version changed", view))
        self.docks = [DockSpec("Point and type", self.edit_panel, Qt.DockWidgetArea.RightDockWidgetArea,
                               RIGHT_DOCK_WIDTH),
                      DockSpec("Dataset", self.strip, Qt.DockWidgetArea.BottomDockWidgetArea, BOTTOM_DOCK_HEIGHT)]
        if self.methods_without_panels():
            self.docks.append(DockSpec("Scene methods", self.engines, Qt.DockWidgetArea.RightDockWidgetArea))
        self._build_actions()
        self._build_menu_and_toolbar()

        self._live_timer = QTimer(self)
        self._live_timer.setInterval(LIVE_REFRESH_MS)
        self._live_timer.timeout.connect(self._refresh_if_changed)

    # ----------------------------------------------------------------------------------- layout
    def _build_actions(self) -> None:
        Std = QKeySequence.StandardKey
        self.train_action = _action(self, "&Train", self.train, "Ctrl+T", tip="Train (or keep training) the field")
        self.export_action = _action(self, "&Export…", self.export_dialog, "Ctrl+E")
        self.reset_view_action = _action(self, "&Reset view", self.viewport.reset_view, "Home")
        self.undo_action = self.strip.undo_stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcut(QKeySequence(Std.Undo))
        self.redo_action = self.strip.undo_stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcut(QKeySequence(Std.Redo))
        self.overlay_actions: dict[str, QAction] = {}
        for name, label, setter in (("frustums", "Training &cameras", self.viewport.set_show_frustums),
                                    ("box", "Scene &box", self.viewport.set_show_box),
                                    ("axes", "&Axes", self.viewport.set_show_axes)):
            action = QAction(label, self)
            action.setCheckable(True)
            action.setChecked(True)
            action.toggled.connect(setter)
            self.overlay_actions[name] = action
        self.mode_group = QActionGroup(self)
        self.mode_actions: dict[str, QAction] = {}
        for i, (mode, label) in enumerate(RENDER_MODE_LABELS.items()):
            action = _action(self, label, lambda _=False, m=mode: self.set_render_mode(m), f"Ctrl+{i + 1}", True)
            self.mode_group.addAction(action)
            self.mode_actions[mode] = action
        self.mode_actions["rgb"].setChecked(True)

    def _build_menu_and_toolbar(self) -> None:
        menu = QMenu("&Scene", self)
        menu.addActions([self.train_action, self.export_action, self.undo_action, self.redo_action])
        menu.addSeparator()
        menu.addActions(list(self.mode_actions.values()))
        menu.addSeparator()
        menu.addActions(list(self.overlay_actions.values()))
        menu.addSeparator()
        menu.addAction(self.reset_view_action)
        self.snap_menu = menu.addMenu("&Snap to training camera")
        self.snap_menu.aboutToShow.connect(self._fill_snap_menu)
        self.menus = [menu]

        tools = QToolBar("Scene")
        tools.setObjectName("Scene toolbar")
        tools.setIconSize(QSize(16, 16))
        tools.addWidget(QLabel(" Train for "))
        self.train_minutes = QDoubleSpinBox()
        self.train_minutes.setRange(0.1, 600)
        self.train_minutes.setSuffix(" min")
        self.train_minutes.setToolTip("How long Train runs (the project's last choice, else TrainConfig's default)")
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
        self.toolbar = tools

    def update_actions(self) -> None:
        has_project = self.session is not None
        trained = has_project and self.session.trained
        scene_job = self.host.holding(SCENE)
        self.train_action.setEnabled(has_project and not scene_job)
        self.train_minutes.setEnabled(has_project)
        self.export_action.setEnabled(trained and not self.host.holding(EXPORT))
        self.edit_panel.set_busy(bool(scene_job) or not trained)
        self.strip.setEnabled(has_project)
        self.strip.set_history_locked(scene_job == "edit")
        history = has_project and not self.strip.history_locked
        self.undo_action.setEnabled(history and self.strip.undo_stack.canUndo())
        self.redo_action.setEnabled(history and self.strip.undo_stack.canRedo())
        self.service.max_side = FULL_SIDE_BUSY if self.host.jobs_running() else FULL_SIDE_IDLE

    @property
    def render_mode(self) -> str:
        return self.mode_combo.currentData() if hasattr(self, "mode_combo") else "rgb"

    def set_render_mode(self, mode: str) -> None:
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(mode))
        self.mode_actions[mode].setChecked(True)
        self.viewport.refresh()

    # --------------------------------------------------------------------------------- project
    def show_session(self, session: ProjectSession) -> None:
        """Show an opened project: its field (when trained), cameras, views, edits and saved state."""
        from engine.scene.viewer import FieldView, camera_fov_y_deg, home_camera

        self.session = session
        dataset = session.dataset
        self.service.set_field(FieldView(live=session.live) if session.trained else None)
        home = home_camera(dataset)
        self.viewport.set_home(home)
        train = dataset.cameras.subset(dataset.train_indices)
        fovs = np.array([camera_fov_y_deg(train, i) for i in range(len(train))])
        self.viewport.set_frustums(train.c2w, fovs, float(train.width[0] / train.height[0]), None)
        self.viewport.set_box(np.full(3, -1.0), np.full(3, 1.0))
        self.strip.set_views(session.view_names, [dataset.images[i] for i in dataset.train_indices], self._store())
        self.edit_panel.set_default_radius(round(0.25 / dataset.scale, 4))
        saved = session.app_state()
        self._restore(saved.get(self.name, saved), home)  # before 2026-12 the scene's state was the whole app state
        self.update_actions()
        self.viewport.refresh()

    def _store(self):
        from engine.editing.store import EditStore

        return EditStore(self.session.root)

    def _restore(self, state: dict, home) -> None:
        from engine.scene.orbit import OrbitCamera
        from engine.scene.trainer import TrainConfig

        self.edit_panel.restore(state.get("edit_panel", {}))
        cam = state.get("camera")
        try:
            camera = OrbitCamera(np.array(cam["target"], float), float(cam["distance"]),
                                 np.array(cam["rotation"], float), float(cam["fov_y_deg"]))
        except (KeyError, TypeError, ValueError):
            camera = home
        self.viewport.set_camera(camera, by_user=False)
        mode = state.get("render_mode")
        self.set_render_mode(mode if mode in RENDER_MODE_LABELS else "rgb")
        for name, action in self.overlay_actions.items():
            action.setChecked(bool(state.get("overlays", {}).get(name, True)))
        self.train_minutes.setValue(float(state.get("train_minutes", TrainConfig.minutes)))

    def state(self) -> dict:
        cam = self.viewport.camera
        return {"edit_panel": self.edit_panel.state(), "render_mode": self.render_mode,
                "camera": {"target": cam.target.tolist(), "distance": cam.distance, "rotation": cam.rotation.tolist(),
                           "fov_y_deg": cam.fov_y_deg},
                "overlays": {name: action.isChecked() for name, action in self.overlay_actions.items()},
                "train_minutes": self.train_minutes.value()}

    # ---------------------------------------------------------------------------------- training
    def train(self) -> None:
        """Train the field (or keep training it) for the minutes chosen in the toolbar."""
        if self.session is None:
            return
        from engine.scene.trainer import train_more_job
        from engine.scene.viewer import FieldView

        minutes = self.train_minutes.value()
        session = self.session

        def done(ok: bool) -> None:
            self._live_timer.stop()
            session.trained = session.live.ready
            self.viewport.refresh()
            self.host.show_status(f"{session.root}: " + ("trained" if ok else "training stopped; Train resumes it"))
            from engine.core.project import Project

            session.manifest = Project(session.root).read_manifest()

        runner = self.host.run_job("train", f"Training {session.name}",
                                   lambda cancel: train_more_job(session.root, minutes, cancel, live=session.live),
                                   frozenset({SCENE}), on_done=done)
        if runner is not None:
            self.service.set_field(FieldView(live=session.live))
            self._start_live_refresh()
            self.host.show_status(f"{session.root}: training")

    def _start_live_refresh(self) -> None:
        self._live_version = -1
        self._live_timer.start()

    def _refresh_if_changed(self) -> None:
        if self.session is not None and self.session.live.ready and self.session.live.version != self._live_version:
            self._live_version = self.session.live.version
            self.viewport.refresh(quick=True)

    # ----------------------------------------------------------------------------------- editing
    def _on_camera_changed(self, camera, moving: bool) -> None:
        if moving and self.session is not None:
            self.session.live.hold(CAMERA_HOLD_S)

    def _on_viewport_clicked(self, x: float, y: float) -> None:
        if self.session is None or not self.session.trained:
            self.host.show_status("Train the field first, then click the object to edit", 4000)
            return
        self.service.pick(self.viewport.camera, self.viewport.width(), self.viewport.height(), x, y)

    def _on_picked(self, point) -> None:
        if point is None:
            self.host.show_status("That pixel looks at empty space; click on the object to edit", 4000)
            return
        from engine.scene.picking import scene_to_capture

        capture, _ = scene_to_capture(self.session.dataset, point, 1.0)
        self.edit_panel.set_region_point(tuple(float(v) for v in capture))

    def _on_region_changed(self, point, radius: float) -> None:
        self.host.mark_dirty()
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

    def apply_edit(self, options: "EditConfig") -> None:
        """Start Instruct-NeRF2NeRF's Iterative Dataset Update with the panel's instruction and region."""
        if self.session is None or not self.session.trained:
            self.host.show_error("Train the field before editing it.")
            return
        from engine.editing.idu import edit_job

        cfg = self._edit_config(options)
        session = self.session

        def on_preview(event: Preview) -> None:
            view = event.camera.get("view")
            if view:
                self.strip.refresh_view(view)

        def done(ok: bool) -> None:
            self._live_timer.stop()
            self.strip.refresh_all()
            self.viewport.refresh()

        self.host.save_project()
        if self.host.run_job("edit", f"Editing: {cfg.instruction}", lambda cancel: edit_job(cfg, cancel, live=session.live),
                             frozenset({SCENE}), on_done=done, on_preview=on_preview) is not None:
            self._start_live_refresh()

    def show_edit_preview(self, options: "EditConfig") -> None:
        """Edit the current view in 2D only (the scene does not change) and show it beside the render."""
        if self.session is None or not self.session.trained:
            self.host.show_error("Train the field before previewing an edit.")
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

        self.host.run_job("preview", f"Preview: {cfg.instruction}",
                          lambda cancel: edit_preview_job(view, camera, aspect, cfg, cancel), frozenset({SCENE}),
                          on_preview=show)

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

    # ------------------------------------------------------------------------------------ export
    def export_dialog(self) -> None:
        if self.session is None:
            return
        dialog = ExportDialog(self.session.root, self)
        self._export_dialog = dialog
        dialog.export_requested.connect(self.export)
        dialog.cancel_requested.connect(lambda: self.host.cancel(EXPORT))
        dialog.show()

    def export(self, cfg) -> "JobRunner | None":
        """Run an export job beside any training; its progress shows in the export dialog when one is open."""
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

        runner = self.host.run_job("export", f"Export {cfg.what}", lambda cancel: export_job(cfg, cancel),
                                   frozenset({EXPORT}), on_done=done)
        if runner is None:
            return None
        runner.artifact.connect(lambda a: written.append(str(a.path)))
        if dialog is not None:
            runner.progress.connect(lambda p: dialog.set_progress(
                p.fraction if p.fraction is not None else (p.step / p.total if p.total else 0.0), p.message))
        return runner

    def settings_changed(self) -> None:
        self.edit_panel.set_default_model(self.settings.ip2p_model, self.settings.ip2p_config_dir)

    def stop(self) -> None:
        self._live_timer.stop()
        self.service.stop()
