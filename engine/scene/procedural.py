"""Procedural demo scene: a textured still life with exact, analytically rendered ground truth.

The scene (a striped sphere, a checkered box and a ringed cylinder on a checkered ground disc,
world z up) is ray cast with closed-form intersections, vectorised in numpy. Shading is Lambertian
under a fixed directional light plus ambient, so it is view-independent and a radiance field can
fit it exactly; ground truth can be rendered from any camera for edit scoring.
``write_demo_dataset`` writes it as a nerfstudio dataset (PINHOLE, OpenGL camera-to-world).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.core.cameras import Cameras, look_at
from engine.core.errors import UserInputError
from engine.core.imaging import to_uint8

DEMO_KEY = "retouch3d_demo"  # transforms.json entry marking a folder written by write_demo_dataset
PART_NAMES = ("sphere", "box", "cylinder", "ground")  # part id = index

SPHERE_CENTER = np.array([-0.15, 0.4, 0.5])
SPHERE_RADIUS = 0.5
BOX_CENTER = np.array([0.55, -0.3, 0.25])
BOX_HALF = np.array([0.25, 0.2, 0.25])  # half extents along the box's own axes
BOX_YAW_DEG = 25.0  # rotation of the box about world z
CYLINDER_CENTER_XY = np.array([-0.55, -0.45])
CYLINDER_RADIUS = 0.22
CYLINDER_HEIGHT = 0.8  # stands on the ground: z in [0, CYLINDER_HEIGHT]
GROUND_RADIUS = 1.4  # disc in the z = 0 plane, centred on the origin

BACKGROUND = np.array([0.8, 0.85, 0.9])
LIGHT_DIR = np.array([0.5, -0.4, 0.75]) / np.linalg.norm([0.5, -0.4, 0.75])  # towards the light
AMBIENT = 0.35
DIFFUSE = 0.65

ELEVATION_RANGE_DEG = (5.0, 70.0)

_SPHERE_PALETTE = np.array([[0.85, 0.2, 0.2], [0.95, 0.8, 0.2], [0.2, 0.7, 0.3], [0.2, 0.4, 0.85]])
_SPHERE_CAP = np.array([0.95, 0.95, 0.92])  # solid caps above |latitude| 60 deg (no pinched stripes)
_SPHERE_LON_BANDS = 8
_SPHERE_LAT_BAND = math.pi / 6
_BOX_FACE_COLORS = np.array([  # +x, -x, +y, -y, +z, -z
    [0.95, 0.55, 0.15], [0.55, 0.3, 0.75], [0.15, 0.65, 0.65],
    [0.85, 0.3, 0.6], [0.6, 0.85, 0.25], [0.5, 0.5, 0.5],
])
_BOX_CELL = 0.25
_CHECKER_DARK = 0.7  # brightness of the dark checker cells on the box
_CYLINDER_RINGS = np.array([[0.92, 0.9, 0.85], [0.2, 0.3, 0.6], [0.9, 0.45, 0.2]])
_CYLINDER_CAP = np.array([0.85, 0.75, 0.3])
_GROUND_COLORS = np.array([[0.78, 0.74, 0.66], [0.56, 0.52, 0.46]])
_GROUND_CELL = 0.35

_SUBSAMPLES = np.array([[0.5, 0.5], [0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])  # centre, then 2x2
_EPS = 1e-9
_CHUNK_PIXELS = 1 << 16


def _box_rotation() -> np.ndarray:
    """Box-to-world rotation (about z)."""
    a = math.radians(BOX_YAW_DEG)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


_BOX_R = _box_rotation()


@dataclass(frozen=True)
class DemoSceneConfig:
    """How the demo dataset is made."""

    n_views: int = 60
    """cameras on the upper hemisphere, golden-spiral azimuths with equal-area elevations in
    ELEVATION_RANGE_DEG, all looking at the origin"""
    image_size: int = 128
    """width = height of the square images, in pixels"""
    camera_radius: float = 4.0
    """distance of every camera from the origin (world units; the scene fits in ~1.1)"""
    fov_deg: float = 40.0
    """field of view across the image width (and height)"""
    seed: int = 0
    """drives the camera jitter (global azimuth offset, elevation within its stratum)"""

    def __post_init__(self) -> None:
        if self.n_views < 1:
            raise UserInputError(f"demo scene needs at least 1 view, got {self.n_views}")
        if self.image_size < 1:
            raise UserInputError(f"demo image size must be positive, got {self.image_size}")
        if self.camera_radius <= 1.5:
            raise UserInputError(f"demo camera radius must exceed 1.5 (outside the scene), got {self.camera_radius}")
        if not 0.0 < self.fov_deg < 180.0:
            raise UserInputError(f"demo field of view must be between 0 and 180 degrees, got {self.fov_deg}")

    @property
    def focal(self) -> float:
        """Focal length in pixels for ``fov_deg`` across ``image_size``."""
        return 0.5 * self.image_size / math.tan(math.radians(self.fov_deg) / 2)


def demo_cameras(config: DemoSceneConfig = DemoSceneConfig()) -> Cameras:
    """The dataset's cameras: a jittered golden spiral on the upper hemisphere, looking at the origin."""
    rng = np.random.default_rng(config.seed)
    n = config.n_views
    s_lo, s_hi = (math.sin(math.radians(e)) for e in ELEVATION_RANGE_DEG)
    # equal-area strata in sin(elevation), one jittered sample in each
    sin_el = s_lo + (np.arange(n) + rng.uniform(0.0, 1.0, n)) / n * (s_hi - s_lo)
    az = rng.uniform(0.0, 2 * math.pi) + np.arange(n) * math.pi * (3.0 - math.sqrt(5.0))
    cos_el = np.sqrt(1.0 - sin_el**2)
    eyes = config.camera_radius * np.stack([cos_el * np.cos(az), cos_el * np.sin(az), sin_el], -1)
    c2w = np.stack([look_at(eye, np.zeros(3)) for eye in eyes])
    f, c = config.focal, config.image_size / 2
    return Cameras(c2w=c2w, fx=np.full(n, f), fy=np.full(n, f), cx=np.full(n, c), cy=np.full(n, c),
                   width=np.full(n, config.image_size), height=np.full(n, config.image_size))


# --- intersections: distance along unit rays (inf on a miss), first hit in front of the origin ---

def _first_positive(t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """The nearer of two candidate distances (t0 <= t1) that lies in front of the ray origin."""
    return np.where(t0 > _EPS, t0, np.where(t1 > _EPS, t1, np.inf))


def _hit_sphere(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    oc = o - SPHERE_CENTER
    b = d @ oc
    disc = b * b - (oc @ oc - SPHERE_RADIUS**2)
    root = np.sqrt(np.maximum(disc, 0.0))
    return np.where(disc >= 0, _first_positive(-b - root, -b + root), np.inf)


def _hit_box(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Slab test in the box's own frame."""
    ol = (o - BOX_CENTER) @ _BOX_R
    dl = d @ _BOX_R
    dl = np.where(np.abs(dl) < 1e-12, np.copysign(1e-12, dl), dl)
    ta, tb = (-BOX_HALF - ol) / dl, (BOX_HALF - ol) / dl
    t_near = np.minimum(ta, tb).max(-1)
    t_far = np.maximum(ta, tb).min(-1)
    return np.where(t_far >= t_near, _first_positive(t_near, t_far), np.inf)


def _hit_cylinder(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Side (a quadratic in xy) and both caps (planes clipped to the radius)."""
    oxy = o[:2] - CYLINDER_CENTER_XY
    dxy = d[:, :2]
    a = np.einsum("ij,ij->i", dxy, dxy)
    b = dxy @ oxy
    disc = b * b - a * (oxy @ oxy - CYLINDER_RADIUS**2)
    ok = (disc >= 0) & (a > 1e-12)
    root = np.sqrt(np.maximum(disc, 0.0))
    a_safe = np.where(ok, a, 1.0)
    best = np.full(len(d), np.inf)
    for t in ((-b - root) / a_safe, (-b + root) / a_safe):
        z = o[2] + t * d[:, 2]
        valid = ok & (t > _EPS) & (z >= 0.0) & (z <= CYLINDER_HEIGHT)
        best = np.where(valid & (t < best), t, best)
    dz = np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
    for z_cap in (0.0, CYLINDER_HEIGHT):
        t = (z_cap - o[2]) / dz
        p = o[:2] + t[:, None] * dxy - CYLINDER_CENTER_XY
        valid = (t > _EPS) & (np.einsum("ij,ij->i", p, p) <= CYLINDER_RADIUS**2)
        best = np.where(valid & (t < best), t, best)
    return best


def _hit_ground(o: np.ndarray, d: np.ndarray) -> np.ndarray:
    dz = np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
    t = -o[2] / dz
    p = o[:2] + t[:, None] * d[:, :2]
    valid = (t > _EPS) & (np.einsum("ij,ij->i", p, p) <= GROUND_RADIUS**2)
    return np.where(valid, t, np.inf)


# --- surface appearance at hit points: (outward normal, albedo) ---

def _shade_sphere(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal latitude/longitude checker in four colours, solid white polar caps."""
    n = (p - SPHERE_CENTER) / SPHERE_RADIUS
    lon = np.arctan2(n[:, 1], n[:, 0])
    lat = np.arcsin(np.clip(n[:, 2], -1.0, 1.0))
    lon_band = np.floor((lon + math.pi) / (2 * math.pi / _SPHERE_LON_BANDS)).astype(np.int64)
    lat_band = np.floor((lat + math.pi / 2) / _SPHERE_LAT_BAND).astype(np.int64)
    albedo = _SPHERE_PALETTE[(lon_band + lat_band) % len(_SPHERE_PALETTE)]
    albedo[np.abs(lat) > math.pi / 3] = _SPHERE_CAP
    return n, albedo


def _shade_box(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One colour per face, 2x2-ish light/dark checker on each face."""
    q = (p - BOX_CENTER) @ _BOX_R
    axis = np.argmax(np.abs(q) / BOX_HALF, -1)
    sign = np.sign(q[np.arange(len(q)), axis])
    normal_local = np.zeros_like(q)
    normal_local[np.arange(len(q)), axis] = sign
    albedo = _BOX_FACE_COLORS[2 * axis + (sign < 0)].copy()
    cells = np.floor(q / _BOX_CELL).astype(np.int64)
    parity = (cells.sum(-1) - cells[np.arange(len(q)), axis]) % 2
    albedo[parity == 1] *= _CHECKER_DARK
    return normal_local @ _BOX_R.T, albedo


def _shade_cylinder(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Three-colour horizontal rings on the side, a plain colour on the caps."""
    rel = p[:, :2] - CYLINDER_CENTER_XY
    radial = np.linalg.norm(rel, axis=-1)
    on_cap = radial < CYLINDER_RADIUS * (1 - 1e-6)
    top = p[:, 2] > CYLINDER_HEIGHT / 2
    normal = np.zeros_like(p)
    normal[:, :2] = rel / np.maximum(radial, 1e-12)[:, None]
    normal[on_cap] = 0.0
    normal[on_cap, 2] = np.where(top[on_cap], 1.0, -1.0)
    ring = np.clip(np.floor(p[:, 2] / (CYLINDER_HEIGHT / len(_CYLINDER_RINGS))), 0, len(_CYLINDER_RINGS) - 1)
    albedo = _CYLINDER_RINGS[ring.astype(np.int64)]
    albedo[on_cap] = _CYLINDER_CAP
    return normal, albedo


def _shade_ground(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-tone checker; the normal is always +z (one-sided appearance, seen from above)."""
    cells = np.floor(p[:, :2] / _GROUND_CELL).astype(np.int64)
    normal = np.zeros_like(p)
    normal[:, 2] = 1.0
    return normal, _GROUND_COLORS[cells.sum(-1) % 2]


_PARTS = ((_hit_sphere, _shade_sphere), (_hit_box, _shade_box), (_hit_cylinder, _shade_cylinder),
          (_hit_ground, _shade_ground))


def _cast(origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance, part id (-1 background) and shaded colour of unit rays ``dirs`` (N, 3) from ``origin``."""
    ts = np.stack([hit(origin, dirs) for hit, _ in _PARTS])
    part = np.argmin(ts, 0)
    t = ts[part, np.arange(len(dirs))]
    part = np.where(np.isfinite(t), part, -1).astype(np.int8)
    rgb = np.broadcast_to(BACKGROUND, dirs.shape).copy()
    for k, (_, shade) in enumerate(_PARTS):
        sel = part == k
        if sel.any():
            normal, albedo = shade(origin + t[sel, None] * dirs[sel])
            light = AMBIENT + DIFFUSE * np.clip(normal @ LIGHT_DIR, 0.0, None)
            rgb[sel] = albedo * light[:, None]
    return t, part, np.clip(rgb, 0.0, 1.0)


def render_ground_truth(c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                        width: int, height: int) -> dict[str, np.ndarray]:
    """Exact render of the demo scene from a PINHOLE camera (OpenGL camera-to-world ``c2w``).

    Returns "rgb" (H, W, 3) float32 in [0, 1], the mean of 2x2 supersamples per pixel; and, for the
    ray through each pixel centre, "depth" (H, W) float32 distance along the ray (inf for background),
    "mask" (H, W) bool object hit and "part" (H, W) int8 part id (index in PART_NAMES, -1 background);
    "alpha" (H, W) float32 the fraction of supersamples that hit the scene and "rgb_object" (H, W, 3) the
    mean colour of those (a Blender-style render on a transparent background, straight alpha).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    rot, origin = c2w[:3, :3], c2w[:3, 3]
    out = {"rgb": np.empty((height, width, 3), np.float32), "depth": np.empty((height, width), np.float32),
           "part": np.empty((height, width), np.int8), "alpha": np.empty((height, width), np.float32),
           "rgb_object": np.empty((height, width, 3), np.float32)}
    rows_per_chunk = max(1, _CHUNK_PIXELS // max(width, 1))
    for r0 in range(0, height, rows_per_chunk):
        rows = np.arange(r0, min(height, r0 + rows_per_chunk), dtype=np.float64)
        u = np.arange(width, dtype=np.float64)[None, :, None] + _SUBSAMPLES[:, 0]
        v = rows[:, None, None] + _SUBSAMPLES[:, 1]
        u, v = np.broadcast_arrays(u, v)
        dirs = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], -1)
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        shape = dirs.shape[:3]
        t, part, rgb = _cast(origin, dirs.reshape(-1, 3) @ rot.T)
        t, part, rgb = t.reshape(shape), part.reshape(shape), rgb.reshape(*shape, 3)
        sl = slice(r0, r0 + len(rows))
        out["depth"][sl] = t[..., 0]
        out["part"][sl] = part[..., 0]
        out["rgb"][sl] = rgb[:, :, 1:].mean(2)
        hit = (part[:, :, 1:] >= 0).astype(np.float32)
        alpha = hit.mean(2)
        out["alpha"][sl] = alpha
        out["rgb_object"][sl] = (rgb[:, :, 1:] * hit[..., None]).mean(2) / np.maximum(alpha, 1e-6)[..., None]
    out["mask"] = out["part"] >= 0
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _previous_demo(out: Path) -> bool:
    """Whether ``out`` holds an earlier demo dataset; raises if it holds some other dataset."""
    transforms = out / "transforms.json"
    if not transforms.exists():
        return False
    try:
        meta = json.loads(transforms.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or DEMO_KEY not in meta:
        raise UserInputError(f"{out} already holds a dataset that is not the demo scene; "
                             "choose an empty or new folder for the demo")
    return True


def write_demo_dataset(out_dir: str | Path, config: DemoSceneConfig = DemoSceneConfig()) -> Path:
    """Render the demo scene from ``config``'s cameras into a nerfstudio dataset folder; returns it.

    An earlier demo dataset in ``out_dir`` is replaced (its surplus frames removed); any other
    dataset there (a transforms.json without the "retouch3d_demo" entry) raises UserInputError.
    """
    out = Path(out_dir)
    replacing = _previous_demo(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    cams = demo_cameras(config)
    frames = []
    for i in range(len(cams)):
        gt = render_ground_truth(cams.c2w[i], cams.fx[i], cams.fy[i], cams.cx[i], cams.cy[i],
                                 int(cams.width[i]), int(cams.height[i]))
        name = f"frame_{i + 1:05d}.png"
        buf = io.BytesIO()
        Image.fromarray(to_uint8(gt["rgb"]), "RGB").save(buf, format="PNG")
        _write_atomic(images / name, buf.getvalue())
        frames.append({"file_path": f"images/{name}", "transform_matrix": cams.c2w[i].tolist()})
    if replacing:
        keep = {f["file_path"] for f in frames}
        for stale in images.glob("frame_*.png"):
            if f"images/{stale.name}" not in keep:
                stale.unlink()
    meta = {
        "w": config.image_size, "h": config.image_size, "fl_x": config.focal, "fl_y": config.focal,
        "cx": config.image_size / 2, "cy": config.image_size / 2, "camera_model": "PINHOLE",
        "frames": frames, DEMO_KEY: asdict(config),
    }
    _write_atomic(out / "transforms.json", json.dumps(meta, indent=2).encode())
    return out


BLENDER_CAMERA_ANGLE_X = 0.6911112070083618  # the field of view of the NeRF Blender synthetic scenes


def write_blender_dataset(out_dir: str | Path, n_train: int = 100, n_test: int = 20, image_size: int = 200,
                          camera_radius: float = 4.0, seed: int = 0) -> Path:
    """Render the demo scene as a Blender synthetic dataset (RGBA on a transparent background,
    ``transforms_train.json`` and ``transforms_test.json`` with ``camera_angle_x``); returns the folder.

    Train and test cameras lie on the upper hemisphere at ``camera_radius``, from two seeds, so
    held-out views are new viewpoints, as in the NeRF synthetic scenes.
    """
    out = Path(out_dir)
    fov_deg = math.degrees(BLENDER_CAMERA_ANGLE_X)
    for split, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        cams = demo_cameras(DemoSceneConfig(n_views=n, image_size=image_size, camera_radius=camera_radius,
                                            fov_deg=fov_deg, seed=split_seed))
        frames = []
        for i in range(n):
            gt = render_ground_truth(cams.c2w[i], cams.fx[i], cams.fy[i], cams.cx[i], cams.cy[i],
                                     image_size, image_size)
            rgba = np.concatenate([gt["rgb_object"], gt["alpha"][..., None]], -1)
            buf = io.BytesIO()
            Image.fromarray(to_uint8(rgba), "RGBA").save(buf, format="PNG")
            _write_atomic(folder / f"r_{i}.png", buf.getvalue())
            frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.0, "transform_matrix": cams.c2w[i].tolist()})
        meta = {"camera_angle_x": BLENDER_CAMERA_ANGLE_X, "frames": frames}
        _write_atomic(out / f"transforms_{split}.json", json.dumps(meta, indent=2).encode())
    return out
