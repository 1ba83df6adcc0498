"""EG3D's neural renderer: camera rays, triplane feature sampling, the small decoder MLP, and
two-pass (stratified + importance) volume rendering.

Conventions kept exactly as the official generator has them, because official weights only
render right with them:
- the three planes are sampled at (x, y), (x, z) and (z, x) of the point (the third is not the
  (y, z) plane one would expect), after scaling the point by 2 / box_warp;
- the decoder averages the three 32-channel samples, runs FC 32→64, softplus, FC 64→33; channel
  0 is the raw density, the other 32 go through sigmoid·(1 + 2·0.001) − 0.001;
- densities are composited at interval midpoints as softplus(σ − 1); colours come out in [−1, 1];
- importance sampling smooths the coarse weights (max-pool 2, avg-pool 2, + 0.01), and draws from
  the pdf of weights[1:-1] over the interval midpoints.
``deterministic=True`` takes coarse depths at linspace(ray_start, ray_end, N) without jitter and
importance samples at u = linspace(0, 1, N); otherwise both are random, as in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.portrait.stylegan import FullyConnectedLayer

PLANE_FEATURES = 32
"""channels of each of the three planes"""
DECODER_HIDDEN = 64
RGB_PAD = 0.001
"""the decoder's sigmoid is stretched to [-0.001, 1.001] (MipNeRF's trick against saturation)"""
DENSITY_SHIFT = 1.0
"""densities are composited as softplus(sigma - 1): the shift makes fresh networks start near empty"""


def plane_axes() -> torch.Tensor:
    """The three plane bases; projecting a point x onto plane k gives (x @ inverse(axes[k]))[:2]."""
    return torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                         [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                         [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)


def sample_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Bilinear samples of ``planes`` (N, 3, C, H, W) at ``points`` (N, M, 3): (N, 3, M, C).
    Points outside the box get zeros."""
    n, n_planes, channels, height, width = planes.shape
    axes = plane_axes().to(points)
    coords = (2 / box_warp) * points
    projected = torch.einsum("nmi,pij->npmj", coords, torch.linalg.inv(axes))[..., :2]
    grid = projected.reshape(n * n_planes, 1, -1, 2)
    sampled = F.grid_sample(planes.reshape(n * n_planes, channels, height, width), grid, mode="bilinear",
                            padding_mode="zeros", align_corners=False)
    return sampled.permute(0, 3, 2, 1).reshape(n, n_planes, -1, channels)


class OSGDecoder(nn.Module):
    """The triplane decoder: mean of the three plane features → density (raw) and 32 features
    whose first three are the colour."""

    def __init__(self, n_features: int = PLANE_FEATURES, decoder_lr_mul: float = 1.0,
                 decoder_output_dim: int = PLANE_FEATURES) -> None:
        super().__init__()
        self.net = nn.Sequential(FullyConnectedLayer(n_features, DECODER_HIDDEN, lr_multiplier=decoder_lr_mul),
                                 nn.Softplus(),
                                 FullyConnectedLayer(DECODER_HIDDEN, 1 + decoder_output_dim,
                                                     lr_multiplier=decoder_lr_mul))

    def forward(self, sampled: torch.Tensor) -> dict[str, torch.Tensor]:
        """``sampled``: (N, 3, M, C) plane features → {"rgb": (N, M, 32), "sigma": (N, M, 1)}."""
        x = sampled.mean(1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        return {"rgb": torch.sigmoid(x[..., 1:]) * (1 + 2 * RGB_PAD) - RGB_PAD, "sigma": x[..., 0:1]}


def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and unit directions (N, R*R, 3) through pixel centres, row-major.
    ``intrinsics`` are normalised by the image size (principal point near 0.5)."""
    n = cam2world.shape[0]
    centres = (torch.arange(resolution, dtype=torch.float32, device=cam2world.device) + 0.5) / resolution
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    u, v = u.reshape(1, -1), v.reshape(1, -1)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, skew = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    x_cam = (u - cx + cy * skew / fy - skew * v / fy) / fx
    y_cam = (v - cy) / fy
    ones = torch.ones_like(x_cam)
    points = torch.stack([x_cam, y_cam, ones, ones], dim=-1)  # (N, M, 4) at depth 1 in camera space
    world = torch.bmm(cam2world, points.permute(0, 2, 1)).permute(0, 2, 1)[..., :3]
    origins = cam2world[:, :3, 3]
    directions = F.normalize(world - origins[:, None, :], dim=2)
    return origins[:, None, :].expand(n, directions.shape[1], 3).contiguous(), directions


def composite(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor,
              white_background: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha compositing over the intervals between samples (N, M, S, ·): colour in [-1, 1],
    expected depth clamped to the sampled range, and the S - 1 interval weights."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - DENSITY_SHIFT)
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-densities_mid * deltas)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2), -2)
    weights = alpha * transmittance[:, :, :-1]
    rgb = torch.sum(weights * colors_mid, -2)
    total = weights.sum(2)
    depth = torch.nan_to_num(torch.sum(weights * depths_mid, -2) / total, float("inf"))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if white_background:
        rgb = rgb + 1 - total
    return rgb * 2 - 1, depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, count: int, deterministic: bool,
               eps: float = 1e-5) -> torch.Tensor:
    """``count`` depths per row drawn by inverse transform from the piecewise-constant pdf
    ``weights`` over ``bins`` (rows are rays)."""
    rays, bins_used = weights.shape
    pdf = (weights + eps) / torch.sum(weights + eps, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    if deterministic:
        u = torch.linspace(0, 1, count, device=bins.device).expand(rays, count)
    else:
        u = torch.rand(rays, count, device=bins.device)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    pairs = torch.stack([torch.clamp_min(inds - 1, 0), torch.clamp_max(inds, bins_used)], -1).view(rays, 2 * count)
    cdf_g = torch.gather(cdf, 1, pairs).view(rays, count, 2)
    bins_g = torch.gather(bins, 1, pairs).view(rays, count, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, count: int, deterministic: bool) -> torch.Tensor:
    """Fine-pass depths (N, M, count, 1) where the coarse pass found weight."""
    n, m, samples, _ = depths.shape
    with torch.no_grad():
        z = depths.reshape(n * m, samples)
        w = weights.reshape(n * m, -1, 1).transpose(1, 2)  # (rays, 1, S - 1)
        w = F.avg_pool1d(F.max_pool1d(w.float(), 2, 1, padding=1), 2, 1).reshape(n * m, -1) + 0.01
        mids = 0.5 * (z[:, :-1] + z[:, 1:])
        return sample_pdf(mids, w[:, 1:-1], count, deterministic).reshape(n, m, count, 1)


class ImportanceRenderer(nn.Module):
    """Renders planes along rays: a coarse pass at stratified depths, a fine pass where the coarse
    weights are, both composited together in depth order."""

    def forward(self, planes: torch.Tensor, decoder: OSGDecoder, origins: torch.Tensor, directions: torch.Tensor,
                options: dict, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features (N, M, 32) in [-1, 1], depth (N, M, 1), accumulated weight (N, M, 1))."""
        n, m, _ = origins.shape
        start, end, coarse = options["ray_start"], options["ray_end"], options["depth_resolution"]
        if start == "auto" or options.get("disparity_space_sampling", False):
            raise NotImplementedError("automatic ray limits and disparity-space sampling are not supported")
        depths = torch.linspace(start, end, coarse, device=origins.device).reshape(1, 1, coarse, 1).repeat(n, m, 1, 1)
        if not deterministic:
            depths = depths + torch.rand_like(depths) * (end - start) / (coarse - 1)
        colors, densities = self._run(planes, decoder, origins, directions, depths, options)
        fine = options.get("depth_resolution_importance", 0)
        white = options.get("white_back", False)
        if fine > 0:
            _, _, weights = composite(colors, densities, depths, white)
            fine_depths = importance_depths(depths, weights, fine, deterministic)
            fine_colors, fine_densities = self._run(planes, decoder, origins, directions, fine_depths, options)
            depths = torch.cat([depths, fine_depths], -2)
            colors = torch.cat([colors, fine_colors], -2)
            densities = torch.cat([densities, fine_densities], -2)
            order = torch.sort(depths, dim=-2).indices
            depths = torch.gather(depths, -2, order)
            colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
            densities = torch.gather(densities, -2, order)
        rgb, depth, weights = composite(colors, densities, depths, white)
        return rgb, depth, weights.sum(2)

    @staticmethod
    def _run(planes, decoder, origins, directions, depths, options) -> tuple[torch.Tensor, torch.Tensor]:
        n, m, samples, _ = depths.shape
        points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(n, -1, 3)
        out = decoder(sample_planes(planes, points, options["box_warp"]))
        return out["rgb"].reshape(n, m, samples, -1), out["sigma"].reshape(n, m, samples, 1)
