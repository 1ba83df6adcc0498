"""Viewer frames rendered off the UI thread, small while the camera moves and full when it stops.

The viewport asks for a frame on every camera change; rendering one takes longer than the
mouse takes to move, so requests are coalesced (app.coalescing): a single worker thread renders
only the newest pending request and drops the ones it overtook.  While the camera moves
(``interactive``) the frame's side is adjusted after every frame by how far its render time
was from ``frame_budget_s``, so frames settle at about that cost and the view keeps up with
the mouse; when it stops the
full-size frame is rendered with final-quality sampling.  Results come back as Qt signals,
delivered on the UI thread.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import QCoreApplication, QObject, Signal

from app.coalescing import LatestRequestWorker

if TYPE_CHECKING:
    from engine.scene.orbit import OrbitCamera
    from engine.scene.viewer import FieldView, ViewFrame

log = logging.getLogger(__name__)

FULL_MIN_SIDE = 128
"""full frames are never smaller than this, however slow the field renders"""
FULL_SIDE_GROWTH = 2.0
"""a full frame's side at most doubles from one to the next (the field speeds up as it trains)"""


SIDE_STEP_LIMIT = 1.5
"""an interactive frame's side changes by at most this factor from one frame to the next: follows
load changes (a training job starting) within a few frames without jumping on one slow frame"""


@dataclass
class _FrameRequest:
    camera: "OrbitCamera"
    width: int
    height: int
    mode: str
    interactive: bool
    paced: bool


@dataclass
class _PickRequest:
    camera: "OrbitCamera"
    width: int
    height: int
    x: float
    y: float


class RenderService(QObject):
    """Renders ``FieldView`` frames and picks on one worker thread; never blocks the caller.

    Signals (all delivered on the UI thread):
    - ``frame_ready(frame: ViewFrame, interactive: bool)``: a rendered frame and whether it was
      asked for while the camera moved (a low-resolution one);
    - ``failed(message: str)``: a render or pick raised (a plain sentence; the traceback is logged);
      the service keeps running;
    - ``picked(point: np.ndarray | None)``: the scene point under a ``pick``, None for empty space
      or when no field is set.
    """

    frame_ready = Signal(object, bool)
    failed = Signal(str)
    picked = Signal(object)

    # The worker emits these; their slots live on this object, so Qt queues them onto the UI thread.
    _frame_done = Signal(object, bool)
    _failure = Signal(str)
    _pick_done = Signal(object)

    def __init__(self, frame_budget_s: float = 0.07, max_side: int = 512, min_side: int = 32,
                 first_interactive_side: int = 128, full_budget_s: float = 0.8,
                 parent: QObject | None = None) -> None:
        """Interactive frames aim at ``frame_budget_s`` seconds with a longer side in [``min_side``,
        full]; full frames are capped at ``max_side`` on their longer side and shrink when they take
        longer than ``full_budget_s`` (a barely trained field is slow to render).  Until a frame has
        been timed, an interactive frame's longer side is ``first_interactive_side``."""
        super().__init__(parent)
        self.frame_budget_s = frame_budget_s
        self.full_budget_s = full_budget_s
        self.max_side = max_side
        self.min_side = min_side
        self.first_interactive_side = first_interactive_side
        self._view: FieldView | None = None
        # a click answers before the next frame: the user waits on it, frames keep coming anyway
        self._worker = LatestRequestWorker("viewer-render", self._handle, self._on_error, kinds=("pick", "frame"))
        self._interactive_side: float | None = None  # worker-owned
        self._full_side: float | None = None  # worker-owned
        self._frame_done.connect(self._deliver_frame)
        self._failure.connect(self.failed)
        self._pick_done.connect(self.picked)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)

    def set_field(self, view: "FieldView | None") -> None:
        """Render from ``view`` from now on (None: render nothing; requests are dropped)."""
        self._view = view

    def request(self, camera: "OrbitCamera", width: int, height: int, mode: str = "rgb",
                interactive: bool = False, paced: bool = False) -> None:
        """Ask for a frame of ``camera`` for a ``width`` x ``height`` view; replaces any request not yet started.
        ``paced``: a refresh the user did not ask for, which a training job's steps go before (engine LiveField)."""
        if width < 1 or height < 1:
            return
        self._worker.submit("frame", _FrameRequest(camera.copy(), int(width), int(height), mode, interactive, paced))

    def pick(self, camera: "OrbitCamera", width: int, height: int, x: float, y: float) -> None:
        """Find the scene point at pixel (x, y) of a ``width`` x ``height`` view; answered by ``picked``."""
        self._worker.submit("pick", _PickRequest(camera.copy(), int(width), int(height), float(x), float(y)))

    def stop(self) -> None:
        """Finish the frame in progress, drop pending requests and end the worker thread (idempotent)."""
        self._worker.stop()

    def frame_size(self, width: int, height: int, interactive: bool) -> tuple[int, int]:
        """The size a frame for a ``width`` x ``height`` view is rendered at now (see the class notes)."""
        cap = self.max_side if self._full_side is None else min(self.max_side, self._full_side)
        scale = min(1.0, cap / max(width, height))
        full_w, full_h = max(1, round(width * scale)), max(1, round(height * scale))
        if not interactive:
            return full_w, full_h
        full_long = max(full_w, full_h)
        side = self.first_interactive_side if self._interactive_side is None else self._interactive_side
        side = min(full_long, max(self.min_side, round(side)))
        shrink = side / full_long
        return max(1, round(full_w * shrink)), max(1, round(full_h * shrink))

    def _handle(self, kind: str, request: "_FrameRequest | _PickRequest") -> None:
        view = self._view
        if kind == "pick":
            self._pick(view, request)
        elif view is not None and view.ready:
            self._render(view, request)

    def _on_error(self, kind: str, exc: Exception) -> None:
        """A failed frame or pick is a message; the viewer keeps going."""
        what = "pick the point under the mouse" if kind == "pick" else "render the view"
        log.exception("viewer could not %s", what)  # the details go to the log dock
        self._failure.emit(f"Could not {what}: {exc}")

    def _render(self, view: "FieldView", req: _FrameRequest) -> None:
        from engine.scene.render import PREVIEW_STEP_SCALE

        if req.paced and view.live.training:
            # the field changes with every step: a resting frame nobody asked for is a quick one
            req = dataclasses.replace(req, interactive=True)
        width, height = self.frame_size(req.width, req.height, req.interactive)
        step_scale = PREVIEW_STEP_SCALE if req.interactive else 1.0
        frame = view.render(req.camera, width, height, req.mode, step_scale=step_scale, paced=req.paced)
        if req.interactive:
            # A frame costs a fixed part (rays, marching set-up) plus a part per pixel, so scale the
            # side by the square root of budget / time, step by step, rather than assuming pure per-pixel cost.
            factor = math.sqrt(self.frame_budget_s / max(frame.seconds, 1e-6))
            factor = min(SIDE_STEP_LIMIT, max(1 / SIDE_STEP_LIMIT, factor))
            self._interactive_side = min(self.max_side, max(self.min_side, max(width, height) * factor))
            if self._full_side is None:  # no full frame timed yet: guess its side from this one's cost
                per_pixel = frame.seconds * PREVIEW_STEP_SCALE / (width * height)  # full quality: finer steps
                aspect = min(width, height) / max(width, height)
                self._full_side = max(FULL_MIN_SIDE, math.sqrt(self.full_budget_s / (per_pixel * aspect)))
        else:
            factor = min(FULL_SIDE_GROWTH, math.sqrt(self.full_budget_s / max(frame.seconds, 1e-6)))
            self._full_side = max(FULL_MIN_SIDE, max(width, height) * factor)
        self._frame_done.emit(frame, req.interactive)

    def _pick(self, view: "FieldView | None", req: _PickRequest) -> None:
        point = None
        if view is not None and view.ready:
            point = view.pick(req.camera, req.width, req.height, req.x, req.y)
        self._pick_done.emit(point)

    def _deliver_frame(self, frame: "ViewFrame", interactive: bool) -> None:
        if not self._worker.stopped:
            self.frame_ready.emit(frame, interactive)
