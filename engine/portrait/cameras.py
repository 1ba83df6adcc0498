"""Portrait cameras in the EG3D convention: orbit poses, 25-float camera labels and their rays.

World axes: y up, the face looks toward +z.  Cameras sit at ``radius`` (2.7) from the world
origin and look at the pivot (0, 0, 0.2), exactly as EG3D's LookAtPoseSampler places them (the
pivot is only the look-at point, not the orbit centre), so the frontal camera is at (0, 0, 2.7):

    [[1,  0,  0, 0  ],
     [0, -1,  0, 0  ],
     [0,  0, -1, 2.7],
     [0,  0,  0, 1  ]]

Camera-to-world matrices use OpenCV camera axes (x right, y down, looking down +z); their
columns are right, "up" as EG3D computes it (which points down in the image) and forward.
Consequences, checked by the tests: in a frontal view world +y is at the top of the image and
world +x on the image's right, so a subject facing the camera appears as in a photograph (their
left cheek, at +x, on the image's right).

User-facing angles are degrees relative to the frontal view, measured geometrically from the
world origin: positive ``yaw`` moves the camera toward world +x (it sees more of the subject's
left cheek; the face turns toward the image's left); positive ``pitch`` raises the camera (it
looks down on the head).  ``look_at_pose`` keeps EG3D's own (horizontal, vertical) angles, whose
vertical angle v maps to the polar angle through arccos(1 - 2v/pi), for reproducing its scripts.

Intrinsics are normalised by the image size: [[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]] with
f = 4.2647 (FFHQ, about 18.8 degrees field of view).  A camera label is the flattened
camera-to-world (16 floats) followed by the flattened intrinsics (9 floats).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.portrait.triplane import sample_rays

FFHQ_FOCAL = 4.2647
ORBIT_RADIUS = 2.7
PIVOT = (0.0, 0.0, 0.2)
RAY_START = 2.25  # EG3D's FFHQ sampling interval along each ray (distance from the camera)
RAY_END = 3.3
LABEL_SIZE = 25


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def cam2world_look_at(origins: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world matrices (N, 4, 4) at ``origins`` (N, 3) looking at ``target`` (3,).

    Built like EG3D's create_cam2world_matrix: world up (0, 1, 0), right = -normalize(up x forward),
    up = normalize(forward x right); no roll.
    """
    origins = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
    forward = _normalize(np.asarray(target, dtype=np.float64) - origins)
    world_up = np.broadcast_to(np.array([0.0, 1.0, 0.0]), forward.shape)
    right = -_normalize(np.cross(world_up, forward))
    up = _normalize(np.cross(forward, right))
    c2w = np.tile(np.eye(4), (len(origins), 1, 1))
    c2w[:, :3, :3] = np.stack([right, up, forward], axis=-1)
    c2w[:, :3, 3] = origins
    return c2w


def look_at_pose(horizontal: np.ndarray | float, vertical: np.ndarray | float, radius: float = ORBIT_RADIUS,
                 lookat: tuple[float, float, float] = PIVOT) -> np.ndarray:
    """Camera-to-world matrices (N, 4, 4) for EG3D's LookAtPoseSampler angles (radians).

    h = v = pi/2 is frontal.  The polar angle is phi = arccos(1 - 2 v / pi) and the camera sits at
    radius * (sin phi cos(pi - h), cos phi, sin phi sin(pi - h)) from the world origin.
    """
    h = np.atleast_1d(np.asarray(horizontal, dtype=np.float64))
    v = np.clip(np.atleast_1d(np.asarray(vertical, dtype=np.float64)), 1e-5, math.pi - 1e-5)
    h, v = np.broadcast_arrays(h, v)
    phi = np.arccos(1 - 2 * v / math.pi)
    origins = radius * np.stack([np.sin(phi) * np.cos(math.pi - h), np.cos(phi), np.sin(phi) * np.sin(math.pi - h)], -1)
    return cam2world_look_at(origins, np.asarray(lookat, dtype=np.float64))


def yaw_pitch_to_look_at(yaw_deg: np.ndarray | float, pitch_deg: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """EG3D (horizontal, vertical) angles in radians for geometric yaw / pitch in degrees."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    return math.pi / 2 + yaw, math.pi * (1 - np.sin(pitch)) / 2


def intrinsics(focal: float = FFHQ_FOCAL) -> np.ndarray:
    """Normalised 3x3 intrinsics with the principal point at the image centre."""
    return np.array([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]])


def camera_labels(yaw_deg: np.ndarray | list[float] | float, pitch_deg: np.ndarray | list[float] | float,
                  radius: float = ORBIT_RADIUS, pivot: tuple[float, float, float] = PIVOT,
                  focal: float = FFHQ_FOCAL) -> np.ndarray:
    """Camera labels (N, 25) float32 for arrays of yaw / pitch in degrees (broadcast together)."""
    h, v = yaw_pitch_to_look_at(*np.broadcast_arrays(np.atleast_1d(yaw_deg), np.atleast_1d(pitch_deg)))
    c2w = look_at_pose(h, v, radius, pivot)
    k = np.broadcast_to(intrinsics(focal).reshape(1, 9), (len(c2w), 9))
    return np.concatenate([c2w.reshape(-1, 16), k], axis=1).astype(np.float32)


def camera_label(yaw_deg: float, pitch_deg: float, radius: float = ORBIT_RADIUS,
                 pivot: tuple[float, float, float] = PIVOT, focal: float = FFHQ_FOCAL) -> np.ndarray:
    """The camera label (25,) float32 of one orbit camera; yaw = pitch = 0 is frontal."""
    return camera_labels(yaw_deg, pitch_deg, radius, pivot, focal)[0]


def check_labels(c: np.ndarray | torch.Tensor) -> np.ndarray:
    """Camera labels as a (N, 25) float32 array; a (25,) label becomes (1, 25).

    Raises ValueError with a sentence naming the problem for a wrong shape or non-finite values.
    """
    labels = np.asarray(c.detach().cpu() if isinstance(c, torch.Tensor) else c, dtype=np.float32)
    if labels.ndim == 1:
        labels = labels[None]
    if labels.ndim != 2 or labels.shape[1] != LABEL_SIZE:
        raise ValueError(f"camera labels must have shape (25,) or (N, 25) (16 cam2world + 9 intrinsics floats); "
                         f"got shape {tuple(np.shape(c))}")
    bad = ~np.isfinite(labels).all(axis=1)
    if bad.any():
        raise ValueError(f"camera label {int(np.argmax(bad))} holds non-finite values (NaN or infinity); "
                         f"every one of its 25 floats must be finite")
    return labels


def split_label(c: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-world (4, 4) and intrinsics (3, 3) of a (25,) label; (N, 4, 4) and (N, 3, 3) for (N, 25)."""
    labels = check_labels(c)
    c2w, k = labels[:, :16].reshape(-1, 4, 4), labels[:, 16:].reshape(-1, 3, 3)
    return (c2w[0], k[0]) if np.ndim(c) == 1 else (c2w, k)


def rays(c: np.ndarray | torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World ray origins and unit directions, each (N, resolution**2, 3) float32, row-major pixels.

    EG3D's RaySampler convention: pixel (row i, column j) is at normalised image coordinates
    (u, v) = ((j + 0.5) / R, (i + 0.5) / R); its camera-space point is ((u - cx) / fx, (v - cy) / fy, 1)
    (with EG3D's skew correction when the intrinsics hold a skew s = K[0, 1]).
    """
    labels = torch.from_numpy(check_labels(c))
    return sample_rays(labels[:, :16].reshape(-1, 4, 4), labels[:, 16:].reshape(-1, 3, 3), resolution)
