"""Procedural synthetic 3D heads: exact colour, depth and semantic ground truth in EG3D cameras.

A head is a signed distance function built from smooth-unioned primitives (ellipsoids, capsules,
a torus, half-spaces) in EG3D world units: y up, the face looking toward +z, about 0.45 units
from the chin (y -0.16) to the top of the hair (y 0.29), the face centre near EG3D's look-at
pivot (0, 0, 0.2) so that orbiting cameras keep it in the middle of the image, the neck and the
top of the shoulders below; everything lies inside the box [-0.5, 0.5]^3 EG3D renders.  Seen by
the frontal camera it fills the image like an FFHQ crop: hair at the top edge, the chin at about
78 % of the height, the neck and shoulders (garment) along the bottom.  Every head is drawn from ``HeadParams``:
geometry and per-semantic-group appearance parameters, each with a documented normal
distribution (``PARAM_SPECS``), so a head is a point in a standardised latent space.

``render_heads`` sphere traces a batch of heads in torch (no gradient) and returns the image, the
depth along each ray (as EG3D's image_depth), the foreground mask and two label maps: fine parts
(``FINE_LABELS``) and SemFaceEdit's four groups (``GROUP_LABELS``).  Shading is Lambertian under a
fixed light plus ambient, so colour is view-independent and a radiance field can reproduce it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from engine.portrait.cameras import RAY_END, check_labels, rays

FINE_LABELS = ("background", "skin", "nose", "eyes", "mouth", "ears", "neck", "hair", "garment")  # id = index
GROUP_LABELS = ("background", "hair", "face", "garment")  # id = index; face = skin, nose, eyes, mouth, ears, neck
FINE_TO_GROUP = np.array([0, 2, 2, 2, 2, 2, 2, 1, 3], dtype=np.uint8)  # group id of each fine label id

BOX_HALF = 0.5  # EG3D's rendering box is [-0.5, 0.5]^3; every head lies inside it


@dataclass(frozen=True)
class ParamSpec:
    """One head parameter: its standard distribution N(mean, std) clipped to [low, high], and its meaning."""

    name: str
    mean: float
    std: float
    low: float
    high: float
    doc: str


def _spec(name: str, mean: float, std: float, doc: str) -> ParamSpec:
    """A parameter clipped at three standard deviations (0.27 % of draws), so its draws keep mean and std."""
    return ParamSpec(name, mean, std, mean - 3 * std, mean + 3 * std, doc)


# Lengths are EG3D world units (the frontal image spans about 0.62 units at the face).
PARAM_SPECS: tuple[ParamSpec, ...] = (
    # geometry
    _spec("head_width", 0.140, 0.008, "half width of the cranium ellipsoid"),
    _spec("head_height", 0.190, 0.008, "half height of the cranium ellipsoid"),
    _spec("head_depth", 0.180, 0.008, "half depth (front to back) of the cranium ellipsoid"),
    _spec("jaw_width", 0.105, 0.008, "half width of the jaw ellipsoid"),
    _spec("jaw_roundness", 0.5, 0.15, "how softly the jaw blends into the cranium (0 angular, 1 round)"),
    _spec("chin_length", 0.0, 0.010, "how far the chin reaches below the average chin"),
    _spec("nose_length", 0.075, 0.007, "vertical distance from the eyes to the nose tip"),
    _spec("nose_width", 0.016, 0.0025, "radius of the nose tip"),
    _spec("nose_protrusion", 0.035, 0.005, "how far the nose tip stands out of the face"),
    _spec("eye_size", 0.020, 0.002, "eyeball radius"),
    _spec("eye_spacing", 0.056, 0.004, "half the distance between the eye centres"),
    _spec("eye_height", 0.045, 0.008, "height of the eye centres above the origin"),
    _spec("mouth_width", 0.042, 0.005, "half width of the lips"),
    _spec("mouth_smile", 0.0, 0.5, "lift of the mouth corners (negative: a frown), in units of 0.01"),
    _spec("ear_size", 0.036, 0.004, "half height of each ear"),
    _spec("hair_volume", 0.022, 0.007, "thickness of the hair over the cranium"),
    _spec("hair_length", 0.3, 0.3, "style: 0 or less is short; 1 or more reaches the shoulders behind the head"),
    _spec("hair_bun", -0.3, 0.4, "style: a bun of radius 0.1 * max(0, hair_bun) on the crown; a quarter of heads have one"),
    _spec("neck_width", 0.050, 0.005, "neck radius"),
    _spec("neck_length", 0.075, 0.010, "chin to collar, which sets how low the shoulders sit"),
    _spec("shoulder_width", 0.280, 0.025, "half width of the shoulders"),
    # appearance
    _spec("skin_tone", 0.55, 0.15, "skin lightness: 0 deep brown ... 1 pale"),
    _spec("skin_warmth", 0.0, 0.03, "added to the skin's red, taken from its blue"),
    _spec("iris_hue", 0.35, 0.25, "iris colour along brown, hazel, green, blue (0 ... 1)"),
    _spec("lip_redness", 0.5, 0.15, "lip colour from the skin's own tone (0) to red (1)"),
    _spec("hair_lightness", 0.3, 0.2, "hair colour from black (0) to blond (1)"),
    _spec("hair_redness", 0.2, 0.15, "red tint of the hair"),
    _spec("hair_strand_frequency", 40.0, 8.0, "strands around the head (texture: alternating light and dark)"),
    _spec("garment_red", 0.45, 0.2, "garment colour, red channel"),
    _spec("garment_green", 0.45, 0.2, "garment colour, green channel"),
    _spec("garment_blue", 0.45, 0.2, "garment colour, blue channel"),
    _spec("garment_stripes", -0.1, 0.5, "stripe contrast max(0, value): 0 is plain (about 58 % of garments)"),
    _spec("garment_stripe_frequency", 20.0, 5.0, "horizontal stripes per world unit"),
    _spec("background_red", 0.55, 0.15, "background colour, red channel"),
    _spec("background_green", 0.55, 0.15, "background colour, green channel"),
    _spec("background_blue", 0.55, 0.15, "background colour, blue channel"),
)
PARAM_NAMES = tuple(spec.name for spec in PARAM_SPECS)
PARAM_COUNT = len(PARAM_SPECS)
PARAM_MEAN = np.array([spec.mean for spec in PARAM_SPECS])
PARAM_STD = np.array([spec.std for spec in PARAM_SPECS])
PARAM_LOW = np.array([spec.low for spec in PARAM_SPECS])
PARAM_HIGH = np.array([spec.high for spec in PARAM_SPECS])
_COLUMN = {name: i for i, name in enumerate(PARAM_NAMES)}


@dataclass(frozen=True)
class HeadParams:
    """One synthetic head.  Fields are ``PARAM_SPECS`` in order (see the table for meaning and units)."""

    head_width: float
    head_height: float
    head_depth: float
    jaw_width: float
    jaw_roundness: float
    chin_length: float
    nose_length: float
    nose_width: float
    nose_protrusion: float
    eye_size: float
    eye_spacing: float
    eye_height: float
    mouth_width: float
    mouth_smile: float
    ear_size: float
    hair_volume: float
    hair_length: float
    hair_bun: float
    neck_width: float
    neck_length: float
    shoulder_width: float
    skin_tone: float
    skin_warmth: float
    iris_hue: float
    lip_redness: float
    hair_lightness: float
    hair_redness: float
    hair_strand_frequency: float
    garment_red: float
    garment_green: float
    garment_blue: float
    garment_stripes: float
    garment_stripe_frequency: float
    background_red: float
    background_green: float
    background_blue: float

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> HeadParams:
        """The head whose parameters, in ``PARAM_NAMES`` order, are ``vector`` (taken as given, not clipped)."""
        values = np.asarray(vector, dtype=np.float64)
        if values.shape != (PARAM_COUNT,) or not np.isfinite(values).all():
            raise ValueError(f"a head parameter vector holds {PARAM_COUNT} finite floats; got shape {values.shape}")
        return cls(*(float(v) for v in values))

    @classmethod
    def from_standardised(cls, z: np.ndarray) -> HeadParams:
        """The head at standardised latent ``z`` (mean + std * z), clipped to each parameter's range."""
        z = np.asarray(z, dtype=np.float64)
        return cls.from_vector(np.clip(PARAM_MEAN + PARAM_STD * z, PARAM_LOW, PARAM_HIGH))

    @classmethod
    def from_seed(cls, seed: int) -> HeadParams:
        """A head drawn from the standard distributions; the same seed always gives the same head."""
        return cls.from_standardised(np.random.default_rng(seed).standard_normal(PARAM_COUNT))

    @classmethod
    def average(cls) -> HeadParams:
        """The head with every parameter at its mean."""
        return cls.from_vector(PARAM_MEAN)

    def to_vector(self) -> np.ndarray:
        """The parameters as a float64 vector in ``PARAM_NAMES`` order."""
        return np.array(dataclasses.astuple(self), dtype=np.float64)

    def standardised(self) -> np.ndarray:
        """z = (p - mean) / std, float64: the latent a prior over heads is trained on."""
        return (self.to_vector() - PARAM_MEAN) / PARAM_STD


@dataclass
class HeadRender:
    """Rendered ground truth of B heads at H x W pixels (numpy, row-major like the camera's rays)."""

    rgb: np.ndarray  # (B, H, W, 3) float32 in [0, 1]
    depth: np.ndarray  # (B, H, W) float32: ray distance t of the surface; RAY_END (3.3) on the background
    mask: np.ndarray  # (B, H, W) bool: the head (any label but background)
    labels_fine: np.ndarray  # (B, H, W) uint8 ids into FINE_LABELS
    labels_group: np.ndarray  # (B, H, W) uint8 ids into GROUP_LABELS


# ----------------------------------------------------------------------------------------------------------------
# Distance primitives.  Points are (N, 3); sizes are (N,) or (N, 3) per point, or Python floats.

def _length(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of (N, 3) rows (spelled out: faster on CPU than a reduction over 3 columns)."""
    return torch.addcmul(torch.addcmul(v[:, 0] * v[:, 0], v[:, 1], v[:, 1]), v[:, 2], v[:, 2]).sqrt()


def _ellipsoid(q: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Approximate distance to an ellipsoid centred at the origin of ``q`` (Quilez's k0 (k0 - 1) / k1)."""
    k0 = _length(q / radii)
    k1 = _length(q / (radii * radii))
    return k0 * (k0 - 1) / k1.clamp_min(1e-9)


def _capsule(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius: torch.Tensor | float) -> torch.Tensor:
    """Distance to the segment a-b thickened by ``radius``."""
    pa, ba = p - a, b - a
    h = ((pa * ba).sum(-1) / (ba * ba).sum(-1)).clamp(0, 1)
    return _length(pa - ba * h[:, None]) - radius


def _torus_y(q: torch.Tensor, major: torch.Tensor, minor: float) -> torch.Tensor:
    """Distance to a torus around the y axis through the origin of ``q``."""
    ring = torch.sqrt(q[:, 0] ** 2 + q[:, 2] ** 2) - major
    return torch.sqrt(ring * ring + q[:, 1] ** 2) - minor


def _smooth_min(a: torch.Tensor, b: torch.Tensor, k: torch.Tensor | float) -> torch.Tensor:
    """Polynomial smooth union: surfaces closer than ``k`` blend into one."""
    h = (k - (a - b).abs()).clamp_min(0) / k
    return torch.minimum(a, b) - h * h * k * 0.25


# ----------------------------------------------------------------------------------------------------------------
# Per-head geometry: the quantities the distance function reads, derived once per render from the parameters.

HEAD_ORIGIN = (0.0, 0.0, 0.09)  # the head's own frame in the world: puts the face centre near EG3D's pivot (z 0.2)
CRANIUM_CENTRE = (0.0, 0.075, -0.02)  # this and every position below are in the head's frame
JAW_CENTRE = (0.0, -0.085, 0.015)
EYE_PROTRUSION = 0.35  # fraction of the eyeball radius standing out of the face
HAIRLINE_SLOPE = 0.8  # the hairline rises this much per unit toward the face: low at the nape, high at the brow
BUN_DIRECTION = (0.77, 0.64)  # the bun sits on the hair 50 degrees above the back of the head: (up, back)
CURTAIN_FRONT = -0.03  # long hair stays behind this z (clear of the face)
BLEND_FEATURES = 0.012  # smooth-union radius of nose, lips and ears with the face


class _Shapes:
    """Per-head quantities ((B,) or (B, 3) tensors) packed in one (B, K) tensor, so gathering them for a set of
    rays or points is one index operation."""

    def __init__(self, quantities: dict[str, torch.Tensor]) -> None:
        self.layout: dict[str, tuple[int, int]] = {}
        columns, start = [], 0
        for name, value in quantities.items():
            value = value.reshape(len(value), -1)
            self.layout[name] = (start, value.shape[1])
            columns.append(value)
            start += value.shape[1]
        self.packed = torch.cat(columns, dim=1)

    def take(self, head_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The quantities of head ``head_index[n]`` for each of N rays or points: (N,) or (N, 3) each."""
        rows = self.packed.index_select(0, head_index)
        return {name: rows[:, start] if width == 1 else rows[:, start:start + width]
                for name, (start, width) in self.layout.items()}


def _vec(x: torch.Tensor | float, y: torch.Tensor | float, z: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Stack per-head components (tensors (B,) or floats) into (B, 3)."""
    return torch.stack([torch.as_tensor(c, dtype=like.dtype).expand_as(like) for c in (x, y, z)], dim=-1)


def _base_skin(p: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """The face and skull without features: cranium, cheeks, jaw and chin blended together."""
    skull = _ellipsoid(p - g["cranium_centre"], g["cranium_radii"])
    cheeks = _ellipsoid(p - g["cheek_centre"], g["cheek_radii"])
    jaw = _ellipsoid(p - g["jaw_centre"], g["jaw_radii"])
    chin = _ellipsoid(p - g["chin_centre"], g["chin_radii"])
    return _smooth_min(_smooth_min(_smooth_min(skull, cheeks, g["blend"]), jaw, g["blend"]), chin, 0.03)


def _front_surface_z(base: _Shapes, xy: torch.Tensor) -> torch.Tensor:
    """z of the face's front surface at (x, y) points (B, K, 2), found by marching each head's base skin along -z."""
    heads, k = xy.shape[:2]
    g = base.take(torch.arange(heads).repeat_interleave(k))
    xy = xy.reshape(-1, 2)
    z = torch.full((len(xy),), BOX_HALF)
    for _ in range(48):
        z = z - 0.9 * _base_skin(torch.cat([xy, z[:, None]], dim=1), g)
    return z.reshape(heads, k)


def _head_shapes(vectors: torch.Tensor) -> _Shapes:
    """Everything the distance function needs for heads with parameter vectors (B, PARAM_COUNT)."""
    q = {name: vectors[:, i] for name, i in _COLUMN.items()}
    zero = torch.zeros_like(q["head_width"])
    cranium_radii = _vec(q["head_width"], q["head_height"], q["head_depth"], zero)
    chin_drop = q["chin_length"]
    base = {
        "cranium_centre": _vec(*CRANIUM_CENTRE, zero),
        "cranium_radii": cranium_radii,
        "cheek_centre": _vec(0.0, 0.005, 0.03, zero),
        "cheek_radii": cranium_radii * torch.tensor([0.86, 0.8, 0.7]),
        "jaw_centre": _vec(*JAW_CENTRE, zero),
        "jaw_radii": _vec(q["jaw_width"], 0.085, 0.115, zero),
        "chin_centre": _vec(0.0, -0.135 - chin_drop / 2, 0.075, zero),
        "chin_radii": _vec(0.038, 0.04 + chin_drop / 2, 0.045, zero),
        "blend": 0.015 + 0.05 * q["jaw_roundness"],
    }
    eye_y = q["eye_height"]
    tip_y = eye_y - q["nose_length"]
    chin_y = -0.175 - chin_drop
    mouth_y = tip_y - 0.35 * (tip_y - chin_y)
    front = _front_surface_z(_Shapes(base), torch.stack([
        torch.stack([q["eye_spacing"], eye_y], -1), torch.stack([zero, eye_y], -1),
        torch.stack([zero, tip_y], -1), torch.stack([zero, mouth_y], -1)], dim=1))
    eye_z, bridge_z, tip_z, mouth_z = front.unbind(1)

    ear_y = eye_y - 0.03
    ear_z = -0.01
    cy, cz = CRANIUM_CENTRE[1:]
    skull_side = q["head_width"] * torch.sqrt(
        (1 - ((ear_y - cy) / q["head_height"]) ** 2 - ((ear_z - cz) / q["head_depth"]) ** 2).clamp_min(0.05))

    volume = q["hair_volume"]
    hair_radii = cranium_radii + torch.stack([volume, 1.2 * volume, volume], -1)
    length = q["hair_length"].clamp(0, 1)
    curtain_top, curtain_bottom = 0.14, 0.02 - 0.32 * length
    collar_y = chin_y - q["neck_length"]
    shoulder_y = collar_y - 0.01
    return _Shapes(base | {
        "eye_centre": _vec(q["eye_spacing"], eye_y, eye_z - (1 - EYE_PROTRUSION) * q["eye_size"], zero),
        "eye_radius": q["eye_size"],
        "nose_bridge": _vec(0.0, eye_y, bridge_z - 0.5 * q["nose_width"], zero),
        "nose_tip": _vec(0.0, tip_y, tip_z + q["nose_protrusion"] - q["nose_width"], zero),
        "nose_radius": q["nose_width"],
        "mouth_centre": _vec(0.0, mouth_y, mouth_z - 0.008, zero),
        "mouth_radii": _vec(q["mouth_width"], 0.011, 0.016, zero),
        "mouth_smile": 0.01 * q["mouth_smile"],
        "ear_centre": _vec(skull_side + 0.012, ear_y, ear_z, zero),
        "ear_radii": _vec(0.014, q["ear_size"], 0.026, zero),
        "neck_top": _vec(0.0, -0.06, -0.035, zero),
        "neck_bottom": _vec(0.0, collar_y - 0.05, -0.035, zero),
        "neck_radius": q["neck_width"],
        "hair_radii": hair_radii,
        "hairline_y": cy + 0.5 * q["head_height"],
        "hairline_z": cz + q["head_depth"],
        "curtain_centre": _vec(0.0, (curtain_top + curtain_bottom) / 2, -0.07, zero),
        "curtain_radii": _vec(q["head_width"] + volume * (0.3 + length), (curtain_top - curtain_bottom) / 2,
                              0.13, zero),
        "bun_centre": _vec(0.0, cy + BUN_DIRECTION[0] * hair_radii[:, 1], cz - BUN_DIRECTION[1] * hair_radii[:, 2], zero),
        "bun_radius": 0.1 * q["hair_bun"].clamp_min(0),
        "torso_centre": _vec(0.0, collar_y - 0.21, -0.05, zero),
        "torso_radii": _vec(q["shoulder_width"] + 0.03, 0.2, 0.13, zero),
        "shoulder_inner": _vec(0.06, shoulder_y, -0.05, zero),
        "shoulder_outer": _vec(q["shoulder_width"], shoulder_y - 0.06, -0.05, zero),
        "collar_centre": _vec(0.0, collar_y, -0.03, zero),
        "collar_radius": q["neck_width"] + 0.006,
    })


# ----------------------------------------------------------------------------------------------------------------
# The distance function.

def _part_distances(p: torch.Tensor, g: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Distance to each fine part (FINE_LABELS[1:] order) at points p (N, 3) of heads g, in the head's frame."""
    mirrored = torch.cat([p[:, :1].abs(), p[:, 1:]], dim=1)  # paired parts (eyes, ears, shoulders): one evaluation
    skin = _base_skin(p, g)
    nose = torch.minimum(_capsule(p, g["nose_bridge"], g["nose_tip"], 0.6 * g["nose_radius"]),
                         _ellipsoid(p - g["nose_tip"], g["nose_radius"][:, None] * torch.tensor([1.5, 1.0, 1.0])))
    eyes = _length(mirrored - g["eye_centre"]) - g["eye_radius"]
    lips = p - g["mouth_centre"]
    corner_lift = g["mouth_smile"] * (lips[:, 0] / g["mouth_radii"][:, 0]) ** 2
    lips = torch.stack([lips[:, 0], lips[:, 1] - corner_lift, lips[:, 2]], dim=-1)
    mouth = _ellipsoid(lips, g["mouth_radii"])
    ears = _ellipsoid(mirrored - g["ear_centre"], g["ear_radii"])
    neck = _capsule(p, g["neck_top"], g["neck_bottom"], g["neck_radius"])

    slope_norm = math.sqrt(1 + HAIRLINE_SLOPE ** 2)
    below_hairline = (g["hairline_y"] + HAIRLINE_SLOPE * (p[:, 2] - g["hairline_z"]) - p[:, 1]) / slope_norm
    shell = torch.maximum(_ellipsoid(p - g["cranium_centre"], g["hair_radii"]), below_hairline)
    curtain = torch.maximum(_ellipsoid(p - g["curtain_centre"], g["curtain_radii"]), p[:, 2] - CURTAIN_FRONT)
    bun = _length(p - g["bun_centre"]) - g["bun_radius"]
    hair = torch.minimum(torch.minimum(shell, curtain), bun)

    torso = _ellipsoid(p - g["torso_centre"], g["torso_radii"])
    shoulders = _capsule(mirrored, g["shoulder_inner"], g["shoulder_outer"], 0.055)
    collar = _torus_y(p - g["collar_centre"], g["collar_radius"], 0.012)
    garment = _smooth_min(_smooth_min(torso, shoulders, 0.04), collar, 0.01)
    return [skin, nose, eyes, mouth, ears, neck, hair, garment]


def _scene_distance(p: torch.Tensor, parts: list[torch.Tensor], g: dict[str, torch.Tensor]) -> torch.Tensor:
    """The whole head at world points p: skin, nose, lips, ears and neck blended; eyes, hair and garment unioned;
    cut to the box."""
    skin, nose, eyes, mouth, ears, neck, hair, garment = parts
    face = _smooth_min(_smooth_min(_smooth_min(skin, nose, BLEND_FEATURES), mouth, BLEND_FEATURES), ears, BLEND_FEATURES)
    body = _smooth_min(face, neck, g["blend"])
    head = torch.minimum(torch.minimum(body, eyes), torch.minimum(hair, garment))
    return torch.maximum(head, p.abs().amax(dim=-1) - BOX_HALF)


def _to_head_frame(p: torch.Tensor) -> torch.Tensor:
    return p - torch.tensor(HEAD_ORIGIN)


def _distance(p: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """Signed distance of world points p (N, 3) to heads g."""
    return _scene_distance(p, _part_distances(_to_head_frame(p), g), g)


def _labels(p: torch.Tensor, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """Fine label id (1 ...) of the part nearest to each world point."""
    return torch.stack(_part_distances(_to_head_frame(p), g), dim=-1).argmin(dim=-1) + 1


@torch.no_grad()
def signed_distance(points: np.ndarray | torch.Tensor, params: HeadParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed distance (N,) (negative inside) of world points (N, 3) to one head, and the fine label (N,)
    of the part nearest to each point (deepest inside, for inner points): ground truth occupancy and
    semantics for any 3D query."""
    p = torch.as_tensor(np.asarray(points), dtype=torch.float32).reshape(-1, 3)
    g = _head_shapes(torch.from_numpy(params.to_vector()[None]).float()).take(torch.zeros(len(p), dtype=torch.long))
    return _distance(p, g), _labels(p, g)


# ----------------------------------------------------------------------------------------------------------------
# Appearance.

LIGHT_DIRECTION = (-0.4, 0.55, 0.75)  # toward the light: above, in front, on the subject's right
AMBIENT = 0.4
DIFFUSE = 0.6
_SKIN_DARK, _SKIN_LIGHT = np.array([0.33, 0.2, 0.13]), np.array([0.97, 0.82, 0.71])
_IRIS_PALETTE = np.array([[0.33, 0.19, 0.09], [0.47, 0.36, 0.17], [0.28, 0.47, 0.28], [0.3, 0.48, 0.75]])
_HAIR_DARK, _HAIR_LIGHT = np.array([0.06, 0.05, 0.045]), np.array([0.86, 0.72, 0.46])
_HAIR_RED_TINT = np.array([0.3, 0.02, -0.1])
_LIP_RED = np.array([0.72, 0.22, 0.28])
_SCLERA = (0.93, 0.92, 0.9)
_PUPIL = (0.04, 0.03, 0.03)
_MOUTH_LINE = (0.25, 0.07, 0.08)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[:, None]


def _albedos(vectors: np.ndarray) -> _Shapes:
    """Per-head colours (B, 3) and texture settings from parameter vectors (B, PARAM_COUNT)."""
    q = {name: vectors[:, i] for name, i in _COLUMN.items()}
    warmth = q["skin_warmth"][:, None] * np.array([1.0, 0.0, -1.0])
    skin = np.clip(_lerp(_SKIN_DARK, _SKIN_LIGHT, np.clip(q["skin_tone"], 0, 1)) + warmth, 0, 1)
    lips = _lerp(skin * np.array([0.85, 0.6, 0.6]), _LIP_RED, np.clip(q["lip_redness"], 0, 1))
    stops = np.linspace(0, 1, len(_IRIS_PALETTE))
    iris = np.stack([np.interp(q["iris_hue"], stops, _IRIS_PALETTE[:, ch]) for ch in range(3)], -1)
    hair = _lerp(_HAIR_DARK, _HAIR_LIGHT, np.clip(q["hair_lightness"], 0, 1))
    hair = np.clip(hair + np.clip(q["hair_redness"], 0, 1)[:, None] * _HAIR_RED_TINT, 0, 1)
    garment = np.clip(np.stack([q["garment_red"], q["garment_green"], q["garment_blue"]], -1), 0, 1)
    background = np.clip(np.stack([q["background_red"], q["background_green"], q["background_blue"]], -1), 0, 1)
    columns = dict(skin=skin, lips=lips, iris=iris, hair=hair, garment=garment, background=background,
                   strands=q["hair_strand_frequency"], stripes=np.clip(q["garment_stripes"], 0, 1),
                   stripe_frequency=q["garment_stripe_frequency"])
    return _Shapes({name: torch.from_numpy(np.asarray(value, dtype=np.float32)) for name, value in columns.items()})


def _surface_colour(p: torch.Tensor, labels: torch.Tensor, g: dict[str, torch.Tensor],
                    a: dict[str, torch.Tensor]) -> torch.Tensor:
    """Albedo (N, 3) at world surface points p with fine labels, from each part's colour and texture."""
    p = _to_head_frame(p)
    mirrored = torch.cat([p[:, :1].abs(), p[:, 1:]], dim=1)
    skin = a["skin"]
    colour = torch.zeros_like(p)

    def paint(label: int, rgb: torch.Tensor) -> None:
        part = labels == label
        colour[part] = rgb.expand_as(colour)[part]

    # eyebrows: a band of hair colour above each eye, on the skin
    eye_offset = mirrored - g["eye_centre"]
    r = g["eye_radius"]
    brow = ((eye_offset[:, 1] > 1.3 * r) & (eye_offset[:, 1] < 1.3 * r + 0.009) & (eye_offset[:, 0].abs() < 1.5 * r))
    paint(1, torch.where(brow[:, None], 0.3 * skin + 0.7 * a["hair"], skin))
    paint(2, skin * torch.tensor([1.02, 0.96, 0.96]))
    gaze = eye_offset[:, 2] / _length(eye_offset).clamp_min(1e-9)  # cosine between the point and the eye's axis
    eye = torch.where((gaze > math.cos(math.radians(38)))[:, None], a["iris"], torch.tensor(_SCLERA))
    paint(3, torch.where((gaze > math.cos(math.radians(16)))[:, None], torch.tensor(_PUPIL), eye))
    lips = p - g["mouth_centre"]
    line = (lips[:, 1] - g["mouth_smile"] * (lips[:, 0] / g["mouth_radii"][:, 0]) ** 2).abs() < 0.0025
    paint(4, torch.where(line[:, None], torch.tensor(_MOUTH_LINE), a["lips"]))
    paint(5, skin * 0.93)
    paint(6, skin * 0.88)
    around = torch.atan2(p[:, 0], p[:, 2] - CRANIUM_CENTRE[2])
    strands = 1 + 0.22 * torch.sin(a["strands"] * around + 25 * p[:, 1])
    paint(7, (a["hair"] * strands[:, None]).clamp(0, 1))
    stripe = (0.5 + 2 * torch.sin(2 * math.pi * a["stripe_frequency"] * p[:, 1])).clamp(0, 1)
    paint(8, a["garment"] * (1 - 0.7 * a["stripes"] * stripe)[:, None])
    return colour


def _normals(p: torch.Tensor, g: dict[str, torch.Tensor], step: float = 1e-3) -> torch.Tensor:
    """Unit surface normals from a tetrahedral finite difference of the distance."""
    offsets = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])
    gradient = sum(o * _distance(p + step * o, g)[:, None] for o in offsets)
    return torch.nn.functional.normalize(gradient, dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# Rendering.

MAX_STEPS = 128  # rays still unresolved after this many steps (grazing a silhouette) count as background
HIT_PIXELS = 0.01  # a ray hits when the distance falls below this fraction of a pixel's footprint
STEP_SCALE = 0.9  # under-relaxation: the ellipsoid distance is an approximation, not a bound
RAYS_PER_CHUNK = 1 << 17  # rays traced together (whole images at a time): bounds memory for large batches


def _box_interval(origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit ray distances of the box [-BOX_HALF, BOX_HALF]^3 (entry > exit: the ray misses it)."""
    inverse = 1 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (-BOX_HALF - origins) * inverse, (BOX_HALF - origins) * inverse
    return torch.minimum(t0, t1).amax(-1).clamp_min(0), torch.maximum(t0, t1).amin(-1)


def _sphere_trace(origins: torch.Tensor, directions: torch.Tensor, heads: torch.Tensor, shapes: _Shapes,
                  tolerance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray distance of the first surface along each ray and whether it was hit; only live rays are evaluated."""
    t, t_exit = _box_interval(origins, directions)
    hit = torch.zeros(len(t), dtype=torch.bool)
    live = torch.nonzero(t < t_exit).squeeze(1)
    for _ in range(MAX_STEPS):
        if len(live) == 0:
            break
        distance = _distance(origins[live] + t[live, None] * directions[live], shapes.take(heads[live]))
        close = distance < tolerance[live] * t[live]
        hit[live[close]] = True
        t[live] += torch.where(close, torch.zeros_like(distance), STEP_SCALE * distance)
        live = live[~close & (t[live] < t_exit[live])]
    return t, hit


def _shade(origins: torch.Tensor, directions: torch.Tensor, head_of_ray: torch.Tensor, tolerance: torch.Tensor,
           shapes: _Shapes, albedos: _Shapes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colour (N, 3), depth (N,) and fine label (N,) of N rays."""
    t, hit = _sphere_trace(origins, directions, head_of_ray, shapes, tolerance)
    fine = torch.zeros(len(t), dtype=torch.long)
    rgb = albedos.take(head_of_ray)["background"]
    surface = torch.nonzero(hit).squeeze(1)
    if len(surface):
        p = origins[surface] + t[surface, None] * directions[surface]
        g = shapes.take(head_of_ray[surface])
        fine[surface] = _labels(p, g)
        albedo = _surface_colour(p, fine[surface], g, albedos.take(head_of_ray[surface]))
        light = torch.nn.functional.normalize(torch.tensor(LIGHT_DIRECTION), dim=0)
        lambert = (_normals(p, g) @ light).clamp_min(0)
        rgb[surface] = (albedo * (AMBIENT + DIFFUSE * lambert[:, None])).clamp(0, 1)
    return rgb, torch.where(hit, t, torch.full_like(t, RAY_END)), fine


@torch.no_grad()
def render_heads(params: list[HeadParams] | HeadParams, c: np.ndarray | torch.Tensor, resolution: int = 64) -> HeadRender:
    """Render heads seen by EG3D cameras: head n through camera label c[n] (25 floats, see cameras.py).

    One head or one camera is used for every image of the batch; otherwise their counts must match.
    Deterministic: the same heads and cameras give the same images.
    """
    heads = [params] if isinstance(params, HeadParams) else list(params)
    labels = check_labels(c)
    batch = max(len(heads), len(labels))
    if len(heads) not in (1, batch) or len(labels) not in (1, batch):
        raise ValueError(f"render_heads needs as many heads as cameras (or one of either); "
                         f"got {len(heads)} heads and {len(labels)} cameras")
    vectors = np.stack([h.to_vector() for h in heads])
    shapes, albedos = _head_shapes(torch.from_numpy(vectors).float()), _albedos(vectors)
    origins, directions = rays(labels, resolution)
    pixels = resolution * resolution
    origins = origins.expand(batch, -1, -1).reshape(-1, 3)
    directions = directions.expand(batch, -1, -1).reshape(-1, 3)
    image_of_ray = torch.arange(batch).repeat_interleave(pixels)
    head_of_ray = image_of_ray if len(heads) == batch else torch.zeros_like(image_of_ray)
    focal = torch.from_numpy(labels[:, 16]).expand(batch)  # fx of the normalised intrinsics
    tolerance = (HIT_PIXELS / (focal * resolution)).repeat_interleave(pixels)  # one pixel spans t / (fx R)
    chunk = max(1, RAYS_PER_CHUNK // pixels) * pixels  # whole images, bounded memory
    rgb, depth, fine = (torch.cat(parts) for parts in zip(*(
        _shade(origins[i:i + chunk], directions[i:i + chunk], head_of_ray[i:i + chunk], tolerance[i:i + chunk],
               shapes, albedos) for i in range(0, len(origins), chunk))))
    fine = fine.numpy().astype(np.uint8).reshape(batch, resolution, resolution)
    return HeadRender(rgb=rgb.numpy().reshape(batch, resolution, resolution, 3),
                      depth=depth.numpy().reshape(batch, resolution, resolution),
                      mask=fine > 0, labels_fine=fine, labels_group=FINE_TO_GROUP[fine])
