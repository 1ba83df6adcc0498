"""The Portrait tab's 3DPE page: one photo edited in 3D from a text prompt or a reference image, in real time.

Open or drop a photo: its five landmarks are drawn over it (read from detections/NAME.txt beside it or found by
the built-in detector; clicked one by one when no face is found) and can be dragged, the 512² EG3D crop following
them (a 512² photo without landmarks is taken as a crop already, as the command line does).  Apply a prompt (the
vocabulary completes it) or drop a reference image: the edit appears beside the crop, ``strength`` of the way
from the plain reconstruction, and turns when dragged; a wipe slider lays the crop over the left part of it.
Orbiting and strength only re-render the cached triplanes (engine.portrait.editing.EditSession).  Every applied
edit and every strength the user settles on is a step of the page's undo stack (Ctrl+Z / Ctrl+Shift+Z).
Adapting the embedded editor to a new style and exporting views, an orbit video and a mesh are jobs the window
runs (engine.portrait.adapt.adapt_job, engine.portrait.editing.portrait_edit_job).

Nothing here waits on the engine: photos, crops and edits are computed on one LatestRequestWorker (EditWorker),
the newest request of each kind first, and the engine is imported there or inside the jobs.  The network, the
adapt job and the export job are parameters of the page, so tests run it on fakes.  The worker and its requests
are in app.portrait.edit_worker, the picture widgets in app.portrait.edit_views, the export and adaptation
dialogs in app.portrait.edit_dialogs.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QStringListModel, Qt, QTimer, QUrl
from PySide6.QtGui import QImage, QKeySequence, QShowEvent, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (QCompleter, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QSlider, QToolButton, QVBoxLayout, QWidget)

from app.core.host import WorkspaceHost
from app.core.jobs import PORTRAIT
from app.portrait.edit_dialogs import AdaptDialog, AdaptJob, EditExportDialog, ExportOptions
from app.portrait.edit_views import LANDMARK_LABELS, LandmarkView, PictureView, WipeView
from app.portrait.edit_worker import (Crop, CropRequest, EditChoice, EditFrame, EditView, EditWorker, EngineChoice,
                                      EngineFactory, LoadedPhoto)
from app.settings import AppSettings
from app.widgets import error_label, row
from engine.core.jobs import CancelToken, Job

if TYPE_CHECKING:
    from app.portrait.workspace import PortraitWorkspace
    from app.worker import JobRunner
    from engine.portrait.adapt import AdaptConfig
    from engine.portrait.editing import EditEngine, PortraitEditRequest

ExportJob = Callable[["PortraitEditRequest", CancelToken], Job]

YAW_LIMIT_DEG, PITCH_LIMIT_DEG = 45.0, 30.0
"""how far the result turns about the frontal view (the Heads page's limits)"""
DRAG_DEG_PER_PX = 0.4
"""a left drag across the result turns the head this many degrees per pixel"""
LANDMARKS_FILE = "landmarks.txt"
"""the landmarks on screen, written beside an export (the job aligns the photo with them)"""
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff);;All files (*)"


def _make_engine(request: "PortraitEditRequest") -> "EditEngine":
    from engine.portrait.editing import make_engine

    return make_engine(request)


def _adapt_job(cfg: "AdaptConfig", cancel: CancelToken) -> Iterator:
    from engine.portrait.adapt import adapt_job

    yield from adapt_job(cfg, cancel)


def _portrait_edit_job(request: "PortraitEditRequest", cancel: CancelToken) -> Iterator:
    from engine.portrait.editing import portrait_edit_job

    yield from portrait_edit_job(request, cancel)


# ---------------------------------------------------------------------------------------------------- undo step
class EditCommand(QUndoCommand):
    """One edit of the page: from ``before`` to ``after`` (None: no edit) and back."""

    def __init__(self, page: "PortraitEditPage", before: EditChoice | None, after: EditChoice, text: str) -> None:
        super().__init__(text)
        self._page, self._before, self._after = page, before, after

    def redo(self) -> None:  # noqa: D102 - QUndoCommand protocol (also runs on push)
        self._page.show_choice(self._after)

    def undo(self) -> None:  # noqa: D102 - QUndoCommand protocol
        self._page.show_choice(self._before)


# --------------------------------------------------------------------------------------------------------- page
class PortraitEditPage(QWidget):
    """Edit one portrait photo with 3DPE (see the module notes).  ``engine_factory`` loads the network for a
    PortraitEditRequest (engine.portrait.editing.make_engine); ``adapt_job`` and ``export_job`` are the jobs
    Adapt and Export run (engine.portrait.adapt.adapt_job, engine.portrait.editing.portrait_edit_job)."""

    def __init__(self, host: WorkspaceHost, settings: AppSettings, engine_factory: EngineFactory | None = None,
                 adapt_job: AdaptJob | None = None, export_job: ExportJob | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host, self.settings = host, settings
        self._adapt_job = adapt_job or _adapt_job
        self._export_job = export_job or _portrait_edit_job
        self.photo: LoadedPhoto | None = None
        self.landmarks: np.ndarray | None = None
        """the five landmarks the crop follows (None for a photo taken as the crop)"""
        self.crop: np.ndarray | None = None
        """the 512² crop edits are made of"""
        self.crop_id = 0
        self.committed: EditChoice | None = None
        """the edit at the top of the undo stack (None: none yet)"""
        self.applying: EditChoice | None = None
        """an edit asked for and not yet seen to work (it becomes an undo step when its first frame arrives)"""
        self.frame: EditFrame | None = None
        """the result on screen"""
        self.yaw = self.pitch = 0.0
        self.adapt_window: AdaptDialog | None = None
        self._photo_id = self._editor_generation = 0
        self._requested: tuple | None = None
        self._vocabulary_filled = False
        self._adapted_styles: list[str] = []

        self.busy_label = QLabel()
        """what the worker is doing, until its result arrives"""
        self.worker = EditWorker(engine_factory or _make_engine, self)
        self.worker.photo_loaded.connect(self._on_photo)
        self.worker.cropped.connect(self._on_cropped)
        self.worker.frame_ready.connect(self._on_frame)
        self.worker.busy.connect(self.busy_label.setText)
        self.worker.failed.connect(self._on_failed)
        self.undo_stack = QUndoStack(self)

        self.open_button = QPushButton("Open photo…")
        self.open_button.setToolTip("A portrait photo (or drop one on the photo view)")
        self.open_button.clicked.connect(lambda: self.open_photo())
        self.photo_label = QLabel("No photo")
        self.landmark_view = LandmarkView()
        self.landmark_view.dropped.connect(self.open_photo)
        self.landmark_view.edited.connect(self._on_landmarks_edited)
        self.hint_label = QLabel("Open or drop a portrait photo.")
        self.hint_label.setWordWrap(True)
        self.crop_view = PictureView("aligned crop")
        self.result_view = WipeView()
        self.result_view.dragged.connect(self._on_orbit)
        self.wipe_slider = QSlider(Qt.Orientation.Horizontal)
        self.wipe_slider.setRange(0, 100)
        self.wipe_slider.setToolTip("Before / after: the input crop over the left part of the result")
        self.wipe_slider.valueChanged.connect(lambda value: self.result_view.set_wipe(value / 100))

        self.prompt_edit = QLineEdit()
        self.prompt_edit.setPlaceholderText("blond hair, bronze statue, …")
        self.prompt_edit.returnPressed.connect(self.apply_prompt)
        self.completions = QStringListModel(self)
        completer = QCompleter(self.completions, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.prompt_edit.setCompleter(completer)
        self.apply_button = QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply_prompt)
        self.reference_view = PictureView(minimum=64, accepts_files=True)
        self.reference_view.setFixedSize(64, 64)
        self.reference_view.setToolTip("The reference image of the edit (drop one here)")
        self.reference_view.dropped.connect(self.set_reference)
        self.reference_button = QPushButton("Reference image…")
        self.reference_button.setToolTip("Edit like an image instead of a text prompt")
        self.reference_button.clicked.connect(lambda: self.set_reference())
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.strength_slider = QSlider(Qt.Orientation.Horizontal)
        self.strength_slider.setRange(0, 100)
        self.strength_slider.setValue(100)
        self.strength_slider.setToolTip("0: the plain reconstruction, 1: the full edit (the triplanes are blended)")
        self.strength_slider.valueChanged.connect(self._on_strength_moved)
        self.strength_slider.sliderReleased.connect(self._commit_strength)
        self.strength_label = QLabel("1.00")

        Std = QKeySequence.StandardKey
        self.undo_action = self.undo_stack.createUndoAction(self, "Undo edit")
        self.undo_action.setShortcuts(Std.Undo)
        self.redo_action = self.undo_stack.createRedoAction(self, "Redo edit")
        redo_keys = QKeySequence.keyBindings(Std.Redo)
        if QKeySequence("Ctrl+Shift+Z") not in redo_keys:  # the same keys on every platform
            redo_keys.append(QKeySequence("Ctrl+Shift+Z"))
        self.redo_action.setShortcuts(redo_keys)
        buttons = QHBoxLayout()
        for action in (self.undo_action, self.redo_action):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)  # the page's own history
            self.addAction(action)
            button = QToolButton()
            button.setDefaultAction(action)
            buttons.addWidget(button)
        buttons.addStretch(1)
        self.adapt_button = QPushButton("Adapt to a new style…")
        self.adapt_button.setToolTip("Teach the embedded editor a style from about ten before / after pairs")
        self.adapt_button.clicked.connect(self.show_adapt_dialog)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write the edit's views, an orbit video or a mesh into a folder")
        self.export_button.clicked.connect(self.export_dialog)
        buttons.addWidget(self.adapt_button)
        buttons.addWidget(self.export_button)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.RichText)
        self.status_label.setOpenExternalLinks(True)
        self.error_label = error_label()

        images = QHBoxLayout()
        images.addWidget(self.crop_view)
        images.addWidget(self.result_view)
        form = QFormLayout()
        form.addRow("Prompt:", row(self.prompt_edit, self.apply_button))
        form.addRow("Or like:", row(self.reference_button, self.reference_view))
        form.addRow("Strength:", row(self.strength_slider, self.strength_label))
        form.addRow("Before/after:", self.wipe_slider)
        layout = QVBoxLayout(self)
        layout.addWidget(row(self.photo_label, self.open_button))
        layout.addWidget(self.landmark_view, 1)
        layout.addWidget(self.hint_label)
        layout.addLayout(images, 1)
        layout.addLayout(form)
        layout.addWidget(self.model_label)
        layout.addLayout(buttons)
        layout.addWidget(self.error_label)
        layout.addWidget(self.busy_label)
        layout.addWidget(self.status_label)
        self._update_model_note()
        self._update_controls()

    # -------------------------------------------------------------------------------------------- values
    @property
    def strength(self) -> float:
        return self.strength_slider.value() / 100

    def current_choice(self) -> EditChoice | None:
        """The edit being shown or applied, at the slider's strength (None before the first)."""
        base = self.applying or self.committed
        return None if base is None else dataclasses.replace(base, strength=self.strength)

    def _engine_choice(self) -> EngineChoice:
        return EngineChoice(self.settings.threedpe_checkpoint or "embedded", self.settings.ip2p_model,
                            self.settings.device, self._editor_generation)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self._update_model_note()  # the Settings may have changed the network
        if not self._vocabulary_filled:
            self._vocabulary_filled = True
            self._fill_vocabulary()

    def _fill_vocabulary(self) -> None:
        """The prompt box's completions: the vocabulary's edits, their synonyms and the styles adapted here.  The
        vocabulary imports the engine, so this waits, without blocking the UI, for the window's warm-up."""
        if not self.host.engine_ready():
            QTimer.singleShot(100, self._fill_vocabulary)
            return
        from engine.portrait.vocabulary import EDITS

        words = {word for edit in EDITS for word in (edit.name, *edit.synonyms)}
        self.completions.setStringList(sorted(words | set(self._adapted_styles)))

    def _update_model_note(self) -> None:
        model = self.settings.threedpe_checkpoint
        if model:
            self.model_label.setText(f"Official 3DPE ({Path(model).name}): it takes image prompts, so a text prompt "
                                     "is first turned into a reference image by InstructPix2Pix (Settings).")
        else:
            self.model_label.setText("Embedded editor (offline): text prompts in its vocabulary, or a reference "
                                     "image. The official 3DPE checkpoint (Settings) takes image prompts; with it a "
                                     "text prompt is turned into a reference by InstructPix2Pix.")

    def _update_controls(self) -> None:
        has_crop = self.crop is not None
        for widget in (self.prompt_edit, self.apply_button, self.reference_button, self.strength_slider):
            widget.setEnabled(has_crop)
        self.export_button.setEnabled(self.committed is not None)

    def _set_status(self, message: str) -> None:
        self.status_label.setText(html.escape(message))

    def _show_problem(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.show()

    # -------------------------------------------------------------------------------------------- photo
    def open_photo(self, path: str | None = None) -> None:
        """Open a photo off the UI thread; without ``path`` the user picks one."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Portrait photo", str(Path.home()), IMAGE_FILTER)
            if not path:
                return
        self.error_label.hide()
        self.busy_label.setText(f"Opening {Path(path).name}…")
        self.worker.open(str(path))

    def _on_photo(self, photo: LoadedPhoto) -> None:
        """A new photo: its edits start afresh."""
        self.photo, self._photo_id = photo, self._photo_id + 1
        self.undo_stack.clear()
        self.committed = self.applying = self.frame = self.crop = None
        self.crop_id += 1  # frames of the last photo's crop still on their way are not shown
        self.yaw = self.pitch = 0.0
        self.result_view.set_image(None, "result")
        self.crop_view.set_image(None)
        self.photo_label.setText(photo.path.name)
        self.busy_label.clear()
        self._set_status(" ".join(photo.notes))
        self.landmarks = photo.landmarks
        self.landmark_view.set_photo(photo.image, photo.landmarks, clicking=photo.landmarks is None
                                     and not photo.as_crop)
        if photo.as_crop:
            self.hint_label.setText("A 512² photo: taken as an aligned EG3D crop, as the command line does.")
            self._set_crop(photo.image)
        elif photo.landmarks is None:
            self._ask_for_landmark(0)
        else:
            self.hint_label.setText("Drag a landmark to adjust the crop.")
            self.worker.crop(CropRequest(self._photo_id, photo.image, photo.landmarks, final=True))
        self._update_controls()

    def _ask_for_landmark(self, index: int) -> None:
        from engine.portrait.alignment import LANDMARK_NAMES

        self.hint_label.setText(f"No face found: click the {LANDMARK_NAMES[index]} "
                                f"({index + 1} of {len(LANDMARK_NAMES)}).")

    def _on_landmarks_edited(self, points: np.ndarray, done: bool) -> None:
        if len(points) < len(LANDMARK_LABELS):
            self._ask_for_landmark(len(points))
            return
        if done:
            self.hint_label.setText("Drag a landmark to adjust the crop.")
        self.landmarks = points
        self.worker.crop(CropRequest(self._photo_id, self.photo.image, points, final=done))

    def _on_cropped(self, crop: Crop) -> None:
        """A crop preview while landmarks move; once they are let go, the crop the edit is made of."""
        request = crop.request
        if request.photo_id != self._photo_id:
            return
        self.crop_view.set_image(crop.image)
        current = request.final and np.array_equal(request.landmarks, self.landmarks)
        if current and (self.crop is None or not np.array_equal(crop.image, self.crop)):
            self._set_crop(crop.image)

    def _set_crop(self, image: np.ndarray) -> None:
        self.crop, self.crop_id = image, self.crop_id + 1
        self.crop_view.set_image(image)
        self.result_view.set_before(image)
        self._request_view()
        self._update_controls()

    # -------------------------------------------------------------------------------------------- edits
    def apply_prompt(self) -> None:
        """Edit for the text in the prompt box."""
        prompt = self.prompt_edit.text().strip()
        if not prompt:
            self._show_problem("Type an edit (the completions list the vocabulary), or choose a reference image.")
            return
        self._apply(EditChoice(prompt=prompt, strength=self.strength))

    def set_reference(self, path: str | None = None) -> None:
        """Edit like a reference image; without ``path`` the user picks one."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Reference image", str(Path.home()), IMAGE_FILTER)
            if not path:
                return
        if QImage(path).isNull():
            self._show_problem(f"{path}: not an image Retouch3D can read.")
            return
        self._apply(EditChoice(reference=str(path), strength=self.strength))

    def _apply(self, choice: EditChoice) -> None:
        if self.crop is None:
            self._show_problem("Open a photo first.")
            return
        self.error_label.hide()
        if self.committed is not None and choice.key == self.committed.key:
            self.applying = None  # shown already
            return
        self.applying = choice
        self._request_view()

    def show_choice(self, choice: EditChoice | None) -> None:
        """Show ``choice`` (an undo step's state; None: no edit) with the controls that made it."""
        self.committed, self.applying = choice, None
        self.prompt_edit.setText(choice.prompt if choice is not None and choice.prompt is not None else "")
        reference = choice.reference if choice is not None else None
        self.reference_view.set_image(QImage(reference) if reference else None)
        if choice is None:
            self.frame = self._requested = None
            self.result_view.set_image(None, "result")
        else:
            self.strength_slider.blockSignals(True)
            self.strength_slider.setValue(round(choice.strength * 100))
            self.strength_slider.blockSignals(False)
            self.strength_label.setText(f"{choice.strength:.2f}")
            self._request_view()
        self._update_controls()

    def _on_strength_moved(self, value: int) -> None:
        self.strength_label.setText(f"{value / 100:.2f}")
        if self.strength_slider.isSliderDown():
            self._request_view()
        else:  # a click, the keyboard or the wheel: settled at once
            self._commit_strength()

    def _commit_strength(self) -> None:
        """The strength the user settled on: an undo step of the edit shown (an edit being applied takes it)."""
        if self.committed is None or self.applying is not None:
            self._request_view()
            return
        if self.strength != self.committed.strength:
            after = dataclasses.replace(self.committed, strength=self.strength)
            self.undo_stack.push(EditCommand(self, self.committed, after, f"Strength {after.strength:.2f}"))

    def _on_orbit(self, dx: float, dy: float) -> None:
        """Turn the head as if grabbed (as on the Heads page)."""
        self.yaw = float(np.clip(self.yaw - dx * DRAG_DEG_PER_PX, -YAW_LIMIT_DEG, YAW_LIMIT_DEG))
        self.pitch = float(np.clip(self.pitch + dy * DRAG_DEG_PER_PX, -PITCH_LIMIT_DEG, PITCH_LIMIT_DEG))
        self._request_view()

    def _request_view(self) -> None:
        """Ask the worker for the current edit from the current view (once)."""
        choice = self.current_choice()
        if self.crop is None or choice is None:
            return
        view = EditView(self.crop_id, self.crop, choice, self.yaw, self.pitch, self._engine_choice())
        if view.key != self._requested:
            self._requested = view.key
            self.worker.view(view)

    def _on_frame(self, frame: EditFrame) -> None:
        view = frame.view
        if view.crop_id != self.crop_id:
            return  # of a crop replaced since
        if self.applying is not None and view.choice.key == self.applying.key:  # the edit works: an undo step
            after = dataclasses.replace(self.applying, strength=self.strength)
            self.undo_stack.push(EditCommand(self, self.committed, after, f"Edit: {after.describe()}"))
        self.frame = frame
        self.result_view.set_image(frame.image, f"{view.choice.describe()} · {view.choice.strength:.2f} · "
                                                f"yaw {view.yaw:+.0f}° pitch {view.pitch:+.0f}°")
        self.busy_label.clear()

    def _on_failed(self, kind: str, message: str, details: str) -> None:
        if kind == "view":
            self.applying = None  # the edit asked for did not take; the one shown stays
            self._requested = None
        self.busy_label.clear()
        if details:
            self.host.show_error(message, details)
        else:
            self._show_problem(message)

    # ----------------------------------------------------------------------------------------- adapt, export
    def show_adapt_dialog(self) -> AdaptDialog:
        """The adaptation dialog (one per page, kept with its plot between uses)."""
        if self.adapt_window is None:
            self.adapt_window = AdaptDialog(self.host, self._adapt_job, self)
            self.adapt_window.adapted.connect(self._on_adapted)
        self.adapt_window.show()
        self.adapt_window.raise_()
        return self.adapt_window

    def _on_adapted(self, name: str) -> None:
        """The embedded editor was rewritten: read it again, and offer the style's name as a prompt."""
        self._editor_generation += 1
        self._adapted_styles.append(name)
        self._fill_vocabulary()
        self._request_view()

    def export_dialog(self) -> None:
        """Ask where and what to export, then export."""
        if self.photo is None or self.committed is None:
            self.host.show_error("Apply an edit first, then export it.")
            return
        dialog = EditExportDialog(str(self.photo.path.with_name(f"{self.photo.path.stem}-3dpe")), self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.export(dialog.options())

    def export(self, options: ExportOptions) -> "JobRunner | None":
        """Write the edit shown (its prompt or reference, its strength, the landmarks on screen) as a job:
        aligned.png, edited.png, the views, and on request orbit.mp4 and mesh.ply / mesh.glb."""
        if self.photo is None or self.committed is None:
            self.host.show_error("Apply an edit first, then export it.")
            return None
        choice, photo, landmarks = self.committed, self.photo, self.landmarks
        engine, export_job, out = self._engine_choice(), self._export_job, Path(options.out)

        def job(cancel: CancelToken) -> Iterator:
            out.mkdir(parents=True, exist_ok=True)
            landmarks_file = None
            if landmarks is not None:
                landmarks_file = out / LANDMARKS_FILE
                landmarks_file.write_text("".join(f"{x:.3f} {y:.3f}\n" for x, y in landmarks))
            request = engine.request(image=str(photo.path), out=str(out), prompt=choice.prompt,
                                     reference=choice.reference,
                                     landmarks=None if landmarks_file is None else str(landmarks_file),
                                     strength=choice.strength, views=options.views, video=options.video,
                                     mesh=options.mesh)
            yield from export_job(request, cancel)

        def done(ok: bool) -> None:
            if ok:
                url = QUrl.fromLocalFile(str(out.resolve())).toString()
                self.status_label.setText(f'Exported to <a href="{html.escape(url)}">{html.escape(out.name)}</a>')

        runner = self.host.run_job("portrait-edit", f"3DPE export: {choice.describe()}", job, frozenset({PORTRAIT}),
                                   on_done=done)
        if runner is not None:
            self._set_status(f"Exporting to {out}…")
        return runner

    def stop(self) -> None:
        """End the worker thread."""
        self.worker.stop()


def edit_panel(workspace: "PortraitWorkspace") -> QWidget:
    """The 3DPE page of the Portrait workspace."""
    return PortraitEditPage(workspace.host, workspace.settings)
