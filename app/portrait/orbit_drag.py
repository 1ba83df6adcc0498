"""Left-drag turning, shared by the views that show a head (the Portrait tab's viewport and the 3DPE result)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QMouseEvent


class OrbitDrag:
    """Mixed into a QWidget that has a ``dragged(float, float)`` signal: a left drag emits it with the pointer's
    movement in pixels, then ``drag_released()`` runs when the button is let go; the cursor is an open hand, closed
    while dragging.  List it before the widget class so its mouse handlers are the ones Qt calls."""

    _last: QPointF | None = None

    @property
    def dragging(self) -> bool:
        """Whether the left button is held on the view."""
        return self._last is not None

    def drag_released(self) -> None:
        """Called when a drag ends; nothing by default."""

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton:
            self._last = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._last is not None:
            delta = event.position() - self._last
            self._last = event.position()
            self.dragged.emit(delta.x(), delta.y())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton and self._last is not None:
            self._last = None
            self.setCursor(Qt.CursorShape.OpenHandCursor)
            self.drag_released()
