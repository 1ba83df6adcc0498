"""Rendering portrait views off the UI thread, and the widget that shows them.

Loading a generator and rendering views run on one LatestRequestWorker (app.coalescing): a view request replaces
any not yet started, so dragging costs one render at a time.  A head's triplanes are computed once
(engine.portrait.workspace), so orbiting only re-renders them.  The engine is imported on the worker thread, after
the window's engine warm-up (``wait_ready``).
"""


from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QPoint, QRect, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.coalescing import LatestRequestWorker
from app.portrait.orbit_drag import OrbitDrag
from app.settings import resolve_device
from app.widgets import numpy_to_qimage
from engine.core.errors import UserInputError

if TYPE_CHECKING:
    from engine.portrait.workspace import PortraitSession

log = logging.getLogger(__name__)

DRAG_RESOLUTION = 64
"""side of the frames shown while the user drags (at most the generator's neural rendering resolution)"""
FULL_RESOLUTION = 512
"""largest side of a full frame (the generator's output size when smaller)"""
SEMANTIC_DRAG_RESOLUTION, SEMANTIC_RESOLUTION = 32, 64
"""sides of semantic frames: ground truth is sphere traced, which is slow on a CPU"""


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


class PortraitView(OrbitDrag, QWidget):
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
        self._smooth = True

    def set_image(self, image: np.ndarray, label: str, legend: tuple = (), smooth: bool = True) -> None:
        """Show ``image`` (HxWx3 uint8) with ``label`` in a corner and ``legend`` ((name, RGB) pairs) below it;
        ``smooth`` False scales it up in blocks (label maps)."""
        self.image = numpy_to_qimage(image)
        self.label, self.legend, self._smooth = label, legend, smooth
        self.update()

    def drag_released(self) -> None:
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
            line = metrics.height() + 4
            width = line + 12 + max(metrics.horizontalAdvance(name) for name, _ in self.legend)
            top = self.height() - 8 - len(self.legend) * line
            painter.fillRect(QRect(4, top - 4, width, len(self.legend) * line + 4), QColor(0, 0, 0, 150))
            for i, (name, colour) in enumerate(self.legend):
                painter.fillRect(QRect(8, top + i * line, line, line - 4), QColor(*colour))
                painter.drawText(QPoint(14 + line, top + i * line + metrics.ascent()), name)
        painter.end()
