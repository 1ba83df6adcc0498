"""The Portrait workspace: heads from the embedded prior or a user's EG3D checkpoint, orbited with sliders or a
left drag on the image, seen as RGB, depth or semantic groups, filmed as orbit videos; and a panel per portrait
engine beside them.

The engines' panels come from ``PANELS`` (napari's habit of picking a layer's controls from a map): a name and a
function that builds the panel for this workspace.  Every method registered for the portrait workspace
(engine.methods) that has no panel of its own there gets a form from its config and a Run button (MethodPanel).
A new engine adds one entry.  Nothing here waits on the engine: views render on the PortraitRenderer's thread
(app.portrait.renderer), while the user drags frames are small and the full frame is asked for when they let go;
videos and trainings are jobs the window runs, with their progress in the Jobs panel.
"""

from __future__ import annotations

import copy
import html
import logging
import random
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton,
                               QRadioButton, QSlider, QSpinBox, QVBoxLayout, QWidget)

from app.core.host import WorkspaceHost
from app.core.jobs import PORTRAIT
from app.portrait.edit_panel import edit_panel
from app.portrait.renderer import PortraitFrame, PortraitRenderer, PortraitView, ViewRequest, frame_resolution
from app.portrait.semantic_panel import semantic_panel
from app.portrait.styles_panel import styles_panel
from app.settings import AppSettings
from app.widgets import row
from app.workspace import DockSpec, Workspace

if TYPE_CHECKING:
    from app.worker import JobRunner
    from engine.portrait.workspace import PortraitSession

log = logging.getLogger(__name__)

YAW_LIMIT_DEG, PITCH_LIMIT_DEG = 45, 30
"""the sliders' ranges about the frontal view (the prior was trained within ±35° / ±20°)"""
SLIDER_STEPS_PER_DEG = 10
"""angle sliders move in tenths of a degree, so a slow drag still turns the head"""
DRAG_DEG_PER_PX = 0.4
"""a left drag across the image turns the head this many degrees per pixel"""
DEFAULT_VIDEO_FRAMES = 90
VIDEO_YAW_RANGE_DEG = 30.0
MODE_LABELS = {"rgb": "RGB", "depth": "Depth", "semantic": "Semantic"}
PRIOR_ITEM, CHECKPOINT_ITEM = 0, 1
"""rows of the source combo box"""
ENGINES_DOCK_WIDTH = 380


def _angle_slider(limit_deg: int) -> QSlider:
    slider = QSlider(Qt.Orientation.Horizontal)
    slider.setRange(-limit_deg * SLIDER_STEPS_PER_DEG, limit_deg * SLIDER_STEPS_PER_DEG)
    slider.setSingleStep(SLIDER_STEPS_PER_DEG)
    slider.setPageStep(5 * SLIDER_STEPS_PER_DEG)
    return slider


class PortraitWorkspace(Workspace):
    """Sample, orbit and film portrait heads, and run the portrait engines (see the module notes).

    ``engine_ready`` is set once the engine may be imported (the window's warm-up): the renderer waits on it.
    """

    name = "portrait"
    title = "Portrait"

    def __init__(self, host: WorkspaceHost, settings: AppSettings, engine_ready: threading.Event | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(host, parent)
        self.settings = settings
        self._engine_ready = engine_ready or threading.Event()
        if engine_ready is None:
            self._engine_ready.set()
        self.prior_path: str | None = None
        """where the prior is read from (None: the embedded one in resources/portrait_prior)"""
        self.session: PortraitSession | None = None
        self.shown: PortraitFrame | None = None
        """the frame on screen (its camera label and request included)"""
        self._started = self._loading = False
        self.renderer = PortraitRenderer(self._engine_ready.wait, self)
        self.renderer.loaded.connect(self._on_loaded)
        self.renderer.load_failed.connect(self._on_load_failed)
        self.renderer.frame_ready.connect(self._on_frame)
        self.renderer.failed.connect(self._on_render_failed)

        self.source_combo = QComboBox()
        self.source_combo.addItem("Embedded prior")
        self.source_combo.addItem("EG3D checkpoint")
        self.source_combo.setToolTip("The embedded prior (synthetic heads, offline) or your EG3D checkpoint "
                                     "(the one in Settings, or Load checkpoint…)")
        self.source_combo.activated.connect(self._on_source_chosen)
        self.load_button = QPushButton("Load checkpoint…")
        self.load_button.setToolTip("An official EG3D network pickle (.pkl), a Live3D/3DPE-style .pth, "
                                    "or a .safetensors file with its meta.json")
        self.load_button.clicked.connect(lambda: self.load_checkpoint())
        self.source_label = QLabel()
        self.source_label.setWordWrap(True)
        self.source_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.valueChanged.connect(lambda _: self._request(interactive=False))
        self.new_head_button = QPushButton("New head")
        self.new_head_button.setToolTip("Sample a head from a random seed")
        self.new_head_button.clicked.connect(self.new_head)
        self.truncation_slider = QSlider(Qt.Orientation.Horizontal)
        self.truncation_slider.setRange(0, 100)
        self.truncation_slider.setToolTip("Truncation psi: lower gives more typical faces, 1 the full variety "
                                          "(EG3D's samples use 0.7)")
        self.truncation_label = QLabel()
        self.yaw_slider, self.pitch_slider = _angle_slider(YAW_LIMIT_DEG), _angle_slider(PITCH_LIMIT_DEG)
        self.yaw_label, self.pitch_label = QLabel(), QLabel()
        for slider in (self.truncation_slider, self.yaw_slider, self.pitch_slider):
            slider.valueChanged.connect(self._on_slider_moved)
            slider.sliderReleased.connect(lambda: self._request(interactive=False))

        self.mode_group = QButtonGroup(self)
        self.mode_buttons: dict[str, QRadioButton] = {}
        for i, (mode, label) in enumerate(MODE_LABELS.items()):
            button = QRadioButton(label)
            self.mode_group.addButton(button, i)
            self.mode_buttons[mode] = button
        self.mode_buttons["rgb"].setChecked(True)
        self.mode_group.idToggled.connect(lambda _, checked: checked and self._request(interactive=False))

        self.frames_spin = QSpinBox()
        self.frames_spin.setRange(2, 1800)
        self.frames_spin.setValue(DEFAULT_VIDEO_FRAMES)
        self.frames_spin.setToolTip(f"Frames of the orbit (30 per second); the head turns ±{VIDEO_YAW_RANGE_DEG:g}° "
                                    "at the current pitch, in the current view mode")
        self.video_button = QPushButton("Render orbit video…")
        self.video_button.clicked.connect(self.render_video_dialog)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.RichText)
        self.status_label.setOpenExternalLinks(True)

        self.view = PortraitView()
        self.view.dragged.connect(self._on_dragged)
        self.view.released.connect(lambda: self._request(interactive=False))

        layout = QHBoxLayout(self)
        layout.addWidget(self.view, 1)
        for name, build in PANELS.items():
            self.add_panel(name, build(self))
        self.docks = [DockSpec("Portrait engines", self.engines, Qt.DockWidgetArea.LeftDockWidgetArea,
                               ENGINES_DOCK_WIDTH)]
        self._set_source_state()

    # ---------------------------------------------------------------------------------- values
    @property
    def yaw(self) -> float:
        return self.yaw_slider.value() / SLIDER_STEPS_PER_DEG

    @property
    def pitch(self) -> float:
        return self.pitch_slider.value() / SLIDER_STEPS_PER_DEG

    @property
    def truncation(self) -> float:
        return self.truncation_slider.value() / 100

    @property
    def mode(self) -> str:
        return next(mode for mode, button in self.mode_buttons.items() if button.isChecked())

    def set_mode(self, mode: str) -> None:
        self.mode_buttons[mode].setChecked(True)

    # ---------------------------------------------------------------------------------- sources
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._started:  # the first time the workspace is shown: the prior, unless told otherwise
            self._started = True
            if self.session is None and not self._loading:
                self.use_prior()

    def use_prior(self) -> None:
        """Load the embedded prior (or ``prior_path``) off the UI thread."""
        self._start_loading("prior", self.prior_path, f"Loading {self.prior_path or 'the embedded prior'}…")

    def load_checkpoint(self, path: str | None = None) -> None:
        """Load an EG3D checkpoint off the UI thread; without ``path`` the user picks one (starting at Settings')."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "EG3D checkpoint", self.settings.eg3d_checkpoint,
                                                  "EG3D checkpoints (*.pkl *.pth *.pt *.safetensors);;All files (*)")
            if not path:
                return
        self._start_loading("checkpoint", str(path), f"Loading {Path(path).name}…")

    def _on_source_chosen(self, row: int) -> None:
        if row == PRIOR_ITEM:
            self.use_prior()
        else:
            self.load_checkpoint(self.settings.eg3d_checkpoint or None)
        self._sync_source_combo()  # until a load succeeds, the combo shows the source in use

    def _start_loading(self, kind: str, path: str | None, message: str) -> None:
        self._started = self._loading = True
        self.source_label.setText(message)
        self.renderer.load(kind, path, self.settings.device)

    def _on_loaded(self, session: "PortraitSession") -> None:
        from engine.portrait.workspace import CHECKPOINT, DEFAULT_TRUNCATION

        self._loading = False
        self.session, self.shown = session, None
        self.source_label.setText(session.source)
        for widget in (self.truncation_slider, self.mode_group):  # one request below, not one per change
            widget.blockSignals(True)
        if session.kind == CHECKPOINT:
            self.settings.eg3d_checkpoint = str(session.path)
            self.truncation_slider.setValue(round(DEFAULT_TRUNCATION * 100))
        if self.mode == "semantic" and not session.semantic_available:
            self.set_mode("rgb")
        for widget in (self.truncation_slider, self.mode_group):
            widget.blockSignals(False)
        log.info("portrait workspace: %s", session.source)
        self._set_source_state()
        self._request(interactive=False)

    def _on_load_failed(self, kind: str, message: str, details: str) -> None:
        self._loading = False
        if kind == "prior":  # e.g. no prior shipped yet: say so here and point at the alternative
            log.warning("portrait workspace: %s", message)
            self.source_label.setText(f"{message}\n\nOr use an EG3D checkpoint: Load checkpoint…")
            return
        self.source_label.setText(self.session.source if self.session is not None
                                  else "No generator loaded: use the embedded prior or Load checkpoint…")
        self.host.show_error(message, details)

    def _sync_source_combo(self) -> None:
        from_checkpoint = self.session is not None and not self.session.semantic_available
        self.source_combo.setCurrentIndex(CHECKPOINT_ITEM if from_checkpoint else PRIOR_ITEM)

    def _set_source_state(self) -> None:
        """Controls for the session in use (or for none)."""
        self._sync_source_combo()
        loaded = self.session is not None
        from_checkpoint = loaded and not self.session.semantic_available
        for widget in (self.seed_spin, self.new_head_button, self.yaw_slider, self.pitch_slider,
                       self.frames_spin, self.video_button, *self.mode_buttons.values()):
            widget.setEnabled(loaded)
        self.truncation_slider.setEnabled(from_checkpoint)
        semantic = self.mode_buttons["semantic"]
        semantic.setEnabled(loaded and not from_checkpoint)
        semantic.setToolTip("Semantic views come with the SemFaceEdit engine" if from_checkpoint
                            else "The head's semantic groups (the synthetic ground truth at this camera)")
        self._update_labels()

    def _update_labels(self) -> None:
        self.yaw_label.setText(f"{self.yaw:+.1f}°")
        self.pitch_label.setText(f"{self.pitch:+.1f}°")
        self.truncation_label.setText(f"{self.truncation:.2f}" if self.truncation_slider.isEnabled() else "—")

    # ------------------------------------------------------------------------------------ views
    def new_head(self) -> None:
        """A head from a random seed."""
        self.seed_spin.setValue(random.randrange(self.seed_spin.maximum()))

    def _on_slider_moved(self) -> None:
        self._update_labels()
        self._request(interactive=self._interacting())

    def _interacting(self) -> bool:
        return self.view.dragging or any(s.isSliderDown() for s in (self.yaw_slider, self.pitch_slider,
                                                                      self.truncation_slider))

    def _on_dragged(self, dx: float, dy: float) -> None:
        """Turn the head as if grabbed: dragging right turns it to its left (the camera moves the other way)."""
        steps = DRAG_DEG_PER_PX * SLIDER_STEPS_PER_DEG
        self.yaw_slider.setValue(round(self.yaw_slider.value() - dx * steps))
        self.pitch_slider.setValue(round(self.pitch_slider.value() + dy * steps))

    def _request(self, interactive: bool) -> None:
        if self.session is None:
            return
        self.renderer.request(ViewRequest(self.session, self.seed_spin.value(), self.truncation, self.yaw,
                                          self.pitch, self.mode, interactive))

    def _on_frame(self, frame: PortraitFrame) -> None:
        if frame.request.session is not self.session:
            return  # rendered from a generator replaced since
        from engine.portrait.workspace import SEMANTIC_LEGEND

        self.shown = frame
        side = frame.image.shape[0]
        mode = frame.request.mode
        semantic = mode == "semantic"
        self.view.set_image(frame.image, f"{MODE_LABELS[mode]} · seed {frame.request.seed} · {side} px",
                            SEMANTIC_LEGEND if semantic else (), smooth=not semantic)

    def _on_render_failed(self, message: str) -> None:
        self.status_label.setText(html.escape(message))

    # ------------------------------------------------------------------------------------ video
    def render_video_dialog(self) -> None:
        """Ask where to write the orbit video, then render it."""
        suggested = str(Path.home() / f"portrait-seed{self.seed_spin.value()}.mp4")
        path, _ = QFileDialog.getSaveFileName(self, "Orbit video", suggested, "MP4 video (*.mp4)")
        if path:
            self.render_video(path if path.lower().endswith(".mp4") else path + ".mp4")

    def render_video(self, path: str | Path) -> "JobRunner | None":
        """Render a looping orbit of the head on screen to ``path`` as a job (progress in the Jobs panel)."""
        if self.shown is None:
            self.host.show_error("Wait for the head to appear, then render its orbit video.")
            return None
        from engine.portrait.workspace import orbit_video_job

        request = self.shown.request
        session, frames, mode = request.session, self.frames_spin.value(), request.mode
        resolution = frame_resolution(session, mode, interactive=False)
        written: list[Path] = []

        def job(cancel):
            snapshot = copy.copy(session)  # the head shown, whatever the workspace samples meanwhile
            snapshot.sample(request.seed, request.truncation)
            yield from orbit_video_job(snapshot, path, frames, VIDEO_YAW_RANGE_DEG, resolution, cancel,
                                       pitch=request.pitch, mode=mode)

        def done(ok: bool) -> None:
            if ok and written:
                url = QUrl.fromLocalFile(str(written[-1].resolve())).toString()
                self.status_label.setText(f'Wrote <a href="{html.escape(url)}">{html.escape(written[-1].name)}</a>')
                log.info("orbit video written to %s", written[-1])

        runner = self.host.run_job("portrait-video", f"Orbit video of seed {request.seed}", job, frozenset({PORTRAIT}),
                                   on_done=done)
        if runner is not None:
            runner.artifact.connect(lambda artifact: written.append(Path(artifact.path)))
            self.status_label.setText(f"Rendering {frames} frames to {html.escape(str(path))}…")
        return runner

    def stop(self) -> None:
        """End the render thread (closing the window)."""
        self.renderer.stop()


def heads_panel(workspace: PortraitWorkspace) -> QWidget:
    """The workspace's own controls: the generator, the head, the camera, the view mode, the orbit video."""
    form = QFormLayout()
    form.addRow("Source:", row(workspace.source_combo, workspace.load_button))
    form.addRow(workspace.source_label)
    form.addRow("Seed:", row(workspace.seed_spin, workspace.new_head_button))
    form.addRow("Truncation:", row(workspace.truncation_slider, workspace.truncation_label))
    form.addRow("Yaw:", row(workspace.yaw_slider, workspace.yaw_label))
    form.addRow("Pitch:", row(workspace.pitch_slider, workspace.pitch_label))
    mode_row = QHBoxLayout()
    for button in workspace.mode_buttons.values():
        mode_row.addWidget(button)
    form.addRow("View:", mode_row)
    form.addRow("Video frames:", row(workspace.frames_spin, workspace.video_button))
    form.addRow(workspace.status_label)
    panel = QWidget()
    column = QVBoxLayout(panel)
    column.addLayout(form)
    column.addStretch(1)
    return panel


PANELS: dict[str, Callable[[PortraitWorkspace], QWidget]] = {"Heads": heads_panel, "3DPE edit": edit_panel,
                                                              "Semantic": semantic_panel, "Styles": styles_panel}
"""the portrait engines' panels, by tab name (a registered method's name: its own panel instead of the form)"""
