"""Videos of a trained scene (turntable or nerfstudio camera path) and the frame writer behind them.

MP4s are H.264 (the ffmpeg shipped with imageio-ffmpeg) at exactly the rendered frame size:
no macro-block padding or rescaling. Frames with even sides use 4:2:0 chroma, which plays
everywhere; 4:2:0 cannot represent an odd side, so frames with one use 4:4:4 chroma instead
(ffmpeg, VLC and editors play it; some browsers and QuickTime do not).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from engine.cameras import Cameras
from engine.errors import UserInputError
from engine.jobs import CancelToken, Job, JobWarning
from engine.project import atomic_write
from engine.scene.datasets import SceneDataset
from engine.scene.paths import camera_path_cameras, orbit_cameras
from engine.scene.render import render_video_job
from engine.scene.trainer import fixed_background


def pixel_format(width: int, height: int) -> str:
    """H.264 chroma layout for a frame size: 4:2:0 when both sides are even, else 4:4:4."""
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"


def write_frames(frames: Iterable[np.ndarray], out: str | Path, fps: float = 30.0) -> Path:
    """Write HxWx3 uint8 frames (all one size) to ``out``: an .mp4 file of exactly that size, or a
    folder of numbered PNGs otherwise."""
    out = Path(out)
    if out.suffix.lower() == ".mp4":
        import imageio_ffmpeg

        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            raise UserInputError(f"{out}: no frames to write")
        height, width = first.shape[:2]

        def write(tmp: Path) -> None:
            writer = imageio_ffmpeg.write_frames(
                str(tmp), (width, height), fps=fps, codec="libx264", quality=8,
                pix_fmt_out=pixel_format(width, height), macro_block_size=1,  # 1: never rescale
                output_params=["-movflags", "+faststart"])
            writer.send(None)  # start ffmpeg
            try:
                for frame in itertools.chain([first], frames):
                    if frame.shape != first.shape:
                        raise ValueError(f"frame of shape {frame.shape} in a video of {first.shape} frames")
                    writer.send(np.ascontiguousarray(frame))
            finally:
                writer.close()

        return atomic_write(out, write)
    if out.suffix:
        raise UserInputError(f"{out}: write videos as .mp4, or give a folder for PNG frames")
    out.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        atomic_write(out / f"frame_{i:05d}.png", lambda tmp, f=frame: Image.fromarray(f).save(tmp, format="PNG"))
    return out


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
