"""The (edited) dataset as a nerfstudio capture folder: PNG images + transforms.json in the capture frame.

The caller chooses the images (the original capture, or the views an edit produced); poses are
taken back to the capture frame, intrinsics describe the written images, and the camera model
and its distortion are kept, so the folder loads like the original capture in Retouch3D,
nerfstudio or any tool reading transforms.json.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from engine.core.errors import UserInputError
from engine.core.jobs import Artifact, CancelToken, Job, JobWarning, Progress
from engine.core.project import read_json, write_json
from engine.export.cameras import EXPORT_KEY, source_file_paths, transforms_dict
from engine.scene.datasets import SceneDataset, _natural_key


def image_names(dataset: SceneDataset) -> list[str]:
    """Where each frame's PNG goes inside the export: its path in the capture with a .png suffix.

    The loader orders frames by file name, so when those paths would not keep the dataset's order
    (or would collide, e.g. Blender's train/r_0 and test/r_0 both under one folder) every name
    gets its frame number in front: ``images/00000_r_0.png``.
    """
    names = [str(PurePosixPath(p).with_suffix(".png")) for p in source_file_paths(dataset)]
    relative = all(not PurePosixPath(n).is_absolute() for n in names)
    if relative and len(set(names)) == len(names) and sorted(names, key=_natural_key) == names:
        return names
    return [f"images/{i:05d}_{Path(p).stem}.png" for i, p in enumerate(dataset.image_paths)]


def _check_target(out: Path) -> None:
    """Refuse to replace a folder that is neither empty nor an earlier export."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a folder; give a new folder for the dataset")
    if not any(out.iterdir()):
        return
    transforms = out / "transforms.json"
    meta = read_json(transforms) if transforms.is_file() else None
    mark = meta.get(EXPORT_KEY) if isinstance(meta, dict) else None
    if not (isinstance(mark, dict) and mark.get("kind") == "dataset"):
        raise UserInputError(f"{out}: already holds files that are not a Retouch3D dataset export; "
                             "choose an empty or new folder")


def _replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` at ``out``; an earlier export there is removed only afterwards."""
    umask = os.umask(0)
    os.umask(umask)
    new.chmod(0o777 & ~umask)  # mkdtemp makes the folder private; give it the usual permissions
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old)


def export_dataset(dataset: SceneDataset, images: list[np.ndarray], out: str | Path,
                   cancel: CancelToken | None = None) -> Job:
    """Job: write ``images`` (HxWx3 uint8, one per frame, at the loaded size) and the dataset's cameras
    as a nerfstudio capture folder ``out``; masks are written too when the capture has them.

    The folder is assembled next to ``out`` and moved into place at the end, so a cancelled or
    failed export leaves ``out`` as it was.
    """
    out = Path(out)
    cams = dataset.cameras
    if len(images) != len(cams):
        raise UserInputError(f"dataset export needs one image per frame: got {len(images)} for {len(cams)} frames")
    for i, image in enumerate(images):
        expected = (int(cams.height[i]), int(cams.width[i]), 3)
        if image.dtype != np.uint8 or image.shape != expected:
            raise UserInputError(f"image for frame {dataset.image_paths[i].name} is {image.dtype} {image.shape}; "
                                 f"expected uint8 {expected}")
    _check_target(out)
    names = image_names(dataset)
    mask_names = [f"masks/{name}" if mask is not None else None for name, mask in zip(names, dataset.masks)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp.", dir=out.parent))
    try:
        for i, (name, image) in enumerate(zip(names, images)):
            if cancel is not None and cancel.cancelled:
                yield JobWarning(f"dataset export cancelled; {out} was left as it was")
                return
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(tmp / name, format="PNG")
            if mask_names[i] is not None:
                (tmp / mask_names[i]).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(dataset.masks[i].astype(np.uint8) * 255).save(tmp / mask_names[i], format="PNG")
            yield Progress(i + 1, len(names), "writing images")
        write_json(tmp / "transforms.json", transforms_dict(dataset, names, "dataset", mask_names))
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the export succeeded
    yield Artifact(out, "dataset")
