"""Image helpers every engine shares: float images to 8 bits, depth as a picture, frames to a video or
PNG folder.  One rounding rule everywhere, so the GUI, image files and videos show the same pixels.
Light on purpose (numpy and PIL, no torch): the window's widgets use it before the engine loads."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
from PIL import Image

from engine.core.errors import UserInputError

if TYPE_CHECKING:
    import torch


def to_uint8(image: "torch.Tensor | np.ndarray") -> np.ndarray:
    """A float image (any shape) in [0, 1] as a fresh uint8 array: clipped, rounded to nearest."""
    if not isinstance(image, np.ndarray) and hasattr(image, "detach"):  # a torch tensor
        return (image.detach().clamp(0, 1) * 255 + 0.5).byte().cpu().numpy().copy()
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


DEPTH_RAMP = np.array([[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38],
                       [0.99, 0.91, 0.14]])
"""a perceptual ramp from dark blue through teal to yellow (viridis-like end points), far to near"""


def colorize_depth(depth: np.ndarray, accumulation: np.ndarray) -> np.ndarray:
    """Depth as an 8-bit image: near bright, far dark, robust to outliers; empty pixels black."""
    solid = accumulation > 0.5
    if not solid.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    near, far = np.percentile(depth[solid], [2, 98])
    x = 1 - np.clip((depth - near) / max(far - near, 1e-6), 0, 1)
    pos = x * (len(DEPTH_RAMP) - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, len(DEPTH_RAMP) - 2)
    frac = (pos - lo)[..., None]
    rgb = DEPTH_RAMP[lo] * (1 - frac) + DEPTH_RAMP[lo + 1] * frac
    rgb[~solid] = 0
    return to_uint8(rgb)


def pixel_format(width: int, height: int) -> str:
    """H.264 chroma layout for a frame size: 4:2:0 when both sides are even, else 4:4:4.

    4:2:0 plays everywhere but cannot represent an odd side; 4:4:4 keeps the exact size (ffmpeg, VLC
    and editors play it; some browsers and QuickTime do not)."""
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"


def frames_kind(out: str | Path) -> str:
    """The artifact kind ``write_frames`` produces at ``out``: "video" for .mp4, else "frames"."""
    return "video" if str(out).lower().endswith(".mp4") else "frames"


def write_png(path: str | Path, image: "np.ndarray | torch.Tensor") -> Path:
    """Write an image atomically as a PNG: H x W x 3 uint8, or a (3, H, W) tensor in [0, 1]."""
    from engine.core.project import atomic_write  # torch loads with it; the widgets' helpers above need none

    pixels = image if isinstance(image, np.ndarray) else to_uint8(image.permute(1, 2, 0))
    return atomic_write(Path(path), lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


MAX_VIDEO_SIDE = 8192
"""the largest video frame side read (a frame is decoded whole into memory)"""


def read_video(path: str | Path) -> tuple[float, int | None, Iterator[np.ndarray]]:
    """A video's frame rate, its frame count (from its duration, None when unknown) and its frames (H x W x 3
    uint8), decoded one at a time as they are read (the ffmpeg shipped with imageio-ffmpeg), so a long video
    never sits in memory."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such video file")
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        reader.close()
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "ffmpeg found no video stream"
        raise UserInputError(f"{path}: not a readable video ({reason})") from None
    width, height = meta["size"]
    if not 0 < max(width, height) <= MAX_VIDEO_SIDE:
        reader.close()
        raise UserInputError(f"{path}: frames of {width} x {height} pixels (at most {MAX_VIDEO_SIDE} a side)")

    def frames() -> Iterator[np.ndarray]:
        try:
            for raw in reader:
                yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
        finally:
            reader.close()

    fps = float(meta.get("fps") or 30.0)
    duration = meta.get("duration")
    return fps, (round(float(duration) * fps) if duration else None), frames()


def write_frames(frames: Iterable[np.ndarray], out: str | Path, fps: float = 30.0) -> Path:
    """Write HxWx3 uint8 frames (all one size) to ``out``: an H.264 .mp4 of exactly that size (the ffmpeg
    shipped with imageio-ffmpeg, no macro-block padding or rescaling), or a folder of numbered PNGs."""
    from engine.core.project import atomic_write  # torch loads with it; the widgets' helpers above need none

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
