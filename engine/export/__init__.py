"""Exports of a project: the (edited) dataset, point clouds, meshes, videos and cameras.

``export_job`` is the one entry the CLI and the GUI drive. Everything is written in the
capture's own frame (the normalisation used for training is undone), atomically, and no export
loads a diffusion model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.editing.store import EditStore
from engine.errors import UserInputError
from engine.export.cameras import export_cameras
from engine.export.dataset import export_dataset
from engine.export.mesh import MESH_SUFFIXES, MeshConfig, mesh_job
from engine.export.pointcloud import PointCloudConfig, point_cloud_job
from engine.export.video import VideoConfig, video_job
from engine.jobs import CancelToken, Job
from engine.project import Project
from engine.scene.datasets import SceneDataset, load_dataset
from engine.scene.trainer import load_trained

EXPORT_KINDS = ("dataset", "pointcloud", "mesh", "video", "cameras")
EXPORT_SUFFIXES = {"dataset": ("",), "pointcloud": (".ply",), "mesh": MESH_SUFFIXES, "video": (".mp4", ""),
                   "cameras": (".json",)}
"""what → allowed suffixes of --out ("" is a folder), the usual one first"""


@dataclass
class ExportConfig:
    """One export of a project; only the options of the chosen kind are used."""

    project: str
    """project folder written by 'train'"""
    what: str
    """dataset | pointcloud | mesh | video | cameras"""
    out: str
    """where to write: a folder (dataset, PNG frames) or a file whose suffix picks the format"""
    pointcloud: PointCloudConfig = field(default_factory=PointCloudConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    video: VideoConfig = field(default_factory=VideoConfig)

    def validate(self) -> None:
        """Check the kind and the output name before anything is loaded."""
        if self.what not in EXPORT_KINDS:
            raise UserInputError(f"unknown export {self.what!r}; choose one of: {', '.join(EXPORT_KINDS)}")
        suffix = Path(self.out).suffix.lower()
        allowed = EXPORT_SUFFIXES[self.what]
        if suffix not in allowed:
            names = " or ".join("a folder" if s == "" else s for s in allowed)
            raise UserInputError(f"{self.out}: a {self.what} export is written as {names}")
        options = {"pointcloud": self.pointcloud, "mesh": self.mesh, "video": self.video}.get(self.what)
        if options is not None:
            options.validate()


def project_dataset(project_dir: str | Path) -> SceneDataset:
    """The dataset a project was trained on, loaded as training loaded it (no model needed)."""
    tcfg = Project(Path(project_dir)).read_manifest()["train_config"]
    return load_dataset(tcfg["data"], tcfg["format"], tcfg["downscale"])


def current_images(project_dir: str | Path, dataset: SceneDataset) -> list[np.ndarray]:
    """Each frame's image as the project uses it now: its current edit where one exists, else the capture's."""
    store = EditStore(Path(project_dir))
    images = []
    for path, original in zip(dataset.image_paths, dataset.images):
        edited = store.current(Path(path).stem)
        images.append(original if edited is None else edited)
    return images


def export_job(cfg: ExportConfig, cancel: CancelToken | None = None,
               images: list[np.ndarray] | None = None) -> Job:
    """Job: run the export ``cfg`` describes; yields progress, warnings and the artifact written.

    ``images`` overrides the images a dataset export writes (default: the project's current ones).
    """
    cfg.validate()
    cancel = cancel or CancelToken()
    if cfg.what in ("dataset", "cameras"):
        dataset = project_dataset(cfg.project)
        if cfg.what == "cameras":
            yield from export_cameras(dataset, cfg.out, cancel)
        else:
            yield from export_dataset(dataset, images if images is not None else current_images(cfg.project, dataset),
                                      cfg.out, cancel)
        return
    model, dataset, _ = load_trained(cfg.project)
    if cfg.what == "pointcloud":
        yield from point_cloud_job(model, dataset, cfg.out, cfg.pointcloud, cancel)
    elif cfg.what == "mesh":
        yield from mesh_job(model, dataset, cfg.out, cfg.mesh, cancel)
    else:
        yield from video_job(model, dataset, cfg.out, cfg.video, cancel)
