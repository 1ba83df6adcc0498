"""The project open in the editor window: its folder, dataset, field and saved window state.

Nothing here is Qt: the window runs ``open_job`` / ``new_project`` through a JobRunner so a
large capture loads off the UI thread.  The window's own state (instruction panel, camera,
render mode, overlays) lives under the manifest's ``app`` key, next to what the engine
writes, so opening a project restores its field, its edits and its settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.errors import UserInputError
from engine.core.jobs import Job, Progress


@dataclass
class ProjectSession:
    """An opened project; ``live`` shares its field with the viewport and with running jobs."""

    root: Path
    manifest: dict
    dataset: Any  # engine.scene.datasets.SceneDataset
    live: Any  # engine.scene.viewer.LiveField
    trained: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def train_config(self) -> dict:
        return self.manifest["train_config"]

    @property
    def view_names(self) -> list[str]:
        """Training views, named by their image's stem (as the edit store names them)."""
        return [self.dataset.image_paths[i].stem for i in self.dataset.train_indices]

    def app_state(self) -> dict:
        return dict(self.manifest.get("app", {}))

    def save(self, app_state: dict) -> None:
        """Write the window's state into the manifest (atomically; engine fields are kept)."""
        from engine.core.project import Project

        self.manifest = Project(self.root).update_manifest(app=app_state)


def check_dataset_folder(path: str | Path) -> str:
    """The format of a capture folder, or a UserInputError saying why it is not one."""
    from engine.scene.datasets import detect_format

    folder = Path(path)
    if not folder.is_dir():
        raise UserInputError(f"{folder} is not a folder; drop a capture folder (with transforms.json)")
    try:
        return detect_format(folder)
    except UserInputError as exc:
        raise UserInputError(f"{folder} is not a dataset Retouch3D can read: {exc}") from None


def create_project(data: str | Path, root: str | Path, downscale: float = 1.0, model: str = "fast") -> Path:
    """Make a new project folder for the capture ``data`` (refuses a folder that holds another project)."""
    from engine.core.project import Project
    from engine.scene.trainer import TrainConfig

    fmt = check_dataset_folder(data)
    project = Project(Path(root))
    if project.exists():
        raise UserInputError(f"{project.root} already holds a project; open it, or choose another folder")
    if project.root.exists() and any(project.root.iterdir()):
        raise UserInputError(f"{project.root} is not empty; choose a new folder for the project")
    cfg = TrainConfig(data=str(Path(data).resolve()), out=str(project.root.resolve()), format=fmt,
                      downscale=downscale, model=model)
    if cfg.downscale < 1:
        raise UserInputError(f"the downscale factor must be at least 1 (got {downscale})")
    project.root.mkdir(parents=True, exist_ok=True)
    project.update_manifest(kind="scene", train_config=dataclasses.asdict(cfg), app={})
    return project.root


def open_job(root: str | Path, result: dict) -> Job:
    """Job: load a project's dataset and, when trained, its field; the session lands in ``result['session']``."""
    from engine.core.project import Project
    from engine.scene.datasets import load_dataset
    from engine.scene.trainer import fixed_background, load_trained
    from engine.scene.viewer import LiveField

    project = Project(Path(root))
    manifest = project.read_manifest()
    if "train_config" not in manifest:
        raise UserInputError(f"{project.manifest_path}: not a scene project (no train_config)")
    live = LiveField()
    yield Progress(0, 2, "loading the capture")
    if project.latest_checkpoint() is not None:
        model, dataset, manifest, _ = load_trained(project.root)
        yield Progress(1, 2, "loading the field")
        live.publish(model, dataset, fixed_background(dataset))
        trained = True
    else:
        tcfg = manifest["train_config"]
        dataset = load_dataset(tcfg["data"], tcfg["format"], tcfg["downscale"])
        live.dataset = dataset
        trained = False
    yield Progress(2, 2, "ready")
    result["session"] = ProjectSession(project.root, manifest, dataset, live, trained, list(dataset.warnings))


def unique_folder(parent: Path, name: str) -> Path:
    """``parent/name``, or ``parent/name-2``, ``-3``... when that exists."""
    candidate, n = parent / name, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}-{n}"
    return candidate
