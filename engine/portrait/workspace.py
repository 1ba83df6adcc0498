"""The portrait workspace's engine side: a generator, the head being looked at, and its views.

A ``PortraitSession`` holds an EG3D generator (the embedded prior or a user's checkpoint), a
description of where it came from, and the current head: its latent, its ws and its triplanes.
The planes are computed once per head (``sample``); every view after that (``frame``) only
volume-renders them from the new camera, which is what makes orbiting interactive.
``orbit_video_job`` renders a looping orbit of the current head from the same cached planes and
writes it with the exporter's frame writer.

Latents: a prior head is the standardised parameter vector of the synthetic head that ``seed``
draws (engine.portrait.heads), so its semantic ground truth is known and the Semantic view shows
it; an official checkpoint's latent is z ~ N(0, I) drawn as EG3D's gen_samples.py draws seed
``seed`` (numpy RandomState), so a seed gives the same face as the official scripts, mapped with
truncation psi 0.7 (adjustable) and cutoff 14.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.core.errors import CheckpointError, UserInputError
from engine.core.imaging import colorize_depth, frames_kind, to_uint8, write_frames
from engine.core.jobs import Artifact, CancelToken, Job, Progress
from engine.portrait.cameras import ORBIT_RADIUS, PIVOT, camera_label
from engine.portrait.eg3d import TriPlaneGenerator, load_generator
from engine.portrait.heads import GROUP_LABELS, PARAM_COUNT, HeadParams, render_heads
from engine.portrait.prior import MASK_DEPTH, PRIOR_DIR, load_prior

MODES = ("rgb", "depth", "semantic")
PRIOR, CHECKPOINT = "prior", "checkpoint"
"""the two kinds of source a session's generator comes from"""
DEFAULT_TRUNCATION = 0.7
TRUNCATION_CUTOFF = 14
"""EG3D's sampling defaults for official checkpoints (the first 14 ws are truncated)"""
SEMANTIC_PALETTE = np.array([[40, 40, 46],  # background
                             [236, 168, 38],  # hair
                             [84, 176, 232],  # face
                             [214, 78, 112]],  # garment
                            dtype=np.uint8)
"""colour of each of GROUP_LABELS in the Semantic view"""
SEMANTIC_LEGEND = tuple((name, tuple(colour)) for name, colour in zip(GROUP_LABELS, SEMANTIC_PALETTE.tolist()))
"""(group name, RGB) pairs for a legend beside the Semantic view"""
NO_SEMANTICS = "Semantic views come with the SemFaceEdit engine; a checkpoint's heads have no semantic ground truth"
MAX_SEED = 2**32 - 1
"""numpy's RandomState takes seeds up to this"""


@dataclass(frozen=True)
class Head:
    """A sampled head: everything re-rendering it from another camera needs.  Replaced, never
    changed, so a reader on another thread always sees one consistent head."""

    seed: int
    truncation: float
    ws: torch.Tensor
    planes: torch.Tensor
    occupancy: torch.Tensor
    """the planes' occupancy grid: renders skip empty and hidden space"""
    params: HeadParams | None
    """the synthetic head (prior sources only): its semantic ground truth"""


def _resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, C, h, w) images resampled to ``resolution``² (unchanged when already that size)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)


class PortraitSession:
    """A generator and the head being looked at; views of the head are re-rendered from its cached planes.

    ``sample`` and ``frame`` may run on a worker thread while another thread reads ``head`` or
    copies the session (``copy.copy``: the copy keeps rendering the head it was taken with).
    """

    def __init__(self, generator: TriPlaneGenerator, kind: str, source: str, path: Path | None = None) -> None:
        """``kind`` is PRIOR (latents are synthetic heads) or CHECKPOINT; ``source`` says where the generator
        came from, in words; ``path`` is the file or folder it was read from."""
        if kind not in (PRIOR, CHECKPOINT):
            raise ValueError(f"kind must be {PRIOR!r} or {CHECKPOINT!r}, got {kind!r}")
        if kind == PRIOR and generator.z_dim != PARAM_COUNT:
            raise CheckpointError(f"{source}: a portrait prior takes {PARAM_COUNT} head parameters as its latent, "
                                  f"this generator takes {generator.z_dim}")
        self.generator = generator
        self.kind = kind
        self.source = source
        self.path = path
        self.head: Head | None = None

    @classmethod
    def from_prior(cls, path: str | Path | None = None, device: str = "cpu") -> PortraitSession:
        """The embedded prior (or one trained into ``path``); a CheckpointError saying how to get one when absent."""
        folder = Path(path) if path is not None else PRIOR_DIR
        return cls(load_prior(folder).to(device), PRIOR, f"Embedded prior ({folder})", folder)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> PortraitSession:
        """A user's EG3D checkpoint (.pkl, .pth, .safetensors or a converted folder)."""
        return cls(load_generator(path, device=device), CHECKPOINT, f"EG3D checkpoint {Path(path).name}", Path(path))

    @property
    def semantic_available(self) -> bool:
        """Whether the Semantic mode can be drawn (prior heads carry their ground truth)."""
        return self.kind == PRIOR

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def camera(self, yaw_deg: float, pitch_deg: float) -> np.ndarray:
        """The camera label (25,) at ``yaw_deg`` / ``pitch_deg`` from frontal, on the generator's own orbit
        (its ``avg_camera_radius`` / ``avg_camera_pivot`` when recorded, FFHQ's otherwise)."""
        rendering = self.generator.rendering_kwargs
        return camera_label(yaw_deg, pitch_deg, radius=float(rendering.get("avg_camera_radius", ORBIT_RADIUS)),
                            pivot=tuple(float(v) for v in rendering.get("avg_camera_pivot", PIVOT)))

    def sample(self, seed: int, truncation: float | None = None) -> Head:
        """Make head ``seed`` the current one, computing its planes (nothing to do when it already is).

        ``truncation`` (checkpoints only; default 0.7) pulls ws toward the average head: lower is
        more typical, 1 is untruncated.  Prior heads are never truncated: their latent is the head.
        """
        if not 0 <= seed <= MAX_SEED:
            raise UserInputError(f"a head seed is a whole number from 0 to {MAX_SEED}, got {seed}")
        prior = self.kind == PRIOR
        psi = 1.0 if prior else float(DEFAULT_TRUNCATION if truncation is None else truncation)
        if self.head is not None and (self.head.seed, self.head.truncation) == (seed, psi):
            return self.head
        params = HeadParams.from_seed(seed) if prior else None
        z = params.standardised() if prior else np.random.RandomState(seed).randn(self.generator.z_dim)
        z = torch.from_numpy(z[None]).float().to(self.device)
        c = torch.from_numpy(self.camera(0.0, 0.0)[None]).to(self.device)  # the conditioning camera: frontal
        with torch.no_grad():
            ws = self.generator.mapping(z, c, truncation_psi=psi, truncation_cutoff=None if prior else TRUNCATION_CUTOFF)
            planes = self.generator.planes(ws, noise_mode="const")
            occupancy = self.generator.occupancy(planes)
        self.head = Head(seed, psi, ws, planes, occupancy, params)
        return self.head

    def frame(self, yaw_deg: float, pitch_deg: float, mode: str = "rgb", resolution: int = 128) -> np.ndarray:
        """The current head from ``yaw_deg`` / ``pitch_deg`` as a ``resolution``² HxWx3 uint8 image (see ``render``)."""
        return self.render(self.camera(yaw_deg, pitch_deg), mode, resolution)

    def render(self, c: np.ndarray, mode: str, resolution: int) -> np.ndarray:
        """The current head seen by camera label ``c`` (25,), ``resolution``² HxWx3 uint8, in ``mode``:

        - "rgb": the super-resolved image when ``resolution`` exceeds the generator's neural rendering
          resolution (resampled from its output size), else the raw volume-rendered colour at ``resolution``;
        - "depth": the rendered depth in the scene viewer's colour ramp (near bright); for the prior
          the backdrop (depth beyond MASK_DEPTH) is black;
        - "semantic": the head's ground-truth groups (GROUP_LABELS) at this camera in SEMANTIC_PALETTE
          (prior sources only).
        """
        if mode not in MODES:
            raise ValueError(f"unknown portrait view mode {mode!r}; one of {', '.join(MODES)}")
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        head = self.head
        if head is None:
            raise UserInputError("no head yet: sample one first")
        if mode == "semantic":
            if head.params is None:
                raise UserInputError(NO_SEMANTICS)
            return SEMANTIC_PALETTE[render_heads(head.params, c, resolution).labels_group[0]]
        generator = self.generator
        neural = min(resolution, generator.neural_rendering_resolution)
        c = torch.from_numpy(np.asarray(c, np.float32)[None]).to(self.device)
        with torch.no_grad():
            if mode == "rgb" and resolution > generator.neural_rendering_resolution:
                image = generator.synthesis(head.ws, c, neural_rendering_resolution=neural, noise_mode="const",
                                            deterministic_sampling=True, planes=head.planes,
                                            occupancy=head.occupancy)["image"]
            else:
                image, depth = generator.render_features(head.planes, c, neural, deterministic_sampling=True,
                                                         occupancy=head.occupancy, channels=3)
            if mode == "rgb":
                return to_uint8((_resize(image, resolution)[0].permute(1, 2, 0) + 1) / 2)
            depth = _resize(depth, resolution)[0, 0].cpu().numpy()
        solid = depth < MASK_DEPTH if self.kind == PRIOR else np.ones(depth.shape, bool)
        return colorize_depth(depth, solid.astype(np.float32))


def orbit_yaws(frames: int, yaw_range: float) -> np.ndarray:
    """Yaw of each frame of a looping orbit: yaw_range · sin(2π k / frames), starting and ending frontal."""
    return yaw_range * np.sin(2 * math.pi * np.arange(frames) / frames)


def orbit_video_job(session: PortraitSession, out_path: str | Path, frames: int = 90, yaw_range: float = 30.0,
                    resolution: int | None = None, cancel: CancelToken | None = None, *, pitch: float = 0.0,
                    mode: str = "rgb", fps: float = 30.0) -> Job:
    """Job: a looping orbit of the session's current head (``orbit_yaws`` at ``pitch``), rendered from
    its cached planes at ``resolution``² (default: the generator's output size) and written to
    ``out_path`` (.mp4, or a folder of PNG frames).  The head is the one current when the job starts."""
    session = copy.copy(session)  # later samples in the workspace do not change this video's head
    if session.head is None:
        raise UserInputError("no head to film yet: sample one first")
    if frames < 1:
        raise UserInputError(f"an orbit video needs at least one frame, got {frames}")
    if not math.isfinite(yaw_range):
        raise UserInputError(f"the orbit's yaw range must be a finite number of degrees, got {yaw_range}")
    if mode == "semantic" and not session.semantic_available:
        raise UserInputError(NO_SEMANTICS)
    resolution = resolution or session.generator.img_resolution
    images = []
    for k, yaw in enumerate(orbit_yaws(frames, yaw_range)):
        if cancel is not None and cancel.cancelled:
            return
        images.append(session.frame(float(yaw), pitch, mode, resolution))
        yield Progress(k + 1, frames, "rendering the orbit")
    yield Artifact(write_frames(images, out_path, fps), frames_kind(out_path))
