"""EG3D's neural renderer: camera rays, triplane feature sampling, the small decoder MLP, and
two-pass (stratified + importance) volume rendering.

Conventions kept exactly as the official generator has them, because official weights only
render right with them:
- the three planes are sampled at (x, y), (x, z) and (z, x) of the point (the third is not the
  (y, z) plane one would expect), after scaling the point by 2 / box_warp;
- the decoder takes the mean of the three 32-channel samples, runs FC 32→64, softplus, FC 64→33; channel
  0 is the raw density, the other 32 go through sigmoid·(1 + 2·0.001) − 0.001;
- densities are composited at interval midpoints as softplus(σ − 1); colours come out in [−1, 1];
- importance sampling smooths the coarse weights (max-pool 2, avg-pool 2, + 0.01), and draws from
  the pdf of weights[1:-1] over the interval midpoints.
``deterministic=True`` takes coarse depths at linspace(ray_start, ray_end, N) without jitter and
importance samples at u = linspace(0, 1, N); otherwise both are random, as in training.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.native import NativeLibrary, ptr
from engine.portrait.stylegan import FullyConnectedLayer

PLANE_FEATURES = 32
"""channels of each of the three planes"""
DECODER_HIDDEN = 64
RGB_PAD = 0.001
"""the decoder's sigmoid is stretched to [-0.001, 1.001] (MipNeRF's trick against saturation)"""
DENSITY_SHIFT = 1.0
"""densities are composited as softplus(sigma - 1): the shift makes fresh networks start near empty"""
OCCUPANCY_RESOLUTION = 64
"""lattice points per side of an occupancy grid over the box"""
EMPTY_DENSITY = 0.01
"""space this thin is empty for skipping: an interval of the coarse pass (about 0.07 long for the
prior) through it is at most 0.1 % opaque"""
HIDDEN_TRANSMITTANCE = 1e-4
"""samples behind this little of the light are hidden for skipping"""
SKIPPED_SIGMA = -30.0
"""the raw density a skipped sample gets: softplus(-31) is about 3e-14"""


def plane_axes() -> torch.Tensor:
    """The three plane bases; projecting a point x onto plane k gives (x @ inverse(axes[k]))[:2]."""
    return torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                         [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                         [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)


KERNELS = NativeLibrary(Path(__file__).with_name("kernels.c"),
                        {"softplus_forward": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]})
"""the renderer's C kernels (engine.core.native), compiled on first use; the torch formulas are their reference"""


def _softplus_values(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """softplus(x), written over ``x`` when ``inplace`` allows it: the C kernel for float32 CPU tensors when it
    is built, else relu(x) + log(1 + exp(-|x|)) in torch (within 2e-6 of torch's softplus)."""
    lib = KERNELS.load() if x.device.type == "cpu" and x.dtype == torch.float32 else None
    if lib is None:
        return x.abs().neg_().exp_().add_(1).log_().add_(x.clamp(min=0))  # in place on its own temporaries
    source = x.contiguous()
    out = source if inplace or source is not x else torch.empty_like(source)
    lib.softplus_forward(ptr(source), ptr(out), source.numel())
    return out


class _Softplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return _softplus_values(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


def softplus(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """log(1 + exp(x)), gradient sigmoid(x): the C kernel (within 1e-6 relative of torch's, 14 times faster)
    or a torch formula (2-3 times faster than torch's softplus, a scalar loop on CPU).  ``inplace``: ``x`` is
    a temporary of the caller's and may be overwritten when no gradient is wanted through it."""
    if inplace and not (x.requires_grad and torch.is_grad_enabled()):
        return _softplus_values(x, inplace=True)
    return _Softplus.apply(x)


def texel_major(planes: torch.Tensor) -> torch.Tensor:
    """Triplanes (N, 96, H, W) stored with each texel's 96 features adjacent (channels-last), the
    layout sample_planes reads without copying; a no-op when they already are."""
    return planes.contiguous(memory_format=torch.channels_last)


PLANE_COORDINATES = torch.linalg.inv(plane_axes())[:, :, :2].abs().argmax(dim=1)
"""(3, 2): which point coordinates each plane's (u, v) are, from plane_axes: (x, y), (x, z), (z, x)"""


def sample_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """The mean of the bilinear samples of the three square planes (N, 3 * C, R, R) at ``points``
    (N, M, 3): (N, M, C).  Matches grid_sample (align_corners=False, zeros outside the box), fused
    into one weighted gather of texel rows (embedding_bag): three times faster on CPU, and the
    planes get gradients (the points do not)."""
    n, plane_channels, resolution, width = planes.shape
    if width != resolution:
        raise ValueError(f"triplanes must be square, got {resolution} x {width}")
    n_planes, channels, m = 3, plane_channels // 3, points.shape[1]
    pixel = ((2 / box_warp) * points[..., PLANE_COORDINATES.to(points.device)] + 1) * (resolution / 2) - 0.5
    low = pixel.floor()
    frac = pixel - low
    low = low.int()
    u, v, fu, fv = low[..., 0], low[..., 1], frac[..., 0], frac[..., 1]  # (N, M, 3 planes)
    first = torch.arange(n_planes, dtype=torch.int32, device=points.device) + n_planes * resolution * resolution \
        * torch.arange(n, dtype=torch.int32, device=points.device)[:, None, None]
    rows, weights = [], []
    for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):
        cu, cv = u + du, v + dv
        inside = (cu >= 0) & (cu < resolution) & (cv >= 0) & (cv < resolution)
        weight = (fu if du else 1 - fu) * (fv if dv else 1 - fv)
        weights.append(torch.where(inside, weight / n_planes, 0))
        rows.append(first + n_planes * (cv.clamp(0, resolution - 1) * resolution + cu.clamp(0, resolution - 1)))
    table = texel_major(planes).permute(0, 2, 3, 1).reshape(-1, channels)
    sampled = F.embedding_bag(torch.stack(rows, -1).reshape(n * m, -1).long(), table,
                              per_sample_weights=torch.stack(weights, -1).reshape(n * m, -1), mode="sum")
    return sampled.view(n, m, channels)


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

    def forward(self, features: torch.Tensor, channels: int | None = None) -> dict[str, torch.Tensor]:
        """``features`` (N, M, C), the mean of the three planes' samples → {"rgb": (N, M, 32),
        "sigma": (N, M, 1)}; only the first ``channels`` of "rgb" when given (3: the colour alone, which
        skips most of the last layer's work)."""
        n, m, c = features.shape
        first, _, last = self.net  # the official module tree; its softplus computed by the faster formula
        x = last(softplus(first(features.reshape(n * m, c)), inplace=True), None if channels is None else 1 + channels)
        x = x.reshape(n, m, -1)
        return {"rgb": torch.sigmoid(x[..., 1:]) * (1 + 2 * RGB_PAD) - RGB_PAD, "sigma": x[..., :1]}


def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and unit directions (N, R*R, 3) through pixel centres, row-major.
    ``intrinsics`` are normalised by the image size (principal point near 0.5)."""
    n = cam2world.shape[0]
    centres = (torch.arange(resolution, dtype=torch.float32, device=cam2world.device) + 0.5) / resolution
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    u, v = u.reshape(1, -1), v.reshape(1, -1)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, skew = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    y_cam = (v - cy) / fy  # inverting u = fx x + skew y + cx, v = fy y + cy
    x_cam = (u - cx - skew * y_cam) / fx
    ones = torch.ones_like(x_cam)
    points = torch.stack([x_cam, y_cam, ones, ones], dim=-1)  # (N, M, 4) at depth 1 in camera space
    world = torch.bmm(cam2world, points.permute(0, 2, 1)).permute(0, 2, 1)[..., :3]
    origins = cam2world[:, :3, 3]
    directions = F.normalize(world - origins[:, None, :], dim=2)
    return origins[:, None, :].expand(n, directions.shape[1], 3).contiguous(), directions


def interval_weights(densities: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Alpha-compositing weights (N, M, S - 1, 1) of the intervals between samples (N, M, S, 1) in
    depth order, each interval's density taken at its midpoint."""
    sigma = softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - DENSITY_SHIFT)
    alpha = 1 - torch.exp(-sigma * depths.diff(dim=2))
    # the light reaching each interval: what all before it let through (+1e-10 each, as EG3D)
    light = F.pad(torch.cumprod(1 - alpha + 1e-10, dim=2)[:, :, :-1], (0, 0, 1, 0), value=1.0)
    return alpha * light


def composite(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, white_background: bool = False,
              order: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha compositing over the intervals between samples (N, M, S, ·), each interval coloured by
    the mean of its ends: colour in [-1, 1], expected depth clamped to the sampled range, and the
    S - 1 interval weights.  ``order`` (N, M, S, 1), when given, is the samples' depth order; the
    colours then stay unsorted and only their weights are reordered (cheaper than sorting 32 channels)."""
    if order is not None:
        depths, densities = torch.gather(depths, -2, order), torch.gather(densities, -2, order)
    weights = interval_weights(densities, depths)
    sample_weights = (F.pad(weights, (0, 0, 1, 0)) + F.pad(weights, (0, 0, 0, 1))) / 2
    if order is not None:
        sample_weights = torch.gather(sample_weights, -2, torch.argsort(order, -2))
    rgb = (sample_weights.transpose(-1, -2) @ colors).squeeze(-2)
    total = weights.sum(2)
    midpoints = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    # a ray that meets nothing (0 / 0) gets the far end of the sampled range
    depth = torch.nan_to_num((weights * midpoints).sum(-2) / total, nan=float("inf")).clamp(depths.min(), depths.max())
    if white_background:
        rgb = rgb + 1 - total
    return rgb * 2 - 1, depth, weights


def sample_pdf(knots: torch.Tensor, weights: torch.Tensor, count: int, deterministic: bool,
               eps: float = 1e-5) -> torch.Tensor:
    """``count`` depths per ray (rays, count) by inverse transform sampling of the piecewise-constant
    pdf ``weights`` (rays, S) over the S segments between depths ``knots`` (rays, S + 1).  The cdf is
    linear within a segment, so a quantile u in segment k maps to the depth
    knots[k] + (u - cdf[k]) / p[k] · (knots[k + 1] - knots[k]), p[k] the segment's probability.
    Quantiles are u = linspace(0, 1, count) when ``deterministic``, else uniform.  As in EG3D,
    ``eps`` is added to every weight and a probability below ``eps`` counts as 1 (it only happens
    in the empty segment past the cdf's end, where u = 1 lands when rounding leaves the cdf below 1)."""
    rays = weights.shape[0]
    padded = weights + eps
    cdf = F.pad(torch.cumsum(padded / padded.sum(-1, keepdim=True), -1), (1, 0))
    if deterministic:
        u = torch.linspace(0, 1, count, device=knots.device).repeat(rays, 1)
    else:
        u = torch.rand(rays, count, device=knots.device)
    # one row per segment, the empty one past the end last: where its cdf and depth start, how much they rise
    segments = torch.stack([cdf, F.pad(cdf.diff(), (0, 1)), knots, F.pad(knots.diff(), (0, 1))], -1)
    segment = torch.searchsorted(cdf, u, right=True) - 1  # the last knot whose cdf is at most u
    cdf_start, probability, depth_start, length = segments.gather(1, segment[..., None].expand(-1, -1, 4)).unbind(-1)
    probability = torch.where(probability < eps, 1.0, probability)
    return depth_start + (u - cdf_start) / probability * length


def stratified_depths(rays: tuple[int, int], start: float, end: float, count: int, deterministic: bool,
                      device: torch.device) -> torch.Tensor:
    """``count`` depths (N, M, count, 1) along each of N x M ``rays`` from ``start`` to ``end``: evenly
    spaced, and each moved up to one spacing further at random unless ``deterministic``."""
    depths = torch.linspace(start, end, count, device=device).expand(*rays, count)
    if not deterministic:
        depths = depths + torch.rand(*rays, count, device=device) * ((end - start) / (count - 1))
    return depths.unsqueeze(-1)


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, count: int, deterministic: bool) -> torch.Tensor:
    """Fine-pass depths (N, M, count, 1) where the coarse pass found weight.  EG3D widens the S - 1
    interval weights (each pair's maximum), smooths them (each pair's mean) and adds 0.01, keeping the
    values of the S - 3 inner intervals; their pdf spans the first S - 2 interval midpoints."""
    n, m, samples, _ = depths.shape
    with torch.no_grad():
        w = weights.reshape(n * m, samples - 1).float()
        widened = torch.maximum(w[:, :-1], w[:, 1:])
        smoothed = (widened[:, :-1] + widened[:, 1:]) / 2 + 0.01
        z = depths.reshape(n * m, samples)
        midpoints = (z[:, :-1] + z[:, 1:]) / 2
        knots = midpoints[:, :smoothed.shape[1] + 1]
        return sample_pdf(knots, smoothed, count, deterministic).reshape(n, m, count, 1)


def occupancy_grid(planes: torch.Tensor, decoder: OSGDecoder, box_warp: float,
                   resolution: int = OCCUPANCY_RESOLUTION) -> torch.Tensor:
    """The raw density of triplanes (N, 96, H, W) on a lattice over the box (N, 1, R, R, R; indexed
    z, y, x): computed once for cached planes, so that rendering them can skip empty and hidden space."""
    axis = torch.linspace(-box_warp / 2, box_warp / 2, resolution, device=planes.device)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    points = torch.stack([x, y, z], -1).reshape(1, -1, 3)
    sigma = torch.stack([decoder(sample_planes(planes[k:k + 1], points, box_warp), 0)["sigma"]
                         for k in range(planes.shape[0])])
    return sigma.reshape(-1, 1, resolution, resolution, resolution)


def skippable(occupancy: torch.Tensor, points: torch.Tensor, depths: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Which samples (N, M, S) at ``points`` (N, M, S, 3) and ``depths`` (N, M, S, 1), in depth order
    along each ray, need no decoding by the occupancy grid's density: empty ones (they and their
    neighbours thinner than EMPTY_DENSITY) and hidden ones (behind samples that leave less than
    HIDDEN_TRANSMITTANCE of the light)."""
    n, m, samples, _ = points.shape
    grid = ((2 / box_warp) * points).reshape(n, 1, 1, -1, 3)
    sigma = F.grid_sample(occupancy, grid, mode="bilinear", padding_mode="border",
                          align_corners=True).reshape(n, m, samples)
    empty = softplus(sigma - DENSITY_SHIFT) < EMPTY_DENSITY
    skip = empty.clone()
    skip[..., 1:] &= empty[..., :-1]
    skip[..., :-1] &= empty[..., 1:]
    deltas = depths[..., 1:, 0] - depths[..., :-1, 0]
    light = torch.cumprod(torch.exp(-softplus((sigma[..., :-1] + sigma[..., 1:]) / 2 - DENSITY_SHIFT) * deltas), -1)
    skip[..., 2:] |= light[..., :-1] < HIDDEN_TRANSMITTANCE  # light left after each interval
    return skip


class ImportanceRenderer(nn.Module):
    """Renders planes along rays: a coarse pass at stratified depths, a fine pass where the coarse
    weights are, both composited together in depth order.

    Given an occupancy grid of the planes (occupancy_grid), both passes skip the samples the grid
    shows empty or hidden (skippable): they count as empty (SKIPPED_SIGMA).  The prior's cached
    renders decode about a third fewer samples this way and stay within a grey level of the full
    render (tests/test_portrait_eg3d.py measures it)."""

    def forward(self, planes: torch.Tensor, decoder: OSGDecoder, origins: torch.Tensor, directions: torch.Tensor,
                options: dict, deterministic: bool = False, occupancy: torch.Tensor | None = None,
                channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Planes (N, 96, H, W) rendered along rays (N, M, 3): (features (N, M, 32) in [-1, 1], or their
        first ``channels``, depth (N, M, 1), accumulated weight (N, M, 1))."""
        n, m, _ = origins.shape
        start, end, coarse = options["ray_start"], options["ray_end"], options["depth_resolution"]
        box_warp = options["box_warp"]
        if start == "auto" or options.get("disparity_space_sampling", False):
            raise NotImplementedError("automatic ray limits and disparity-space sampling are not supported")
        depths = stratified_depths((n, m), start, end, coarse, deterministic, origins.device)
        points = origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)
        skip = None if occupancy is None else skippable(occupancy, points, depths, box_warp)
        colors, densities = self._run(planes, decoder, points, box_warp, skip, channels)
        fine = options.get("depth_resolution_importance", 0)
        order = None
        if fine > 0:
            weights = interval_weights(densities, depths)
            fine_depths = importance_depths(depths, weights, fine, deterministic)
            fine_points = origins.unsqueeze(-2) + fine_depths * directions.unsqueeze(-2)
            depths = torch.cat([depths, fine_depths], -2)
            order = torch.sort(depths, dim=-2).indices
            if occupancy is not None:
                in_order = skippable(occupancy, torch.gather(torch.cat([points, fine_points], -2), -2,
                                                             order.expand(-1, -1, -1, 3)),
                                     torch.gather(depths, -2, order), box_warp)
                skip = torch.empty_like(in_order).scatter_(-1, order[..., 0], in_order)[..., coarse:]
            fine_colors, fine_densities = self._run(planes, decoder, fine_points, box_warp, skip, channels)
            colors = torch.cat([colors, fine_colors], -2)
            densities = torch.cat([densities, fine_densities], -2)
        rgb, depth, weights = composite(colors, densities, depths, options.get("white_back", False), order)
        return rgb, depth, weights.sum(2)

    @staticmethod
    def _run(planes: torch.Tensor, decoder: OSGDecoder, points: torch.Tensor, box_warp: float,
             skip: torch.Tensor | None = None, channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Colours (N, M, S, 32, or ``channels``) and raw densities (N, M, S, 1) at points (N, M, S, 3),
        skipped ones empty."""
        n, m, samples, _ = points.shape
        points = points.reshape(n, -1, 3)
        if skip is None:
            out = decoder(sample_planes(planes, points, box_warp), channels)
            return out["rgb"].reshape(n, m, samples, -1), out["sigma"].reshape(n, m, samples, 1)
        width = decoder.net[-1].out_features - 1 if channels is None else channels
        colors = points.new_zeros(n, m * samples, width)
        sigma = points.new_full((n, m * samples, 1), SKIPPED_SIGMA)
        for k in range(n):
            kept = torch.nonzero(~skip[k].flatten()).squeeze(1)
            out = decoder(sample_planes(planes[k:k + 1], points[k:k + 1, kept], box_warp), channels)
            colors[k, kept], sigma[k, kept] = out["rgb"][0], out["sigma"][0]
        return colors.reshape(n, m, samples, -1), sigma.reshape(n, m, samples, 1)
