"""Local edits ("point and type"): a sphere in the scene, projected into every view as a soft mask.

The user points at a pixel of a view (the ray is cast against the field's rendered depth)
or gives a 3D point, plus a radius.  A pixel belongs to the region when the surface it sees
lies inside the sphere: the rendered depth is the depth test, so a wall in front of the
region hides it.  The mask falls off smoothly near the sphere's surface so blended edits
have no seam.  Points and radii are given in the capture's own coordinates and units (the
frame of its transforms.json), converted here to the normalised scene the field lives in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.cameras import Cameras, image_rays, project_points
from engine.errors import UserInputError
from engine.scene.datasets import SceneDataset

MIN_OPACITY = 0.5
"""a picked pixel must be at least this opaque in the render to name a surface"""


@dataclass(frozen=True)
class Region:
    """A sphere in the normalised scene where a local edit applies."""

    centre: tuple[float, float, float]
    radius: float
    falloff: float = 0.25
    """fraction of the radius over which the mask fades from 1 to 0"""

    def weight(self, points: torch.Tensor) -> torch.Tensor:
        """Mask value (0..1) of world points (..., 3): 1 well inside, 0 outside, smooth in between."""
        dist = torch.linalg.norm(points - torch.tensor(self.centre, dtype=points.dtype), dim=-1)
        inner = self.radius * (1 - self.falloff)
        x = ((self.radius - dist) / max(self.radius - inner, 1e-9)).clamp(0, 1)
        return x * x * (3 - 2 * x)

    def mask(self, cameras: Cameras, index: int, depth: torch.Tensor, accumulation: torch.Tensor) -> torch.Tensor:
        """(H, W) soft mask of the pixels of camera ``index`` whose visible surface (from a render's
        depth and opacity) lies in the region."""
        origins, dirs = image_rays(cameras, index)
        h, w = depth.shape
        points = (origins + dirs * depth.reshape(-1, 1)).reshape(h, w, 3)
        return self.weight(points) * (accumulation >= MIN_OPACITY)


def view_index(dataset: SceneDataset, view: str) -> int:
    """Frame index of a view named by its image file stem, file name, or position in the capture."""
    names = [p.stem for p in dataset.image_paths]
    files = [p.name for p in dataset.image_paths]
    if view in names:
        return names.index(view)
    if view in files:
        return files.index(view)
    if view.isdigit() and int(view) < len(names):
        return int(view)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise UserInputError(f"no view named {view!r} in {dataset.root} (views: {shown}; or a number 0-{len(names) - 1})")


def capture_to_scene(dataset: SceneDataset, point: tuple[float, float, float], radius: float) -> tuple[np.ndarray, float]:
    """A point and a radius in capture coordinates → the normalised scene."""
    p = dataset.world_from_capture @ np.append(np.asarray(point, dtype=np.float64), 1.0)
    return p[:3], radius * dataset.scale


def region_from_pixel(model, dataset: SceneDataset, view: str, u: float, v: float, radius: float,
                      background: torch.Tensor | None = None) -> Region:
    """The region around the surface seen at pixel (u, v) of ``view`` (radius in capture units)."""
    _check_radius(radius)
    frame = view_index(dataset, view)
    w, h = int(dataset.cameras.width[frame]), int(dataset.cameras.height[frame])
    if not (0 <= u < w and 0 <= v < h):
        raise UserInputError(f"pixel ({u:g}, {v:g}) lies outside view {view} ({w}x{h} pixels)")
    single = dataset.cameras.subset(np.array([frame]))
    origins, dirs = image_rays(single, 0)
    k = int(v) * w + int(u)
    with torch.inference_mode():
        model.eval()
        out = model.render_rays(origins[k:k + 1], dirs[k:k + 1], None, background)
    opacity = float(out["accumulation"][0])
    if opacity < MIN_OPACITY:
        raise UserInputError(f"pixel ({u:g}, {v:g}) of view {view} looks at empty space (opacity {opacity:.2f}); "
                             "point at the object to edit")
    centre = (origins[k] + dirs[k] * out["depth"][0]).tolist()
    return Region(tuple(centre), radius * dataset.scale)


def region_from_point(dataset: SceneDataset, point: tuple[float, float, float], radius: float) -> Region:
    """The region around a 3D point given in capture coordinates; it must be in front of some camera."""
    _check_radius(radius)
    centre, r = capture_to_scene(dataset, point, radius)
    if not any(_sees(dataset.cameras, i, centre) for i in range(len(dataset.cameras))):
        raise UserInputError(f"the point {tuple(point)} is outside every view of {dataset.root}")
    return Region(tuple(centre.tolist()), r)


def _sees(cameras: Cameras, i: int, point: np.ndarray) -> bool:
    """Whether ``point`` (normalised scene) lies in front of camera ``i`` and inside its image."""
    c2w = cameras.c2w[i]
    if (point - c2w[:3, 3]) @ -c2w[:3, 2] <= 0:
        return False
    uv = project_points(torch.tensor(point[None]), torch.tensor(c2w), cameras.fx[i], cameras.fy[i], cameras.cx[i],
                        cameras.cy[i], cameras.model, torch.tensor(cameras.distortion[i]))[0]
    return bool(0 <= uv[0] < cameras.width[i] and 0 <= uv[1] < cameras.height[i])


def _check_radius(radius: float) -> None:
    if not radius > 0:
        raise UserInputError(f"the edit radius must be positive (got {radius})")
