"""The Semantic panel's mask painter: a face's picture with its semantic map over it, painted with a brush, an
eraser (back to the map as it was before painting), a flood fill or a rectangle in one of the four groups.
Each stroke is one step of the undo stack it is given; the map after each stroke comes out as ``painted``.

It only paints labels; what painting means (the geometry optimisation) is the panel's business.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPen, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QWidget

from app.portrait.edit_views import PictureView
from app.widgets import numpy_to_qimage
from engine.portrait.semantic import GROUP_COLOURS, GROUPS

TOOLS = ("brush", "eraser", "fill", "rectangle")
"""the painter's tools"""


class StrokeCommand(QUndoCommand):
    """One stroke: the label map before and after it."""

    def __init__(self, painter: MaskPainter, before: np.ndarray, after: np.ndarray, text: str) -> None:
        super().__init__(text)
        self._painter, self._before, self._after = painter, before, after

    def redo(self) -> None:  # noqa: D102 - QUndoCommand protocol (also runs on push)
        self._painter.show_labels(self._after)

    def undo(self) -> None:  # noqa: D102 - QUndoCommand protocol
        self._painter.show_labels(self._before)


def disc(shape: tuple[int, int], centre: np.ndarray, radius: float) -> np.ndarray:
    """The pixels (bool, ``shape``) within ``radius`` of ``centre`` (x, y), at least the one under it."""
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    inside = (cols + 0.5 - centre[0]) ** 2 + (rows + 0.5 - centre[1]) ** 2 <= radius ** 2
    inside[int(np.clip(centre[1], 0, shape[0] - 1)), int(np.clip(centre[0], 0, shape[1] - 1))] = True
    return inside


def flood(labels: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The region (bool) of pixels 4-connected to ``seed`` (row, column) that share its label."""
    from scipy.ndimage import label

    regions, _ = label(labels == labels[seed])
    return regions == regions[seed]


class MaskPainter(PictureView):
    """A picture with its semantic map over it at ``opacity``, painted with the chosen tool in the chosen group."""

    painted = Signal(object)
    """the label map (H, W) after a stroke, an undo or a redo"""

    def __init__(self, undo_stack: QUndoStack, parent: QWidget | None = None) -> None:
        super().__init__("semantic map", 200, parent=parent)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.undo_stack = undo_stack
        self.tool, self.group, self.brush_radius, self.opacity = "brush", GROUPS.index("hair"), 3.0, 0.5
        self.labels: np.ndarray | None = None
        self.original: np.ndarray | None = None
        self._before: np.ndarray | None = None
        self._last: np.ndarray | None = None
        self._corner: np.ndarray | None = None

    def set_picture(self, image: np.ndarray, labels: np.ndarray) -> None:
        """Show a face (H x W x 3 uint8) and its semantic map (H, W group ids), which the eraser restores."""
        self.original = np.array(labels, dtype=np.uint8)
        self.labels = self.original.copy()
        self.set_image(image)

    def show_labels(self, labels: np.ndarray) -> None:
        """Show ``labels`` as the painted map (undo and redo) and report them."""
        self.labels = labels.copy()
        self.update()
        self.painted.emit(self.labels.copy())

    def set_tool(self, tool: str) -> None:
        """One of TOOLS."""
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}: one of {', '.join(TOOLS)}")
        self.tool = tool

    def set_group(self, group: int) -> None:
        """The group painted (an index of GROUPS)."""
        self.group = int(group)

    def set_brush_radius(self, radius: float) -> None:
        """The brush's and the eraser's radius, in pixels of the map."""
        self.brush_radius = max(0.5, float(radius))

    def set_opacity(self, opacity: float) -> None:
        """How strongly the map covers the picture (0 the picture alone, 1 the map alone)."""
        self.opacity = float(np.clip(opacity, 0.0, 1.0))
        self.update()

    def to_map(self, position: QPointF) -> np.ndarray:
        """The map coordinates (x, y, in pixels) under a widget position."""
        target = self.image_rect()
        scale = target.width() / self.labels.shape[1]
        return np.array([(position.x() - target.left()) / scale, (position.y() - target.top()) / scale])

    def _stamp(self, point: np.ndarray) -> None:
        """Brush or erase a segment from the last point to ``point``."""
        start = self._last if self._last is not None else point
        steps = max(1, int(np.ceil(np.linalg.norm(point - start) / max(self.brush_radius / 2, 0.5))))
        for t in np.linspace(0, 1, steps + 1):
            inside = disc(self.labels.shape, start + t * (point - start), self.brush_radius)
            self.labels[inside] = self.group if self.tool == "brush" else self.original[inside]
        self._last = point
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self.labels is None or event.button() != Qt.MouseButton.LeftButton:
            return
        point = self.to_map(event.position())
        height, width = self.labels.shape
        if not (0 <= point[0] < width and 0 <= point[1] < height):
            return
        self._before = self.labels.copy()
        if self.tool == "fill":
            self.labels[flood(self.labels, (int(point[1]), int(point[0])))] = self.group
            self._finish()
        elif self.tool == "rectangle":
            self._corner = point
        else:
            self._last = None
            self._stamp(point)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._before is None:
            return
        if self.tool in ("brush", "eraser"):
            self._stamp(self.to_map(event.position()))
        elif self._corner is not None:
            self._last = self.to_map(event.position())
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._before is None or event.button() != Qt.MouseButton.LeftButton:
            return
        if self.tool == "rectangle" and self._corner is not None:
            end = self.to_map(event.position())
            (x0, y0), (x1, y1) = np.minimum(self._corner, end), np.maximum(self._corner, end)
            height, width = self.labels.shape
            self.labels[max(0, int(y0)):min(height, int(np.ceil(y1))), max(0, int(x0)):min(width, int(np.ceil(x1)))] \
                = self.group
        self._finish()

    def _finish(self) -> None:
        """End a stroke: one undo step when it changed anything."""
        before, after = self._before, self.labels.copy()
        self._before = self._last = self._corner = None
        if not np.array_equal(before, after):
            self.labels = before  # the command's redo (run on push) shows the new map and reports it
            self.undo_stack.push(StrokeCommand(self, before, after, f"{self.tool} ({GROUPS[self.group]})"))
        self.update()

    def paint_overlay(self, painter: QPainter, target: QRectF) -> None:
        if self.labels is None or self.opacity <= 0:
            return
        colours = GROUP_COLOURS[self.labels]
        overlay = numpy_to_qimage(np.ascontiguousarray(colours))
        painter.setOpacity(self.opacity)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(target, overlay)
        painter.setOpacity(1.0)
        if self.tool == "rectangle" and self._corner is not None and self._last is not None:
            scale = target.width() / self.labels.shape[1]
            corner = QPointF(target.left() + self._corner[0] * scale, target.top() + self._corner[1] * scale)
            end = QPointF(target.left() + self._last[0] * scale, target.top() + self._last[1] * scale)
            painter.setPen(QPen(QColor(*GROUP_COLOURS[self.group].tolist()), 1.5, Qt.PenStyle.DashLine))
            painter.drawRect(QRectF(corner, end).normalized())


__all__ = ["MaskPainter", "StrokeCommand", "TOOLS", "disc", "flood"]
