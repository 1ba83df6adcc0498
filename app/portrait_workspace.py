"""The Portrait workspace: heads from the embedded prior or a user's EG3D checkpoint, orbited with
sliders or a left drag on the image, seen as RGB, depth or semantic groups, filmed as orbit videos.

Nothing here waits on the engine.  Loading a generator and rendering views run on one
LatestRequestWorker (app.coalescing): a view request replaces any not yet started, so dragging
costs one render at a time; while the user drags (the image or a slider) frames are small, and the
full frame is asked for when they let go.  A head's triplanes are computed once
(engine.portrait.workspace), so orbiting only re-renders them.  The orbit video is an engine job run
by the window's JobRunner, with its progress in the Jobs panel.  The engine is imported on the
worker thread, after the window's engine warm-up (``wait_ready``).
"""

from __future__ import annotations

import copy
import html
import logging
import random
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QPoint, QPointF, QRect, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QShowEvent
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton,
                               QRadioButton, QSizePolicy, QSlider, QSpinBox, QVBoxLayout, QWidget)

from app.coalescing import LatestRequestWorker
from app.settings import AppSettings, resolve_device
from app.widgets import numpy_to_qimage, row
from engine.core.errors import UserInputError

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
DRAG_RESOLUTION = 64
"""side of the frames shown while the user drags (at most the generator's neural rendering resolution)"""
FULL_RESOLUTION = 512
"""largest side of a full frame (the generator's output size when smaller)"""
SEMANTIC_DRAG_RESOLUTION, SEMANTIC_RESOLUTION = 32, 64
"""sides of semantic frames: ground truth is sphere traced, which is slow on a CPU"""
DEFAULT_VIDEO_FRAMES = 90
VIDEO_YAW_RANGE_DEG = 30.0
MODE_LABELS = {"rgb": "RGB", "depth": "Depth", "semantic": "Semantic"}
PRIOR_ITEM, CHECKPOINT_ITEM = 0, 1
"""rows of the source combo box"""


@dataclass(frozen=True)
class ViewRequest:
    """What to show: which head of which session, from where, how."""

    session: "PortraitSession"
    seed: int
    truncation: float
    yaw: float
    pitch: float
    mode: str
    interactive: bool


@dataclass(frozen=True)
class PortraitFrame:
    """A rendered view: the image (HxWx3 uint8), the camera label (25,) it was rendered from, its request."""

    image: np.ndarray
    camera: np.ndarray
    request: ViewRequest


@dataclass(frozen=True)
class _LoadRequest:
    kind: str  # engine.portrait.workspace.PRIOR or CHECKPOINT
    path: str | None
    device: str  # a DEVICES choice


def frame_resolution(session: "PortraitSession", mode: str, interactive: bool) -> int:
    """The side a view is rendered at: small raw renders while dragging, the generator's output when still."""
    if mode == "semantic":
        return SEMANTIC_DRAG_RESOLUTION if interactive else SEMANTIC_RESOLUTION
    generator = session.generator
    if interactive:
        return min(DRAG_RESOLUTION, generator.neural_rendering_resolution)
    return min(FULL_RESOLUTION, generator.img_resolution)


class PortraitRenderer(QObject):
    """Loads generators and renders views on one worker thread, the newest request of each kind first
    (a load before views).  Results arrive as signals on the UI thread:

    - ``loaded(session)``; ``load_failed(kind, message, details)`` for a load of ``kind`` (details
      empty for a CheckpointError, whose message says it all);
    - ``frame_ready(PortraitFrame)``; ``failed(message)`` for a view that could not be rendered.
    """

    loaded = Signal(object)
    load_failed = Signal(str, str, str)
    frame_ready = Signal(object)
    failed = Signal(str)

    def __init__(self, wait_ready: Callable[[], None] = lambda: None, parent: QObject | None = None) -> None:
        """``wait_ready`` blocks the worker until the engine may be imported (the window's warm-up)."""
        super().__init__(parent)
        self._wait_ready = wait_ready
        self._worker = LatestRequestWorker("portrait-render", self._handle, self._on_error, kinds=("load", "frame"))
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)

    def load(self, kind: str, path: str | None, device: str) -> None:
        """Load the prior (``path`` None: the embedded one) or a checkpoint on ``device`` (a DEVICES choice)."""
        self._worker.submit("load", _LoadRequest(kind, path, device))

    def request(self, view: ViewRequest) -> None:
        """Render ``view``; replaces any view request not yet started."""
        self._worker.submit("frame", view)

    def stop(self) -> None:
        """Finish the work in progress and end the worker thread (idempotent)."""
        self._worker.stop()

    def _handle(self, kind: str, request: _LoadRequest | ViewRequest) -> None:
        if kind == "load":
            self._load(request)
            return
        session = request.session
        session.sample(request.seed, request.truncation)
        camera = session.camera(request.yaw, request.pitch)
        image = session.render(camera, request.mode, frame_resolution(session, request.mode, request.interactive))
        self._emit(self.frame_ready, PortraitFrame(image, camera, request))

    def _load(self, request: _LoadRequest) -> None:
        self._wait_ready()
        from engine.portrait.workspace import PRIOR, PortraitSession

        try:
            device = resolve_device(request.device)
            session = (PortraitSession.from_prior(request.path, device) if request.kind == PRIOR
                       else PortraitSession.from_checkpoint(request.path, device))
        except UserInputError as exc:
            self._emit(self.load_failed, request.kind, str(exc), "")
        except Exception as exc:  # noqa: BLE001 - any failure reaches the user as a message
            log.exception("portrait generator could not be loaded")
            self._emit(self.load_failed, request.kind, f"Could not load the portrait generator: {exc}",
                       traceback.format_exc())
        else:
            self._emit(self.loaded, session)

    def _emit(self, signal: Signal, *values: object) -> None:
        # emitted from the worker thread: Qt queues it to receivers on the UI thread
        if not self._worker.stopped:
            signal.emit(*values)

    def _on_error(self, kind: str, exc: Exception) -> None:
        """A view that failed is a message; the next request may well work."""
        log.exception("portrait view could not be rendered")
        self._emit(self.failed, f"Could not render the portrait view: {exc}")


class PortraitView(QWidget):
    """The rendered head, letterboxed, with its mode in a corner and a legend for semantic views.

    Left drag turns the head: ``dragged(dx, dy)`` in pixels while the button is held,
    ``released()`` when it is let go (the full frame is asked for then).
    """

    dragged = Signal(float, float)
    released = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        self.image: QImage | None = None
        self.label = ""
        self.legend: tuple[tuple[str, tuple[int, int, int]], ...] = ()
        """(name, RGB) pairs drawn in the lower corner; empty when the view needs none"""
        self.dragging = False
        self._smooth = True
        self._last: QPointF | None = None

    def set_image(self, image: np.ndarray, label: str, legend: tuple = (), smooth: bool = True) -> None:
        """Show ``image`` (HxWx3 uint8) with ``label`` in a corner and ``legend`` ((name, RGB) pairs) below it;
        ``smooth`` False scales it up in blocks (label maps)."""
        self.image = numpy_to_qimage(image)
        self.label, self.legend, self._smooth = label, legend, smooth
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton:
            self._last = event.position()
            self.dragging = True
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._last is not None:
            delta = event.position() - self._last
            self._last = event.position()
            self.dragged.emit(delta.x(), delta.y())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton and self._last is not None:
            self._last = None
            self.dragging = False
            self.setCursor(Qt.CursorShape.OpenHandCursor)
            self.released.emit()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(28, 28, 31))
        if self.image is not None:
            side = min(self.width(), self.height())
            target = QRect((self.width() - side) // 2, (self.height() - side) // 2, side, side)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._smooth)
            painter.drawImage(target, self.image)
        metrics = painter.fontMetrics()
        painter.setPen(QColor(235, 235, 235))
        if self.label:
            box = metrics.boundingRect(self.label).adjusted(-6, -3, 6, 3)
            box.moveTopLeft(QPoint(8, 8))
            painter.fillRect(box, QColor(0, 0, 0, 150))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, self.label)
        if self.legend:
            row = metrics.height() + 4
            width = row + 12 + max(metrics.horizontalAdvance(name) for name, _ in self.legend)
            top = self.height() - 8 - len(self.legend) * row
            painter.fillRect(QRect(4, top - 4, width, len(self.legend) * row + 4), QColor(0, 0, 0, 150))
            for i, (name, colour) in enumerate(self.legend):
                painter.fillRect(QRect(8, top + i * row, row, row - 4), QColor(*colour))
                painter.drawText(QPoint(14 + row, top + i * row + metrics.ascent()), name)
        painter.end()


def _angle_slider(limit_deg: int) -> QSlider:
    slider = QSlider(Qt.Orientation.Horizontal)
    slider.setRange(-limit_deg * SLIDER_STEPS_PER_DEG, limit_deg * SLIDER_STEPS_PER_DEG)
    slider.setSingleStep(SLIDER_STEPS_PER_DEG)
    slider.setPageStep(5 * SLIDER_STEPS_PER_DEG)
    return slider


class PortraitWorkspace(QWidget):
    """Sample, orbit and film portrait heads (see the module notes).

    ``run_job(kind, title, make_job, on_done)`` is the window's job starter (it returns the JobRunner,
    or None when another job runs); errors the user must see are emitted as ``error(message, details)``.
    """

    error = Signal(str, str)

    def __init__(self, settings: AppSettings, run_job: Callable[..., "JobRunner | None"],
                 wait_ready: Callable[[], None] = lambda: None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.prior_path: str | None = None
        """where the prior is read from (None: the embedded one in resources/portrait_prior)"""
        self.session: PortraitSession | None = None
        self.shown: PortraitFrame | None = None
        """the frame on screen (its camera label and request included)"""
        self._run_job = run_job
        self._started = self._loading = False
        self.renderer = PortraitRenderer(wait_ready, self)
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
        mode_row = QHBoxLayout()
        for i, (mode, label) in enumerate(MODE_LABELS.items()):
            button = QRadioButton(label)
            self.mode_group.addButton(button, i)
            self.mode_buttons[mode] = button
            mode_row.addWidget(button)
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

        form = QFormLayout()
        form.addRow("Source:", row(self.source_combo, self.load_button))
        form.addRow(self.source_label)
        form.addRow("Seed:", row(self.seed_spin, self.new_head_button))
        form.addRow("Truncation:", row(self.truncation_slider, self.truncation_label))
        form.addRow("Yaw:", row(self.yaw_slider, self.yaw_label))
        form.addRow("Pitch:", row(self.pitch_slider, self.pitch_label))
        form.addRow("View:", mode_row)
        form.addRow("Video frames:", row(self.frames_spin, self.video_button))
        form.addRow(self.status_label)
        controls = QWidget()
        controls.setMaximumWidth(380)
        column = QVBoxLayout(controls)
        column.addLayout(form)
        column.addStretch(1)
        layout = QHBoxLayout(self)
        layout.addWidget(controls)
        layout.addWidget(self.view, 1)
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
        self.error.emit(message, details)

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
            self.error.emit("Wait for the head to appear, then render its orbit video.", "")
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

        runner = self._run_job("portrait-video", f"Orbit video of seed {request.seed}", job, on_done=done)
        if runner is not None:
            runner.artifact.connect(lambda artifact: written.append(Path(artifact.path)))
            self.status_label.setText(f"Rendering {frames} frames to {html.escape(str(path))}…")
        return runner

    def stop(self) -> None:
        """End the render thread (closing the window)."""
        self.renderer.stop()
