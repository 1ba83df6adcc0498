"""The engine work of the Portrait tab's 3DPE page (app.portrait.edit_panel), on one worker thread.

EditWorker opens photos, aligns their crops and edits and renders them on a LatestRequestWorker, so the page never
waits on the engine; the frozen dataclasses here are what the page asks of it (EditChoice, EngineChoice,
CropRequest, EditView) and what comes back (LoadedPhoto, Crop, EditFrame).  The engine is imported only inside
methods, on the worker thread or when a request is built.
"""

from __future__ import annotations

import logging
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, Signal

from app.coalescing import LatestRequestWorker
from engine.core.errors import UserInputError

if TYPE_CHECKING:
    from engine.portrait.editing import EditEngine, EditSession, PortraitEditRequest

log = logging.getLogger(__name__)

EngineFactory = Callable[["PortraitEditRequest"], "EditEngine"]

PLANES_KEPT = 4
"""edits whose triplanes the worker keeps, so undo and redo re-render instead of editing again"""
FAILURES = {"photo": "Could not open the photo", "crop": "Could not crop the photo",
            "view": "Could not edit the photo"}
"""how a failed worker request of each kind is announced"""


# ------------------------------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class EditChoice:
    """What the user asked for: a text prompt or a reference image (one of them), and how strongly."""

    prompt: str | None = None
    reference: str | None = None
    strength: float = 1.0

    @property
    def key(self) -> tuple[str | None, str | None]:
        """What identifies the edit's triplanes (the strength only blends them)."""
        return self.prompt, self.reference

    def describe(self) -> str:
        return self.prompt if self.prompt is not None else f"like {Path(self.reference).name}"


@dataclass(frozen=True)
class EngineChoice:
    """Which network edits, read from the settings on the UI thread (QSettings stays there)."""

    model: str
    """"embedded" or the official 3dpe.pt"""
    ip2p_model: str
    """"": PortraitEditRequest's default"""
    device: str
    editor_generation: int
    """counts the adaptations of this session: the embedded editor is read again after each"""

    def request(self, **fields) -> "PortraitEditRequest":
        """A PortraitEditRequest for this network with ``fields``."""
        from engine.portrait.editing import PortraitEditRequest

        extra = {"ip2p_model": self.ip2p_model} if self.ip2p_model else {}
        return PortraitEditRequest(model=self.model, device=self.device, **extra, **fields)


@dataclass(frozen=True, eq=False)
class LoadedPhoto:
    """A photo as the page holds it: its pixels, its landmarks (None when taken as a crop or no face was found)."""

    path: Path
    image: np.ndarray
    landmarks: np.ndarray | None
    as_crop: bool
    """a 512² photo without landmarks: the crop itself"""
    notes: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class CropRequest:
    """Align ``image`` (photo number ``photo_id``) on ``landmarks``; ``final`` once the user let go of them."""

    photo_id: int
    image: np.ndarray
    landmarks: np.ndarray
    final: bool


@dataclass(frozen=True, eq=False)
class Crop:
    image: np.ndarray
    request: CropRequest


@dataclass(frozen=True, eq=False)
class EditView:
    """Show ``choice`` of crop number ``crop_id`` from (yaw, pitch) degrees."""

    crop_id: int
    crop: np.ndarray
    choice: EditChoice
    yaw: float
    pitch: float
    engine: EngineChoice

    @property
    def key(self) -> tuple:
        return self.crop_id, self.choice, self.yaw, self.pitch, self.engine


@dataclass(frozen=True, eq=False)
class EditFrame:
    """A rendered edit (H x W x 3 uint8) and what it shows."""

    image: np.ndarray
    view: EditView


# -------------------------------------------------------------------------------------------------------- worker
class EditWorker(QObject):
    """Opens photos, crops them and edits them on one worker thread, the newest request of each kind first
    (a photo before its crop before its edit).  Results arrive as signals on the UI thread:
    ``photo_loaded(LoadedPhoto)``, ``cropped(Crop)``, ``frame_ready(EditFrame)``; ``busy(message)`` before slow
    work; ``failed(kind, message, details)`` (details empty for a UserInputError, whose message says it all).

    The worker keeps the network, the EditSession of the latest crop and the triplanes of its last PLANES_KEPT
    edits, so a new strength or view only re-renders."""

    photo_loaded = Signal(object)
    cropped = Signal(object)
    frame_ready = Signal(object)
    busy = Signal(str)
    failed = Signal(str, str, str)

    def __init__(self, engine_factory: EngineFactory, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._engine_factory = engine_factory
        self._worker = LatestRequestWorker("portrait-edit", self._handle, self._on_error,
                                           kinds=("photo", "crop", "view"))
        self._engine: EditEngine | None = None
        self._engine_choice: EngineChoice | None = None
        self._session: EditSession | None = None
        self._crop_id: int | None = None
        self._planes: OrderedDict[tuple, tuple] = OrderedDict()
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)

    def open(self, path: str) -> None:
        self._worker.submit("photo", path)

    def crop(self, request: CropRequest) -> None:
        self._worker.submit("crop", request)

    def view(self, view: EditView) -> None:
        """Edit and render ``view``; replaces any view not yet started."""
        self._worker.submit("view", view)

    def stop(self) -> None:
        """Finish the work in progress and end the worker thread (idempotent)."""
        self._worker.stop()

    def _handle(self, kind: str, request: object) -> None:
        if kind == "photo":
            self._open(request)
        elif kind == "crop":
            from engine.portrait.alignment import align_face

            self._emit(self.cropped, Crop(align_face(request.image, request.landmarks).image, request))
        else:
            self._render(request)

    def _open(self, path: str) -> None:
        from engine.portrait.alignment import OUTPUT, detections_file, locate_landmarks, read_photo

        photo = read_photo(path)
        if photo.image.shape[:2] == (OUTPUT, OUTPUT) and not detections_file(photo.path).is_file():
            self._emit(self.photo_loaded, LoadedPhoto(photo.path, photo.image, None, True, photo.notes))
            return
        self._emit(self.busy, "Looking for the face…")
        try:
            landmarks = locate_landmarks(photo)
        except UserInputError:
            if detections_file(photo.path).is_file():
                raise  # the landmarks file is wrong: say so
            self._emit(self.photo_loaded, LoadedPhoto(photo.path, photo.image, None, False, photo.notes))  # no face
        else:
            self._emit(self.photo_loaded, LoadedPhoto(photo.path, photo.image, landmarks.points, False,
                                                      photo.notes + landmarks.notes))

    def _render(self, view: EditView) -> None:
        session = self._session_for(view)
        planes = self._planes.get(view.choice.key)
        if planes is None:
            self._emit(self.busy, f"Editing: {view.choice.describe()}…")
            session.apply(view.engine.request(image="", out="", prompt=view.choice.prompt,
                                              reference=view.choice.reference))
            self._planes[view.choice.key] = session.edited, session.plain
            while len(self._planes) > PLANES_KEPT:
                self._planes.popitem(last=False)
        else:
            self._planes.move_to_end(view.choice.key)
            session.edited, session.plain = planes
        image = session.render(view.choice.strength, view.yaw, view.pitch)
        self._emit(self.frame_ready, EditFrame(image, view))

    def _session_for(self, view: EditView) -> "EditSession":
        """The session of the view's crop on the view's network (loaded, or started afresh, when they changed)."""
        from engine.portrait.editing import EditSession

        if view.engine != self._engine_choice:
            self._emit(self.busy, "Loading the 3DPE network…")
            self._engine = self._engine_factory(view.engine.request(image="", out=""))
            self._engine_choice, self._session = view.engine, None
        if self._session is None or view.crop_id != self._crop_id:
            self._session, self._crop_id = EditSession(self._engine, view.crop), view.crop_id
            self._planes.clear()
        return self._session

    def _emit(self, signal: Signal, *values: object) -> None:
        # emitted from the worker thread: Qt queues it to receivers on the UI thread
        if not self._worker.stopped:
            signal.emit(*values)

    def _on_error(self, kind: str, exc: Exception) -> None:
        if isinstance(exc, UserInputError):
            self._emit(self.failed, kind, str(exc), "")
            return
        log.exception("3DPE page: %s", FAILURES[kind])
        self._emit(self.failed, kind, f"{FAILURES[kind]}: {exc}", traceback.format_exc())
