"""Volume rendering: compositing weights, transmittance and per-ray sums, for padded
(rays x samples) and packed (a flat list of samples with their ray index) layouts."""

from __future__ import annotations

import torch


def weights_dense(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Compositing weights w_i = T_i (1 - exp(-sigma_i delta_i)), T_i = exp(-sum_{j<i} sigma_j delta_j).

    ``sigma`` and ``deltas`` are (..., S); returns (..., S).
    """
    tau = sigma * deltas
    alpha = 1 - torch.exp(-tau)
    excl = torch.cumsum(tau, dim=-1) - tau
    return alpha * torch.exp(-excl)


def packed_exclusive_cumsum(values: torch.Tensor, ray_idx: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Sum of the earlier samples of the same ray, for samples grouped by ray (ray_idx non-decreasing).

    Accumulates in float64 so rays late in a large batch keep full precision.
    """
    if values.numel() == 0:
        return values
    v64 = values.double()
    cs = torch.cumsum(v64, 0)
    counts = torch.bincount(ray_idx, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts  # index of each ray's first sample
    # index_select (not tensor[idx]): its backward is a deterministic index_add on CPU
    first = first.clamp(max=max(values.shape[0] - 1, 0))
    before = torch.index_select(cs - v64, 0, first)  # rays without samples are never looked up
    return (cs - v64 - torch.index_select(before, 0, ray_idx)).to(values.dtype)


def weights_packed(sigma: torch.Tensor, deltas: torch.Tensor, ray_idx: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Compositing weights for packed samples (grouped by ray, in front-to-back order)."""
    tau = sigma * deltas
    alpha = 1 - torch.exp(-tau)
    return alpha * torch.exp(-packed_exclusive_cumsum(tau, ray_idx, n_rays))


def ray_sum(values: torch.Tensor, ray_idx: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Per-ray sum of packed per-sample ``values`` (S,) or (S, C)."""
    shape = (n_rays,) + tuple(values.shape[1:])
    return torch.zeros(shape, dtype=values.dtype, device=values.device).index_add_(0, ray_idx, values)


def composite_packed(weights: torch.Tensor, rgb: torch.Tensor, t_mid: torch.Tensor, ray_idx: torch.Tensor,
                     n_rays: int, background: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-ray colour (over ``background``), accumulated opacity and expected depth."""
    acc = ray_sum(weights, ray_idx, n_rays)
    color = ray_sum(weights[:, None] * rgb, ray_idx, n_rays) + (1 - acc)[:, None] * background
    depth = ray_sum(weights * t_mid, ray_idx, n_rays) / acc.clamp_min(1e-8)
    return {"rgb": color, "accumulation": acc, "depth": depth}


def distortion_loss_packed(weights: torch.Tensor, s0: torch.Tensor, s1: torch.Tensor, ray_idx: torch.Tensor,
                           n_rays: int) -> torch.Tensor:
    """mip-NeRF 360 distortion loss for packed samples in normalised ray distance s (per-ray mean).

    The pairwise term sum_ij w_i w_j |m_i - m_j| is computed in O(S) with per-ray prefix sums.
    """
    mid = 0.5 * (s0 + s1)
    w_before = packed_exclusive_cumsum(weights, ray_idx, n_rays)
    wm_before = packed_exclusive_cumsum(weights * mid, ray_idx, n_rays)
    pairwise = 2 * weights * (mid * w_before - wm_before)
    self_term = weights**2 * (s1 - s0) / 3
    return (pairwise + self_term).sum() / n_rays


def ray_distance_to_s(t: torch.Tensor) -> torch.Tensor:
    """nerfacto's normalised spacing: linear in t up to 1, then linear in disparity (s in [0, 1))."""
    return torch.where(t < 1, t / 2, 1 - 1 / (2 * t.clamp_min(1e-6)))


def distortion_loss_dense(weights: torch.Tensor, t_edges: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360 distortion loss for (R, S) weights over intervals ``t_edges`` (R, S+1) (per-ray mean)."""
    mid = 0.5 * (t_edges[..., 1:] + t_edges[..., :-1])
    width = t_edges[..., 1:] - t_edges[..., :-1]
    cross = (weights[..., :, None] * weights[..., None, :] * (mid[..., :, None] - mid[..., None, :]).abs()).sum((-1, -2))
    self_term = (weights**2 * width).sum(-1) / 3
    return (cross + self_term).mean()
