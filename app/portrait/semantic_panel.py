"""The Portrait tab's Semantic page (SemFaceEdit, engine.portrait.semantic): a face with its semantic map, painted
to change its shape in 3D, and each group's look (or shape) taken from another face.

Show a face (by seed, a random one, or a face folder written by ``portrait semantic invert`` / ``paint``): the
left view shows it from the yaw / pitch sliders (or a left drag on it); the right one is the mask painter
(app.portrait.mask_painter) over the painted view.  Paint with the brush, eraser, fill or rectangle in a group,
then Apply: the geometry is optimised (engine.portrait.semantic_edit.paint_geometry) and both views follow live
until it ends (Cancel stops it).  Each group's row takes that group's look, or shape, from another face, or a
random look.  Export writes views with their maps, an orbit video and a mesh with each vertex's group.  Strokes
and edits are steps of one undo stack (Ctrl+Z / Ctrl+Shift+Z): undoing an edit brings the face before it back.

Nothing waits on the engine: the generator runs on one LatestRequestWorker (SemanticWorker), newest request
first; the session factory is a parameter, so tests run the page on a tiny generator.
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal
from PySide6.QtGui import QKeySequence, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (QButtonGroup, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QPushButton, QSlider,
                               QSpinBox, QToolButton, QVBoxLayout, QWidget)

from app.coalescing import LatestRequestWorker
from app.portrait.edit_views import PictureView
from app.portrait.mask_painter import TOOLS, MaskPainter
from app.portrait.orbit_drag import OrbitDrag
from app.widgets import error_label
from engine.core.errors import UserInputError
from engine.core.jobs import CancelToken
from engine.portrait.semantic import GROUP_COLOURS, GROUPS, LABEL_ORDERS, group_table

if TYPE_CHECKING:
    from app.portrait.workspace import PortraitWorkspace
    from engine.portrait.semantic_edit import SemanticSession

log = logging.getLogger(__name__)

SessionFactory = Callable[[], "SemanticSession"]
YAW_LIMIT_DEG, PITCH_LIMIT_DEG = 30, 20
"""how far the face turns (the embedded generator's trained range)"""
DRAG_DEG_PER_PX = 0.4
"""a left drag across the face turns it this many degrees per pixel"""
LIVE_EVERY = 5
"""optimisation steps between live frames"""
EXPORT_SIZE = 256
"""side of exported views and video frames"""
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff);;All files (*)"


def _session() -> "SemanticSession":
    from engine.portrait.semantic_edit import SemanticSession
    from engine.portrait.semantic_training import load_semantic

    return SemanticSession(load_semantic())


@dataclass(frozen=True)
class Edit:
    """What the page asks of the worker."""

    kind: str
    """seed, random, folder, invert, align (a photo to paint), take, paint, restore, export, or view"""
    yaw: float
    pitch: float
    paint_view: tuple[float, float]
    values: dict[str, Any] = field(default_factory=dict)
    cancel: CancelToken = field(default_factory=CancelToken)

    def describe(self) -> str:
        v = self.values
        return {"seed": f"face {v.get('seed')}", "random": "a random face", "folder": f"face from {v.get('folder')}",
                "take": f"{GROUPS[v.get('group', 0)]} {'shape' if v.get('shape') else 'look'} from "
                        f"{v.get('donor', 'a random face')}",
                "paint": "painted shape", "restore": v.get("what", ""),
                "export": f"export to {v.get('folder')}", "invert": f"inverted {Path(v.get('photo', '')).name}",
                "align": f"aligned {Path(v.get('photo', '')).name}"}[self.kind]


@dataclass(frozen=True)
class Frame:
    """A rendered face: the orbit view, and the painted view with its map."""

    view: np.ndarray | None
    paint_image: np.ndarray | None
    paint_labels: np.ndarray | None
    """None for work that shows nothing new (an export, aligning a photo to paint)"""
    styles: Any
    """the face's styles (an undo step holds them)"""
    edit: Edit
    done: bool
    """the edit's last frame (an intermediate one while optimising otherwise)"""


class SemanticWorker(QObject):
    """Runs the page's edits and views on one worker thread, newest first; results as signals on the UI thread:
    ``frame_ready(Frame)``, ``progress(step, steps)``, ``exported(files, folder)``, ``aligned(crop, photo)`` (a
    photo to paint the map of), ``failed(message, details)``."""

    frame_ready = Signal(object)
    progress = Signal(int, int)
    failed = Signal(str, str)
    exported = Signal(int, str)
    aligned = Signal(object, str)

    def __init__(self, session_factory: SessionFactory, size: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._factory, self.size = session_factory, size
        self._session: SemanticSession | None = None
        self._worker = LatestRequestWorker("semantic", self._handle, self._on_error, kinds=("edit", "view"))
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)

    def submit(self, edit: Edit) -> None:
        self._worker.submit("view" if edit.kind == "view" else "edit", edit)

    def stop(self) -> None:
        self._worker.stop()

    def _handle(self, kind: str, edit: Edit) -> None:
        if self._session is None:
            self._session = self._factory()
        session = self._session
        if edit.kind == "view":
            if session.styles is not None:
                self._emit_frame(edit, session.styles, done=True)
            return
        for step, steps, styles in self._run(session, edit):
            self._emit(self.progress, step, steps)
            if step == steps or step % LIVE_EVERY == 0:
                self._emit_frame(edit, styles, done=step == steps)

    def _run(self, session: "SemanticSession", edit: Edit):
        """(step, steps, styles) as the edit goes; the session's styles become the last ones."""
        from engine.portrait.semantic_edit import PaintSettings, load_face

        v = edit.values
        if edit.kind == "export":
            yield from self._export(session, edit)
            return
        if edit.kind == "invert":
            yield from self._invert(session, edit)
            return
        if edit.kind == "align":
            from engine.portrait.alignment import portrait_input

            self._emit(self.aligned, portrait_input(v["photo"]).image, v["photo"])
            yield 1, 1, session.styles
            return
        if edit.kind in ("seed", "random", "folder", "restore"):
            if edit.kind == "restore":
                styles = v["styles"]
            elif edit.kind == "folder":
                styles = load_face(v["folder"], session.generator)
            else:
                styles = session.seed_styles(v["seed"])
            session.styles = styles
            yield 1, 1, styles
            return
        settings = PaintSettings(steps=v.get("steps", 50))
        if edit.kind == "take":
            donor = session.seed_styles(v["donor"])
            found = session.taking(v["group"], donor, v.get("shape", False), settings, edit.cancel)
        else:
            found = session.painting(v["painted"], *edit.paint_view, settings, edit.cancel)
        steps = settings.steps if edit.kind == "paint" or v.get("shape") else 0
        last = session.styles
        for step, _, last in found:
            if step < steps and not edit.cancel.cancelled:
                yield step, steps, last  # live frames while it optimises
        session.styles = last
        yield steps, steps, last

    def _invert(self, session: "SemanticSession", edit: Edit):
        """Find a photo in the generator (its label map, or the face-parsing model's), the face following live."""
        from engine.portrait.semantic_edit import InvertSettings, invert, photo_face

        v = edit.values
        face = photo_face(v["photo"], v.get("labels"), v.get("order", "celebamask"), face_parser=v.get("parser"),
                          painted=v.get("painted"))
        settings = InvertSettings(steps=v.get("steps", 50))
        styles = session.styles
        for step, _, styles in invert(session.generator, face.image, face.labels, face.camera, settings, edit.cancel):
            if step < settings.steps:
                yield step, settings.steps, styles
        session.styles = styles
        yield settings.steps, settings.steps, styles

    def _export(self, session: "SemanticSession", edit: Edit):
        """Write the face's views with their maps, an orbit video and a mesh into the chosen folder."""
        from engine.portrait.semantic_edit import write_outputs, write_views

        folder = Path(edit.values["folder"])
        folder.mkdir(parents=True, exist_ok=True)
        written = write_views(session.generator, session.styles, folder, [-30.0, 0.0, 30.0], "face", EXPORT_SIZE)
        written += write_outputs(session.generator, session.styles, folder, "face", True, True, size=EXPORT_SIZE)
        self._emit(self.exported, len(written), str(folder))
        yield 1, 1, session.styles

    def _emit_frame(self, edit: Edit, styles: Any, done: bool) -> None:
        if edit.kind in ("export", "align"):  # nothing new to show: the page only learns the work ended
            self._emit(self.frame_ready, Frame(None, None, None, styles, edit, done))
            return
        session = self._session
        kept, session.styles = session.styles, styles
        try:
            image, labels = session.render(*edit.paint_view, self.size)
            view = image if (edit.yaw, edit.pitch) == edit.paint_view else session.render(edit.yaw, edit.pitch,
                                                                                          self.size)[0]
        finally:
            session.styles = kept if not done else styles
        self._emit(self.frame_ready, Frame(view, image, labels, styles, edit, done))

    def _emit(self, signal: Signal, *values: object) -> None:
        if not self._worker.stopped:
            signal.emit(*values)

    def _on_error(self, kind: str, exc: Exception) -> None:
        if isinstance(exc, UserInputError):
            self._emit(self.failed, str(exc), "")
            return
        log.exception("Semantic page: the %s failed", kind)
        self._emit(self.failed, f"Could not edit the face: {exc}", traceback.format_exc())


class FaceView(OrbitDrag, PictureView):
    """The face, turned by a left drag (``dragged(dx, dy)`` in pixels)."""

    dragged = Signal(float, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("face", 200, parent=parent)
        self.setCursor(Qt.CursorShape.OpenHandCursor)


class FaceCommand(QUndoCommand):
    """One edit of the face: its styles before and after."""

    def __init__(self, page: SemanticPage, before: Any, after: Any, text: str) -> None:
        super().__init__(text)
        self._page, self._before, self._after = page, before, after
        self._first = True

    def redo(self) -> None:  # noqa: D102 - QUndoCommand protocol (also runs on push: the face is shown already)
        if not self._first:
            self._page.restore(self._after, f"redone: {self.text()}")
        self._first = False

    def undo(self) -> None:  # noqa: D102 - QUndoCommand protocol
        self._page.restore(self._before, f"undone: {self.text()}")


class SemanticPage(QWidget):
    """Semantic editing of one face (see the module notes)."""

    def __init__(self, session_factory: SessionFactory | None = None, size: int = 128,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.worker = SemanticWorker(session_factory or _session, size, self)
        self.worker.frame_ready.connect(self._on_frame)
        self.worker.progress.connect(self._on_progress)
        self.worker.failed.connect(self._on_failed)
        self.worker.exported.connect(self._on_exported)
        self.worker.aligned.connect(self._on_aligned)
        self.undo_stack = QUndoStack(self)
        self.styles: Any = None
        """the face on screen (None before one is shown)"""
        self.paint_view = (0.0, 0.0)
        """the view the painter shows (yaw, pitch)"""
        self._painted: tuple[float, float] | None = None
        """the view whose map the painter holds"""
        self.running: Edit | None = None
        self.photo_to_invert: str | None = None
        """a photo whose map is being painted (Apply then inverts it)"""

        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, 2**31 - 1)
        self.seed_box.setPrefix("face ")
        show = QPushButton("Show")
        show.clicked.connect(lambda: self.show_face(self.seed_box.value()))
        shuffle = QPushButton("Random face")
        shuffle.clicked.connect(lambda: self.show_face(random.randrange(2**31)))
        open_face = QPushButton("Open face…")
        open_face.setToolTip("A face folder from portrait semantic invert or paint (face.safetensors)")
        open_face.clicked.connect(lambda: self.open_face())

        self.view = FaceView()
        self.view.dragged.connect(self._on_drag)
        self.painter = MaskPainter(self.undo_stack)
        self.yaw_slider, self.pitch_slider = QSlider(Qt.Orientation.Horizontal), QSlider(Qt.Orientation.Horizontal)
        for slider, limit in ((self.yaw_slider, YAW_LIMIT_DEG), (self.pitch_slider, PITCH_LIMIT_DEG)):
            slider.setRange(-limit, limit)
            slider.valueChanged.connect(self._on_orbit)
        paint_here = QPushButton("Paint this view")
        paint_here.setToolTip("Paint the map of the view the sliders show")
        paint_here.clicked.connect(self._paint_this_view)

        tools = QHBoxLayout()
        self.tool_buttons = QButtonGroup(self)
        for tool in TOOLS:
            button = QToolButton()
            button.setText(tool)
            button.setCheckable(True)
            button.setChecked(tool == "brush")
            button.clicked.connect(lambda _=False, t=tool: self.painter.set_tool(t))
            self.tool_buttons.addButton(button)
            tools.addWidget(button)
        self.group_buttons = QButtonGroup(self)
        for k, group in enumerate(GROUPS):
            button = QToolButton()
            button.setText(group)
            button.setCheckable(True)
            button.setChecked(k == self.painter.group)
            r, g, b = GROUP_COLOURS[k]
            button.setStyleSheet(f"QToolButton {{ border-left: 10px solid rgb({r},{g},{b}); padding-left: 4px; }}")
            fine = [name for name, of in zip(LABEL_ORDERS["celebamask"], group_table("celebamask").tolist()) if of == k]
            button.setToolTip(f"Paint {group}: the face-parsing labels {', '.join(fine)}")
            button.clicked.connect(lambda _=False, k=k: self.painter.set_group(k))
            self.group_buttons.addButton(button)
            tools.addWidget(button)
        self.brush_slider, self.opacity_slider = QSlider(Qt.Orientation.Horizontal), QSlider(Qt.Orientation.Horizontal)
        self.brush_slider.setRange(1, 20)
        self.brush_slider.setValue(3)
        self.brush_slider.valueChanged.connect(lambda v: self.painter.set_brush_radius(v * size / 128))
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.valueChanged.connect(lambda v: self.painter.set_opacity(v / 100))
        self.apply_button = QPushButton("Apply painting")
        self.apply_button.clicked.connect(self.apply_painting)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        undo, redo = QPushButton("Undo"), QPushButton("Redo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo.setShortcut(QKeySequence.StandardKey.Redo)
        undo.clicked.connect(self.undo_stack.undo)
        redo.clicked.connect(self.undo_stack.redo)
        self.status = QLabel("Show a face to edit.")
        self.status.setWordWrap(True)
        self.error = error_label()

        groups = QGridLayout()
        self.donor_boxes: list[QSpinBox] = []
        for k, group in enumerate(GROUPS):
            donor = QSpinBox()
            donor.setRange(0, 2**31 - 1)
            donor.setPrefix("from face ")
            self.donor_boxes.append(donor)
            look, shape, rand = QPushButton("Take look"), QPushButton("Take shape"), QPushButton("Random")
            look.clicked.connect(lambda _=False, k=k: self.take(k, self.donor_boxes[k].value()))
            shape.clicked.connect(lambda _=False, k=k: self.take(k, self.donor_boxes[k].value(), shape=True))
            rand.clicked.connect(lambda _=False, k=k: self.take(k, random.randrange(2**31)))
            for column, widget in enumerate((QLabel(group), donor, look, shape, rand)):
                groups.addWidget(widget, k, column)

        invert_button = QPushButton("Invert photo…")
        invert_button.setToolTip("Find a portrait photo in the generator, from its label map or a face-parsing model; "
                                 "every edit then applies to it")
        invert_button.clicked.connect(lambda: self.invert_photo())
        export = QPushButton("Export…")
        export.setToolTip("Views with their semantic maps, an orbit video and a mesh (PLY with each vertex's group, "
                          "GLB)")
        export.clicked.connect(lambda: self.export())

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        for widget in (self.seed_box, show, shuffle, open_face, invert_button, export):
            top.addWidget(widget)
        layout.addLayout(top)
        views = QHBoxLayout()
        views.addWidget(self.view, 1)
        views.addWidget(self.painter, 1)
        layout.addLayout(views, 1)
        orbit = QHBoxLayout()
        for widget in (QLabel("yaw"), self.yaw_slider, QLabel("pitch"), self.pitch_slider, paint_here):
            orbit.addWidget(widget)
        layout.addLayout(orbit)
        layout.addLayout(tools)
        brush = QHBoxLayout()
        for widget in (QLabel("brush"), self.brush_slider, QLabel("map opacity"), self.opacity_slider, undo, redo):
            brush.addWidget(widget)
        layout.addLayout(brush)
        actions = QHBoxLayout()
        for widget in (self.apply_button, self.cancel_button):
            actions.addWidget(widget)
        layout.addLayout(actions)
        layout.addLayout(groups)
        layout.addWidget(self.status)
        layout.addWidget(self.error)

    # ------------------------------------------------------------------------------------------- requests
    @property
    def orbit(self) -> tuple[float, float]:
        return float(self.yaw_slider.value()), float(self.pitch_slider.value())

    def _submit(self, kind: str, **values: Any) -> Edit:
        edit = Edit(kind, *self.orbit, self.paint_view, values)
        if kind != "view":
            self.running = edit
            self.cancel_button.setEnabled(True)
            self.status.setText(f"Working: {edit.describe()}…")
        self.error.setText("")
        self.worker.submit(edit)
        return edit

    def show_face(self, seed: int) -> None:
        """Show face ``seed`` (an undo step)."""
        self._submit("seed", seed=seed)

    def open_face(self, folder: str | None = None) -> None:
        """Show a face folder (an undo step); asks for it when not given."""
        folder = folder or QFileDialog.getExistingDirectory(self, "Open a face folder")
        if folder:
            self._submit("folder", folder=folder)

    def take(self, group: int, donor: int, shape: bool = False, steps: int = 50) -> None:
        """Give the face's ``group`` face ``donor``'s look (or its shape)."""
        if self.styles is None:
            self.error.setText("Show a face first.")
            return
        self._submit("take", group=group, donor=donor, shape=shape, steps=steps)

    def apply_painting(self, steps: int = 50) -> None:
        """Optimise the face's geometry to the painted map (or, with a photo being painted, invert it with it)."""
        if self.photo_to_invert is not None:
            photo, self.photo_to_invert = self.photo_to_invert, None
            self.apply_button.setText("Apply painting")
            self._submit("invert", photo=photo, painted=self.painter.labels.copy(), steps=steps)
            return
        if self.styles is None or self.painter.labels is None:
            self.error.setText("Show a face first.")
            return
        self._submit("paint", painted=self.painter.labels.copy(), steps=steps)

    def invert_photo(self, photo: str | None = None, labels: str | None = None, parser: str | None = None,
                     order: str = "celebamask", steps: int = 50) -> None:
        """Find a portrait photo in the generator from its label map (``order``) or, without one, from the face-
        parsing model chosen in ``parser``; asks for the photo and its map when not given."""
        if photo is None:
            photo, _ = QFileDialog.getOpenFileName(self, "Invert a portrait photo", "", IMAGE_FILTER)
            if not photo:
                return
            labels, _ = QFileDialog.getOpenFileName(self, "Its label map (cancel to use a face-parsing model)", "",
                                                    IMAGE_FILTER)
            if not labels:
                parser, _ = QFileDialog.getOpenFileName(self, "A face-parsing model, BiSeNet's 79999_iter.pth "
                                                        "(cancel to paint the map yourself)", "",
                                                        "PyTorch weights (*.pth *.pt);;All files (*)")
        if not labels and not parser:
            self._submit("align", photo=photo)  # the user paints its map, then inverts with it
            return
        self._submit("invert", photo=photo, labels=labels or None, parser=parser, order=order, steps=steps)

    def _on_aligned(self, crop: np.ndarray, photo: str) -> None:
        """Show the aligned photo in the painter, its map all background, to be painted and inverted with."""
        from PIL import Image

        side = self.worker.size
        small = np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.LANCZOS))
        self.painter.set_picture(small, np.zeros((side, side), np.uint8))
        self._painted, self.photo_to_invert = None, photo
        self.apply_button.setText("Invert with this map")
        self.status.setText(f"Paint the groups over {Path(photo).name}, then Invert with this map.")

    def export(self, folder: str | None = None) -> None:
        """Write the face's views and maps, an orbit video and a mesh into ``folder`` (asked for when not given)."""
        if self.styles is None:
            self.error.setText("Show a face first.")
            return
        folder = folder or QFileDialog.getExistingDirectory(self, "Export the face into")
        if folder:
            self._submit("export", folder=folder)

    def _on_exported(self, count: int, folder: str) -> None:
        self.status.setText(f"Wrote {count} files (views with their maps, orbit video, mesh) to {folder}")

    def cancel(self) -> None:
        if self.running is not None:
            self.running.cancel.cancel()

    def restore(self, styles: Any, what: str) -> None:
        """Bring back a face of the undo stack (``what``: the status line then)."""
        self._submit("restore", styles=styles, what=what)

    def _on_orbit(self) -> None:
        if self.styles is not None:
            self.worker.submit(Edit("view", *self.orbit, self.paint_view))

    def _on_drag(self, dx: float, dy: float) -> None:
        """A drag turns the face (the sliders follow, which asks for the view)."""
        self.yaw_slider.setValue(round(self.yaw_slider.value() - dx * DRAG_DEG_PER_PX))
        self.pitch_slider.setValue(round(self.pitch_slider.value() + dy * DRAG_DEG_PER_PX))

    def _paint_this_view(self) -> None:
        self.paint_view = self.orbit
        self._on_orbit()

    # -------------------------------------------------------------------------------------------- results
    def _on_frame(self, frame: Frame) -> None:
        if frame.edit.kind in ("export", "align"):
            self.running = None
            self.cancel_button.setEnabled(False)
            return
        self.view.set_image(frame.view)
        if frame.edit.paint_view == self.paint_view and (frame.edit.kind != "view" or self._painted != self.paint_view):
            self.painter.set_picture(frame.paint_image, frame.paint_labels)  # strokes not applied stay otherwise
            self._painted = self.paint_view
        if frame.edit.kind == "view" or not frame.done:
            return
        before, self.styles = self.styles, frame.styles
        self.running = None
        self.cancel_button.setEnabled(False)
        cancelled = frame.edit.cancel.cancelled
        self.status.setText(f"{frame.edit.describe()}{' (cancelled: kept as far as it got)' if cancelled else ''}")
        if frame.edit.kind != "restore":
            self.undo_stack.push(FaceCommand(self, before, frame.styles, frame.edit.describe()))

    def _on_progress(self, step: int, steps: int) -> None:
        if steps > 1 and self.running is not None:
            self.status.setText(f"{self.running.describe()}: step {step} of {steps}")

    def _on_failed(self, message: str, details: str) -> None:
        self.running = None
        self.cancel_button.setEnabled(False)
        self.status.setText("")
        self.error.setText(message)
        if details:
            self.error.setToolTip(details)

    def stop(self) -> None:
        """End the worker thread."""
        self.worker.stop()


def semantic_panel(workspace: "PortraitWorkspace") -> QWidget:
    """The Semantic page of the Portrait workspace."""
    return SemanticPage()


__all__ = ["Edit", "FaceCommand", "Frame", "SemanticPage", "SemanticWorker", "semantic_panel"]
