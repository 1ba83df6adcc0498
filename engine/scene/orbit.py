"""The viewer's free camera: orbit, pan and zoom about a target, in numpy only (no torch), so
the window can build its viewport before the engine's heavy modules are loaded."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

WORLD_UP = np.array([0.0, 0.0, 1.0])
"""normalised scenes have +z up (datasets._normalise_capture)"""


@dataclass
class OrbitCamera:
    """A viewer camera orbiting ``target``: OpenGL axes (+x right, +y up, looking down −z).

    ``rotation`` holds the camera's axes as columns (camera-to-world rotation); the eye sits at
    ``target + distance * rotation[:, 2]``.  Orbiting turns about the world's up axis and the
    camera's right axis, so snapping to a training camera keeps its exact pose (roll included).
    """

    target: np.ndarray = field(default_factory=lambda: np.zeros(3))
    distance: float = 4.0
    rotation: np.ndarray = field(default_factory=lambda: OrbitCamera.rotation_from_angles(30.0, 25.0))
    fov_y_deg: float = 50.0

    ORBIT_DEG_PER_PIXEL = 0.3
    ZOOM_PER_STEP = 0.9
    MIN_DISTANCE = 1e-3

    @staticmethod
    def rotation_from_angles(yaw_deg: float, pitch_deg: float) -> np.ndarray:
        """Axes of a camera at azimuth ``yaw_deg`` and elevation ``pitch_deg`` looking at its target."""
        yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
        back = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
        right = np.cross(WORLD_UP, back)
        right /= np.linalg.norm(right)
        return np.stack([right, np.cross(back, right), back], axis=1)

    def copy(self) -> "OrbitCamera":
        return OrbitCamera(self.target.copy(), self.distance, self.rotation.copy(), self.fov_y_deg)

    @property
    def eye(self) -> np.ndarray:
        return self.target + self.distance * self.rotation[:, 2]

    def c2w(self) -> np.ndarray:
        """4x4 camera-to-world."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.eye
        return m

    MAX_ELEVATION_DEG = 84.0
    """orbiting stops this far above or below the target: never over the pole (the view would flip)"""

    def orbit(self, dx: float, dy: float) -> None:
        """Turn around the target by a mouse move of (dx, dy) pixels (right / down positive)."""
        yaw = math.radians(-dx * self.ORBIT_DEG_PER_PIXEL)
        pitch = math.radians(-dy * self.ORBIT_DEG_PER_PIXEL)
        right = self.rotation[:, 0]
        elevation = self._elevation(self.rotation)
        # the elevation's change per radian of pitch (1 for an upright camera, less with roll)
        rate = (self._elevation(_axis_angle(right, 1e-4) @ self.rotation) - elevation) / 1e-4
        if abs(rate) > 1e-3:
            bound = max(math.radians(self.MAX_ELEVATION_DEG), abs(elevation))  # a snapped view may start beyond it
            pitch = (min(bound, max(-bound, elevation + rate * pitch)) - elevation) / rate
        self.rotation = _orthonormal(_axis_angle(WORLD_UP, yaw) @ _axis_angle(right, pitch) @ self.rotation)

    @staticmethod
    def _elevation(rotation: np.ndarray) -> float:
        """Angle of the eye above the target's horizontal plane (radians)."""
        return math.asin(max(-1.0, min(1.0, float(rotation[:, 2] @ WORLD_UP))))

    def pan(self, dx: float, dy: float, viewport_height: int) -> None:
        """Slide the target with the image, so the point under the mouse follows it."""
        units_per_pixel = 2 * self.distance * math.tan(math.radians(self.fov_y_deg) / 2) / max(viewport_height, 1)
        self.target = self.target - self.rotation[:, 0] * dx * units_per_pixel + self.rotation[:, 1] * dy * units_per_pixel

    def zoom(self, steps: float) -> None:
        """Move towards the target (positive steps) or away from it."""
        self.distance = max(self.MIN_DISTANCE, self.distance * self.ZOOM_PER_STEP ** steps)

    @classmethod
    def looking_at(cls, c2w: np.ndarray, fov_y_deg: float, pivot: np.ndarray) -> "OrbitCamera":
        """The exact pose ``c2w``, orbiting about the point on its axis nearest to ``pivot``."""
        rotation = _orthonormal(np.asarray(c2w, float)[:3, :3])
        eye = np.asarray(c2w, float)[:3, 3]
        forward = -rotation[:, 2]
        distance = max(float((np.asarray(pivot, float) - eye) @ forward), 0.1)
        return cls(eye + forward * distance, distance, rotation, fov_y_deg)

    def cameras(self, width: int, height: int):
        """This view as a one-camera engine ``Cameras`` of ``width`` x ``height`` pixels."""
        from engine.core.cameras import Cameras

        f = height / 2 / math.tan(math.radians(self.fov_y_deg) / 2)
        return Cameras(c2w=self.c2w()[None], fx=np.array([f]), fy=np.array([f]), cx=np.array([width / 2]),
                       cy=np.array([height / 2]), width=np.array([width]), height=np.array([height]))

    def projection(self, aspect: float, near: float = 0.01, far: float = 100.0) -> np.ndarray:
        """OpenGL perspective matrix matching ``cameras`` (row-major 4x4)."""
        f = 1 / math.tan(math.radians(self.fov_y_deg) / 2)
        return np.array([[f / aspect, 0, 0, 0], [0, f, 0, 0],
                         [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)], [0, 0, -1, 0]])

    def view_matrix(self) -> np.ndarray:
        """World-to-camera (row-major 4x4)."""
        return np.linalg.inv(self.c2w())


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _orthonormal(rot: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(rot)
    return u @ vt
