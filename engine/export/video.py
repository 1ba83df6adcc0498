"""Writing rendered frame sequences: an H.264 MP4 (ffmpeg shipped with imageio-ffmpeg) or PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from engine.errors import UserInputError
from engine.project import atomic_write


def write_frames(frames: Iterable[np.ndarray], out: str | Path, fps: float = 30.0) -> Path:
    """Write HxWx3 uint8 frames to ``out``: an .mp4 file, or a folder of numbered PNGs otherwise."""
    out = Path(out)
    if out.suffix.lower() == ".mp4":
        import imageio.v2 as imageio

        def write(tmp: Path) -> None:
            with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                    macro_block_size=1, output_params=["-pix_fmt", "yuv420p"]) as writer:
                for frame in frames:
                    writer.append_data(_even(frame))

        return atomic_write(out, write)
    if out.suffix:
        raise UserInputError(f"{out}: write videos as .mp4, or give a folder for PNG frames")
    out.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        atomic_write(out / f"frame_{i:05d}.png", lambda tmp, f=frame: Image.fromarray(f).save(tmp, format="PNG"))
    return out


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: drop a last row/column when odd."""
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]
