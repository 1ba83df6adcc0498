"""Cameras and points taken back from the normalised training world to the capture's own frame.

Training works in a normalised world (p_n = s·R·(p − c), ``SceneDataset.world_from_capture``);
every export undoes that so its output lines up with the original capture (its sparse points, its
camera paths, other tools' reconstructions). The cameras are written as a nerfstudio
``transforms.json`` document, which is both the dataset export's header and the cameras export.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.core.jobs import Artifact, CancelToken, Job, Progress
from engine.core.project import write_json
from engine.scene.datasets import _DISTORTION_KEYS, SceneDataset

EXPORT_KEY = "retouch3d_export"
"""transforms.json entry marking a file written by an export (and the capture it came from)"""


def capture_from_world(dataset: SceneDataset) -> np.ndarray:
    """The 4x4 taking normalised-world points back to the capture frame."""
    return np.linalg.inv(dataset.world_from_capture)


def to_capture(points: np.ndarray, dataset: SceneDataset) -> np.ndarray:
    """Normalised-world points (N, 3) in the capture frame (float64)."""
    m = capture_from_world(dataset)
    return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


def capture_poses(dataset: SceneDataset) -> np.ndarray:
    """Camera-to-world matrices (N, 4, 4) in the capture frame; rotations stay rigid (the scale moves
    positions only)."""
    m = capture_from_world(dataset)
    c2w = dataset.cameras.c2w
    out = np.tile(np.eye(4), (len(c2w), 1, 1))
    out[:, :3, :3] = (dataset.scale * m[:3, :3]) @ c2w[:, :3, :3]
    out[:, :3, 3] = to_capture(c2w[:, :3, 3], dataset)
    return out


def _intrinsics(dataset: SceneDataset) -> list[dict[str, float | int]]:
    """Per-frame nerfstudio intrinsics (pixels of the loaded images) and the camera model's distortion."""
    cams = dataset.cameras
    keys = _DISTORTION_KEYS[cams.model]
    return [{"fl_x": float(cams.fx[i]), "fl_y": float(cams.fy[i]), "cx": float(cams.cx[i]), "cy": float(cams.cy[i]),
             "w": int(cams.width[i]), "h": int(cams.height[i]),
             **{k: float(v) for k, v in zip(keys, cams.distortion[i])}} for i in range(len(cams))]


def transforms_dict(dataset: SceneDataset, file_paths: list[str], kind: str,
                    mask_paths: list[str | None] | None = None) -> dict:
    """A nerfstudio transforms.json document for ``dataset`` with capture-frame poses, marked as an
    export of ``kind`` ("dataset" or "cameras").

    Intrinsics shared by every frame go to the top level, the others into each frame (nerfstudio
    lets frames override the top level); frames keep the dataset's order.
    """
    per_frame = _intrinsics(dataset)
    shared = {k: v for k, v in per_frame[0].items() if all(f[k] == v for f in per_frame)}
    poses = capture_poses(dataset)
    frames = []
    for i, (path, own) in enumerate(zip(file_paths, per_frame)):
        frame = {"file_path": path, "transform_matrix": poses[i].tolist(),
                 **{k: v for k, v in own.items() if k not in shared}}
        if mask_paths is not None and mask_paths[i] is not None:
            frame["mask_path"] = mask_paths[i]
        frames.append(frame)
    return {"camera_model": dataset.cameras.model, **shared, "frames": frames,
            EXPORT_KEY: {"kind": kind, "source": str(dataset.root)}}


def source_file_paths(dataset: SceneDataset) -> list[str]:
    """Each frame's image as a path relative to the capture folder (absolute when it lies outside)."""
    root = dataset.root.absolute()
    paths = []
    for path in dataset.image_paths:
        rel = Path(os.path.relpath(Path(path).absolute(), root))
        paths.append(rel.as_posix() if rel.parts[0] != ".." else str(Path(path).absolute()))
    return paths


def export_cameras(dataset: SceneDataset, out: str | Path, cancel: CancelToken | None = None) -> Job:
    """Job: write the cameras as a transforms.json document whose frames name the capture's own images.

    Placed in the capture folder (at the loaded resolution) it loads as that capture's transforms.json.
    """
    if cancel is not None and cancel.cancelled:
        return
    path = write_json(Path(out), transforms_dict(dataset, source_file_paths(dataset), "cameras"))
    yield Progress(1, 1, "writing cameras")
    yield Artifact(path, "cameras")
