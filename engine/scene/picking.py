"""What the user points at: the surface seen under a pixel, and points and radii between the capture's
own coordinates (the frame of its transforms.json) and the normalised scene the field lives in."""

from __future__ import annotations

import numpy as np
import torch

from engine.core.cameras import Cameras, image_rays
from engine.scene.datasets import SceneDataset

MIN_OPACITY = 0.5
"""a picked pixel must be at least this opaque in the render to name a surface (where its median depth is)"""


def surface_at_pixel(model, cameras: Cameras, index: int, x: float, y: float,
                     background: torch.Tensor | None = None) -> tuple[np.ndarray | None, float]:
    """The scene point where the ray through pixel (x, y) of camera ``index`` first turns half opaque (the
    median depth: matter spread behind a surface does not push it back as it does the mean depth), and the
    ray's opacity; the point is None when the ray is less than ``MIN_OPACITY`` opaque.  Pixels outside the
    image are clamped to its border; the model's train / eval mode is left as it was."""
    width, height = int(cameras.width[index]), int(cameras.height[index])
    origins, dirs = image_rays(cameras, index)
    k = min(max(int(y), 0), height - 1) * width + min(max(int(x), 0), width - 1)
    was_training = model.training
    try:
        with torch.inference_mode():
            model.eval()
            out = model.render_rays(origins[k:k + 1], dirs[k:k + 1], None, background)
    finally:
        model.train(was_training)
    opacity = float(out["accumulation"][0])
    if opacity < MIN_OPACITY:
        return None, opacity
    return (origins[k] + dirs[k] * out["median_depth"][0]).numpy().astype(np.float64), opacity


def capture_to_scene(dataset: SceneDataset, point: tuple[float, float, float],
                     radius: float) -> tuple[np.ndarray, float]:
    """A point and a radius in capture coordinates → the normalised scene."""
    p = dataset.world_from_capture @ np.append(np.asarray(point, dtype=np.float64), 1.0)
    return p[:3], radius * dataset.scale


def scene_to_capture(dataset: SceneDataset, point: np.ndarray, radius: float) -> tuple[np.ndarray, float]:
    """A point and radius in the normalised scene → the capture's coordinates and units."""
    p = np.linalg.inv(dataset.world_from_capture) @ np.append(np.asarray(point, np.float64), 1.0)
    return p[:3], radius / dataset.scale
