"""Scene cameras in the nerfstudio convention and the rays they cast.

Camera-to-world matrices use OpenGL camera axes (+x right, +y up, looking down -z).
Pixel (u, v) has its centre at (u + 0.5, v + 0.5); distortion follows OpenCV: it is
defined on normalised image coordinates with y pointing down, before the axis flip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

CAMERA_MODELS = ("PINHOLE", "OPENCV", "OPENCV_FISHEYE")


@dataclass
class Cameras:
    """A set of N cameras sharing one camera model.

    All arrays are float64 numpy (exact for export), in pixels of the loaded images.
    ``distortion`` holds (k1, k2, p1, p2) for OPENCV, (k1, k2, k3, k4) for
    OPENCV_FISHEYE and zeros for PINHOLE.
    """

    c2w: np.ndarray  # (N, 4, 4) camera-to-world, OpenGL axes
    fx: np.ndarray  # (N,)
    fy: np.ndarray  # (N,)
    cx: np.ndarray  # (N,)
    cy: np.ndarray  # (N,)
    width: np.ndarray  # (N,) int
    height: np.ndarray  # (N,) int
    model: str = "PINHOLE"
    distortion: np.ndarray | None = None  # (N, 4)

    def __post_init__(self) -> None:
        if self.model not in CAMERA_MODELS:
            raise ValueError(f"unknown camera model {self.model!r}; expected one of {CAMERA_MODELS}")
        n = len(self.c2w)
        if self.distortion is None:
            self.distortion = np.zeros((n, 4))
        self.width = np.asarray(self.width, dtype=np.int64)
        self.height = np.asarray(self.height, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.c2w)

    def subset(self, indices: np.ndarray | list[int]) -> "Cameras":
        """The cameras at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return Cameras(
            c2w=self.c2w[idx], fx=self.fx[idx], fy=self.fy[idx], cx=self.cx[idx], cy=self.cy[idx],
            width=self.width[idx], height=self.height[idx], model=self.model,
            distortion=self.distortion[idx],
        )

    def scaled(self, factor: float) -> "Cameras":
        """The same cameras for images resized by ``factor`` (0.5 = half the width)."""
        width = np.maximum(1, np.round(self.width * factor)).astype(np.int64)
        height = np.maximum(1, np.round(self.height * factor)).astype(np.int64)
        sx, sy = width / self.width, height / self.height
        return Cameras(
            c2w=self.c2w.copy(), fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy,
            width=width, height=height, model=self.model, distortion=self.distortion.copy(),
        )

    def torch_params(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Float32 tensors of every per-camera parameter, for batched ray generation."""
        f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
        return {
            "c2w": f32(self.c2w[:, :3, :4]), "fx": f32(self.fx), "fy": f32(self.fy),
            "cx": f32(self.cx), "cy": f32(self.cy), "distortion": f32(self.distortion),
        }


def distort(xy: torch.Tensor, dist: torch.Tensor, model: str) -> torch.Tensor:
    """Apply lens distortion to undistorted normalised coordinates (OpenCV, y down).

    ``xy`` is (..., 2); ``dist`` broadcasts to (..., 4).
    """
    if model == "PINHOLE":
        return xy
    x, y = xy[..., 0], xy[..., 1]
    k = [dist[..., i] for i in range(4)]
    if model == "OPENCV":
        r2 = x * x + y * y
        radial = 1 + k[0] * r2 + k[1] * r2 * r2
        p1, p2 = k[2], k[3]
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return torch.stack([xd, yd], -1)
    # OPENCV_FISHEYE: equidistant model on theta = atan(r)
    r = torch.sqrt(x * x + y * y)
    theta = torch.atan(r)
    t2 = theta * theta
    theta_d = theta * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3]))))
    scale = torch.where(r > 1e-12, theta_d / r.clamp_min(1e-12), torch.ones_like(r))
    return xy * scale[..., None]


def _undistort_opencv(xyd: torch.Tensor, dist: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Newton's method on the radial-tangential model (the inverse has no closed form)."""
    xd, yd = xyd[..., 0], xyd[..., 1]
    k1, k2, p1, p2 = (dist[..., i] for i in range(4))
    x, y = xd.clone(), yd.clone()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2
        fx_ = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
        fy_ = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
        dradial = 2 * k1 + 4 * k2 * r2  # d(radial)/dx = x * dradial, d(radial)/dy = y * dradial
        a = radial + x * x * dradial + 2 * p1 * y + 6 * p2 * x  # dfx/dx
        b = x * y * dradial + 2 * p1 * x + 2 * p2 * y  # dfx/dy == dfy/dx
        d = radial + y * y * dradial + 6 * p1 * y + 2 * p2 * x  # dfy/dy
        det = a * d - b * b
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        x = x - (d * fx_ - b * fy_) / det
        y = y - (a * fy_ - b * fx_) / det
    return torch.stack([x, y], -1)


def _fisheye_angle(xyd: torch.Tensor, dist: torch.Tensor, iterations: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Angle from the optical axis (theta) and the unit radial direction of distorted fisheye points."""
    theta_d = torch.linalg.norm(xyd, dim=-1)
    k1, k2, k3, k4 = (dist[..., i] for i in range(4))
    theta = theta_d.clone()
    for _ in range(iterations):
        t2 = theta * theta
        f = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d
        df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
        theta = theta - f / df.clamp_min(1e-6)
    unit = xyd / theta_d.clamp_min(1e-12)[..., None]
    return theta, unit


def camera_directions(u: torch.Tensor, v: torch.Tensor, params: dict[str, torch.Tensor], cam: torch.Tensor,
                      model: str) -> torch.Tensor:
    """Unit ray directions in camera space (OpenGL axes) for pixel coordinates u, v of cameras ``cam``."""
    xd = (u - params["cx"][cam]) / params["fx"][cam]
    yd = (v - params["cy"][cam]) / params["fy"][cam]
    xyd = torch.stack([xd, yd], -1)
    dist = params["distortion"][cam]
    if model == "OPENCV_FISHEYE":
        theta, unit = _fisheye_angle(xyd, dist)
        s = torch.sin(theta)
        dirs = torch.stack([unit[..., 0] * s, -unit[..., 1] * s, -torch.cos(theta)], -1)
        return dirs
    xy = _undistort_opencv(xyd, dist) if model == "OPENCV" else xyd
    dirs = torch.stack([xy[..., 0], -xy[..., 1], -torch.ones_like(xy[..., 0])], -1)
    return dirs / torch.linalg.norm(dirs, dim=-1, keepdim=True)


def generate_rays(params: dict[str, torch.Tensor], cam: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                  model: str) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and unit directions for pixel centres (u, v) seen by cameras ``cam``.

    ``u`` and ``v`` are continuous pixel coordinates (integer pixel index + 0.5 for centres).
    """
    dirs_cam = camera_directions(u, v, params, cam, model)
    c2w = params["c2w"][cam]
    dirs = torch.einsum("nij,nj->ni", c2w[:, :3, :3], dirs_cam)
    origins = c2w[:, :3, 3]
    return origins, dirs


def image_rays(cameras: Cameras, index: int, device: torch.device | str = "cpu",
               params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre of camera ``index``, flattened row-major: (H*W, 3) each."""
    params = params if params is not None else cameras.torch_params(device)
    h, w = int(cameras.height[index]), int(cameras.width[index])
    vv, uu = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device) + 0.5,
                            torch.arange(w, dtype=torch.float32, device=device) + 0.5, indexing="ij")
    cam = torch.full((h * w,), index, dtype=torch.long, device=device)
    return generate_rays(params, cam, uu.reshape(-1), vv.reshape(-1), cameras.model)


def project_points(points: torch.Tensor, c2w: torch.Tensor, fx: float, fy: float, cx: float, cy: float,
                   model: str = "PINHOLE", distortion: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel coordinates (N, 2) of world points (N, 3) in one camera; points must lie in front of it."""
    w2c_r = c2w[:3, :3].T
    pc = (points - c2w[:3, 3]) @ w2c_r.T
    # OpenGL camera: looking down -z, y up -> OpenCV normalised coords (y down)
    z = -pc[:, 2]
    xy = torch.stack([pc[:, 0] / z, -pc[:, 1] / z], -1)
    dist = distortion if distortion is not None else torch.zeros(4, dtype=points.dtype)
    xyd = distort(xy, dist, model)
    return torch.stack([xyd[:, 0] * fx + cx, xyd[:, 1] * fy + cy], -1)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """OpenGL camera-to-world (4x4) at ``eye`` looking at ``target`` with ``up`` pointing up in the image."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight along up: pick any right vector
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, eye
    return c2w


def orbit_poses(n: int, radius: float, elevation_deg: float = 20.0, center: np.ndarray | None = None,
                up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """``n`` camera-to-world matrices on a circle around ``center`` (z up), all looking at it."""
    center = np.zeros(3) if center is None else np.asarray(center, float)
    el = math.radians(elevation_deg)
    poses = []
    for i in range(n):
        az = 2 * math.pi * i / n
        eye = center + radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        poses.append(look_at(eye, center, up))
    return np.stack(poses)
