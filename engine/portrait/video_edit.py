"""Editing a talking-head video with 3DPE, frame by frame (the paper's video application), as
``python main.py portrait edit-video`` runs it.

Every frame is aligned the EG3D way from the built-in detector's landmarks, smoothed over time so the crop does
not jitter; the edit's prompt (text tokens, or the reference image; on the official path with a text prompt,
InstructPix2Pix's edit of the first frame) is made once, so every frame gets the same edit and it does not
flicker.  Each edited frame is rendered from the input view and from a novel view sweeping yaw ±30° and back.
Frames are kept as PNGs in DIR/frames with the landmarks used; repeating a stopped run with the same settings
resumes after the last finished frame.  Frames before the first face are left out; a frame where the detector
finds none keeps the previous frame's landmarks (both are counted in the job's warnings).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.core.errors import UserInputError
from engine.core.imaging import read_video, to_uint8, write_frames, write_png
from engine.core.jobs import Artifact, CancelToken, JobWarning, Preview, Progress
from engine.core.project import atomic_write, write_json
from engine.portrait.cameras import camera_labels
from engine.portrait.editing import (ORBIT_YAW, EditEngine, EditSettings, EmbeddedEngine, PortraitEditRequest, blend,
                                     make_engine)

SETTINGS_FILE = "video.json"
"""the settings the frames in DIR/frames were made with (a rerun with others starts over)"""
OUTPUTS = ("aligned", "input_view", "novel_view")
"""per frame, and as DIR/NAME.mp4: the aligned input, the edit from the input view and from the moving view"""


@dataclass(kw_only=True)
class PortraitVideoRequest(EditSettings):
    """One edit of one video."""

    video: str
    """the talking-head video (any format ffmpeg reads)"""
    out: str
    """folder for aligned.mp4, input_view.mp4, novel_view.mp4 and the frames"""
    smoothing: float = 0.6
    """how much of the previous frame's landmarks each frame keeps (0: none; steadier crops, slower to follow)"""
    sweep_seconds: float = 4.0
    """the novel view goes from the front to yaw +30°, to −30° and back in this many seconds of video"""
    max_frames: int | None = None
    """edit only the video's first frames (a rerun with more continues)"""

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.smoothing < 1.0:
            raise UserInputError(f"--smoothing must lie in [0, 1) (got {self.smoothing})")
        if not self.sweep_seconds > 0:
            raise UserInputError(f"--sweep-seconds must be positive (got {self.sweep_seconds})")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserInputError(f"--max-frames must be at least 1 (got {self.max_frames})")

    def edit_request(self) -> PortraitEditRequest:
        """The one-photo request with this video's edit (what the engine and its prompt are made from)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(EditSettings)}
        return PortraitEditRequest(image=self.video, out=self.out, views=0, **shared)

    def settings(self) -> dict:
        """What the frames depend on (not where they go, nor how many are asked for)."""
        fields = dataclasses.asdict(self)
        for name in ("out", "max_frames"):
            fields.pop(name)
        return fields


def sweep_yaw(index: int, fps: float, sweep_seconds: float) -> float:
    """The moving view's yaw (degrees) at frame ``index``."""
    return ORBIT_YAW * math.sin(2 * math.pi * index / (fps * sweep_seconds))


class LandmarkTrack:
    """Landmarks followed through a video: the detector's, smoothed; the previous frame's where it finds no face."""

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing
        self.points: np.ndarray | None = None
        self.missed = 0

    def update(self, frame: np.ndarray) -> np.ndarray | None:
        """This frame's landmarks, None before the first face."""
        from engine.portrait.alignment import detect_landmarks

        found = detect_landmarks(frame)
        if found is None:
            self.missed += self.points is not None
            return self.points
        detected = found[0]
        self.points = detected if self.points is None else \
            self.smoothing * self.points + (1 - self.smoothing) * detected
        return self.points


def _frame_paths(frames_dir: Path, index: int) -> dict[str, Path]:
    return {name: frames_dir / f"{name}_{index:05d}.png" for name in OUTPUTS}


def _start_or_resume(out: Path, settings: dict) -> tuple[Path, list[str]]:
    """The frames folder, emptied of another run's frames (said so) unless they were made with ``settings``."""
    frames_dir, notes = out / "frames", []
    settings_path = out / SETTINGS_FILE
    if settings_path.is_file():
        try:
            same = json.loads(settings_path.read_text()) == settings
        except (OSError, ValueError):
            same = False
        if not same:
            old = sorted(frames_dir.glob("*.png")) + sorted(frames_dir.glob("*.txt"))
            for path in old:
                path.unlink()
            notes.append(f"{out}: frames of an edit with other settings replaced ({len(old)} files)")
    frames_dir.mkdir(parents=True, exist_ok=True)
    write_json(settings_path, settings)
    return frames_dir, notes


def portrait_video_job(request: PortraitVideoRequest, cancel: CancelToken,
                       engine: EditEngine | None = None) -> Iterator:
    """Edit a video frame by frame into ``request.out``; see the module docstring.  Yields job events."""
    from PIL import Image

    from engine.portrait.alignment import align_face

    request.validate()
    fps, count, frames = read_video(request.video)
    if request.max_frames is not None:
        count = request.max_frames if count is None else min(count, request.max_frames)
    edit = request.edit_request()
    yield Progress(0, count, "loading the 3DPE network")
    engine = engine or make_engine(edit)
    if request.prompt is not None and isinstance(engine, EmbeddedEngine):
        engine.editor.prompts.resolve(request.prompt)  # a word outside the vocabulary: say so before any work
    out = Path(request.out)
    frames_dir, notes = _start_or_resume(out, request.settings())
    for note in notes:
        yield JobWarning(note)
    track, prompt, written, faceless = LandmarkTrack(request.smoothing), None, 0, 0
    front = torch.from_numpy(camera_labels(0.0, 0.0))
    for index, frame in enumerate(frames):
        if request.max_frames is not None and index >= request.max_frames:
            break
        if cancel.cancelled:
            return
        paths = _frame_paths(frames_dir, index)
        landmarks_path = frames_dir / f"landmarks_{index:05d}.txt"
        if landmarks_path.is_file() and all(path.is_file() for path in paths.values()):
            track.points = np.loadtxt(landmarks_path, ndmin=2)
            written += 1
            continue
        points = track.update(frame)
        if points is None:
            faceless += 1
            continue
        aligned = align_face(frame, points).image
        if prompt is None:
            prompt = engine.prompt(aligned, edit)
            for note in getattr(engine, "notes", []):
                yield JobWarning(note)
        edited, plain = engine.encode(aligned, prompt)
        planes = blend(edited, plain, request.strength)
        cameras = torch.cat([front, torch.from_numpy(camera_labels(sweep_yaw(index, fps, request.sweep_seconds),
                                                                   0.0))])
        views = [to_uint8(engine.render(planes, c[None])[0].permute(1, 2, 0)) for c in cameras]
        small = np.asarray(Image.fromarray(aligned).resize(views[0].shape[1::-1], Image.Resampling.LANCZOS))
        for name, image in zip(OUTPUTS, (small, *views)):
            write_png(paths[name], image)
        atomic_write(landmarks_path, lambda tmp: np.savetxt(tmp, points, fmt="%.3f"))
        written += 1
        yield Preview(index, np.concatenate([small, *views], axis=1), {"layout": "aligned|input view|novel view"})
        yield Progress(index + 1, count, "editing the frames")
    if faceless:
        yield JobWarning(f"{request.video}: no face in the first {faceless} frames; the edit starts after them")
    if track.missed:
        yield JobWarning(f"{request.video}: no face found in {track.missed} later frames; they kept the previous "
                         "frame's landmarks")
    if written == 0:
        raise UserInputError(f"{request.video}: the built-in detector found no face in any frame")
    done = sorted(index for index in (int(path.stem.rsplit("_", 1)[1]) for path in frames_dir.glob("landmarks_*.txt"))
                  if request.max_frames is None or index < request.max_frames)
    for name in OUTPUTS:
        pictures = (np.asarray(Image.open(_frame_paths(frames_dir, index)[name]).convert("RGB")) for index in done)
        yield Artifact(write_frames(pictures, out / f"{name}.mp4", fps=fps), "video")
