"""The dataset strip: every training view as a thumbnail, original beside its edit, and a
compare pane that wipes between the two.

Edits live in the project's ``EditStore`` (engine/editing/store.py).  The strip never writes
images: reverting a view or stepping through its versions only moves the store's pointer, and
each move is a ``QUndoCommand`` on ``undo_stack`` so the Edit menu can undo it.  The edit job
writes through its own ``EditStore`` on the worker thread, so the strip re-reads the index from
disk before it shows or changes anything; its in-memory copy is never trusted to be current.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (QColor, QIcon, QImage, QMouseEvent, QPainter, QPaintEvent, QPen, QPixmap, QUndoCommand,
                           QUndoStack)
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem, QPushButton, QSizePolicy,
                               QSlider, QVBoxLayout, QWidget)

from app.widgets import numpy_to_qimage

if TYPE_CHECKING:  # engine.core.project imports torch (~1 s); the window must appear before that is needed
    from engine.editing.store import EditStore

THUMBNAIL_HEIGHT = 96
COMPARE_PANE_WIDTH = 440
"""the selected view's wipe comparison and its version buttons, beside the thumbnails"""
_GAP = 2  # pixels between the original and the edited half of a thumbnail
_NAME_ROLE = Qt.ItemDataRole.UserRole


def _thumbnail(image: QImage) -> QImage:
    return image.scaledToHeight(THUMBNAIL_HEIGHT, Qt.TransformationMode.SmoothTransformation)


class ViewVersionCommand(QUndoCommand):
    """Moves one view from version ``old_index`` to ``new_index`` (-1: the original) and back on undo."""

    def __init__(self, apply: Callable[[str, int], None], view: str, old_index: int, new_index: int,
                 text: str) -> None:
        super().__init__(text)
        self._apply = apply
        self.view = view
        self.old_index = old_index
        self.new_index = new_index

    def redo(self) -> None:  # noqa: D102 - QUndoCommand protocol (also runs on push)
        self._apply(self.view, self.new_index)

    def undo(self) -> None:  # noqa: D102 - QUndoCommand protocol
        self._apply(self.view, self.old_index)


class CompareView(QWidget):
    """One image that is the edit left of the split and the original right of it (a wipe).

    Without an edit it shows the original alone.  Clicking or dragging in the image moves the
    split, reported through ``split_dragged`` so the slider stays the one source of truth.
    """

    split_dragged = Signal(int)  # percent, 0..100

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._original: QImage | None = None
        self._edited: QImage | None = None
        self._split = 50
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_images(self, original: QImage | None, edited: QImage | None) -> None:
        """Show ``original`` (and ``edited`` left of the split, when given); None clears the pane."""
        self._original = original
        self._edited = edited
        self.update()

    def set_split(self, percent: int) -> None:
        """Percentage of the image width, from the left, that shows the edit."""
        self._split = max(0, min(100, int(percent)))
        self.update()

    def image_rect(self) -> QRect:
        """Where the image is drawn: as large as fits, centred, aspect ratio kept."""
        if self._original is None or self._original.isNull():
            return QRect()
        size = self._original.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        top_left = QPoint((self.width() - size.width()) // 2, (self.height() - size.height()) // 2)
        return QRect(top_left, size)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: D102, N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().window())
        target = self.image_rect()
        if target.isEmpty():
            painter.end()
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        if self._edited is None:
            painter.drawImage(target, self._original)
            painter.end()
            return
        split_x = target.left() + round(target.width() * self._split / 100)
        painter.save()
        painter.setClipRect(QRect(target.left(), target.top(), split_x - target.left(), target.height()))
        painter.drawImage(target, self._edited)
        painter.setClipRect(QRect(split_x, target.top(), target.right() + 1 - split_x, target.height()))
        painter.drawImage(target, self._original)
        painter.restore()
        painter.setPen(QPen(QColor(255, 255, 255), 1))
        painter.drawLine(split_x, target.top(), split_x, target.bottom())
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: D102, N802 - Qt override
        self._drag_split(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: D102, N802 - Qt override
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._drag_split(event)

    def _drag_split(self, event: QMouseEvent) -> None:
        target = self.image_rect()
        if self._edited is None or target.isEmpty():
            return
        percent = 100 * (event.position().x() - target.left()) / max(1, target.width())
        self.split_dragged.emit(max(0, min(100, round(percent))))


class DatasetStrip(QWidget):
    """Thumbnails of every training view (original | edit), a compare pane and edit-history controls."""

    view_selected = Signal(str)
    snap_requested = Signal(str)  # double-click: move the viewport to that training camera
    edits_changed = Signal(str)  # a view's current version changed here (revert, undo, version step)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._names: list[str] = []
        self._originals: list[np.ndarray] = []
        self._original_thumbnails: list[QImage] = []
        self._store: EditStore | None = None
        self._selected: str | None = None
        self.undo_stack = QUndoStack(self)

        self.thumbnail_list = QListWidget()
        self.thumbnail_list.setViewMode(QListView.ViewMode.IconMode)
        self.thumbnail_list.setFlow(QListView.Flow.LeftToRight)
        self.thumbnail_list.setWrapping(False)
        self.thumbnail_list.setMovement(QListView.Movement.Static)
        self.thumbnail_list.setResizeMode(QListView.ResizeMode.Adjust)
        self.thumbnail_list.setSpacing(4)
        self.thumbnail_list.setIconSize(QSize(THUMBNAIL_HEIGHT, THUMBNAIL_HEIGHT))
        self.thumbnail_list.setFixedHeight(THUMBNAIL_HEIGHT + 72)  # icon, two text lines, scroll bar
        self.thumbnail_list.currentItemChanged.connect(self._on_current_item_changed)
        self.thumbnail_list.itemDoubleClicked.connect(
            lambda item: self.snap_requested.emit(item.data(_NAME_ROLE)))

        self.compare_view = CompareView()
        self.compare_slider = QSlider(Qt.Orientation.Horizontal)
        self.compare_slider.setRange(0, 100)
        self.compare_slider.setValue(50)
        self.compare_slider.setToolTip("Left of the line: the edit; right of it: the original capture")
        self.compare_slider.valueChanged.connect(self.compare_view.set_split)
        self.compare_view.split_dragged.connect(self.compare_slider.setValue)

        self.version_label = QLabel()
        self.version_label.setWordWrap(True)
        self.previous_button = QPushButton("◀ Older")
        self.next_button = QPushButton("Newer ▶")
        self.revert_button = QPushButton("Revert")
        self.revert_button.setToolTip("Show the original capture for this view again (the edits stay in its history)")
        self.undo_button = QPushButton("Undo")
        self.redo_button = QPushButton("Redo")
        self.previous_button.setToolTip("Use the previous saved edit of this view")
        self.next_button.setToolTip("Use the next saved edit of this view")
        self.previous_button.clicked.connect(lambda: self._step_version(-1))
        self.next_button.clicked.connect(lambda: self._step_version(+1))
        self.revert_button.clicked.connect(self.revert_selected)
        self.undo_button.clicked.connect(self.undo_stack.undo)
        self.redo_button.clicked.connect(self.undo_stack.redo)
        self.undo_stack.canUndoChanged.connect(self._update_controls)
        self.undo_stack.canRedoChanged.connect(self._update_controls)
        self._history_locked = False

        slider_row = QHBoxLayout()
        slider_row.addWidget(QLabel("Edited"))
        slider_row.addWidget(self.compare_slider, 1)
        slider_row.addWidget(QLabel("Original"))
        buttons = QHBoxLayout()
        for button in (self.previous_button, self.next_button, self.revert_button, self.undo_button,
                       self.redo_button):
            buttons.addWidget(button)
        compare_column = QVBoxLayout()
        compare_column.addWidget(self.version_label)
        compare_column.addWidget(self.compare_view, 1)
        compare_column.addLayout(slider_row)
        compare_column.addLayout(buttons)
        compare_pane = QWidget()
        compare_pane.setLayout(compare_column)
        compare_pane.setFixedWidth(COMPARE_PANE_WIDTH)
        compare_column.setContentsMargins(0, 0, 0, 0)
        layout = QHBoxLayout(self)  # thumbnails on the left, the selected view compared on the right
        layout.addWidget(self.thumbnail_list, 1)
        layout.addWidget(compare_pane)
        self._update_controls()

    @property
    def store(self) -> EditStore | None:
        """The edit store as last read from disk (None when no project is open)."""
        return self._store

    @property
    def selected_view(self) -> str | None:
        return self._selected

    def set_views(self, names: list[str], originals: list[np.ndarray], store: EditStore | None) -> None:
        """Show these training views (``originals``: HxWx3 uint8, same order); clears the undo history."""
        if len(names) != len(originals):
            raise ValueError(f"{len(names)} view names but {len(originals)} images")
        self.undo_stack.clear()  # its commands belong to the previous project's store
        self._names = list(names)
        self._originals = list(originals)
        self._original_thumbnails = [_thumbnail(numpy_to_qimage(img)) for img in originals]
        self._store = store
        self._selected = None
        self.thumbnail_list.clear()
        for name in self._names:
            item = QListWidgetItem()
            item.setData(_NAME_ROLE, name)
            self.thumbnail_list.addItem(item)
        self.refresh_all()

    def refresh_all(self) -> None:
        """Re-read every view's edit from the store (after an edit job or when a project opens)."""
        self._reload_store()
        for row in range(self.thumbnail_list.count()):
            self._update_item(self.thumbnail_list.item(row))
        self._fit_grid()
        self._show_selected()

    def refresh_view(self, name: str) -> None:
        """Re-read one view from the store (the edit job reported a new edit); unknown names are ignored."""
        if name not in self._names:
            return
        self._reload_store()
        self._update_item(self.thumbnail_list.item(self._names.index(name)))
        self._fit_grid()
        if name == self._selected:
            self._show_selected()

    def select_view(self, name: str) -> None:
        """Select ``name`` as if its thumbnail was clicked."""
        self.thumbnail_list.setCurrentRow(self._names.index(name))

    def revert_selected(self) -> None:
        """Show the selected view's original again (undoable)."""
        if self._selected is None or self._store is None:
            return
        self._reload_store()
        old = self._store.current_index(self._selected)
        if old >= 0:
            self.undo_stack.push(ViewVersionCommand(self._apply_version, self._selected, old, -1,
                                                    f"Revert view {self._selected}"))

    def is_edited(self, name: str) -> bool:
        """True when ``name`` currently uses an edited image instead of its original."""
        return self._store is not None and self._store.current_index(name) >= 0

    def _reload_store(self) -> None:
        # The edit job writes through its own EditStore; construct afresh to see its index on disk.
        if self._store is not None:
            from engine.editing.store import EditStore

            self._store = EditStore(self._store.root.parent)

    def _step_version(self, delta: int) -> None:
        if self._selected is None or self._store is None:
            return
        self._reload_store()
        old = self._store.current_index(self._selected)
        new = old + delta
        if not -1 <= new < len(self._store.history(self._selected)):
            return
        label = "the original" if new < 0 else f"version {new + 1}"
        self.undo_stack.push(ViewVersionCommand(self._apply_version, self._selected, old, new,
                                                f"Show {label} of {self._selected}"))

    def _apply_version(self, view: str, index: int) -> None:
        self._reload_store()
        self._store.set_current(view, index)
        if view in self._names:
            self._update_item(self.thumbnail_list.item(self._names.index(view)))
        if view == self._selected:
            self._show_selected()
        self.edits_changed.emit(view)

    def _fit_grid(self) -> None:
        """One cell per view, as wide as its thumbnail: the original alone, or beside its edit once
        any view is edited; room for two lines of text, so nothing overlaps and no gaps open."""
        widest = max((thumb.width() for thumb in self._original_thumbnails), default=0)
        paired = self._store is not None and any(self._store.current_index(name) >= 0 for name in self._names)
        icon = QSize(max(THUMBNAIL_HEIGHT, 2 * widest + _GAP if paired else widest), THUMBNAIL_HEIGHT)
        if icon != self.thumbnail_list.iconSize():
            self.thumbnail_list.setIconSize(icon)
            self.thumbnail_list.setGridSize(
                QSize(icon.width() + 12, icon.height() + 2 * self.fontMetrics().height() + 12))

    def _update_item(self, item: QListWidgetItem) -> None:
        name = item.data(_NAME_ROLE)
        original = self._original_thumbnails[self._names.index(name)]
        edited = self._store.current(name) if self._store is not None else None
        if edited is None:
            item.setIcon(QIcon(QPixmap.fromImage(original)))
            item.setText(name)
            item.setToolTip(f"{name}: original capture")
            return
        edited_thumb = _thumbnail(numpy_to_qimage(edited))
        pixmap = QPixmap(original.width() + _GAP + edited_thumb.width(), THUMBNAIL_HEIGHT)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.drawImage(0, 0, original)
        painter.drawImage(original.width() + _GAP, 0, edited_thumb)
        painter.end()
        version = self._store.current_index(name) + 1
        item.setIcon(QIcon(pixmap))
        item.setText(f"{name}\nedited (v{version})")
        item.setToolTip(f"{name}: original (left) and edit version {version} (right)")

    def _on_current_item_changed(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        self._selected = current.data(_NAME_ROLE) if current is not None else None
        self._show_selected()
        if self._selected is not None:
            self.view_selected.emit(self._selected)

    def _show_selected(self) -> None:
        if self._selected is None:
            self.compare_view.set_images(None, None)
        else:
            original = numpy_to_qimage(self._originals[self._names.index(self._selected)])
            edited = self._store.current(self._selected) if self._store is not None else None
            self.compare_view.set_images(original, numpy_to_qimage(edited) if edited is not None else None)
        self._update_controls()

    def set_history_locked(self, locked: bool) -> None:
        """Lock revert, version steps and undo / redo while a job writes the views' edits (it would
        overwrite a change made meanwhile); browsing and comparing stay available."""
        self._history_locked = locked
        self._update_controls()

    @property
    def history_locked(self) -> bool:
        """Whether revert, version steps and undo / redo are locked (see ``set_history_locked``)."""
        return self._history_locked

    def _update_controls(self) -> None:
        view, store = self._selected, self._store
        versions = len(store.history(view)) if view is not None and store is not None else 0
        current = store.current_index(view) if view is not None and store is not None else -1
        unlocked = not self._history_locked
        self.compare_slider.setEnabled(current >= 0)
        self.revert_button.setEnabled(unlocked and current >= 0)
        self.previous_button.setEnabled(unlocked and current >= 0)
        self.next_button.setEnabled(unlocked and current < versions - 1)
        self.undo_button.setEnabled(unlocked and self.undo_stack.canUndo())
        self.redo_button.setEnabled(unlocked and self.undo_stack.canRedo())
        if view is None:
            self.version_label.setText("Select a view to compare it with its edit.")
        elif versions == 0:
            self.version_label.setText(f"{view}: original, never edited")
        elif current < 0:
            plural = "" if versions == 1 else "s"
            self.version_label.setText(f"{view}: original ({versions} edit{plural} in its history)")
        else:
            self.version_label.setText(f"{view}: edit {current + 1} of {versions}")
