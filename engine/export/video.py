"""Videos of a trained scene: a turntable or a nerfstudio camera path (frames written by
engine.core.imaging.write_frames)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.core.cameras import Cameras
from engine.core.errors import UserInputError
from engine.core.imaging import pixel_format
from engine.core.jobs import CancelToken, Job, JobWarning
from engine.scene.datasets import SceneDataset
from engine.scene.paths import camera_path_cameras, orbit_cameras
from engine.scene.render import render_video_job
from engine.scene.trainer import fixed_background


@dataclass
class VideoConfig:
    """Which cameras a video follows: a turntable orbit or a nerfstudio camera path (exactly one)."""

    orbit: int | None = None
    """frames of a turntable around the scene centre"""
    camera_path: str | None = None
    """nerfstudio camera_path.json (its size, field of view and frame rate are used)"""
    fps: float | None = None
    """frame rate (default: the camera path's, or 30)"""
    size: int | None = None
    """longer side of orbit frames (default: the training images' size)"""

    def validate(self) -> None:
        if (self.orbit is None) == (self.camera_path is None):
            raise UserInputError("a video needs either --orbit N or --camera-path FILE")
        if self.fps is not None and not self.fps > 0:
            raise UserInputError(f"--fps must be positive (got {self.fps})")
        if self.size is not None and self.size < 1:
            raise UserInputError(f"--size must be positive (got {self.size})")


def video_cameras(dataset: SceneDataset, cfg: VideoConfig) -> tuple[Cameras, float]:
    """The cameras (normalised world) and frame rate ``cfg`` asks for."""
    if cfg.camera_path is not None:
        cameras, fps = camera_path_cameras(cfg.camera_path, dataset)
    else:
        cameras, fps = orbit_cameras(dataset, cfg.orbit, cfg.size), 30.0
    return cameras, cfg.fps or fps


def video_job(model, dataset: SceneDataset, out: str | Path, cfg: VideoConfig,
              cancel: CancelToken | None = None) -> Job:
    """Job: render the video ``cfg`` describes to ``out`` (.mp4, or a folder of PNG frames)."""
    cfg.validate()
    cameras, fps = video_cameras(dataset, cfg)
    width, height = int(cameras.width[0]), int(cameras.height[0])
    if str(out).lower().endswith(".mp4") and pixel_format(width, height) != "yuv420p":
        yield JobWarning(f"{width}x{height} has an odd side: the MP4 uses 4:4:4 chroma to keep that size exactly, "
                         "which some browsers and QuickTime do not play; choose even sides for those")
    yield from render_video_job(model, cameras, out, fps, fixed_background(dataset), cancel)
