"""SemFaceEdit's generator (Verma & Raman, "Semantic Face Editing on Generative Radiance Manifolds"): GRAM's
radiance manifolds (engine.portrait.gram) split into a geometry module that knows which semantic group each
point belongs to and an appearance module with one latent per group, so a group's look can be swapped or its
shape painted without touching the rest.  No public code exists; this is written from the paper.

* **Geometry module** Ψg(z_g, x): a FiLM-SIREN (its frequencies and phases from a mapping network of the
  geometry latent z_g) giving every manifold point an occupancy σ, a semantic radiance s (a distribution over
  the groups) and an appearance descriptor F.
* **Semantic volume masking**: along each ray, sorted by distance, point k belongs to the group
  argmax_c Σ_{j ≥ k} T_j α_j s_j,c (the transmittance-weighted semantic radiance from that point on: what the
  ray sees from there), and is routed to that group's appearance.
* **Appearance module** Ψa({z_c}, x, d, F): one mapping network per group turns its latent z_c into the
  frequencies and phases of a shared SIREN backbone over (x, F); a per-group linear head reads (backbone
  features, ray direction) as the colour.  Latent z_c therefore colours only the points of group c.
* Renders: colour, the semantic map Σ w s, depth.

Groups (one place for the product: ``GROUPS``, engine.portrait.heads' ``GROUP_LABELS``): background, hair, face
(skin, eyes, brows, nose, mouth, lips, ears, neck, and accessories worn on them), garment.

The embedded generator works in EG3D's world and cameras (engine.portrait.cameras), where the synthetic heads
live: its latents are a synthetic head's standardised parameters, geometry (``GEOMETRY_PARAMS``) and per group
(``APPEARANCE_PARAMS``), so every figure is measured against known ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.portrait.gram import (FREQUENCY_SCALE, FREQUENCY_SHIFT, OPAQUE_SPACING, RGB_PAD, SineFilm, composite,
                                  manifold_points)
from engine.portrait.heads import GROUP_LABELS, PARAM_NAMES

GROUPS = GROUP_LABELS
"""the semantic groups, id = index: background, hair, face, garment"""
GROUP_COLOURS = np.array([[30, 30, 30], [225, 160, 45], [235, 195, 165], [60, 110, 200]], dtype=np.uint8)
"""how a semantic map shows each group (GROUPS order): background, hair, face, garment"""
APPEARANCE_PARAMS: dict[str, tuple[str, ...]] = {
    "background": ("background_red", "background_green", "background_blue"),
    "hair": ("hair_lightness", "hair_redness", "hair_strand_frequency"),
    "face": ("skin_tone", "skin_warmth", "iris_hue", "lip_redness"),
    "garment": ("garment_red", "garment_green", "garment_blue", "garment_stripes", "garment_stripe_frequency"),
}
"""a synthetic head's appearance parameters of each group: that group's latent on the embedded path"""
LABEL_ORDERS: dict[str, tuple[str, ...]] = {
    "celebamask": ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
                   "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"),
    "bisenet": ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
                "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat"),
}
"""the 19 face-parsing labels by id: CelebAMask-HQ's (MaskGAN's; 2 = nose, 13 = hair) and the BiSeNet face-parsing
model's (2 = left brow, 17 = hair)"""
FINE_GROUPS = {"hair": "hair", "cloth": "garment", "background": "background", "hat": "background"}
"""the group of each fine label; every other one (skin, eyes, brows, nose, mouth, lips, ears, neck, eyeglasses,
earrings, necklace) is the face"""


def group_table(order: str) -> torch.Tensor:
    """For a label order (``LABEL_ORDERS``), the group id of each of its 19 label ids."""
    return torch.tensor([GROUPS.index(FINE_GROUPS.get(name, "face")) for name in LABEL_ORDERS[order]])


INVISIBLE_WEIGHT = 1e-5
"""points weighing less than this in their pixel are not coloured (most of a ray's points lie behind the face)"""
GEOMETRY_PARAMS = tuple(name for name in PARAM_NAMES
                        if not any(name in names for names in APPEARANCE_PARAMS.values()))
"""the rest: shape, the geometry latent"""


@dataclass
class SemanticConfig:
    """The SemFaceEdit generator's sizes and its manifolds (defaults: the embedded generator's, in EG3D units)."""

    geometry_dim: int = len(GEOMETRY_PARAMS)
    """geometry latent size"""
    appearance_dims: tuple[int, ...] = tuple(len(APPEARANCE_PARAMS[g]) for g in GROUPS)
    """each group's appearance latent size, in GROUPS order"""
    width: int = 64
    """width of the geometry module's sine layers"""
    geometry_layers: int = 5
    """sine layers of the geometry module"""
    descriptor_dim: int = 16
    """size of the appearance descriptor F"""
    appearance_width: int = 48
    """width of the appearance backbone's sine layers"""
    appearance_layers: int = 3
    """sine layers of the appearance backbone"""
    mapping_width: int = 128
    """width of the mapping networks"""
    mapping_layers: int = 3
    """hidden layers of each mapping network"""
    sampler_width: int = 32
    """width of the manifold predictor"""
    sampler_layers: int = 3
    """hidden layers of the manifold predictor"""
    num_samples: int = 32
    """scalar samples per ray between ray_start and ray_end"""
    num_manifolds: int = 16
    """points per ray: the surfaces' and the background plane's"""
    levels_start: float = 23.0
    """the nearest surface's level"""
    levels_end: float = 8.0
    """the farthest surface's level"""
    shell_centre: tuple[float, float, float] = (0.0, 0.05, -0.3)
    """the surfaces start as spheres around this point (world units) ..."""
    shell_radii: tuple[float, float] = (0.62, 0.16)
    """... from this radius (the nearest level) to this one (the farthest)"""
    box: float = 1.0
    """side of the cube the networks read (points are scaled by 2 / box)"""
    background_z: float = -0.45
    """the background plane (world z) every ray ends on"""
    ray_start: float = 2.25
    """the nearest scalar sample's distance from the camera"""
    ray_end: float = 3.3
    """the farthest"""
    groups: tuple[str, ...] = field(default=GROUPS)
    """the group names, in latent order"""

    @property
    def levels(self) -> torch.Tensor:
        """The surfaces' levels, nearest first."""
        return torch.linspace(self.levels_start, self.levels_end, self.num_manifolds - 1)


def film_mapping(inputs: int, width: int, hidden_layers: int, outputs: int) -> nn.Sequential:
    """A mapping network: ``hidden_layers`` leaky-ReLU layers, then one linear layer to ``outputs``."""
    layers: list[nn.Module] = []
    for k in range(hidden_layers):
        layers += [nn.Linear(inputs if k == 0 else width, width), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.Linear(width if hidden_layers else inputs, outputs))


def film_styles(mapping: nn.Module, z: torch.Tensor, layers: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(frequencies, phases), each (B, layers, width), of latents z: the mapping network's first half of outputs
    are frequencies (scaled to 15·f + 30, as GRAM), the second half phases."""
    frequencies, phases = mapping(z).chunk(2, dim=-1)
    shape = (z.shape[0], layers, width)
    return frequencies.reshape(shape) * FREQUENCY_SCALE + FREQUENCY_SHIFT, phases.reshape(shape)


def siren_init(layers: nn.ModuleList) -> None:
    """SIREN's initialisation for sine layers at frequency ~30: the first uniform in ±1/fan_in, the others in
    ±sqrt(6 / fan_in) / 25 (as GRAM and pi-GAN initialise theirs)."""
    with torch.no_grad():
        for k, film in enumerate(layers):
            fan_in = film.layer.weight.shape[1]
            bound = 1 / fan_in if k == 0 else math.sqrt(6 / fan_in) / 25
            film.layer.weight.uniform_(-bound, bound)


class ManifoldSampler(nn.Module):
    """GRAM's manifold predictor at the embedded scale: a ReLU MLP scalar field shared by every face."""

    def __init__(self, cfg: SemanticConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(cfg.sampler_layers):
            layers += [nn.Linear(3 if k == 0 else cfg.sampler_width, cfg.sampler_width), nn.ReLU()]
        self.network = nn.Sequential(*layers)
        self.output_layer = nn.Linear(cfg.sampler_width, 1)
        self.scale = 2 / cfg.box

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.network(points * self.scale))


class GeometryModule(nn.Module):
    """Ψg: geometry latent and points → occupancy σ (B, P, 1), semantic radiance s (B, P, groups) and the
    appearance descriptor F (B, P, descriptor_dim)."""

    def __init__(self, cfg: SemanticConfig) -> None:
        super().__init__()
        self.layers, self.width, self.scale = cfg.geometry_layers, cfg.width, 2 / cfg.box
        self.network = nn.ModuleList([SineFilm(3 if k == 0 else cfg.width, cfg.width)
                                      for k in range(cfg.geometry_layers)])
        self.mapping_network = film_mapping(cfg.geometry_dim, cfg.mapping_width, cfg.mapping_layers,
                                            2 * cfg.geometry_layers * cfg.width)
        self.output_sigma = nn.Linear(cfg.width, 1)
        self.output_semantic = nn.Linear(cfg.width, len(cfg.groups))
        self.output_descriptor = nn.Linear(cfg.width, cfg.descriptor_dim)
        siren_init(self.network)

    def styles(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(frequencies, phases) (B, layers, width) of geometry latents: its W+ space."""
        return film_styles(self.mapping_network, z, self.layers, self.width)

    def forward(self, points: torch.Tensor, styles: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        frequencies, phases = styles
        x = points * self.scale
        for k, film in enumerate(self.network):
            x = film(x, frequencies[:, k], phases[:, k])
        return {"sigma": F.softplus(self.output_sigma(x)), "semantic": torch.softmax(self.output_semantic(x), -1),
                "descriptor": self.output_descriptor(x)}


class AppearanceModule(nn.Module):
    """Ψa: per group, its latent's mapping network styles a shared SIREN backbone over (point, descriptor); a
    per-group linear head reads (features, ray direction) as colour."""

    def __init__(self, cfg: SemanticConfig) -> None:
        super().__init__()
        self.layers, self.width, self.scale = cfg.appearance_layers, cfg.appearance_width, 2 / cfg.box
        self.network = nn.ModuleList([SineFilm(3 + cfg.descriptor_dim if k == 0 else cfg.appearance_width,
                                               cfg.appearance_width) for k in range(cfg.appearance_layers)])
        self.mapping_networks = nn.ModuleList([
            film_mapping(dim, cfg.mapping_width, cfg.mapping_layers, 2 * cfg.appearance_layers * cfg.appearance_width)
            for dim in cfg.appearance_dims])
        self.output_color = nn.ModuleList([nn.Linear(cfg.appearance_width + 3, 3) for _ in cfg.appearance_dims])
        siren_init(self.network)

    def styles(self, z: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each group's (frequencies, phases) (B, layers, width) from its latent (B, dim): its W space."""
        return [film_styles(mapping, latent, self.layers, self.width)
                for mapping, latent in zip(self.mapping_networks, z)]

    def forward(self, group: int, points: torch.Tensor, descriptors: torch.Tensor, directions: torch.Tensor,
                styles: tuple[torch.Tensor, torch.Tensor], batch_of_point: torch.Tensor) -> torch.Tensor:
        """Colours (P, 3) in [−0.001, 1.001] of points (P, 3) of one group; styles (B, layers, width) are looked
        up per point through ``batch_of_point`` (P,)."""
        frequencies, phases = (s[batch_of_point] for s in styles)
        x = torch.cat([points * self.scale, descriptors], -1)[:, None]  # one point per "batch" row
        for k, film in enumerate(self.network):
            x = film(x, frequencies[:, k], phases[:, k])
        colour = self.output_color[group](torch.cat([x[:, 0], directions], -1))
        return torch.sigmoid(colour) * (1 + 2 * RGB_PAD) - RGB_PAD


def point_groups(semantic: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Semantic volume masking: the group (..., N) of each point of rays sorted by distance, the argmax over
    groups of the weighted semantic radiance (weights (..., N, 1) = T·α, semantic (..., N, groups)) summed from
    that point to the ray's end."""
    seen = weights * semantic
    from_here = seen.flip(-2).cumsum(-2).flip(-2)
    return from_here.argmax(-1)


@dataclass
class Latents:
    """A face: its geometry latent (B, geometry_dim) and one appearance latent per group (B, dim)."""

    geometry: torch.Tensor
    appearance: list[torch.Tensor]


@dataclass
class Styles:
    """A face in W space: the geometry module's styles (its W+ when each layer is free) and each group's
    appearance styles; what inversion and editing optimise."""

    geometry: tuple[torch.Tensor, torch.Tensor]
    appearance: list[tuple[torch.Tensor, torch.Tensor]]

    def with_look(self, group: int, donor: Styles) -> Styles:
        """This face with ``donor``'s appearance styles for ``group`` (an appearance swap)."""
        appearance = list(self.appearance)
        appearance[group] = donor.appearance[group]
        return Styles(self.geometry, appearance)


class SemanticGenerator(nn.Module):
    """SemFaceEdit's generator: the manifold sampler, geometry and appearance modules; see the module docstring."""

    def __init__(self, cfg: SemanticConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or SemanticConfig()
        self.sampler = ManifoldSampler(self.cfg)
        self.geometry = GeometryModule(self.cfg)
        self.appearance = AppearanceModule(self.cfg)

    def styles(self, latents: Latents) -> Styles:
        """The W-space styles of a face's latents."""
        return Styles(self.geometry.styles(latents.geometry), self.appearance.styles(latents.appearance))

    def shell_scalar(self, points: torch.Tensor) -> torch.Tensor:
        """The scalar whose level sets are the starting spheres: levels_start at the first radius, levels_end at
        the second, linear in the distance from the shell centre (what ``init_manifolds`` fits)."""
        cfg = self.cfg
        radius = (points - torch.tensor(cfg.shell_centre, device=points.device)).norm(dim=-1, keepdim=True)
        (near, far), (high, low) = cfg.shell_radii, (cfg.levels_start, cfg.levels_end)
        return low + (radius - far) * (high - low) / (near - far)

    def geometry_pass(self, geometry: tuple[torch.Tensor, torch.Tensor], origins: torch.Tensor,
                      directions: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the appearance does not change, for rays (B, R, 3) from origins (B, 3): manifold points (sorted
        by distance), σ, s, F, compositing weights, each point's group, and the semantic map and depth."""
        cfg = self.cfg
        b, r, _ = directions.shape
        depths = torch.linspace(cfg.ray_start, cfg.ray_end, cfg.num_samples, device=directions.device)
        samples = origins[:, None, None, :] + directions[..., None, :] * depths[:, None]
        found = manifold_points(self.sampler, samples, origins, directions, cfg.levels, cfg.background_z)
        n = found["points"].shape[2]
        out = self.geometry(found["points"].reshape(b, -1, 3), geometry)
        sigma = out["sigma"].view(b, r, n, 1)
        semantic = out["semantic"].view(b, r, n, -1)
        shaded = composite(semantic, sigma, found["distance"], found["valid"], found["opaque"], OPAQUE_SPACING)
        return {**found, "sigma": sigma, "semantic_radiance": semantic,
                "descriptor": out["descriptor"].view(b, r, n, -1), "weights": shaded["weights"],
                "semantic": shaded["rgb"], "depth": shaded["depth"],
                "groups": point_groups(semantic, shaded["weights"].detach())}

    def colour_pass(self, appearance: list[tuple[torch.Tensor, torch.Tensor]], geometry: dict[str, torch.Tensor],
                    directions: torch.Tensor) -> torch.Tensor:
        """Each point's colour (B, R, N, 3), every point through its group's appearance (points that add less than
        INVISIBLE_WEIGHT to their pixel are left black): a group's points are computed together, so changing one
        group's appearance leaves every other group's colours bit-identical."""
        b, r, n, _ = geometry["points"].shape
        groups = geometry["groups"].reshape(-1)
        points, descriptors = geometry["points"].reshape(-1, 3), geometry["descriptor"].reshape(b * r * n, -1)
        seen = directions[..., None, :].expand(b, r, n, 3).reshape(-1, 3)
        batch_of_point = torch.arange(b, device=points.device).repeat_interleave(r * n)
        seen_enough = geometry["weights"].reshape(-1) > INVISIBLE_WEIGHT
        colour = points.new_zeros(b * r * n, 3)
        for group, styles in enumerate(appearance):
            chosen = torch.nonzero((groups == group) & seen_enough).squeeze(1)
            if len(chosen):
                colour = colour.index_put((chosen,), self.appearance(group, points[chosen], descriptors[chosen],
                                                                     seen[chosen], styles, batch_of_point[chosen]))
        return colour.view(b, r, n, 3)

    def render_rays(self, styles: Styles, origins: torch.Tensor, directions: torch.Tensor,
                    geometry: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Colour (B, R, 3) in [0, 1], semantic map (B, R, groups), depth (B, R, 1) of rays (B, R, 3) from
        origins (B, 3), with the geometry pass's outputs; ``geometry`` reuses a geometry pass of the same rays
        (an appearance edit)."""
        geometry = geometry if geometry is not None else self.geometry_pass(styles.geometry, origins, directions)
        colours = self.colour_pass(styles.appearance, geometry, directions)
        rgb = (geometry["weights"] * colours).sum(-2)
        return {**geometry, "rgb": rgb, "colours": colours}

    def render(self, styles: Styles, c: torch.Tensor, resolution: int,
               geometry: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Images of faces seen by EG3D camera labels c (B, 25): ``rgb`` (B, 3, R, R) in [0, 1], ``semantic``
        (B, groups, R, R) (its argmax the label map), ``depth`` (B, 1, R, R), and the per-ray outputs under
        ``rays`` (reusable as ``geometry`` while the geometry is unchanged)."""
        from engine.portrait.cameras import rays

        origins, directions = rays(c.detach().cpu().numpy(), resolution)
        origins, directions = origins[:, 0].to(c.device), directions.to(c.device)
        out = self.render_rays(styles, origins, directions, geometry)
        image = lambda values: values.transpose(1, 2).unflatten(2, (resolution, resolution))  # noqa: E731
        return {"rgb": image(out["rgb"]).clamp(0, 1), "semantic": image(out["semantic"]),
                "depth": image(out["depth"]), "rays": out}


__all__ = ["APPEARANCE_PARAMS", "GEOMETRY_PARAMS", "GROUP_COLOURS", "GROUPS", "LABEL_ORDERS", "Latents",
           "SemanticConfig", "SemanticGenerator", "Styles", "group_table", "point_groups"]
