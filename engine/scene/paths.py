"""Camera paths for rendering: turntable orbits and nerfstudio ``camera_path.json`` files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from engine.core.cameras import Cameras, orbit_poses
from engine.core.errors import UserInputError
from engine.scene.datasets import SceneDataset


def _cameras_from_poses(poses: np.ndarray, fov_y_deg: float, width: int, height: int) -> Cameras:
    n = len(poses)
    focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return Cameras(c2w=poses, fx=np.full(n, focal), fy=np.full(n, focal), cx=np.full(n, width / 2),
                   cy=np.full(n, height / 2), width=np.full(n, width), height=np.full(n, height))


def orbit_cameras(dataset: SceneDataset, n: int, size: int | None = None) -> Cameras:
    """``n`` views on a circle around the scene centre at the training cameras' mean distance and height."""
    if n < 1:
        raise UserInputError(f"--orbit needs at least 1 frame (got {n})")
    centres = dataset.cameras.c2w[dataset.train_indices, :3, 3]
    radius = float(np.linalg.norm(centres, axis=1).mean())
    elevation = float(np.degrees(np.arcsin(np.clip(centres[:, 2] / np.linalg.norm(centres, axis=1), -1, 1))).mean())
    cam0 = int(dataset.train_indices[0])
    width, height = int(dataset.cameras.width[cam0]), int(dataset.cameras.height[cam0])
    fov_y = math.degrees(2 * math.atan(0.5 * height / dataset.cameras.fy[cam0]))
    if size is not None:
        width, height = round(width * size / max(width, height)), round(height * size / max(width, height))
    return _cameras_from_poses(orbit_poses(n, radius, elevation), fov_y, width, height)


def nerfstudio_viewer_from_capture(capture_c2w: np.ndarray, bounded: bool) -> np.ndarray:
    """The 4x4 transform nerfstudio's dataparser applies to a capture's poses (its viewer's world).

    nerfstudio orients the mean camera 'up' to +z, centres on the mean camera position and scales
    so the largest camera coordinate is 1; Blender scenes are used as they are. Camera paths saved
    by its viewer live in that frame.
    """
    if bounded:
        return np.eye(4)
    up = capture_c2w[:, :3, 1].mean(0)
    up = up / np.linalg.norm(up)
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(up, z), float(up @ z)
    if np.linalg.norm(v) < 1e-12:
        rot = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    else:
        k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
        rot = np.eye(3) + k + k @ k * ((1 - c) / (np.linalg.norm(v) ** 2))
    transform = np.eye(4)
    transform[:3, :3] = rot
    transform[:3, 3] = -rot @ capture_c2w[:, :3, 3].mean(0)
    oriented = transform @ capture_c2w
    scale = 1.0 / float(np.abs(oriented[:, :3, 3]).max())
    return np.diag([scale, scale, scale, 1.0]) @ transform


def camera_path_cameras(path: str | Path, dataset: SceneDataset) -> tuple[Cameras, float]:
    """Cameras (in the normalised world) and frame rate of a nerfstudio camera_path.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        frames = data["camera_path"]
        width, height = int(data["render_width"]), int(data["render_height"])
    except FileNotFoundError:
        raise UserInputError(f"{path}: camera path file not found") from None
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserInputError(f"{path}: not a nerfstudio camera path ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise UserInputError(f"{path}: the camera path has no frames")
    capture_from_world = np.linalg.inv(dataset.world_from_capture)
    capture_c2w = capture_from_world @ dataset.cameras.c2w
    viewer_from_capture = nerfstudio_viewer_from_capture(capture_c2w, dataset.bounded)
    world_from_viewer = dataset.world_from_capture @ np.linalg.inv(viewer_from_capture)
    poses, fovs = [], []
    for i, frame in enumerate(frames):
        try:
            c2w = np.asarray(frame["camera_to_world"], dtype=np.float64).reshape(4, 4)
            fovs.append(float(frame.get("fov", data.get("default_fov", 50.0))))
        except (KeyError, ValueError, TypeError) as exc:
            raise UserInputError(f"{path}: camera_path[{i}] is malformed ({exc})") from None
        pose = world_from_viewer @ c2w
        pose[:3, :3] /= np.linalg.norm(pose[:3, :3], axis=0, keepdims=True)  # keep a rigid rotation
        poses.append(pose)
    cams = _cameras_from_poses(np.stack(poses), fovs[0], width, height)
    focal = 0.5 * height / np.tan(np.radians(np.asarray(fovs)) / 2)
    cams.fx, cams.fy = focal, focal.copy()
    return cams, float(data.get("fps", 30.0))
