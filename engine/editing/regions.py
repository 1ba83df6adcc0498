"""Local edits ("point and type"): a sphere in the scene, projected into every view as a soft mask.

The user points at a pixel of a view (the ray is cast against the field's rendered depth)
or gives a 3D point, plus a radius.  A pixel belongs to the region when its ray passes
through the sphere before it reaches the surface the field shows there: the surface inside
the sphere, or the empty space of the sphere in front of a surface behind it, so an edit can
add something there ("give him a hat").  Editors that only change the look of what is there
get the surfaces inside the sphere alone (recolouring the background seen through the empty
space would grow coloured fog).  The depth test uses the rendered median depth (where a ray
turns half opaque: the first surface it meets; the mean depth lies behind it wherever matter
spreads behind the surface), so a wall in front of the region hides it.  The mask falls off
smoothly near the sphere's surface so blended edits have no seam.  Points and radii are given
in the capture's own coordinates and units (the frame of its transforms.json), converted here
to the normalised scene the field lives in; reports give both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.core.cameras import Cameras, image_rays, project_points
from engine.core.errors import UserInputError
from engine.scene.datasets import SceneDataset
from engine.scene.picking import capture_to_scene, scene_to_capture, surface_at_pixel

@dataclass(frozen=True)
class Region:
    """A sphere in the normalised scene where a local edit applies."""

    centre: tuple[float, float, float]
    radius: float
    falloff: float = 0.25
    """fraction of the radius over which the mask fades from 1 to 0"""
    empty_space: bool = True
    """whether the region covers its empty space in front of surfaces (where an edit may add things) or only
    the surfaces inside it"""

    def weight(self, points: torch.Tensor) -> torch.Tensor:
        """Mask value (0..1) of world points (..., 3): 1 well inside, 0 outside, smooth in between."""
        dist = torch.linalg.norm(points - torch.tensor(self.centre, dtype=points.dtype), dim=-1)
        inner = self.radius * (1 - self.falloff)
        x = ((self.radius - dist) / max(self.radius - inner, 1e-9)).clamp(0, 1)
        return x * x * (3 - 2 * x)

    def mask(self, cameras: Cameras, index: int, median_depth: torch.Tensor) -> torch.Tensor:
        """(H, W) soft mask of the pixels of camera ``index`` whose ray passes through the region before
        the surface it sees (a render's median depth: where the ray turns half opaque, inf for none):
        the weight of the ray's point nearest the centre on that visible stretch, so the edge stays soft.
        Without ``empty_space``: the weight of the surface point itself (0 where there is none)."""
        origins, dirs = image_rays(cameras, index)
        surface = median_depth.reshape(-1)
        hit = surface.isfinite()
        if self.empty_space:
            nearest = ((torch.tensor(self.centre, dtype=origins.dtype) - origins) * dirs).sum(-1)  # dirs are unit
            t = torch.minimum(nearest.clamp_min(0), surface)
        else:
            t = torch.where(hit, surface, 0)
        weight = self.weight(origins + dirs * t[:, None])
        return (weight if self.empty_space else weight * hit).reshape(median_depth.shape)

    def describe(self, dataset: SceneDataset) -> dict:
        """The region in the capture's coordinates and units (as the user gives them), and in the normalised
        scene the field lives in (``scene_centre``, ``scene_radius``)."""
        centre, radius = scene_to_capture(dataset, np.asarray(self.centre), self.radius)
        return {"centre": centre.tolist(), "radius": radius, "scene_centre": list(self.centre),
                "scene_radius": self.radius, "falloff": self.falloff, "empty_space": self.empty_space}


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


def pixel_view(dataset: SceneDataset, view: str, u: float, v: float) -> int:
    """Frame index of ``view`` (see view_index); raises UserInputError when pixel (u, v) lies outside it."""
    frame = view_index(dataset, view)
    w, h = int(dataset.cameras.width[frame]), int(dataset.cameras.height[frame])
    if not (0 <= u < w and 0 <= v < h):
        raise UserInputError(f"pixel ({u:g}, {v:g}) lies outside view {view} ({w}x{h} pixels)")
    return frame


def region_from_pixel(model, dataset: SceneDataset, view: str, u: float, v: float, radius: float,
                      background: torch.Tensor | None = None) -> Region:
    """The region around the surface seen at pixel (u, v) of ``view`` (radius in capture units)."""
    check_radius(radius)
    frame = pixel_view(dataset, view, u, v)
    centre, opacity = surface_at_pixel(model, dataset.cameras.subset(np.array([frame])), 0, u, v, background)
    if centre is None:
        raise UserInputError(f"pixel ({u:g}, {v:g}) of view {view} looks at empty space (opacity {opacity:.2f}); "
                             "point at the object to edit")
    return Region(tuple(centre.tolist()), radius * dataset.scale)


def region_from_point(dataset: SceneDataset, point: tuple[float, float, float], radius: float) -> Region:
    """The region around a 3D point given in capture coordinates; it must be in front of some camera."""
    check_radius(radius)
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


def check_radius(radius: float | None) -> None:
    """Raise UserInputError unless the edit radius is positive: the one check of it, made by ``EditConfig.validate``
    and by the two functions above."""
    if radius is None or not radius > 0:
        raise UserInputError(f"the edit radius must be positive (got {radius})")
