"""Rendering whole frames from a trained model: full resolution in chunks, or a quick preview."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch

from engine.core.cameras import Cameras, image_rays
from engine.core.imaging import frames_kind, to_uint8, write_frames
from engine.core.jobs import Artifact, Progress

RENDER_CHUNK_RAYS = 1 << 15
"""rays rendered at once (bounds the memory of a large frame)"""


@torch.inference_mode()
def render_image(model, cameras: Cameras, index: int, background: torch.Tensor | None = None,
                 chunk: int = RENDER_CHUNK_RAYS, step_scale: float = 1.0, appearance: int | None = None,
                 around_chunk: Callable[[], ContextManager] = contextlib.nullcontext) -> dict[str, torch.Tensor]:
    """Render camera ``index``; returns rgb (H,W,3), depth, median_depth and accumulation (H,W).

    ``step_scale`` > 1 samples more coarsely: the live preview uses PREVIEW_STEP_SCALE.
    ``appearance``: the training image whose appearance (colour correction) to use, so a
    training view renders as the field is fitted to it; None: the mean appearance.
    ``around_chunk``: a context each chunk of ``chunk`` rays renders in (a viewer sharing the model
    with a training job takes its turn per chunk, so a slow frame never stops training for long).
    """
    origins, dirs = image_rays(cameras, index)
    h, w = int(cameras.height[index]), int(cameras.width[index])
    parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "median_depth": [], "accumulation": []}
    for start in range(0, origins.shape[0], chunk):
        rays = slice(start, start + chunk)
        image_idx = None if appearance is None else torch.full((origins[rays].shape[0],), appearance)
        with around_chunk():
            was_training = model.training
            model.eval()
            out = model.render_rays(origins[rays], dirs[rays], image_idx, background, step_scale)
            model.train(was_training)
        for key in parts:
            parts[key].append(out[key])
    result = {key: torch.cat(vals) for key, vals in parts.items()}
    return {"rgb": result["rgb"].reshape(h, w, 3).clamp(0, 1)} | {
        key: result[key].reshape(h, w) for key in ("depth", "median_depth", "accumulation")}


PREVIEW_STEP_SCALE = 2.0
"""Live previews march with steps this many times longer than final renders."""


def preview_cameras(cameras: Cameras, max_side: int) -> Cameras:
    """The same cameras at a resolution whose longer side is at most ``max_side``."""
    longest = float(max(cameras.width.max(), cameras.height.max()))
    return cameras if longest <= max_side else cameras.scaled(max_side / longest)


def camera_dict(cameras: Cameras, index: int) -> dict:
    """JSON-friendly description of one camera (for preview events and exports)."""
    return {"c2w": cameras.c2w[index].tolist(), "fx": float(cameras.fx[index]), "fy": float(cameras.fy[index]),
            "cx": float(cameras.cx[index]), "cy": float(cameras.cy[index]), "width": int(cameras.width[index]),
            "height": int(cameras.height[index]), "model": cameras.model}


def render_video_job(model, cameras: Cameras, out, fps: float, background: torch.Tensor | None = None,
                     cancel=None):
    """Job: render every camera and write a video or PNG folder; yields progress and the artifact."""
    frames = []
    for i in range(len(cameras)):
        if cancel is not None and cancel.cancelled:
            return
        frames.append(to_uint8(render_image(model, cameras, i, background)["rgb"]))
        yield Progress(i + 1, len(cameras), "rendering")
    yield Artifact(write_frames(frames, out, fps), frames_kind(out))
