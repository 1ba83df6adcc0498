"""nerfacto (nerfstudio's default method), faithful configuration, in plain torch.

Proposal sampling 256 → 96 → 48 with two small density fields, the main hash-grid field
(16 levels x 2 features, 2^19 entries), a per-image appearance embedding, scene
contraction, and the interlevel and distortion losses of mip-NeRF 360.  On CPU the hash
grids use the compiled kernels when present (same numbers as the torch path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.scene.compositing import distortion_loss_dense, weights_dense
from engine.scene.encodings import HashGrid, HashGridConfig, to_unit_cube
from engine.scene.models import FieldConfig, RadianceField, mlp, trunc_exp


@dataclass
class ProposalFieldConfig:
    """A proposal density field (nerfacto: hidden 16, 5 levels, 2^17 table)."""

    max_resolution: int = 128
    """grid resolution of the finest level (nerfacto: 128 for the first proposal field, 256 for the second)"""
    levels: int = 5
    """hash-grid levels"""
    log2_table_size: int = 17
    """entries per level: 2**log2_table_size"""
    hidden: int = 16
    """width of the density MLP's hidden layer"""


@dataclass
class NerfactoModelConfig:
    """nerfacto's defaults (nerfstudio ``method_configs['nerfacto']``)."""

    name: str = "nerfacto"
    """the preset's name (``--model``)"""
    radiance: FieldConfig = field(default_factory=lambda: FieldConfig(
        grid=HashGridConfig(levels=16, features_per_level=2, log2_table_size=19, base_resolution=16,
                            max_resolution=2048, init_scale=1e-4),
        appearance_dim=32))
    """the main field: 16 levels of 2 features, 2^19 table, finest level 2048, 32-wide appearance codes"""
    proposal_fields: tuple[ProposalFieldConfig, ...] = (ProposalFieldConfig(128), ProposalFieldConfig(256))
    """the proposal density fields, coarse to fine"""
    proposal_samples: tuple[int, ...] = (256, 96)
    """samples per ray drawn for each proposal level"""
    nerf_samples: int = 48
    """samples per ray evaluated by the main field"""
    near: float = 0.05
    """start of every ray (normalised scene units)"""
    far: float = 1000.0
    """end of every ray"""
    interlevel_weight: float = 1.0
    """weight of the interlevel loss that makes the proposal weights bound the main field's (mip-NeRF 360)"""
    distortion_weight: float = 0.002
    """weight of the mip-NeRF 360 distortion loss; discourages fog and floaters"""
    proposal_anneal_slope: float = 10.0
    """slope of the anneal schedule (nerfstudio's ``proposal_weights_anneal_slope``)"""
    proposal_anneal_steps: int = 1000
    """proposal weights are annealed (w ** exponent) over these steps"""


class ProposalField(nn.Module):
    """Density-only hash-grid field used to place samples."""

    def __init__(self, cfg: ProposalFieldConfig) -> None:
        super().__init__()
        self.grid = HashGrid(HashGridConfig(levels=cfg.levels, features_per_level=2,
                                            log2_table_size=cfg.log2_table_size, base_resolution=16,
                                            max_resolution=cfg.max_resolution))
        self.mlp = mlp(self.grid.output_dim, cfg.hidden, 1, 1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        u = to_unit_cube(points, contracted=True).clamp(0, 1)
        return trunc_exp(self.mlp(self.grid(u))[:, 0] - 1)


def _spacing_to_t(s: torch.Tensor) -> torch.Tensor:
    """Inverse of nerfacto's piecewise spacing: linear in t up to 1 (s < 0.5), linear in 1/t after."""
    return torch.where(s < 0.5, 2 * s, 1 / (2 - 2 * s).clamp_min(1e-6))


def _t_to_spacing(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t < 1, t / 2, 1 - 1 / (2 * t.clamp_min(1e-6)))


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """New bin edges (R, n+1) in spacing space drawn from the piecewise-constant pdf ``weights`` over ``bins``."""
    w = weights + 1e-5
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1).clamp(max=1)], -1)
    if deterministic:
        u = torch.linspace(0, 1, n + 1, device=bins.device).expand(bins.shape[0], n + 1).contiguous()
    else:  # single jitter per ray, as nerfacto
        jitter = torch.rand(bins.shape[0], 1, generator=generator).to(bins.device) / (n + 1)
        u = (torch.linspace(0, 1 - 1 / (n + 1), n + 1, device=bins.device) + jitter).clamp(max=1)
    idx = torch.searchsorted(cdf, u.contiguous(), right=True)
    below = (idx - 1).clamp(0, cdf.shape[-1] - 1)
    above = idx.clamp(0, cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    frac = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp_min(1e-8)).clamp(0, 1)
    return (bin_lo + frac * (bin_hi - bin_lo)).detach()


def interlevel_loss(edges: torch.Tensor, weights: torch.Tensor, prop_edges: torch.Tensor,
                    prop_weights: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360 proposal loss: the proposal histogram must bound the NeRF histogram from above."""
    cum = torch.cat([torch.zeros_like(prop_weights[..., :1]), torch.cumsum(prop_weights, -1)], -1)
    lo = (torch.searchsorted(prop_edges.contiguous(), edges[..., :-1].contiguous(), right=True) - 1).clamp(
        0, prop_weights.shape[-1])
    hi = torch.searchsorted(prop_edges.contiguous(), edges[..., 1:].contiguous(), right=False).clamp(
        0, prop_weights.shape[-1])
    outer = cum.gather(-1, hi) - cum.gather(-1, lo)
    w = weights.detach()
    return (((w - outer).clamp_min(0) ** 2) / (w + 1e-7)).sum(-1).mean()


class NerfactoModel(nn.Module):
    """Proposal-sampled hash-grid radiance field (nerfacto)."""

    def __init__(self, cfg: NerfactoModelConfig, num_images: int, contracted: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.contracted = contracted
        self.field = RadianceField(cfg.radiance, num_images, contracted=True)
        self.proposals = nn.ModuleList(ProposalField(p) for p in cfg.proposal_fields)
        self.background_logit = nn.Parameter(torch.zeros(3))
        self.anneal = 1.0
        self.generator: torch.Generator | None = None

    def init_background(self, color: torch.Tensor) -> None:
        with torch.no_grad():
            self.background_logit.copy_(torch.logit(color.float().clamp(0.02, 0.98)))

    def background(self, fixed: torch.Tensor | None) -> torch.Tensor:
        return fixed if fixed is not None else torch.sigmoid(self.background_logit)

    def _densities_to_weights(self, sigma: torch.Tensor, t_edges: torch.Tensor) -> torch.Tensor:
        return weights_dense(sigma, t_edges[..., 1:] - t_edges[..., :-1])

    def _points(self, origins, dirs, t_edges):
        mid = 0.5 * (t_edges[..., 1:] + t_edges[..., :-1])
        return origins[:, None] + mid[..., None] * dirs[:, None]

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor, image_idx: torch.Tensor | None,
                    background: torch.Tensor | None = None, step_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Colour, opacity and depth per ray; ``step_scale`` > 1 evaluates fewer field samples (previews)."""
        n = origins.shape[0]
        s_near, s_far = _t_to_spacing(torch.tensor(self.cfg.near)), _t_to_spacing(torch.tensor(self.cfg.far))
        count = self.cfg.proposal_samples[0]
        s_edges = torch.linspace(0, 1, count + 1, device=origins.device).expand(n, count + 1)
        if self.training:
            jitter = (torch.rand(n, count + 1, generator=self.generator) - 0.5) / count
            s_edges = (s_edges + jitter * torch.tensor([0.0] + [1.0] * (count - 1) + [0.0])).sort(-1).values
        s_edges = s_near + s_edges * (s_far - s_near)
        prop_hist = []
        for level, proposal in enumerate(self.proposals):
            t_edges = _spacing_to_t(s_edges)
            pts = self._points(origins, dirs, t_edges)
            sigma = proposal(pts.reshape(-1, 3)).reshape(pts.shape[:2])
            weights = self._densities_to_weights(sigma, t_edges)
            prop_hist.append((s_edges, weights))
            nxt = (self.cfg.proposal_samples[level + 1] if level + 1 < len(self.proposals)
                   else max(8, round(self.cfg.nerf_samples / step_scale)))
            annealed = weights.detach() ** self.anneal
            s_edges = sample_pdf(s_edges, annealed, nxt, not self.training, self.generator)
        t_edges = _spacing_to_t(s_edges)
        pts = self._points(origins, dirs, t_edges)
        m = pts.shape[1]
        sample_img = image_idx[:, None].expand(n, m).reshape(-1) if image_idx is not None else None
        dir_rep = dirs[:, None].expand(n, m, 3).reshape(-1, 3)
        sigma, rgb = self.field(pts.reshape(-1, 3), dir_rep, sample_img)
        weights = self._densities_to_weights(sigma.reshape(n, m), t_edges)
        acc = weights.sum(-1)
        mid_t = 0.5 * (t_edges[..., 1:] + t_edges[..., :-1])
        color = (weights[..., None] * rgb.reshape(n, m, 3)).sum(1) + (1 - acc)[:, None] * self.background(background)
        half = weights.cumsum(-1) >= 0.5  # the median depth: where the opacity reaches one half
        median = torch.where(half.any(-1), mid_t.gather(-1, half.float().argmax(-1, keepdim=True))[:, 0], math.inf)
        out = {"rgb": color, "accumulation": acc, "depth": (weights * mid_t).sum(-1) / acc.clamp_min(1e-8),
               "median_depth": median, "num_samples": n * m}
        if self.training:
            out["loss_interlevel"] = self.cfg.interlevel_weight * sum(
                interlevel_loss(s_edges, weights, pe, pw) for pe, pw in prop_hist)
            out["loss_distortion"] = self.cfg.distortion_weight * distortion_loss_dense(weights, s_edges)
        return out

    def before_step(self, step: int, generator: torch.Generator) -> None:
        """Anneal the proposal weights (nerfacto's schedule) and use the trainer's generator for jitter."""
        self.generator = generator
        frac = min(step / self.cfg.proposal_anneal_steps, 1.0)
        slope = self.cfg.proposal_anneal_slope
        self.anneal = (slope * frac) / ((slope - 1) * frac + 1)

    def stats(self) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict:
        return {"anneal": self.anneal}

    def load_extra_state(self, state: dict) -> None:
        self.anneal = state["anneal"]

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.field.density(points)

