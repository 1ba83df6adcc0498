"""The shared radiance field and the default ``fast`` model.

A model turns rays (origins, unit directions, the training image each came from) into
colours and exposes per-step hooks to the trainer (``before_step``, ``stats``,
``extra_state``).  ``fast``: hash grid + occupancy-guided marching with compiled CPU kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.scene.compositing import (composite_packed, distortion_loss_packed, packed_exclusive_cumsum,
                                      ray_distance_to_s, ray_sum, weights_packed)
from engine.scene.encodings import HashGrid, HashGridConfig, contract, sh_encode, to_unit_cube
from engine.scene.sampling import MarchingConfig, OccupancyGrid


def mlp(n_in: int, hidden: int, n_out: int, layers: int) -> nn.Sequential:
    """ReLU MLP with ``layers`` hidden layers of width ``hidden``."""
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp with a clamped input: the density activation of Instant-NGP, safe in float32."""
    return torch.exp(x.clamp(max=15.0))


@dataclass
class FieldConfig:
    """The radiance field shared by both models: hash grid → density MLP → colour MLP."""

    grid: HashGridConfig = field(default_factory=HashGridConfig)
    """position encoding"""
    geo_features: int = 15
    """features passed from the density MLP to the colour MLP"""
    hidden: int = 64
    """width of both MLPs"""
    color_layers: int = 2
    """hidden layers of the colour MLP"""
    appearance_dim: int = 32
    """per-image appearance embedding (nerfacto: 32); 0 disables it"""
    sh_degree: int = 4
    """spherical-harmonics degree of the view-direction encoding"""
    initial_density_logit: float = -2.0
    """density pre-activation everywhere at initialisation (density = exp(logit - 1))"""


class RadianceField(nn.Module):
    """Instant-NGP / nerfacto style field with a per-image appearance embedding."""

    def __init__(self, cfg: FieldConfig, num_images: int, contracted: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.contracted = contracted
        self.grid = HashGrid(cfg.grid)
        self.density_mlp = mlp(self.grid.output_dim, cfg.hidden, 1 + cfg.geo_features, 1)
        # Start from a spatially uniform, faint density: nothing is culled or preferred by chance, and
        # the background is learned from the first steps instead of being painted as haze.
        last = self.density_mlp[-1]
        with torch.no_grad():
            last.weight[0].zero_()
            last.bias[0] = cfg.initial_density_logit
        self.appearance = nn.Embedding(max(num_images, 1), cfg.appearance_dim) if cfg.appearance_dim else None
        if self.appearance is not None:
            nn.init.normal_(self.appearance.weight, std=0.01)
        self.color_mlp = mlp(cfg.sh_degree**2 + cfg.geo_features + cfg.appearance_dim, cfg.hidden, 3,
                             cfg.color_layers)

    def encode(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Grid coordinates (clamped to [0,1]^3), whether each point lies inside the grid, and its
        hash-grid features."""
        u = to_unit_cube(points, self.contracted)
        inside = ((u >= 0) & (u <= 1)).all(-1)
        u = u.clamp(0, 1)
        return u, inside, self.grid(u)

    def decode_geometry(self, features: torch.Tensor, inside: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and geometry features from hash-grid features."""
        h = self.density_mlp(features)
        sigma = trunc_exp(h[:, 0] - 1) * inside  # nerfacto's density activation, nothing outside the grid
        return sigma, h[:, 1:]

    def geometry(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (N,) and the geometry features passed to the colour MLP."""
        _, inside, features = self.encode(points)
        return self.decode_geometry(features, inside)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Volume density at world points (N, 3)."""
        return self.geometry(points)[0]

    def appearance_code(self, image_idx: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        """Embedding of each sample's image; the mean embedding for views not seen in training."""
        if self.appearance is None:
            return None
        if image_idx is None:
            return self.appearance.weight.mean(0, keepdim=True).expand(n, -1)
        return self.appearance(image_idx)

    def colour(self, geo: torch.Tensor, dirs: torch.Tensor, image_idx: torch.Tensor | None) -> torch.Tensor:
        """Colour (N, 3) from geometry features and unit view directions."""
        parts = [sh_encode(dirs, self.cfg.sh_degree), geo]
        code = self.appearance_code(image_idx, geo.shape[0], geo.device)
        if code is not None:
            parts.append(code)
        return torch.sigmoid(self.color_mlp(torch.cat(parts, -1)))

    def forward(self, points: torch.Tensor, dirs: torch.Tensor,
                image_idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (N,) and colour (N, 3) at world points seen along unit directions."""
        sigma, geo = self.geometry(points)
        return sigma, self.colour(geo, dirs, image_idx)


@dataclass
class FastModelConfig:
    """The default model: hash-grid field sampled only where an occupancy grid says matter may be.

    Defaults are sized for a CPU (tables of 2^17, finest level 512); the marching step follows
    the pixel footprint, so held-out quality is set by the grid, not by the sample count.
    """

    name: str = "fast"
    """the preset's name (``--model``)"""
    radiance: FieldConfig = field(default_factory=lambda: FieldConfig(
        grid=HashGridConfig(levels=16, features_per_level=2, log2_table_size=17, base_resolution=16,
                            max_resolution=512, init_scale=1e-4),
        appearance_dim=0))
    """the field: 16 levels of 2 features, 2^17 table, finest level 512, no appearance codes (per-image colour
    correction instead)"""
    marching: MarchingConfig = field(default_factory=MarchingConfig)
    """ray marching and the occupancy grid"""
    occupancy_update_every: int = 16
    """steps between occupancy refreshes"""
    occupancy_warmup_steps: int = 256
    """steps during which every cell is re-measured at each refresh and no absolute threshold applies"""
    target_samples_per_step: int = 1 << 15
    """rays per step adapt so a step evaluates about this many samples (2^15 rather than 2^14:
    per-step costs (occupancy refresh, optimiser, Python) amortise; face 23.2k vs 16.2k rays/s, same PSNR)"""
    colour_correction: bool = True
    """per-image affine colour correction (exposure, white balance) in place of a latent appearance
    code: 12 numbers per image can absorb lighting changes between captures but not view-specific
    detail, so held-out views (rendered with the mean correction) stay faithful"""
    render_round_samples: int = 8
    """when rendering, samples marched per live ray before rays that turned opaque are retired"""
    early_stop_transmittance: float = 1e-3
    """samples behind the point where a ray's transmittance falls below this are skipped"""
    alpha_threshold: float = 1e-2
    """after the warm-up, samples whose opacity is below this are skipped (nerfacc's setting for
    unbounded scenes): occupied cells are coarse and most of their samples are nearly empty air"""
    distortion_weight: float = 0.002
    """mip-NeRF 360 distortion loss weight (nerfacto's); discourages fog and floaters"""


class FastModel(nn.Module):
    """Field + occupancy grid + packed volume rendering."""

    def __init__(self, cfg: FastModelConfig, num_images: int, contracted: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.field = RadianceField(cfg.radiance, num_images, contracted)
        self.occupancy = OccupancyGrid(cfg.marching, contracted)
        self.background_logit = nn.Parameter(torch.zeros(3))
        self.alpha_threshold = 0.0  # raised to cfg.alpha_threshold once the warm-up is over
        self.colour_delta = nn.Parameter(torch.zeros(max(num_images, 1), 3, 4), requires_grad=cfg.colour_correction)

    def correct_colour(self, rgb: torch.Tensor, image_idx: torch.Tensor | None,
                       coverage: torch.Tensor | None = None) -> torch.Tensor:
        """Apply each ray's image colour correction; unseen views get none.  ``coverage`` (N,) scales
        the offset, for premultiplied colours (a transparent ray's colour stays zero).

        Corrections are kept zero-mean over the training images, so 'no correction' is their
        average and the field cannot drift into a colour cast that only the corrections undo.
        """
        if not self.cfg.colour_correction or image_idx is None:
            return rgb
        delta = self.colour_delta - self.colour_delta.mean(0, keepdim=True)
        m = torch.index_select(delta, 0, image_idx)  # deterministic backward, unlike delta[image_idx]
        offset = m[:, :, 3] if coverage is None else m[:, :, 3] * coverage[:, None]
        return rgb + torch.einsum("nij,nj->ni", m[:, :, :3], rgb) + offset

    def over_background(self, foreground: torch.Tensor, acc: torch.Tensor, bg: torch.Tensor,
                        image_idx: torch.Tensor | None, known: bool) -> torch.Tensor:
        """Premultiplied ``foreground`` colour of opacity ``acc`` over ``bg``, colour-corrected per image.

        A learned background is part of the capture and takes its image's correction; a known one
        (the colour put behind transparent images) does not, so only the field's colour is corrected.
        """
        if known:
            return self.correct_colour(foreground, image_idx, acc) + (1 - acc)[:, None] * bg
        return self.correct_colour(foreground + (1 - acc)[:, None] * bg, image_idx)

    def init_background(self, color: torch.Tensor) -> None:
        """Start the learned background at ``color`` (e.g. the median of the images' borders).

        Adam moves a parameter by about the learning rate per step, so a background starting
        at grey needs hundreds of steps to reach the true colour; haze near the cameras grows
        faster and takes its place.  Starting from the data removes that race.
        """
        with torch.no_grad():
            self.background_logit.copy_(torch.logit(color.float().clamp(0.02, 0.98)))

    def background(self, fixed: torch.Tensor | None) -> torch.Tensor:
        """The fixed composite colour (synthetic scenes) or the learned one (captures)."""
        return fixed if fixed is not None else torch.sigmoid(self.background_logit)

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor, image_idx: torch.Tensor | None,
                    background: torch.Tensor | None = None, step_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """Colour, opacity and depth of each ray; ``image_idx`` None renders with the mean appearance.

        ``step_scale`` > 1 samples more coarsely (interactive previews).  With gradients (training)
        a density-only pass picks the samples the field then runs on; without (rendering) rays
        march in rounds and retire once opaque.  Both give the same image.
        """
        n = origins.shape[0]
        bg = self.background(background)
        if not torch.is_grad_enabled():
            return self._render_in_rounds(origins, dirs, image_idx, bg, background is not None, step_scale)
        samples = self.occupancy.march(origins, dirs, step_scale)
        if len(samples) > 0:
            # A density-only pass without gradients picks the samples that can change the image;
            # the field then runs with gradients on those only, reusing their grid features.
            with torch.no_grad():
                u, inside, features = self.field.encode(samples.midpoints(origins, dirs))
                lengths = self.step_lengths(samples, origins, dirs)
                keep = self.visible(self.field.decode_geometry(features, inside)[0] * lengths, samples.ray_idx, n,
                                    self.occupancy.held_at(u))
            samples, lengths, u, inside, features = (samples.select(keep), lengths[keep], u[keep], inside[keep],
                                                     features[keep])
        known = background is not None
        if len(samples) == 0:
            zeros = torch.zeros(n, device=origins.device)
            return {"rgb": self.over_background(zeros[:, None].expand(n, 3), zeros, bg, image_idx, known),
                    "accumulation": zeros, "depth": zeros, "num_samples": 0}
        sigma, geo = self.field.decode_geometry(self.field.grid(u, features), inside)
        sample_img = image_idx[samples.ray_idx] if image_idx is not None else None
        rgb = self.field.colour(geo, dirs[samples.ray_idx], sample_img)
        weights = weights_packed(sigma, lengths, samples.ray_idx, n)
        out = composite_packed(weights, rgb, 0.5 * (samples.t0 + samples.t1), samples.ray_idx, n, bg.new_zeros(3))
        out["rgb"] = self.over_background(out["rgb"], out["accumulation"], bg, image_idx, known)
        out["num_samples"] = len(samples)
        if self.training and self.cfg.distortion_weight > 0:
            out["loss_distortion"] = self.cfg.distortion_weight * distortion_loss_packed(
                weights, ray_distance_to_s(samples.t0), ray_distance_to_s(samples.t1), samples.ray_idx, n)
        return out

    def _render_in_rounds(self, origins: torch.Tensor, dirs: torch.Tensor, image_idx: torch.Tensor | None,
                          bg: torch.Tensor, known_background: bool, step_scale: float) -> dict[str, torch.Tensor]:
        """Rendering: march ``render_round_samples`` samples per live ray at a time, retire opaque rays.

        Visibility and weights follow the training rule exactly: a sample counts when the
        transmittance over all samples before it exceeds ``early_stop_transmittance`` and its
        opacity exceeds the alpha threshold; weights use the transmittance over counted samples.
        Besides the expected depth, ``median_depth``: where the ray's opacity reaches one half (the
        first surface it sees; inf when it never does), which matter spread behind a surface does not
        push back as it does the expected depth.
        """
        n, device = origins.shape[0], origins.device
        rgb = torch.zeros(n, 3, device=device)
        acc = torch.zeros(n, device=device)
        depth = torch.zeros(n, device=device)
        median = torch.full((n,), math.inf, device=device)
        optical_all = torch.zeros(n, device=device)  # -log transmittance over every sample so far
        optical_kept = torch.zeros(n, device=device)  # ... over the samples that count
        t_next = self.occupancy.ray_range(origins, dirs)[0]
        active = torch.arange(n, device=device)
        per_round = self.cfg.render_round_samples
        stop_optical = -math.log(self.cfg.early_stop_transmittance)
        total = 0
        while active.numel():
            o, d = origins[active], dirs[active]
            s = self.occupancy.march(o, d, step_scale, near=t_next[active], max_per_ray=per_round)
            if len(s) == 0:
                break
            m = active.numel()
            total += len(s)
            sigma, geo = self.field.geometry(s.midpoints(o, d))
            tau = sigma * self.step_lengths(s, o, d)
            before_all = optical_all[active][s.ray_idx] + packed_exclusive_cumsum(tau, s.ray_idx, m)
            alpha = 1 - torch.exp(-tau)
            keep = (torch.exp(-before_all) > self.cfg.early_stop_transmittance) & (alpha > self.alpha_threshold)
            kept, kept_tau = s.select(keep), tau[keep]
            if len(kept):
                before_kept = optical_kept[active][kept.ray_idx] + packed_exclusive_cumsum(kept_tau, kept.ray_idx, m)
                w = torch.exp(-before_kept) * alpha[keep]
                img = image_idx[active][kept.ray_idx] if image_idx is not None else None
                colour = self.field.colour(geo[keep], d[kept.ray_idx], img)
                rays = active[kept.ray_idx]
                rgb.index_add_(0, rays, w[:, None] * colour)
                acc.index_add_(0, rays, w)
                depth.index_add_(0, rays, w * 0.5 * (kept.t0 + kept.t1))
                half = (before_kept < math.log(2)) & (before_kept + kept_tau >= math.log(2))  # opacity passes 1/2
                t_half = kept.t0 + (math.log(2) - before_kept) / kept_tau.clamp_min(1e-12) * (kept.t1 - kept.t0)
                median.index_put_((rays[half],), t_half[half])
                optical_kept.index_add_(0, active, ray_sum(kept_tau, kept.ray_idx, m))
            optical_all.index_add_(0, active, ray_sum(tau, s.ray_idx, m))
            counts = torch.bincount(s.ray_idx, minlength=m)
            last = (torch.cumsum(counts, 0) - 1).clamp_min(0)
            t_next[active] = torch.where(counts > 0, s.t1[last], t_next[active])
            active = active[(counts == per_round) & (optical_all[active] < stop_optical)]
        colour = self.over_background(rgb, acc, bg, image_idx, known_background)
        return {"rgb": colour, "accumulation": acc, "depth": depth / acc.clamp_min(1e-8), "median_depth": median,
                "num_samples": total}

    def visible(self, tau: torch.Tensor, ray_idx: torch.Tensor, n_rays: int,
                growing: torch.Tensor | None = None) -> torch.Tensor:
        """Which packed samples of optical thickness ``tau`` can change the image: not nearly
        transparent, not behind opaque matter (Instant-NGP / nerfacc's early ray termination).
        ``growing`` samples count even when transparent, so matter can appear there."""
        transmittance = torch.exp(-packed_exclusive_cumsum(tau, ray_idx, n_rays))
        alpha = (1 - torch.exp(-tau)) > self.alpha_threshold
        if growing is not None:
            alpha |= growing
        return (transmittance > self.cfg.early_stop_transmittance) & alpha

    def step_lengths(self, samples, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """Length of each sample's interval, measured in contracted space for unbounded scenes.

        Densities are then per contracted unit: the far shell, which spans an unbounded world
        distance, starts out nearly transparent instead of a wall of fog, so the background is
        learned as the far scene (or the background colour) rather than as haze near the cameras.
        """
        if not self.field.contracted:
            return samples.t1 - samples.t0
        o, d = origins[samples.ray_idx], dirs[samples.ray_idx]
        x0 = contract(o + samples.t0[:, None] * d)
        x1 = contract(o + samples.t1[:, None] * d)
        return torch.linalg.norm(x1 - x0, dim=-1)

    def before_step(self, step: int, generator: torch.Generator) -> None:
        """Refresh the occupancy grid on its schedule."""
        warm = step >= self.cfg.occupancy_warmup_steps
        self.alpha_threshold = self.cfg.alpha_threshold if warm else 0.0
        if step % self.cfg.occupancy_update_every == 0:
            self.occupancy.update(self.field.density, generator, every_cell=not warm, absolute=warm)

    def open_region(self, centre: tuple[float, float, float], radius: float) -> None:
        """Let matter grow in a sphere (a local edit that may add something): its occupancy cells stay
        occupied and its transparent samples are trained, so empty space there gets gradients."""
        self.occupancy.hold_sphere(centre, radius)

    def stats(self) -> dict[str, float]:
        """Figures worth watching while training."""
        return {"occupied_fraction": self.occupancy.occupied_fraction}

    def extra_state(self) -> dict:
        return {"occupancy": self.occupancy.state_dict(), "alpha_threshold": self.alpha_threshold}

    def load_extra_state(self, state: dict) -> None:
        self.occupancy.load_state_dict(state["occupancy"])
        self.alpha_threshold = state["alpha_threshold"]

