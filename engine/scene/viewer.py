"""What an interactive viewer needs from a field, without any GUI: a free camera, frames in
three modes, picking a surface point, and sharing a field that a job is training.

The GUI's viewport drives an ``OrbitCamera`` with the mouse, asks ``FieldView.render`` for
frames (small ones while the camera moves, full ones when it stops) and ``FieldView.pick``
for the point under a click.  While a train or edit job runs, the job and the viewer share
its model through a ``LiveField``: the job takes one optimisation step at a time, and a
viewer that wants a frame goes first, so moving the camera stays smooth during training
(nerfstudio's viewer makes the same trade with its training-speed setting).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from engine.core.cameras import Cameras
from engine.core.imaging import colorize_depth, to_uint8
from engine.scene.datasets import SceneDataset
from engine.scene.orbit import OrbitCamera
from engine.scene.picking import surface_at_pixel
from engine.scene.render import PREVIEW_STEP_SCALE, RENDER_CHUNK_RAYS, render_image

RENDER_MODES = ("rgb", "depth", "accumulation")


def camera_fov_y_deg(cameras: Cameras, index: int) -> float:
    """Vertical field of view of a pinhole-approximated camera."""
    return math.degrees(2 * math.atan(cameras.height[index] / 2 / cameras.fy[index]))


def home_camera(dataset: SceneDataset) -> OrbitCamera:
    """A view that frames the capture: from above the mean camera direction, at the mean camera distance."""
    eyes = dataset.cameras.c2w[:, :3, 3]
    distance = float(np.linalg.norm(eyes, axis=1).mean()) or 4.0
    back = eyes.mean(0)
    yaw = math.degrees(math.atan2(back[1], back[0])) if np.linalg.norm(back[:2]) > 1e-6 else 30.0
    return OrbitCamera(np.zeros(3), distance, OrbitCamera.rotation_from_angles(yaw, 25.0),
                       camera_fov_y_deg(dataset.cameras, 0))


@dataclass
class ViewFrame:
    """One rendered frame of the viewer."""

    image: np.ndarray
    """(H, W, 3) uint8, in the mode asked for"""
    depth: np.ndarray
    """(H, W) float32 distance along each ray (normalised scene units)"""
    accumulation: np.ndarray
    """(H, W) float32 opacity"""
    camera: OrbitCamera
    mode: str
    seconds: float


PACED_VIEW_SHARE = 0.1
"""while a job trains and nobody moves the camera, the frames a viewer asks for by itself (the
refresh after training steps) take at most this share of the time: watching costs training little"""
JOB_ACTIVE_S = 0.5
"""a job whose last step ended this recently is still training (between two steps it yields events)"""
VIEW_CHUNK_RAYS = 4096
"""a viewer frame takes its turns in chunks of this many rays, so even the slow frames of a barely
trained field (seconds each) hold training up for a fraction of a second at a time"""


class LiveField:
    """A model shared between the job that trains it and a viewer that renders it.

    The job calls ``publish`` once it has its model and wraps each optimisation step in
    ``step()``; the viewer wraps each chunk of a frame in ``viewing()``.  A viewer waiting for
    a frame goes before the next step, and while the user moves the camera the viewer calls
    ``hold`` so that no step starts in between frames: the camera stays smooth while training
    runs, and training goes on as soon as the camera rests.  Frames nobody asked for by moving
    the camera (``viewing(paced=True)``: the refresh after training steps) are paced to
    ``PACED_VIEW_SHARE`` of the time while the job trains.  When nobody views, steps run back to back.
    """

    def __init__(self, paced_share: float = PACED_VIEW_SHARE) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._viewers_waiting = 0
        self._paced_waiting = 0
        self._steps_waiting = 0
        self._busy = False
        self._stepping = False
        self._held_until = 0.0
        self._last_step_end = -math.inf
        self._paced_after = 0.0  # a paced chunk may start from this time on while the job trains
        self._paced_share = paced_share
        self.model = None
        self.dataset: SceneDataset | None = None
        self.background: torch.Tensor | None = None
        self.version = 0
        """bumped by every step, so the viewer knows when its frame is stale"""

    def publish(self, model, dataset: SceneDataset, background: torch.Tensor | None, by_job: bool = True) -> None:
        """Make the job's model visible to viewers (``by_job`` False: a finished field only shown)."""
        with self._cond:
            self.model, self.dataset, self.background = model, dataset, background
            self.version += 1
            if by_job:
                self._last_step_end = time.monotonic()  # the job steps next
            self._cond.notify_all()

    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def training(self) -> bool:
        """Whether a job is taking steps now."""
        return self._steps_waiting > 0 or self._stepping or time.monotonic() - self._last_step_end < JOB_ACTIVE_S

    def _paced_wait(self, now: float) -> float:
        """Seconds a paced chunk still has to wait (0: it may go); lock held.  Without a step under
        way or waiting, the wait ends when the job counts as stopped: no step ends to wake it then."""
        wait = self._paced_after - now
        if wait <= 0 or not self.training or now < self._held_until:  # idle job, or the user moves the camera
            return 0.0
        if self._steps_waiting or self._stepping:
            return wait
        return min(wait, self._last_step_end + JOB_ACTIVE_S - now)

    def _step_wait(self, now: float) -> float | None:
        """Seconds a step still has to wait (0: it may go, None: until notified); lock held."""
        if self._viewers_waiting or (self._paced_waiting and self._paced_wait(now) == 0):
            return None
        return max(0.0, self._held_until - now)

    def _wait(self, viewer: bool, paced: bool, now: float) -> float | None:
        """Seconds a step or viewer chunk still has to wait (0: it may go, None: until notified); lock held."""
        if self._busy:
            return None
        if not viewer:
            return self._step_wait(now)
        return self._paced_wait(now) if paced else 0.0

    @contextlib.contextmanager
    def _enter(self, viewer: bool, paced: bool = False):
        with self._cond:
            waiting = "_paced_waiting" if paced else "_viewers_waiting" if viewer else "_steps_waiting"
            setattr(self, waiting, getattr(self, waiting) + 1)
            try:
                while (wait := self._wait(viewer, paced, time.monotonic())) != 0:
                    self._cond.wait(wait)
            finally:
                setattr(self, waiting, getattr(self, waiting) - 1)
            self._busy, self._stepping = True, not viewer
        began = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._busy = self._stepping = False
                end = time.monotonic()
                if not viewer:
                    self.version += 1
                    self._last_step_end = end
                elif paced:
                    self._paced_after = end + (end - began) * (1 / self._paced_share - 1)
                self._cond.notify_all()

    def hold(self, seconds: float) -> None:
        """Start no step for ``seconds`` from now (the user is moving the camera)."""
        with self._cond:
            self._held_until = max(self._held_until, time.monotonic() + seconds)
            self._cond.notify_all()

    def step(self):
        """Context for one optimisation step of the job (waits for a viewer that asked first)."""
        return self._enter(viewer=False)

    def viewing(self, paced: bool = False):
        """Context for one chunk of a viewer frame (goes before the job's next step); ``paced``: a
        frame the user did not ask for by moving the camera, kept to ``PACED_VIEW_SHARE`` of the time."""
        return self._enter(viewer=True, paced=paced)


class FieldView:
    """Renders frames of a field for an interactive viewer (optionally while a job trains it)."""

    def __init__(self, model=None, dataset: SceneDataset | None = None, background: torch.Tensor | None = None,
                 live: LiveField | None = None) -> None:
        self.live = live or LiveField()
        if model is not None:
            self.live.publish(model, dataset, background, by_job=False)

    @property
    def ready(self) -> bool:
        return self.live.ready

    @property
    def dataset(self) -> SceneDataset | None:
        return self.live.dataset

    def render(self, camera: OrbitCamera, width: int, height: int, mode: str = "rgb",
               step_scale: float = PREVIEW_STEP_SCALE, paced: bool = False) -> ViewFrame:
        """A ``width`` x ``height`` frame of ``camera`` in ``mode`` (rgb | depth | accumulation);
        ``paced``: a refresh nobody asked for by moving the camera (see ``LiveField``)."""
        if mode not in RENDER_MODES:
            raise ValueError(f"unknown render mode {mode!r}; choose one of {', '.join(RENDER_MODES)}")
        camera = camera.copy()
        seconds = 0.0  # the render's own time, not the waits for training steps

        @contextlib.contextmanager
        def timed_turn():
            nonlocal seconds
            with self.live.viewing(paced):
                start = time.perf_counter()
                yield
                seconds += time.perf_counter() - start

        chunk = VIEW_CHUNK_RAYS if self.live.training else RENDER_CHUNK_RAYS  # small turns only while sharing
        out = render_image(self.live.model, camera.cameras(width, height), 0, self.live.background,
                           chunk=chunk, step_scale=step_scale, around_chunk=timed_turn)
        depth = out["depth"].numpy().astype(np.float32)
        acc = out["accumulation"].numpy().astype(np.float32)
        if mode == "rgb":
            image = to_uint8(out["rgb"])
        elif mode == "depth":
            image = colorize_depth(depth, acc)
        else:
            image = np.repeat(to_uint8(acc)[..., None], 3, axis=2)
        return ViewFrame(image, depth, acc, camera, mode, seconds)

    def pick(self, camera: OrbitCamera, width: int, height: int, x: float, y: float) -> np.ndarray | None:
        """The scene point seen at pixel (x, y) of a ``width`` x ``height`` view, or None for empty space."""
        with self.live.viewing():
            point, _ = surface_at_pixel(self.live.model, camera.cameras(width, height), 0, x, y, self.live.background)
        return point
