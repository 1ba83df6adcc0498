"""Exports of a project: the (edited) dataset, point clouds, meshes, videos and cameras.

``EXPORTS`` registers every kind (adding one is a module with its job and documented settings, and one
entry); ``export_job`` is the one entry the CLI and the GUI drive, and both list the kinds from the
registry.  Everything is written in the capture's own frame (the normalisation used for training is
undone), atomically, and no export loads a diffusion model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.core.errors import UserInputError
from engine.core.jobs import CancelToken, Job
from engine.core.project import Project
from engine.editing.store import EditStore
from engine.export.cameras import export_cameras
from engine.export.dataset import export_dataset
from engine.export.mesh import MESH_SUFFIXES, MeshConfig, mesh_job
from engine.export.pointcloud import PointCloudConfig, point_cloud_job
from engine.export.video import VideoConfig, video_job
from engine.scene.datasets import SceneDataset, load_dataset
from engine.scene.trainer import load_trained


@dataclass(frozen=True)
class ExportKind:
    """One registered export: what ``--what`` calls it, where it writes, its settings and its job."""

    name: str
    """what ``--what`` and the window call it"""
    label: str
    """what the window's menu shows"""
    suffixes: tuple[str, ...]
    """suffixes ``--out`` may have ("" is a folder), the usual one first"""
    out_help: str
    """what ``--out`` is for this kind"""
    file_filter: str | None
    """the window's file chooser filter; None: a folder"""
    about: str
    """one sentence on what is written"""
    options: type | None
    """its settings, a documented config (None: it has none)"""
    run: Callable[[str, str, Any, CancelToken, "list[np.ndarray] | None"], Job]
    """job: (project, out, settings, cancel, images) → events; ``images`` only for the dataset"""


def _dataset_job(project: str, out: str, _options: Any, cancel: CancelToken, images: list[np.ndarray] | None) -> Job:
    dataset = project_dataset(project)
    yield from export_dataset(dataset, images if images is not None else current_images(project, dataset), out, cancel)


def _cameras_job(project: str, out: str, _options: Any, cancel: CancelToken, _images) -> Job:
    yield from export_cameras(project_dataset(project), out, cancel)


def _field_job(job: Callable) -> Callable:
    """An export of the trained field: ``job(model, dataset, out, settings, cancel)``."""
    def run(project: str, out: str, options: Any, cancel: CancelToken, _images) -> Job:
        model, dataset, _, _ = load_trained(project)
        yield from job(model, dataset, out, options, cancel)
    return run


EXPORTS: dict[str, ExportKind] = {kind.name: kind for kind in (
    ExportKind("dataset", "Edited dataset", ("",), "a folder: a nerfstudio capture (PNG images + transforms.json)",
               None, "Every view's image as edited now (the capture's where unedited) and its camera, as a nerfstudio "
               "capture folder in the capture's frame.", None, _dataset_job),
    ExportKind("pointcloud", "Point cloud", (".ply",), "a .ply file", "PLY point cloud (*.ply)",
               "Coloured points of the field's surfaces, from renders of the training views.", PointCloudConfig,
               _field_job(point_cloud_job)),
    ExportKind("mesh", "Mesh", MESH_SUFFIXES, "the suffix picks the format: .glb, .ply or .obj",
               "glTF binary (*.glb);;PLY mesh (*.ply);;Wavefront OBJ (*.obj)",
               "A coloured triangle mesh of the field's surface (marching cubes).", MeshConfig, _field_job(mesh_job)),
    ExportKind("video", "Video", (".mp4", ""), "an .mp4 file, or a folder (no suffix) for PNG frames",
               "MP4 video (*.mp4)", "A turntable or a camera path rendered from the field.", VideoConfig,
               _field_job(video_job)),
    ExportKind("cameras", "Cameras", (".json",), "a .json file", "Cameras (*.json)",
               "Every camera as a nerfstudio transforms.json, in the capture's frame.", None, _cameras_job),
)}
"""every export kind, in the order menus list them"""


@dataclass
class ExportConfig:
    """One export of a project."""

    project: str
    """project folder written by 'train'"""
    what: str
    """the export kind (``EXPORTS``): dataset | pointcloud | mesh | video | cameras"""
    out: str
    """where to write: a folder (dataset, PNG frames) or a file whose suffix picks the format"""
    options: Any = None
    """the kind's settings (its ``options`` config); None: its defaults"""

    def validate(self) -> None:
        """Check the kind, the output name and the settings before anything is loaded."""
        if self.what not in EXPORTS:
            raise UserInputError(f"unknown export {self.what!r}; choose one of: {', '.join(EXPORTS)}")
        kind = EXPORTS[self.what]
        suffix = Path(self.out).suffix.lower()
        if suffix not in kind.suffixes:
            names = " or ".join("a folder" if s == "" else s for s in kind.suffixes)
            raise UserInputError(f"{self.out}: a {self.what} export is written as {names}")
        if kind.options is not None:
            if self.options is None:
                self.options = kind.options()
            if not isinstance(self.options, kind.options):
                raise UserInputError(f"a {self.what} export takes {kind.options.__name__} settings, "
                                     f"not {type(self.options).__name__}")
            self.options.validate()


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
    yield from EXPORTS[cfg.what].run(cfg.project, cfg.out, cfg.options, cancel or CancelToken(), images)
