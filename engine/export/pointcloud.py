"""Coloured point clouds from a trained field's rendered depth, written as binary PLY.

Each chosen training view is rendered; a pixel whose ray turns opaque enough inside the scene
box ([-1, 1]^3 of the normalised world: the object box of bounded scenes, the uncontracted
foreground cube of unbounded ones) gives one point at its median depth there (where the ray has
gathered half of its opacity in the box), coloured as the view renders it. The median, unlike
the expected depth a renderer reports, is not dragged off the surface by the far background a
capture's field keeps in its contracted shell, nor by the haze of a young field. Isolated
points (floaters, depth split across an edge) are then removed by statistical outlier removal,
and coordinates are written in the capture frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.core.cameras import image_rays
from engine.core.config import INTERNAL
from engine.core.errors import UserInputError
from engine.core.imaging import to_uint8
from engine.core.jobs import Artifact, CancelToken, Job, JobWarning, Progress
from engine.core.meshes import write_ply
from engine.export.cameras import to_capture
from engine.scene.compositing import packed_exclusive_cumsum, ray_sum
from engine.scene.datasets import SceneDataset
from engine.scene.render import preview_cameras, render_image
from engine.scene.sampling import Samples, box_intersect
from engine.scene.trainer import fixed_background


@dataclass
class PointCloudConfig:
    """How many views are rendered, at what size, and which points survive."""

    views: int = 16
    """training views rendered, evenly spaced through the capture (0: all of them)"""
    max_side: int = 256
    """render resolution: longer image side in pixels (never above the training size)"""
    min_accumulation: float = 0.9
    """keep pixels whose ray turns at least this opaque inside the scene box (surfaces, not haze)"""
    max_points: int = 2_000_000
    """at most this many points (a seeded random subset) go on to outlier removal and the file"""
    neighbours: int = 16
    """k of the statistical outlier removal"""
    std_ratio: float = 2.0
    """drop points whose mean distance to their k nearest neighbours exceeds mean + std_ratio·std"""
    seed: int = 0
    """seeds the subset drawn when there are more than max_points"""
    step: float = field(default=1 / 256, metadata=INTERNAL)
    """sample spacing inside the box for models without an occupancy grid (the fast model marches its own)"""
    chunk: int = field(default=1 << 13, metadata=INTERNAL)
    """rays per field evaluation batch"""

    def validate(self) -> None:
        if self.views < 0:
            raise UserInputError(f"--views must be 0 (all) or positive (got {self.views})")
        if self.max_side < 1:
            raise UserInputError(f"--max-side must be positive (got {self.max_side})")
        if not 0 <= self.min_accumulation <= 1:
            raise UserInputError(f"the accumulation threshold must lie in [0, 1] (got {self.min_accumulation})")
        if self.neighbours < 1 or self.max_points < 1 or not self.step > 0 or self.chunk < 1:
            raise UserInputError("neighbours, max_points, step and chunk must be positive")


def outlier_mask(points: np.ndarray, neighbours: int, std_ratio: float) -> np.ndarray:
    """True for points whose mean distance to their ``neighbours`` nearest points is at most
    mean + std_ratio·std of that distance over the cloud (statistical outlier removal)."""
    from scipy.spatial import cKDTree

    k = min(neighbours, len(points) - 1)
    if k < 1:
        return np.ones(len(points), dtype=bool)
    dist, _ = cKDTree(points).query(points, k=k + 1, workers=-1)  # the first neighbour is the point itself
    mean = dist[:, 1:].mean(1)
    return mean <= mean.mean() + std_ratio * mean.std()


def view_indices(dataset: SceneDataset, views: int) -> np.ndarray:
    """``views`` training frames evenly spaced through the capture (all of them for 0 or more than exist)."""
    train = dataset.train_indices
    if views == 0 or views >= len(train):
        return train
    return train[np.round(np.linspace(0, len(train) - 1, views)).astype(np.int64)]


def box_samples(model, origins: torch.Tensor, dirs: torch.Tensor, step: float) -> Samples:
    """Samples of each ray inside the scene box: where the model's occupancy grid lets its renderer
    sample, or uniform steps of ``step`` for models without one."""
    grid = getattr(model, "occupancy", None)
    if grid is not None:
        samples = grid.march(origins, dirs)
        return samples.select(samples.midpoints(origins, dirs).abs().amax(-1) <= 1)
    t_near, t_far = box_intersect(origins, dirs)
    t_near = t_near.clamp_min(0)
    counts = torch.ceil((t_far - t_near) / step).clamp_min(0).long()
    ray_idx = torch.repeat_interleave(torch.arange(len(origins)), counts)
    k = torch.arange(len(ray_idx)) - (torch.cumsum(counts, 0) - counts)[ray_idx]
    t0 = t_near[ray_idx] + k * step
    return Samples(ray_idx, t0, torch.minimum(t0 + step, t_far[ray_idx]))


@torch.inference_mode()
def surface_depth(model, origins: torch.Tensor, dirs: torch.Tensor, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per ray: the opacity it gathers inside the scene box and its median depth there (nan where the
    box is empty along the ray)."""
    n = len(origins)
    s = box_samples(model, origins, dirs, step)
    tau = model.field.density(s.midpoints(origins, dirs)) * (s.t1 - s.t0)  # no contraction inside the box
    before = packed_exclusive_cumsum(tau, s.ray_idx, n)
    opacity = -torch.expm1(-ray_sum(tau, s.ray_idx, n))
    # the median lies where the optical depth reaches -log(1 - opacity / 2); density is constant over a
    # sample, so the optical depth grows linearly inside it
    level = -torch.log1p(-opacity / 2)[s.ray_idx]
    cross = (before < level) & (before + tau >= level)
    t_cross = s.t0 + (level - before) / tau.clamp_min(1e-12) * (s.t1 - s.t0)
    depth = torch.full((n,), math.nan).index_put_((s.ray_idx[cross],), t_cross[cross].float())
    return opacity, depth


def point_cloud_job(model, dataset: SceneDataset, out: str | Path, cfg: PointCloudConfig | None = None,
                    cancel: CancelToken | None = None) -> Job:
    """Job: render training views and write their surviving surface points as a coloured PLY ``out``."""
    cfg = cfg or PointCloudConfig()
    cfg.validate()
    cameras = preview_cameras(dataset.cameras.subset(view_indices(dataset, cfg.views)), cfg.max_side)
    background = fixed_background(dataset)
    points, colours = [], []
    for i in range(len(cameras)):
        if cancel is not None and cancel.cancelled:
            yield JobWarning("point cloud export cancelled; nothing written")
            return
        rgb = to_uint8(render_image(model, cameras, i, background)["rgb"]).reshape(-1, 3)
        origins, dirs = image_rays(cameras, i)
        for start in range(0, len(origins), cfg.chunk):
            o, d = origins[start:start + cfg.chunk], dirs[start:start + cfg.chunk]
            opacity, depth = surface_depth(model, o, d, cfg.step)
            keep = (opacity >= cfg.min_accumulation) & ~depth.isnan()
            points.append((o[keep] + depth[keep, None] * d[keep]).numpy())
            colours.append(rgb[start:start + cfg.chunk][keep.numpy()])
        yield Progress(i + 1, len(cameras) + 1, "rendering depth")
    xyz, rgb = np.concatenate(points), np.concatenate(colours)
    if len(xyz) == 0:
        raise UserInputError("no surface inside the scene box is opaque enough in any rendered view; "
                             "train the field longer or lower the accumulation threshold")
    if len(xyz) > cfg.max_points:
        pick = np.sort(np.random.default_rng(cfg.seed).choice(len(xyz), cfg.max_points, replace=False))
        xyz, rgb = xyz[pick], rgb[pick]
    keep = outlier_mask(xyz, cfg.neighbours, cfg.std_ratio)
    yield Progress(len(cameras) + 1, len(cameras) + 1, f"{int(keep.sum())} points")
    yield Artifact(write_ply(out, to_capture(xyz[keep], dataset), rgb[keep]), "point cloud")
