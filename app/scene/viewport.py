"""The live 3D viewport: the newest render of the field as a texture, a mouse-driven orbit camera,
and line overlays (training-camera frustums, scene box, axes, edit-region sphere) drawn with the
current camera, so they follow the mouse at once while the field's frame catches up.

Drawing is legacy fixed-function OpenGL through PyOpenGL: a few thousand line vertices and one
textured quad need nothing more, and every desktop driver (Mesa llvmpipe under Xvfb included)
offers a compatibility context.  Torch is only imported when the widget is constructed (through
``engine.scene.viewer``), so importing this module stays cheap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np
from OpenGL import GL
from PySide6.QtCore import QPoint, QPointF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QKeyEvent, QMouseEvent, QPainter, QWheelEvent
from PySide6.QtOpenGL import QOpenGLWindow
from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from app.scene.render_service import RenderService
    from engine.scene.orbit import OrbitCamera
    from engine.scene.viewer import ViewFrame

CLICK_TOLERANCE_PX = 4
"""a press and release closer than this is a click (point placement), not a drag"""
SETTLE_MS = 250
"""the camera counts as stopped after this long without a change; then the full frame is asked for"""
KEY_ORBIT_PX = 15
"""an arrow key turns the view as far as a mouse drag of this many pixels"""
FRUSTUM_DEPTH = 0.15
"""distance (scene units) from a frustum's apex to its image rectangle"""
AXIS_LENGTH = 0.5
CIRCLE_SEGMENTS = 64

BACKGROUND = (0.11, 0.11, 0.12)
FRUSTUM_COLOUR = (1.0, 0.62, 0.15)
HIGHLIGHT_COLOUR = (0.2, 0.9, 1.0)
BOX_COLOUR = (0.7, 0.7, 0.7)
REGION_COLOUR = (1.0, 0.92, 0.2)
AXIS_COLOURS = ((1.0, 0.25, 0.25), (0.3, 1.0, 0.3), (0.35, 0.5, 1.0))

MODE_LABELS = {"rgb": "RGB", "depth": "Depth", "accumulation": "Accumulation"}


def frustum_segments(c2ws: np.ndarray, fov_y_deg: float | np.ndarray, aspect: float,
                     depth: float = FRUSTUM_DEPTH) -> np.ndarray:
    """Line segments (N, 8, 2, 3) of a small pyramid per camera: apex at the eye, base ``depth`` down −z."""
    c2ws = np.asarray(c2ws, np.float64).reshape(-1, 4, 4)
    half_h = depth * np.tan(np.radians(np.broadcast_to(np.asarray(fov_y_deg, np.float64), (len(c2ws),))) / 2)
    half_w = half_h * aspect
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    corners_cam = np.concatenate([signs[None, :, 0:1] * half_w[:, None, None], signs[None, :, 1:2] *
                                  half_h[:, None, None], np.full((len(c2ws), 4, 1), -depth)], axis=2)
    corners = np.einsum("nij,nkj->nki", c2ws[:, :3, :3], corners_cam) + c2ws[:, None, :3, 3]
    apex = np.broadcast_to(c2ws[:, None, :3, 3], corners.shape)
    sides = np.stack([apex, corners], axis=2)
    rim = np.stack([corners, np.roll(corners, -1, axis=1)], axis=2)
    return np.concatenate([sides, rim], axis=1)


def box_segments(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 12 edges (12, 2, 3) of the axis-aligned box [lo, hi]."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    corner = [np.where(np.array([i & 1, i >> 1 & 1, i >> 2 & 1], bool), hi, lo) for i in range(8)]
    edges = [(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit]
    return np.array([[corner[a], corner[b]] for a, b in edges])


def sphere_segments(centre: np.ndarray, radius: float, segments: int = CIRCLE_SEGMENTS) -> np.ndarray:
    """Three great circles (3*segments, 2, 3) of the sphere, one per coordinate plane."""
    angles = np.linspace(0, 2 * math.pi, segments + 1)
    ring = np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius
    circles = []
    for a, b in ((0, 1), (0, 2), (1, 2)):
        points = np.zeros((segments + 1, 3))
        points[:, a], points[:, b] = ring[:, 0], ring[:, 1]
        points += np.asarray(centre, np.float64)
        circles.append(np.stack([points[:-1], points[1:]], axis=1))
    return np.concatenate(circles)


class Viewport(QOpenGLWindow):
    """Shows the field's newest frame and lets the user move the camera and click on the scene.

    A native OpenGL window, put into layouts through ``widget()``: the rest of the editor window
    then keeps Qt's raster backing store.  (With a QOpenGLWidget every repaint of any widget in the
    window is composited through OpenGL, which under a software rasteriser stalls the UI thread
    for tens of milliseconds per repaint.)

    Signals:
    - ``camera_changed(camera: OrbitCamera, interactive: bool)``: a copy of the camera after each
      move with interactive=True, then once with interactive=False when it has rested ``SETTLE_MS``;
    - ``clicked(x: float, y: float)``: a left click without drag, in widget pixels (point placement).
    """

    camera_changed = Signal(object, bool)
    clicked = Signal(float, float)

    def __init__(self) -> None:
        from engine.scene.orbit import OrbitCamera

        super().__init__()
        self.setMinimumSize(QSize(64, 64))
        self._container: QWidget | None = None
        self.camera: OrbitCamera = OrbitCamera()
        self.image_camera: OrbitCamera | None = None
        """the camera the shown image was rendered from (None for an image from elsewhere)"""
        self._home = OrbitCamera()
        self._image: np.ndarray | None = None
        self._image_dirty = False
        self._label = ""
        self._texture: int | None = None
        self._show = {"frustums": True, "box": True, "axes": True}
        self._frustums = np.zeros((0, 8, 2, 3))
        self._highlight_frustum = np.zeros((0, 8, 2, 3))
        self._box = box_segments(-np.ones(3), np.ones(3))
        self._region: np.ndarray | None = None
        self._region_centre: np.ndarray | None = None
        self._press_pos: QPointF | None = None
        self._last_pos = QPointF()
        self._drag_button = Qt.MouseButton.NoButton
        self._drag_pans = False
        self._dragging = False
        self._moved_since_settle = False
        self._user_moved = False  # the camera moved by the user's hand since the view last rested
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self._on_settled)
        self._service: RenderService | None = None
        self._mode_getter: Callable[[], str] = lambda: "rgb"

    def widget(self) -> QWidget:
        """The widget that holds this window in a layout (made on the first call, then the same)."""
        if self._container is None:
            self._container = QWidget.createWindowContainer(self)
            self._container.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            self._container.setMinimumSize(self.minimumSize())
        return self._container

    def grab_image(self) -> QImage:
        """The viewport as it looks now, drawn afresh and read back (screenshots, tests); a null
        image before the window has its OpenGL context."""
        if not self.isValid():
            return QImage()
        self.makeCurrent()
        self.paintGL()
        image = self.grabFramebuffer()  # reads the back buffer just drawn, before any swap
        self.doneCurrent()
        return image

    # ---- image ------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray, camera: "OrbitCamera | None" = None, label: str = "") -> None:
        """Show ``image`` (H, W, 3 uint8) letterboxed in the widget; ``label`` is drawn in a corner."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"the viewport shows H x W x 3 images, got shape {image.shape}")
        self._image = np.array(image, dtype=np.uint8, order="C", copy=True)  # the caller may reuse its array
        self._image_dirty = True
        self.image_camera = camera.copy() if camera is not None else None
        self._label = label
        self.update()

    # ---- camera -----------------------------------------------------------------------------

    def set_camera(self, camera: "OrbitCamera", by_user: bool = True) -> None:
        """Jump to ``camera`` (copied); ``by_user`` False: restoring a saved view, whose frames a
        training job's steps go before, as for any frame the user did not ask for."""
        self.camera = camera.copy()
        self._camera_moved(by_user)

    def set_home(self, camera: "OrbitCamera") -> None:
        """The view ``reset_view`` returns to (e.g. ``engine.scene.viewer.home_camera(dataset)``)."""
        self._home = camera.copy()

    def reset_view(self) -> None:
        """Back to the home view."""
        self.set_camera(self._home)

    def snap_to(self, c2w: np.ndarray, fov_y_deg: float) -> None:
        """Look exactly through a camera pose (e.g. a training view), orbiting about the home target."""
        from engine.scene.orbit import OrbitCamera

        self.set_camera(OrbitCamera.looking_at(c2w, fov_y_deg, self._home.target))

    def focus_region(self) -> None:
        """Orbit about the edit region's centre (keeps direction and distance); nothing without a region."""
        if self._region_centre is not None:
            self.camera.target = self._region_centre.copy()
            self._camera_moved()

    # ---- overlays ---------------------------------------------------------------------------

    def set_frustums(self, c2ws: np.ndarray, fov_y_deg: float | np.ndarray, aspect: float,
                     highlight: int | None = None) -> None:
        """Training cameras to outline (OpenGL camera-to-world, N x 4 x 4); ``highlight`` in another colour."""
        segments = frustum_segments(c2ws, fov_y_deg, aspect)
        chosen = np.zeros(len(segments), bool)
        if highlight is not None and 0 <= highlight < len(segments):
            chosen[highlight] = True
        self._frustums, self._highlight_frustum = segments[~chosen], segments[chosen]
        self.update()

    def set_box(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """The scene box outline (default [-1, 1]^3)."""
        self._box = box_segments(lo, hi)
        self.update()

    def set_region(self, centre: np.ndarray | None, radius: float) -> None:
        """The edit region's sphere in scene coordinates; None hides it."""
        self._region_centre = None if centre is None else np.asarray(centre, np.float64).copy()
        self._region = None if centre is None else sphere_segments(centre, radius)
        self.update()

    def _set_shown(self, overlay: str, on: bool) -> None:
        self._show[overlay] = bool(on)
        self.update()

    def set_show_frustums(self, on: bool) -> None:
        self._set_shown("frustums", on)

    def set_show_box(self, on: bool) -> None:
        self._set_shown("box", on)

    def set_show_axes(self, on: bool) -> None:
        self._set_shown("axes", on)

    show_frustums = property(lambda self: self._show["frustums"], set_show_frustums)
    show_box = property(lambda self: self._show["box"], set_show_box)
    show_axes = property(lambda self: self._show["axes"], set_show_axes)

    # ---- the render service -----------------------------------------------------------------

    def attach(self, service: "RenderService", mode_getter: Callable[[], str]) -> None:
        """Drive ``service`` from this viewport (call once): a small frame on every camera change or
        resize, the full frame when the camera rests, and each frame it delivers shown here."""
        self._service = service
        self._mode_getter = mode_getter
        service.frame_ready.connect(self._on_frame)

    def refresh(self, quick: bool = False) -> None:
        """Ask for a frame of the current view now (the field changed, e.g. after training steps);
        ``quick``: a low-resolution one, as while the camera moves, and paced so that watching a job
        train costs it little (cheap enough to repeat during training)."""
        self._request_frame(interactive=quick, paced=quick)

    def _request_frame(self, interactive: bool, paced: bool = False) -> None:
        if self._service is not None and self.width() > 0 and self.height() > 0:
            self._service.request(self.camera, self.width(), self.height(), self._mode_getter(), interactive, paced)

    def _on_frame(self, frame: "ViewFrame", interactive: bool) -> None:
        side = max(frame.image.shape[:2])
        self.set_image(frame.image, frame.camera, f"{MODE_LABELS.get(frame.mode, frame.mode)} · {side} px")

    def _camera_moved(self, by_user: bool = True) -> None:
        self._moved_since_settle = True
        self._user_moved |= by_user
        self.camera_changed.emit(self.camera.copy(), True)
        self._view_changed()

    def _view_changed(self) -> None:
        self._request_frame(interactive=True, paced=not self._user_moved)
        self._settle.start()
        self.update()

    def _on_settled(self) -> None:
        """The full frame once the view rests: promptly after the user moved the camera, paced otherwise
        (a resize, a restored view: a training job's steps go first)."""
        by_user, self._user_moved = self._user_moved, False
        if self._moved_since_settle:
            self._moved_since_settle = False
            self.camera_changed.emit(self.camera.copy(), False)
        self._request_frame(interactive=False, paced=not by_user)

    # ---- input ------------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._press_pos = event.position()
        self._last_pos = event.position()
        self._drag_button = event.button()
        self._drag_pans = (event.button() in (Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton)
                           or bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier))
        self._dragging = False
        if self._container is not None:
            self._container.setFocus()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._press_pos is None:
            return
        pos = event.position()
        if not self._dragging:
            travel = pos - self._press_pos
            if max(abs(travel.x()), abs(travel.y())) < CLICK_TOLERANCE_PX:
                return
            self._dragging = True
        dx, dy = pos.x() - self._last_pos.x(), pos.y() - self._last_pos.y()
        self._last_pos = pos
        if self._drag_pans:
            self.camera.pan(dx, dy, self.height())
        else:
            self.camera.orbit(dx, dy)
        self._camera_moved()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if (self._press_pos is not None and not self._dragging and event.button() == Qt.MouseButton.LeftButton
                and self._drag_button == Qt.MouseButton.LeftButton):
            self.clicked.emit(float(event.position().x()), float(event.position().y()))
        self._press_pos = None
        self._dragging = False

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        steps = event.angleDelta().y() / 120
        if steps:
            self.camera.zoom(steps)
            self._camera_moved()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        key = event.key()
        orbit = {Qt.Key.Key_Left: (-KEY_ORBIT_PX, 0), Qt.Key.Key_Right: (KEY_ORBIT_PX, 0),
                 Qt.Key.Key_Up: (0, -KEY_ORBIT_PX), Qt.Key.Key_Down: (0, KEY_ORBIT_PX)}
        if key in orbit:
            self.camera.orbit(*orbit[key])
            self._camera_moved()
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.camera.zoom(1)
            self._camera_moved()
        elif key == Qt.Key.Key_Minus:
            self.camera.zoom(-1)
            self._camera_moved()
        elif key == Qt.Key.Key_R:
            self.reset_view()
        elif key == Qt.Key.Key_F:
            self.focus_region()
        else:
            super().keyPressEvent(event)

    def resizeGL(self, width: int, height: int) -> None:  # noqa: N802 - Qt override
        self._view_changed()

    # ---- drawing ----------------------------------------------------------------------------

    def initializeGL(self) -> None:  # noqa: N802 - Qt override
        self._texture = int(GL.glGenTextures(1))
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._texture)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MIN_FILTER, GL.GL_LINEAR)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_MAG_FILTER, GL.GL_LINEAR)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_S, GL.GL_CLAMP_TO_EDGE)
        GL.glTexParameteri(GL.GL_TEXTURE_2D, GL.GL_TEXTURE_WRAP_T, GL.GL_CLAMP_TO_EDGE)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
        self._image_dirty = self._image is not None  # a new context has an empty texture
        self.context().aboutToBeDestroyed.connect(self._release_gl)

    def _release_gl(self) -> None:
        if self._texture is not None:
            self.makeCurrent()
            GL.glDeleteTextures([self._texture])
            self._texture = None
            self.doneCurrent()

    def paintGL(self) -> None:  # noqa: N802 - Qt override
        GL.glClearColor(*BACKGROUND, 1.0)
        GL.glClear(GL.GL_COLOR_BUFFER_BIT | GL.GL_DEPTH_BUFFER_BIT)
        GL.glDisable(GL.GL_DEPTH_TEST)
        GL.glDisable(GL.GL_LIGHTING)
        if self._image is not None and self._texture is not None:
            self._draw_image()
        self._draw_overlays()
        if self._label:
            self._draw_label()

    def _draw_image(self) -> None:
        height, width = self._image.shape[:2]
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._texture)
        if self._image_dirty:
            GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
            GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGB8, width, height, 0, GL.GL_RGB, GL.GL_UNSIGNED_BYTE,
                            self._image)
            GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 4)  # Qt's own uploads (the label's glyphs) expect the default
            self._image_dirty = False
        image_aspect, widget_aspect = width / height, self.width() / max(self.height(), 1)
        # letterbox: the image keeps its aspect, bars fill the rest (half-extents in normalised device coordinates)
        if image_aspect > widget_aspect:
            sx, sy = 1.0, widget_aspect / image_aspect
        else:
            sx, sy = image_aspect / widget_aspect, 1.0
        GL.glMatrixMode(GL.GL_PROJECTION)
        GL.glLoadIdentity()
        GL.glMatrixMode(GL.GL_MODELVIEW)
        GL.glLoadIdentity()
        GL.glEnable(GL.GL_TEXTURE_2D)
        GL.glTexEnvi(GL.GL_TEXTURE_ENV, GL.GL_TEXTURE_ENV_MODE, GL.GL_REPLACE)
        GL.glBegin(GL.GL_QUADS)
        # image row 0 is the top of the picture and the first row of the texture (t = 0)
        for (s, t), (x, y) in (((0, 1), (-sx, -sy)), ((1, 1), (sx, -sy)), ((1, 0), (sx, sy)), ((0, 0), (-sx, sy))):
            GL.glTexCoord2f(s, t)
            GL.glVertex2f(x, y)
        GL.glEnd()
        GL.glDisable(GL.GL_TEXTURE_2D)
        GL.glBindTexture(GL.GL_TEXTURE_2D, 0)

    def _draw_overlays(self) -> None:
        layers: list[tuple[np.ndarray, tuple[float, float, float], float]] = []
        if self._show["box"]:
            layers.append((self._box, BOX_COLOUR, 1.0))
        if self._show["axes"]:
            for axis, colour in enumerate(AXIS_COLOURS):
                end = np.zeros(3)
                end[axis] = AXIS_LENGTH
                layers.append((np.array([[np.zeros(3), end]]), colour, 2.0))
        if self._show["frustums"]:
            layers.append((self._frustums, FRUSTUM_COLOUR, 1.0))
            layers.append((self._highlight_frustum, HIGHLIGHT_COLOUR, 2.5))
        if self._region is not None:
            layers.append((self._region, REGION_COLOUR, 1.5))
        layers = [layer for layer in layers if layer[0].size]
        if not layers:
            return
        aspect = self.width() / max(self.height(), 1)
        GL.glMatrixMode(GL.GL_PROJECTION)
        GL.glLoadMatrixd(np.ascontiguousarray(self.camera.projection(aspect).T))  # row-major → GL's column-major
        GL.glMatrixMode(GL.GL_MODELVIEW)
        GL.glLoadMatrixd(np.ascontiguousarray(self.camera.view_matrix().T))
        GL.glEnable(GL.GL_LINE_SMOOTH)
        GL.glEnableClientState(GL.GL_VERTEX_ARRAY)
        for segments, colour, width in layers:
            vertices = np.ascontiguousarray(segments.reshape(-1, 3), dtype=np.float64)
            GL.glLineWidth(width)
            GL.glColor3f(*colour)
            GL.glVertexPointer(3, GL.GL_DOUBLE, 0, vertices)
            GL.glDrawArrays(GL.GL_LINES, 0, len(vertices))
        GL.glDisableClientState(GL.GL_VERTEX_ARRAY)
        GL.glDisable(GL.GL_LINE_SMOOTH)
        GL.glLineWidth(1.0)
        GL.glMatrixMode(GL.GL_PROJECTION)
        GL.glLoadIdentity()
        GL.glMatrixMode(GL.GL_MODELVIEW)
        GL.glLoadIdentity()

    def _draw_label(self) -> None:
        painter = QPainter(self)
        font = painter.font()
        font.setPointSizeF(9)
        painter.setFont(font)
        box = painter.fontMetrics().boundingRect(self._label).adjusted(-6, -3, 6, 3)
        box.moveTopLeft(QPoint(8, 8))
        painter.fillRect(box, QColor(0, 0, 0, 150))
        painter.setPen(QColor(235, 235, 235))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, self._label)
        painter.end()
