"""The Semantic panel's mask painter (pytest-qt under Xvfb): brush, eraser, fill and rectangle strokes change the
label map where the user painted, each stroke is one undo step, and the overlay shows the map at its opacity."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtGui import QUndoStack  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from app.portrait.mask_painter import MaskPainter  # noqa: E402
from engine.portrait.semantic import GROUP_COLOURS, GROUPS  # noqa: E402

BACKGROUND, HAIR, FACE, GARMENT = (GROUPS.index(g) for g in ("background", "hair", "face", "garment"))


@pytest.fixture
def painter(qtbot):
    stack = QUndoStack()
    widget = MaskPainter(stack)
    widget.resize(320, 320)  # a 32² map drawn 10 widget pixels a map pixel
    labels = np.full((32, 32), BACKGROUND, np.uint8)
    labels[8:24, 10:22] = FACE
    widget.set_picture(np.full((32, 32, 3), 128, np.uint8), labels)
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitExposed(widget)
    widget.stack = stack
    return widget


def at(x: float, y: float) -> QPoint:
    """The widget position of map pixel centre (x, y)."""
    return QPoint(int(10 * x + 5), int(10 * y + 5))


def drag(widget, points):
    QTest.mousePress(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(*points[0]))
    for point in points[1:]:
        QTest.mouseMove(widget, at(*point))
    QTest.mouseRelease(widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(*points[-1]))


def test_a_brush_stroke_paints_its_path_in_the_group_and_is_one_undo_step(painter, qtbot):
    original = painter.labels.copy()
    painter.set_group(HAIR)
    painter.set_brush_radius(1.5)
    with qtbot.waitSignal(painter.painted) as reported:
        drag(painter, [(4, 4), (10, 4), (16, 4)])
    assert (painter.labels[4, 4:17] == HAIR).all()  # the whole path, not only where the mouse events fell
    assert (painter.labels[10:, :] == original[10:, :]).all()  # nothing far from it
    assert np.array_equal(reported.args[0], painter.labels)
    assert painter.stack.count() == 1
    painter.stack.undo()
    assert np.array_equal(painter.labels, original)
    painter.stack.redo()
    assert (painter.labels[4, 4:17] == HAIR).all()


def test_the_eraser_restores_the_map_as_it_was(painter):
    original = painter.labels.copy()
    painter.set_group(GARMENT)
    painter.set_tool("fill")
    drag(painter, [(15, 15)])  # the face region becomes garment
    assert (painter.labels[8:24, 10:22] == GARMENT).all() and (painter.labels[0] == BACKGROUND).all()
    painter.set_tool("eraser")
    painter.set_brush_radius(2)
    drag(painter, [(15, 15), (15, 17)])
    assert (painter.labels[15:18, 15] == FACE).all() and painter.labels[8, 10] == GARMENT
    assert painter.stack.count() == 2
    painter.stack.undo()
    painter.stack.undo()
    assert np.array_equal(painter.labels, original)


def test_a_rectangle_fills_its_box_and_a_stroke_that_changes_nothing_is_no_step(painter):
    painter.set_tool("rectangle")
    painter.set_group(HAIR)
    drag(painter, [(2, 2), (5, 3), (6, 4)])
    assert (painter.labels[2:5, 2:7] == HAIR).all() and painter.labels[5, 2] == BACKGROUND
    painter.set_tool("fill")
    painter.set_group(BACKGROUND)
    drag(painter, [(30, 30)])  # background filled with background
    assert painter.stack.count() == 1


def test_the_overlay_shows_the_map_at_its_opacity(painter):
    painter.set_opacity(1.0)
    shown = painter.grab().toImage().pixelColor(at(15, 15))
    assert (shown.red(), shown.green(), shown.blue()) == tuple(GROUP_COLOURS[FACE])
    painter.set_opacity(0.0)
    shown = painter.grab().toImage().pixelColor(at(15, 15))
    assert (shown.red(), shown.green(), shown.blue()) == (128, 128, 128)
    with pytest.raises(ValueError, match="unknown tool 'spray'"):
        painter.set_tool("spray")
