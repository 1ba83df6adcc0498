"""The picture widgets of the Portrait tab's 3DPE page (app.portrait.edit_panel): an image letterboxed with a
caption (PictureView, which can take a dropped image file), the photo with its five draggable landmarks
(LandmarkView) and the edit with its before / after wipe (WipeView).

They only show pictures and report the user's clicks, drags and drops as signals; the page decides what those
mean.  They live apart from the page to keep each module small.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.portrait.orbit_drag import OrbitDrag
from app.widgets import numpy_to_qimage

GRAB_RADIUS_PX = 14
"""how near a landmark a press must be to drag it"""
LANDMARK_LABELS = ("L eye", "R eye", "nose", "L mouth", "R mouth")
"""short names drawn beside the five landmarks, in engine.portrait.alignment's order"""
LANDMARK_COLOURS = ((66, 165, 245), (102, 187, 106), (255, 202, 40), (239, 83, 80), (171, 71, 188))


class PictureView(QWidget):
    """An image letterboxed in the widget with a caption in a corner.  With ``accepts_files`` an image file
    dropped on it comes out as ``dropped(path)``."""

    dropped = Signal(str)

    def __init__(self, caption: str = "", minimum: int = 120, accepts_files: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(minimum, minimum)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAcceptDrops(accepts_files)
        self.image: QImage | None = None
        self.caption = caption

    def set_image(self, image: np.ndarray | QImage | None, caption: str | None = None) -> None:
        """Show ``image`` (H x W x 3 uint8, a QImage, or None for nothing), with ``caption`` if given."""
        if isinstance(image, np.ndarray):
            image = numpy_to_qimage(image)
        self.image = None if image is None or image.isNull() else image  # a null image: a file gone since
        if caption is not None:
            self.caption = caption
        self.update()

    def image_rect(self) -> QRectF:
        """Where the image is drawn (empty without one)."""
        if self.image is None:
            return QRectF()
        scale = min(self.width() / self.image.width(), self.height() / self.image.height())
        width, height = self.image.width() * scale, self.image.height() * scale
        return QRectF((self.width() - width) / 2, (self.height() - height) / 2, width, height)

    def paint_overlay(self, painter: QPainter, target: QRectF) -> None:
        """Draw over the image (subclasses)."""

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(28, 28, 31))
        if self.image is not None:
            target = self.image_rect()
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            painter.drawImage(target, self.image)
            self.paint_overlay(painter, target)
        if self.caption:
            box = QRectF(painter.fontMetrics().boundingRect(self.caption).adjusted(-5, -2, 5, 2))
            box.moveTopLeft(QPointF(6, 6))
            painter.fillRect(box, QColor(0, 0, 0, 150))
            painter.setPen(QColor(235, 235, 235))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, self.caption)
        painter.end()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if _dropped_file(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        path = _dropped_file(event)
        if path is not None:
            event.acceptProposedAction()
            self.dropped.emit(path)


def _dropped_file(event: QDragEnterEvent | QDropEvent) -> str | None:
    """The local file being dropped, if any."""
    urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
    return urls[0].toLocalFile() if urls and urls[0].isLocalFile() else None


class LandmarkView(PictureView):
    """The photo with its five landmarks; each can be dragged.  Without landmarks, in clicking mode, the user
    clicks them in order.  ``edited(points, done)``: the landmarks so far ((n, 2) photo pixels) after each
    click or move; ``done`` when the fifth is clicked or a dragged one is let go."""

    edited = Signal(object, bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("photo", 200, accepts_files=True, parent=parent)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.points: list[np.ndarray] = []
        self.clicking = False
        self._grabbed: int | None = None

    def set_photo(self, image: np.ndarray, points: np.ndarray | None, clicking: bool) -> None:
        """Show ``image`` with ``points`` ((5, 2) or None); ``clicking``: the user places them."""
        self.points = [] if points is None else [np.array(p, dtype=np.float64) for p in points]
        self.clicking, self._grabbed = clicking, None
        self.set_image(image)

    def to_widget(self, point: np.ndarray) -> QPointF:
        """A photo pixel's place in the widget."""
        target = self.image_rect()
        scale = target.width() / self.image.width()
        return QPointF(target.left() + point[0] * scale, target.top() + point[1] * scale)

    def to_photo(self, position: QPointF) -> np.ndarray:
        """The photo pixel under ``position``, kept inside the photo."""
        target = self.image_rect()
        scale = target.width() / self.image.width()
        return np.array([np.clip((position.x() - target.left()) / scale, 0, self.image.width()),
                         np.clip((position.y() - target.top()) / scale, 0, self.image.height())])

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self.image is None or event.button() != Qt.MouseButton.LeftButton:
            return
        if self.clicking and len(self.points) < len(LANDMARK_LABELS):
            self.points.append(self.to_photo(event.position()))
            self.update()
            self.edited.emit(np.array(self.points), len(self.points) == len(LANDMARK_LABELS))
            return
        distances = [(self.to_widget(p) - event.position()).manhattanLength() for p in self.points]
        if distances and min(distances) <= GRAB_RADIUS_PX:
            self._grabbed = int(np.argmin(distances))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._grabbed is not None:
            self.points[self._grabbed] = self.to_photo(event.position())
            self.update()
            self.edited.emit(np.array(self.points), False)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._grabbed is not None and event.button() == Qt.MouseButton.LeftButton:
            self._grabbed = None
            self.edited.emit(np.array(self.points), True)

    def paint_overlay(self, painter: QPainter, target: QRectF) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for point, label, colour in zip(self.points, LANDMARK_LABELS, LANDMARK_COLOURS):
            centre = self.to_widget(point)
            painter.setPen(QPen(QColor(0, 0, 0), 1.5))
            painter.setBrush(QColor(*colour))
            painter.drawEllipse(centre, 5, 5)
            painter.setPen(QColor(*colour))
            painter.drawText(centre + QPointF(8, 4), label)


class WipeView(OrbitDrag, PictureView):
    """The edit, turned by a left drag (``dragged(dx, dy)`` in pixels), with the input crop laid over its left
    ``wipe`` fraction for a before / after comparison."""

    dragged = Signal(float, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("result", 200, parent=parent)
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # a click gives the page the keyboard (undo, redo)
        self.before: QImage | None = None
        self.wipe = 0.0

    def set_before(self, image: np.ndarray | None) -> None:
        self.before = None if image is None else numpy_to_qimage(image)
        self.update()

    def set_wipe(self, fraction: float) -> None:
        self.wipe = fraction
        self.update()

    def paint_overlay(self, painter: QPainter, target: QRectF) -> None:
        if self.before is None or self.wipe <= 0:
            return
        split = target.left() + target.width() * self.wipe
        painter.save()
        painter.setClipRect(QRectF(target.left(), target.top(), split - target.left(), target.height()))
        painter.drawImage(target, self.before)
        painter.restore()
        painter.setPen(QPen(QColor(255, 255, 255), 2))
        painter.drawLine(QPointF(split, target.top()), QPointF(split, target.bottom()))
