"""GRAM's generator (Deng et al., "GRAM: Generative Radiance Manifolds for 3D-Aware Image Generation"), the
base SemFaceEdit builds on, written from the paper and the facts in DESIGN.md §8 (Microsoft's code is not
used: its licence forbids it) and proven against ../shared/fixtures/gram-golden, recorded from the official code.

A face is rendered on a family of surfaces shared by all faces, not by sampling all of space:
* the **manifold predictor** (``sample_network``) is a small ReLU MLP giving every point a scalar; along each
  camera ray it is evaluated at ``num_samples`` evenly spaced depths, and for each of ``num_manifolds − 1``
  levels (evenly spaced from ``levels_start`` down to ``levels_end``) the first interval where the scalar falls
  through the level gives the ray's point on that surface, linearly interpolated (where the scalar changes by
  at most CROSSING_MIN_STEP over the interval, its far end); a ray that never crosses a level has no valid
  point there; a last point on the background plane z = BACKGROUND_Z completes each ray's set;
* the **radiance network** (``rf_network``) is a FiLM-SIREN: eight sine layers whose frequencies
  (15·f + 30) and phases come from a mapping network of the latent z, each layer after the first adding a
  density and a colour head to the sums, the last colour head reading a ninth sine layer over (ray direction,
  features); colour is a widened sigmoid, density a softplus;
* the points, sorted by distance, are alpha-composited with a constant spacing MANIFOLD_SPACING between them
  (the background's, and the last point's, counting as opaque), invalid points transparent.
Cameras sit on the unit sphere looking at the origin: camera_pos = (φ, θ) puts the camera at
(sin φ cos θ, cos φ, sin φ sin θ); pixel rays leave through an image plane at z = −1/tan(fov/2) in camera space.

``load_gram`` reads the golden fixture's layout (generator.safetensors + meta.json) and the official
``generator.pth`` (a state dict; its exponential moving average ``ema.pth`` beside it, a pickled torch_ema
object read by the restricted unpickler, replaces the parameters in the official registration order).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import CheckpointError
from engine.core.safe_pickle import Record, load_torch, record_class

GRID_SCALE = 2 / 0.24
"""points are scaled by this before either network reads them (GRAM's "box warp" of side 0.24)"""
FREQUENCY_SCALE, FREQUENCY_SHIFT = 15.0, 30.0
"""sine frequencies are 15·f + 30 of the mapping network's f"""
RADIANCE_LAYERS = 8
MAPPING_WIDTH = 256
CROSSING_MIN_STEP = 0.05
"""an interval whose scalar changes less than this is not interpolated: its far end is the point"""
BACKGROUND_Z = -0.12
"""the background plane (world z) every ray ends on"""
MANIFOLD_SPACING = 0.04
"""the constant distance between manifold points used for alpha"""
OPAQUE_SPACING = 1e10
"""the background point's (and the ray's last point's) spacing: opaque"""
RGB_PAD = 1e-3
"""the widened sigmoid's stretch: colours in [−0.001, 1.001]"""
WEIGHTS_FILE, META_FILE = "generator.safetensors", "meta.json"
OFFICIAL_WEIGHTS, OFFICIAL_EMA = "generator.pth", "ema.pth"
EMA_CLASS = "torch_ema.ema.ExponentialMovingAverage"
RAY_CHUNK = 8192
"""rays rendered at a time (bounds the memory of a 256² render)"""


@dataclass
class GramConfig:
    """A GRAM generator's settings, in the official configuration's names (defaults: FFHQ_default)."""

    z_dim: int = 256
    """latent size"""
    img_size: int = 256
    """the resolution it renders at unless told otherwise"""
    hidden_dim: int = 256
    """width of the radiance network's sine layers"""
    hidden_dim_sample: int = 128
    """width of the manifold predictor"""
    layer_num_sample: int = 3
    """hidden layers of the manifold predictor"""
    center: tuple[float, float, float] = (0.0, 0.0, -1.5)
    """subtracted from the scaled points the manifold predictor reads"""
    init_radius: float = 0.0
    """the manifold predictor's initial output bias is minus this (training only)"""
    sigma_clamp_mode: str = "softplus"
    """"softplus" or "relu" on the summed density"""
    rgb_clamp_mode: str = "widen_sigmoid"
    """"widen_sigmoid" (sigmoid · (1 + 2·RGB_PAD) − RGB_PAD) or "sigmoid" on the summed colour"""
    num_samples: int = 64
    """scalar samples per ray between ray_start and ray_end"""
    num_manifolds: int = 24
    """points per ray: the surfaces' (and, with background, the background plane's)"""
    levels_start: float = 23.0
    """the first (nearest) surface's level"""
    levels_end: float = 8.0
    """the last surface's level"""
    background: bool = True
    """the last point of each ray lies on the background plane"""
    last_back: bool = False
    """what light is left after the last point is added to its weight"""
    white_back: bool = False
    """what light is left becomes white"""
    fov: float = 12.0
    """field of view, degrees"""
    ray_start: float = 0.88
    """the nearest scalar sample's distance from the camera"""
    ray_end: float = 1.12
    """the farthest"""
    h_mean: float = math.pi / 2
    """the pose prior's mean θ (yaw about the vertical axis)"""
    v_mean: float = math.pi / 2
    """the pose prior's mean φ (angle from the vertical)"""
    h_stddev: float = 0.3
    """its spread in θ"""
    v_stddev: float = 0.155
    """its spread in φ"""
    sample_dist: str = "gaussian"
    """how training poses are drawn"""
    lock_view_dependence: bool = False
    """every point sees the ray direction (0, 0, −1): how the official FFHQ videos are rendered"""

    @property
    def levels(self) -> torch.Tensor:
        """The surfaces' levels, nearest first."""
        return torch.linspace(self.levels_start, self.levels_end, self.num_manifolds - int(self.background))

    @classmethod
    def from_meta(cls, meta: Mapping, where: str = "meta.json") -> GramConfig:
        """The settings of a golden-fixture-style meta.json (generator_kwargs, representation_kwargs,
        renderer_kwargs, camera); a CheckpointError naming an unknown setting."""
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for section in ("generator_kwargs", "representation_kwargs", "renderer_kwargs", "camera"):
            part = meta.get(section, {})
            if not isinstance(part, Mapping):
                raise CheckpointError(f"{where}: {section} must be a JSON object")
            for key, value in part.items():
                if key == "camera_pos":  # the camera convention, in words
                    continue
                if key not in known:
                    raise CheckpointError(f"{where}: unknown GRAM setting {section}.{key}")
                values[key] = tuple(value) if key == "center" else value
        config = cls(**values)
        config.check(where)
        return config

    def check(self, where: str) -> None:
        """A CheckpointError naming the first setting out of its range."""
        if self.sigma_clamp_mode not in ("softplus", "relu") or self.rgb_clamp_mode not in ("widen_sigmoid", "sigmoid"):
            raise CheckpointError(f"{where}: unknown clamp mode ({self.sigma_clamp_mode!r}, {self.rgb_clamp_mode!r})")
        sizes = (self.z_dim, self.hidden_dim, self.hidden_dim_sample, self.layer_num_sample, self.num_samples)
        if not all(isinstance(v, int) and 1 <= v <= 4096 for v in sizes) or not 2 <= self.num_manifolds <= 256:
            raise CheckpointError(f"{where}: network sizes out of range")


class SineFilm(nn.Module):
    """sin(frequency · (W x + b) + phase), frequency and phase per latent (FiLM-conditioned SIREN layer)."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.layer = nn.Linear(inputs, outputs)

    def forward(self, x: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """x (B, P, in); frequency, phase (B, out) → (B, P, out)."""
        return torch.sin(frequency[:, None] * self.layer(x) + phase[:, None])


class StyleMapping(nn.Module):
    """z → (frequencies, phases), each (B, layers · width): three leaky-ReLU layers of MAPPING_WIDTH, then one
    linear layer whose first half of outputs are the frequencies."""

    def __init__(self, z_dim: int, outputs: int) -> None:
        super().__init__()
        widths = (z_dim, MAPPING_WIDTH, MAPPING_WIDTH, MAPPING_WIDTH)
        layers: list[nn.Module] = []
        for inputs, width in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(inputs, width), nn.LeakyReLU(0.2)]
        self.network = nn.Sequential(*layers, nn.Linear(MAPPING_WIDTH, outputs))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frequencies, phases = self.network(z).chunk(2, dim=-1)
        return frequencies, phases


class RadianceField(nn.Module):
    """GRAM's FiLM-SIREN radiance network (``rf_network``): points and ray directions → colour and density."""

    def __init__(self, z_dim: int, width: int, sigma_clamp_mode: str = "softplus",
                 rgb_clamp_mode: str = "widen_sigmoid") -> None:
        super().__init__()
        self.width, self.sigma_clamp_mode, self.rgb_clamp_mode = width, sigma_clamp_mode, rgb_clamp_mode
        self.network = nn.ModuleList([SineFilm(3 if k == 0 else width, width) for k in range(RADIANCE_LAYERS)])
        self.color_layer = nn.ModuleList([SineFilm(width + 3, width)])
        heads = RADIANCE_LAYERS - 1  # every layer after the first
        self.output_sigma = nn.ModuleList([nn.Linear(width, 1) for _ in range(heads)])
        self.output_color = nn.ModuleList([nn.Linear(width, 3) for _ in range(heads)])
        self.mapping_network = StyleMapping(z_dim, 2 * (RADIANCE_LAYERS + 1) * width)

    def styles(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(frequencies, phases) of latents z, each (B, 9, width), frequencies already 15·f + 30."""
        frequencies, phases = self.mapping_network(z)
        shape = (z.shape[0], RADIANCE_LAYERS + 1, self.width)
        return frequencies.view(shape) * FREQUENCY_SCALE + FREQUENCY_SHIFT, phases.view(shape)

    def forward(self, points: torch.Tensor, directions: torch.Tensor,
                styles: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour (B, P, 3) and density (B, P, 1) at world points (B, P, 3) seen along directions (B, P, 3)."""
        frequencies, phases = styles
        x = points * GRID_SCALE
        sigma = colour = 0
        for k, film in enumerate(self.network):
            x = film(x, frequencies[:, k], phases[:, k])
            if k == 0:
                continue
            sigma = sigma + self.output_sigma[k - 1](x)
            last = k == RADIANCE_LAYERS - 1
            view = self.color_layer[0](torch.cat([directions, x], -1), frequencies[:, -1], phases[:, -1]) if last else x
            colour = colour + self.output_color[k - 1](view)
        colour = torch.sigmoid(colour)
        if self.rgb_clamp_mode == "widen_sigmoid":
            colour = colour * (1 + 2 * RGB_PAD) - RGB_PAD
        sigma = F.softplus(sigma) if self.sigma_clamp_mode == "softplus" else F.relu(sigma)
        return colour, sigma


class ManifoldPredictor(nn.Module):
    """GRAM's manifold predictor (``sample_network``): the scalar field whose level sets are the surfaces."""

    def __init__(self, width: int, layers: int, center: tuple[float, float, float]) -> None:
        super().__init__()
        stack: list[nn.Module] = []
        for k in range(layers):
            stack += [nn.Linear(3 if k == 0 else width, width), nn.ReLU()]
        self.network = nn.Sequential(*stack)
        self.output_layer = nn.Linear(width, 1)
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32), persistent=False)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """The scalar (..., 1) at world points (..., 3)."""
        return self.output_layer(self.network(points * GRID_SCALE - self.center))


class GramRepresentation(nn.Module):
    """The two networks under the official name ``representation``."""

    def __init__(self, cfg: GramConfig) -> None:
        super().__init__()
        self.sample_network = ManifoldPredictor(cfg.hidden_dim_sample, cfg.layer_num_sample, cfg.center)
        self.rf_network = RadianceField(cfg.z_dim, cfg.hidden_dim, cfg.sigma_clamp_mode, cfg.rgb_clamp_mode)


def camera_origins(camera_pos: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    """Camera centres (B, 3) for camera_pos (B, 2) = (φ, θ): (sin φ cos θ, cos φ, sin φ sin θ) · radius."""
    phi, theta = camera_pos[:, 0], camera_pos[:, 1]
    return torch.stack([radius * phi.sin() * theta.cos(), radius * phi.cos(), radius * phi.sin() * theta.sin()], -1)


def camera_to_world(origins: torch.Tensor) -> torch.Tensor:
    """Camera-to-world transforms (B, 4, 4) of cameras at ``origins`` looking at the world origin, y up: the
    rotation's columns are the camera's right, up and backward axes, then the translation.

    The scene is chaotic in float32 (GRAM's sine layers turn a change of 1e-7 in a point into 0.1 in its
    colour), so these steps, and the rays' below, are computed in the order the official code computes them:
    only then do the golden outputs agree to 1e-4."""
    forward = F.normalize(F.normalize(-origins, dim=-1), dim=-1)
    world_up = torch.tensor([0.0, 1.0, 0.0], device=origins.device).expand_as(forward)
    left = F.normalize(torch.linalg.cross(world_up, forward, dim=-1), dim=-1)
    up = F.normalize(torch.linalg.cross(forward, left, dim=-1), dim=-1)
    rotation = torch.eye(4, device=origins.device).repeat(len(origins), 1, 1)
    rotation[:, :3, :3] = torch.stack([-left, up, -forward], -1)
    translation = torch.eye(4, device=origins.device).repeat(len(origins), 1, 1)
    translation[:, :3, 3] = origins
    return translation @ rotation


def pixel_directions(size: int, fov_degrees: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Unit ray directions (size², 3) in camera space, row by row from the top-left pixel; the image plane spans
    [−1, 1]² at z = −1/tan(fov/2)."""
    y, x = torch.meshgrid(torch.linspace(1, -1, size, device=device), torch.linspace(-1, 1, size, device=device),
                          indexing="ij")
    z = -torch.ones_like(x) / math.tan(2 * math.pi * fov_degrees / 360 / 2)
    vectors = torch.stack([x, y, z], -1).reshape(-1, 3)
    return vectors / vectors.norm(dim=-1, keepdim=True)


def to_world(transform: torch.Tensor, vectors: torch.Tensor, homogeneous: float | None) -> torch.Tensor:
    """Vectors (B, P, 3) through transforms (B, 4, 4): as points (``homogeneous`` 1) or directions (None)."""
    if homogeneous is None:
        return torch.bmm(transform[:, :3, :3], vectors.permute(0, 2, 1)).permute(0, 2, 1)
    padded = torch.cat([vectors, torch.full_like(vectors[..., :1], homogeneous)], -1)
    return torch.bmm(transform, padded.permute(0, 2, 1)).permute(0, 2, 1)[..., :3]


def level_crossings(points: torch.Tensor, scalars: torch.Tensor,
                    levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each ray's point on each level set: points (..., S, 3) along rays with their scalars (..., S) →
    (points (..., L, 3), valid (..., L, 1)).  The first interval whose scalar falls through the level (from at
    least it to at most it) is interpolated linearly; an interval changing less than CROSSING_MIN_STEP gives its
    far end; a ray without a crossing gives its last sample, invalid."""
    near, far = scalars[..., :-1], scalars[..., 1:]
    level = levels.to(scalars)[:, None]  # (L, 1) against (..., 1, S-1)
    crossing = (far[..., None, :] <= level) & (level <= near[..., None, :])  # (..., L, S-1)
    valid = crossing.any(-1)
    first = torch.where(valid, crossing.byte().argmax(-1), scalars.shape[-1] - 2)  # argmax: the first True
    s_near, s_far = near.gather(-1, first), far.gather(-1, first)  # (..., L)
    index = first[..., None].expand(*first.shape, 3)
    x_near, x_far = points.gather(-2, index), points.gather(-2, index + 1)
    change = s_far - s_near
    steep = valid & (change.abs() > CROSSING_MIN_STEP)
    level = levels.to(scalars)
    blended = ((s_far - level)[..., None] * x_near + (level - s_near)[..., None] * x_far) \
        / torch.where(steep, change, 1.0)[..., None]
    return torch.where(steep[..., None], blended, x_far), valid[..., None].to(points.dtype)


def composite(colour: torch.Tensor, sigma: torch.Tensor, distance: torch.Tensor, valid: torch.Tensor,
              opaque: torch.Tensor, opaque_spacing: float = OPAQUE_SPACING, last_back: bool = False,
              white_back: bool = False) -> dict[str, torch.Tensor]:
    """Alpha-composite points sorted by distance (..., N, 1): each point's alpha uses MANIFOLD_SPACING, the
    ``opaque`` ones' (the background) and the last one's ``opaque_spacing``; invalid points are transparent.
    Returns rgb (..., C) (``colour``'s channels, in its units), depth (..., 1) and weights (..., N, 1)."""
    spacing = torch.full_like(distance, MANIFOLD_SPACING)
    spacing[..., -1, :] = opaque_spacing
    spacing = torch.where(opaque, opaque_spacing, spacing)
    alpha = (1 - torch.exp(-spacing * sigma)) * valid
    light = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1, :]), 1 - alpha + 1e-10], -2), -2)[..., :-1, :]
    weights = alpha * light
    total = weights.sum(-2)
    if last_back:
        weights = torch.cat([weights[..., :-1, :], weights[..., -1:, :] + (1 - total[..., None, :])], -2)
    rgb = (weights * colour).sum(-2)
    if white_back:
        rgb = rgb + 1 - total
    return {"rgb": rgb, "depth": (weights * distance).sum(-2) / total, "weights": weights}


def manifold_points(sampler: nn.Module, samples: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                    levels: torch.Tensor, background_z: float | None = BACKGROUND_Z) -> dict[str, torch.Tensor]:
    """Every ray's points (B, R, N, 3) on the level sets of ``sampler``'s scalar and (``background_z`` given) on
    the background plane, sorted by distance, with distance (B, R, N, 1), valid (B, R, N, 1) and opaque (the
    background point; B, R, N, 1); ``samples`` (B, R, S, 3) are the rays' evenly spaced points from origins
    (B, 3) along world directions (B, R, 3)."""
    scalars = sampler(samples)[..., 0]
    points, valid = level_crossings(samples, scalars, levels.to(samples.device))
    origins = origins[:, None, :]  # (B, 1, 3)
    opaque = torch.zeros_like(valid, dtype=torch.bool)
    if background_z is not None:
        travel = (torch.full_like(directions[..., 2:], background_z) - origins[..., 2:]) / directions[..., 2:]
        back = origins + directions * travel
        points = torch.cat([points, back[..., None, :]], -2)
        valid = torch.cat([valid, torch.ones_like(valid[..., :1, :])], -2)
        opaque = torch.cat([opaque, torch.ones_like(opaque[..., :1, :])], -2)
    distance = torch.sqrt(((points - origins[..., None, :]) ** 2).sum(-1, keepdim=True))
    order = torch.sort(distance, dim=-2).indices  # ties (at a ray's far end) in torch's order, as the official
    pick = lambda values: torch.gather(values, -2, order.expand(*order.shape[:-1], values.shape[-1]))  # noqa: E731
    return {"points": pick(points), "distance": pick(distance), "valid": pick(valid), "opaque": pick(opaque)}


class GramGenerator(nn.Module):
    """GRAM: latent z and camera (φ, θ) → image, with the official parameter names (``representation.*``)."""

    def __init__(self, cfg: GramConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or GramConfig()
        self.representation = GramRepresentation(self.cfg)
        self._average: tuple[torch.Tensor, torch.Tensor] | None = None
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_average", None))

    def styles(self, z: torch.Tensor, truncation_psi: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """The radiance network's (frequencies, phases) for latents z, pulled towards the average style by
        ``truncation_psi`` < 1."""
        styles = self.representation.rf_network.styles(z)
        if truncation_psi == 1:
            return styles
        if self._average is None:  # once per set of weights (loading new ones forgets it)
            self._average = self.average_styles()
        return tuple(m + truncation_psi * (s - m) for s, m in zip(styles, self._average))  # type: ignore

    @torch.no_grad()
    def average_styles(self, samples: int = 10000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean (frequencies, phases) over ``samples`` seeded latents (the truncation centre)."""
        device = next(self.parameters()).device
        z = torch.randn(samples, self.cfg.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
        return tuple(s.mean(0, keepdim=True) for s in self.representation.rf_network.styles(z))  # type: ignore

    def render_rays(self, styles: tuple[torch.Tensor, torch.Tensor], transform: torch.Tensor,
                    directions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Render rays of camera-space ``directions`` (B, R, 3) through cameras ``transform`` (B, 4, 4): rgb
        (B, R, 3) in [0, 1], depth, and per point (sorted by distance) points, outputs (rgb then sigma), z_vals
        and weights."""
        cfg = self.cfg
        b, r, _ = directions.shape
        depths = torch.linspace(cfg.ray_start, cfg.ray_end, cfg.num_samples, device=directions.device)
        samples = to_world(transform, (directions[..., None, :] * depths[:, None]).reshape(b, -1, 3), 1.0)
        world = to_world(transform, directions, None)
        found = manifold_points(self.representation.sample_network, samples.reshape(b, r, cfg.num_samples, 3),
                                transform[:, :3, 3], world, cfg.levels, BACKGROUND_Z if cfg.background else None)
        n = found["points"].shape[2]
        if cfg.lock_view_dependence:
            seen = torch.tensor([0.0, 0.0, -1.0], device=directions.device).expand(b, r, n, 3)
        else:
            seen = world[..., None, :].expand(b, r, n, 3)
        colour, sigma = self.representation.rf_network(found["points"].reshape(b, -1, 3), seen.reshape(b, -1, 3),
                                                       styles)
        colour, sigma = colour.view(b, r, n, 3), sigma.view(b, r, n, 1)
        shaded = composite(colour, sigma, found["distance"], found["valid"], found["opaque"],
                           OPAQUE_SPACING if cfg.background else MANIFOLD_SPACING, cfg.last_back, cfg.white_back)
        return {**shaded, "points": found["points"], "outputs": torch.cat([colour, sigma], -1),
                "z_vals": found["distance"]}

    def render(self, z: torch.Tensor, camera_pos: torch.Tensor, img_size: int | None = None,
               truncation_psi: float = 1.0) -> dict[str, torch.Tensor]:
        """Images of latents z (B, z_dim) from cameras camera_pos (B, 2) = (φ, θ): ``image`` (B, 3, N, N) in
        [−1, 1], ``depth`` (B, 1, N, N), and per pixel and point, sorted by distance, ``points`` (B, N, N, P, 3),
        ``outputs`` (B, N, N, P, 4: rgb then sigma), ``z_vals`` and ``weights`` (B, N, N, P, 1)."""
        size = img_size or self.cfg.img_size
        b = z.shape[0]
        styles = self.styles(z, truncation_psi)
        transform = camera_to_world(camera_origins(camera_pos))
        directions = pixel_directions(size, self.cfg.fov, z.device).expand(b, -1, -1)
        parts = [self.render_rays(styles, transform, directions[:, k:k + RAY_CHUNK])
                 for k in range(0, directions.shape[1], RAY_CHUNK)]
        out = {key: torch.cat([p[key] for p in parts], 1) for key in parts[0]}
        image = lambda values: values.view(b, size, size, -1).permute(0, 3, 1, 2)  # noqa: E731
        per_point = {key: out[key].view(b, size, size, *out[key].shape[2:])
                     for key in ("points", "outputs", "z_vals", "weights")}
        return {"image": image(out["rgb"]) * 2 - 1, "depth": image(out["depth"]), **per_point}


def official_parameter_order(cfg: GramConfig) -> list[str]:
    """The official generator's parameter names in registration order (what ``ema.pth``'s list follows): the
    manifold predictor, then the radiance network's sine layers, colour layer, density heads, colour heads and
    mapping network."""
    linear = lambda prefix: [f"{prefix}.weight", f"{prefix}.bias"]  # noqa: E731
    sample = "representation.sample_network"
    rf = "representation.rf_network"
    names = [n for k in range(cfg.layer_num_sample) for n in linear(f"{sample}.network.{2 * k}")]
    names += linear(f"{sample}.output_layer")
    names += [n for k in range(RADIANCE_LAYERS) for n in linear(f"{rf}.network.{k}.layer")]
    names += linear(f"{rf}.color_layer.0.layer")
    names += [n for head in ("output_sigma", "output_color") for k in range(RADIANCE_LAYERS - 1)
              for n in linear(f"{rf}.{head}.{k}")]
    names += [n for k in range(4) for n in linear(f"{rf}.mapping_network.network.{2 * k}")]
    return names


def load_gram(path: str | Path) -> GramGenerator:
    """A GRAM generator in eval mode from a folder or file in the golden fixture's layout (generator.safetensors
    + meta.json) or an official ``generator.pth`` (its ema.pth beside it applied; FFHQ_default settings with the
    network sizes its parameters show, unless a meta.json beside it says otherwise).  A CheckpointError names
    the file and the problem: missing or extra parameters, shapes of another size, a pickle that asks to run
    code."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / WEIGHTS_FILE, path / OFFICIAL_WEIGHTS]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CheckpointError(f"{path} holds no GRAM generator ({WEIGHTS_FILE} with {META_FILE}, or the "
                                  f"official {OFFICIAL_WEIGHTS})")
        path = found
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    meta_path = path.with_name(META_FILE)
    if path.suffix == ".safetensors":
        if not meta_path.is_file():
            raise CheckpointError(f"{path}: {META_FILE} with the generator's settings must lie beside it")
        state = _read_safetensors(path)
    else:
        state = _state_dict(load_torch(path), path)
    cfg = GramConfig.from_meta(_read_meta(meta_path), str(meta_path)) if meta_path.is_file() else _sized(state)
    generator = GramGenerator(cfg)
    _load_checked(generator, state, path)
    ema = path.with_name(path.name.replace("generator", "ema")) if "generator" in path.name else None
    if path.suffix != ".safetensors" and ema is not None and ema.is_file():
        _apply_ema(generator, ema)
    return generator.eval().requires_grad_(False)


def _sized(state: Mapping[str, torch.Tensor]) -> GramConfig:
    """FFHQ_default's settings with the network sizes an official state dict shows (latent, widths, depth of the
    manifold predictor); the FFHQ sizes where it does not show them."""
    shape = lambda name, dim: int(state[name].shape[dim]) if name in state and state[name].ndim == 2 else None  # noqa
    sample = "representation.sample_network.network"
    found = {"z_dim": shape("representation.rf_network.mapping_network.network.0.weight", 1),
             "hidden_dim": shape("representation.rf_network.network.0.layer.weight", 0),
             "hidden_dim_sample": shape(f"{sample}.0.weight", 0),
             "layer_num_sample": sum(1 for k in state if k.startswith(f"{sample}.") and k.endswith(".weight")) or None}
    return GramConfig(**{k: v for k, v in found.items() if v is not None})


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return meta


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own and OS errors for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None


def _state_dict(data: Any, path: Path) -> dict[str, torch.Tensor]:
    if not (isinstance(data, Mapping) and data and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in data.items())):
        raise CheckpointError(f"{path} is not a GRAM generator state dict (a dict of named tensors)")
    return dict(data)


def _load_checked(generator: GramGenerator, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Copy ``state`` into ``generator``; a CheckpointError naming missing, extra or mis-shaped parameters."""
    own = generator.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        listed = lambda names: ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")  # noqa: E731
        raise CheckpointError(f"{path} is not a GRAM generator of these settings: {len(missing)} parameters missing"
                              f"{' (' + listed(missing) + ')' if missing else ''}, {len(extra)} unexpected"
                              f"{' (' + listed(extra) + ')' if extra else ''}")
    wrong = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{path} holds a GRAM generator of another size: {k} is {tuple(state[k].shape)}, "
                              f"these settings make it {tuple(own[k].shape)} ({len(wrong)} parameters differ; "
                              f"put the generator's {META_FILE} beside it)")
    generator.load_state_dict({k: v.float() for k, v in state.items()})


def _apply_ema(generator: GramGenerator, path: Path) -> None:
    """Replace the parameters by the moving averages in a pickled torch_ema object (official order)."""
    data = load_torch(path, {EMA_CLASS: record_class(EMA_CLASS)})
    shadow = data.state.get("shadow_params") if isinstance(data, Record) and isinstance(data.state, dict) else None
    if not (isinstance(shadow, list) and all(isinstance(t, torch.Tensor) for t in shadow)):
        raise CheckpointError(f"{path} is not a torch_ema moving average (no list of shadow parameters)")
    names = official_parameter_order(generator.cfg)
    if len(shadow) != len(names):
        raise CheckpointError(f"{path} averages {len(shadow)} parameters, the generator has {len(names)}")
    own = dict(generator.named_parameters())
    for name, value in zip(names, shadow):
        if tuple(value.shape) != tuple(own[name].shape):
            raise CheckpointError(f"{path}: the average for {name} is {tuple(value.shape)}, not "
                                  f"{tuple(own[name].shape)}")
    with torch.no_grad():
        for name, value in zip(names, shadow):
            own[name].copy_(value)


__all__ = ["GramConfig", "GramGenerator", "camera_origins", "camera_to_world", "composite", "level_crossings",
           "load_gram", "manifold_points", "official_parameter_order"]
