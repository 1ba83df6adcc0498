"""Capture folders (nerfstudio ``transforms.json``, Blender synthetic) loaded into a normalised world.

Every problem with the input surfaces as a one-line ``DatasetError`` naming the file. Recoverable
oddities (grayscale, palette, 16-bit, CMYK, alpha) are converted and reported once per kind in
``SceneDataset.warnings``. EXIF orientation is deliberately ignored: cameras were calibrated on the
stored pixels.
"""

from __future__ import annotations

import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.core.cameras import CAMERA_MODELS, Cameras
from engine.core.errors import DatasetError, UserInputError

FORMATS = ("nerfstudio", "blender")
EVAL_EVERY = 8  # without an explicit split, frame i is held out for evaluation when i % EVAL_EVERY == 0
CAPTURE_CAMERA_DISTANCE = 3.0  # mean camera distance to the scene centre after normalising a capture
BLENDER_SCALE = 1 / 1.5  # Blender objects fit in [-1.5, 1.5]^3; this brings them into [-1, 1]^3
_DISTORTION_KEYS = {"PINHOLE": (), "OPENCV": ("k1", "k2", "p1", "p2"), "OPENCV_FISHEYE": ("k1", "k2", "k3", "k4")}
# PIL keeps only the high byte of 16-bit colour PNG samples; decoding the same stream with these raw
# modes (same bits per pixel, so PNG unfiltering is unchanged) yields the low bytes / all bytes.
_PNG16_OTHER_RAWMODE = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class SceneDataset:
    """Images, masks and normalised cameras of one capture, with its train/eval split."""

    root: Path
    format: str  # "nerfstudio" | "blender"
    image_paths: list[Path]
    images: list[np.ndarray]  # (H, W, 3) uint8 RGB, already downscaled
    masks: list[np.ndarray | None]  # (H, W) bool, True = pixel used for training
    alphas: list[np.ndarray | None]  # (H, W) uint8 opacity of images that had alpha (None: opaque image)
    cameras: Cameras  # normalised world, intrinsics in pixels of the loaded images
    train_indices: np.ndarray  # int64
    eval_indices: np.ndarray  # int64
    world_from_capture: np.ndarray  # (4, 4): p_n = s * R @ (p - c), from the pose frame of the file
    scale: float  # s: normalised units per capture unit
    bounded: bool  # True: object inside [-1, 1]^3 on a solid background; False: unbounded capture
    background: np.ndarray | None  # (3,) in [0, 1] that RGBA images were composited on (blender, or all RGBA)
    warnings: list[str]


@dataclass
class _Frame:
    """One frame as described by a transforms file, before its image is read."""

    source: Path  # the transforms file that lists it
    file_path: str  # as written there (sort key and message label)
    image_path: Path
    c2w: np.ndarray
    model: str
    distortion: np.ndarray  # (4,)
    intrinsics: tuple[float, float, float, float] | None  # fx, fy, cx, cy; None: from camera_angle_x
    camera_angle_x: float | None
    size: tuple[int, int] | None  # (w, h) stated in the file, checked against the image
    mask_path: Path | None


def detect_format(path: str | Path) -> str:
    """``"nerfstudio"`` when the folder has transforms.json, ``"blender"`` when it has transforms_train.json."""
    root = _check_folder(Path(path).expanduser())
    if (root / "transforms.json").is_file():
        return "nerfstudio"
    if (root / "transforms_train.json").is_file():
        return "blender"
    raise DatasetError(f"{root}: no transforms.json (nerfstudio) or transforms_train.json (blender) in this folder")


def load_dataset(path: str | Path, format: str = "auto", downscale: float = 1,
                 background: tuple[float, float, float] | np.ndarray = (1.0, 1.0, 1.0),
                 max_side: int = 3200) -> SceneDataset:
    """Read a capture folder, convert its images to uint8 RGB and normalise its cameras.

    ``downscale`` divides the image size (intrinsics follow); images whose longest side would still
    exceed ``max_side`` are halved further until they fit. ``background`` is what RGBA images are
    composited on.
    """
    root = _check_folder(Path(path).expanduser().absolute())
    fmt = detect_format(root) if format == "auto" else format
    if fmt not in FORMATS:
        raise UserInputError(f"unknown dataset format {format!r}; expected 'auto' or one of {FORMATS}")
    if not (isinstance(downscale, (int, float)) and math.isfinite(downscale) and downscale >= 1):
        raise UserInputError(f"downscale must be a number >= 1, got {downscale!r}")
    if not (isinstance(max_side, int) and max_side >= 1):
        raise UserInputError(f"max_side must be a positive integer, got {max_side!r}")
    bg = np.asarray(background, dtype=np.float64)
    if bg.shape != (3,) or not np.all((bg >= 0) & (bg <= 1)):
        raise UserInputError(f"background must be three numbers in [0, 1], got {background!r}")

    if fmt == "nerfstudio":
        frames, train_idx, eval_idx, warnings = _parse_nerfstudio(root)
    else:
        frames, train_idx, eval_idx, warnings = _parse_blender(root)

    sizes = [_probe_image(f) for f in frames]
    targets, resize_warning = _target_sizes(sizes, float(downscale), max_side)
    warnings += resize_warning
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        loaded = list(pool.map(lambda f, s, t: _load_frame(f, s, t, bg), frames, sizes, targets))
    warnings += _conversion_warnings(frames, [kinds for *_, kinds in loaded], fmt, bg)
    alphas = [alpha for _, alpha, _, _ in loaded]

    c2w = np.stack([f.c2w for f in frames])
    if fmt == "nerfstudio":
        world_from_capture, scale, norm_warnings = _normalise_capture(c2w)
        warnings += norm_warnings
    else:
        scale = BLENDER_SCALE
        world_from_capture = np.diag([scale, scale, scale, 1.0])
    cameras = _cameras(frames, sizes, targets, _apply(world_from_capture, scale, c2w))
    return SceneDataset(
        root=root, format=fmt, image_paths=[f.image_path for f in frames],
        images=[image for image, *_ in loaded], masks=[mask for _, _, mask, _ in loaded], alphas=alphas,
        cameras=cameras, train_indices=train_idx, eval_indices=eval_idx, world_from_capture=world_from_capture,
        scale=scale, bounded=fmt == "blender", warnings=warnings,
        # the background is known where the format says so or every image is transparent around its object
        background=bg if fmt == "blender" or all(a is not None for a in alphas) else None,
    )


# --- transforms files -------------------------------------------------------------------------------

def _check_folder(root: Path) -> Path:
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    return root


def _read_json(path: Path) -> dict[str, Any]:
    """The top-level object of a JSON file; unreadable or malformed files become DatasetError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level")
    return meta


def _frame_list(meta: dict[str, Any], path: Path) -> list[tuple[dict[str, Any], str, str]]:
    """(frame dict, file_path, message prefix) for every frame of a transforms file."""
    raw = meta.get("frames")
    if raw is None:
        raise DatasetError(f"{path}: missing 'frames'")
    if not isinstance(raw, list) or not raw:
        raise DatasetError(f"{path}: 'frames' must be a non-empty list")
    out = []
    for i, frame in enumerate(raw):
        if not isinstance(frame, dict):
            raise DatasetError(f"{path}: frame {i} is not a JSON object")
        file_path = frame.get("file_path")
        if not isinstance(file_path, str) or not file_path:
            raise DatasetError(f"{path}: frame {i} has no 'file_path'")
        out.append((frame, file_path, f"{path}: frame '{file_path}'"))
    return out


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DatasetError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _pose(frame: dict[str, Any], where: str) -> np.ndarray:
    """The frame's 4x4 camera-to-world matrix, checked to be a finite rigid transform."""
    if "transform_matrix" not in frame:
        raise DatasetError(f"{where}: missing 'transform_matrix'")
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: 'transform_matrix' is not a 4x4 array of numbers") from None
    if m.shape != (4, 4):
        raise DatasetError(f"{where}: 'transform_matrix' has shape {m.shape}, expected 4x4")
    if not np.isfinite(m).all():
        raise DatasetError(f"{where}: 'transform_matrix' has non-finite values")
    rot = m[:3, :3]
    error = np.abs(rot.T @ rot - np.eye(3)).max()
    if error > 1e-3:
        raise DatasetError(f"{where}: 'transform_matrix' is not rigid (rotation not orthonormal, error {error:.3g})")
    if np.linalg.det(rot) < 0:
        raise DatasetError(f"{where}: 'transform_matrix' is not rigid (rotation part is a reflection)")
    if np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise DatasetError(f"{where}: 'transform_matrix' last row is {m[3].tolist()}, expected [0, 0, 0, 1]")
    return m


def _natural_key(text: str) -> list[int | str]:
    """Sort key putting frame_2 before frame_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _split_every(n: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(n, dtype=np.int64)
    held_out = index % EVAL_EVERY == 0
    return index[~held_out], index[held_out]


def _parse_nerfstudio(root: Path) -> tuple[list[_Frame], np.ndarray, np.ndarray, list[str]]:
    """Frames of transforms.json in file-name order, with the every-8th evaluation split."""
    path = root / "transforms.json"
    meta = _read_json(path)
    frames, warnings = [], []
    for raw, file_path, where in _frame_list(meta, path):
        def get(key: str) -> Any:
            return raw[key] if key in raw else meta.get(key)  # per-frame values override top-level ones

        def required(key: str) -> float:
            if get(key) is None:
                raise DatasetError(f"{where}: '{key}' is neither in the frame nor at the top level")
            return _number(get(key), key, where)

        model = get("camera_model") or "PINHOLE"
        if model not in CAMERA_MODELS:
            raise DatasetError(f"{where}: camera_model {model!r} is not supported (expected one of {CAMERA_MODELS})")
        fx = required("fl_x")
        fy = required("fl_y") if get("fl_y") is not None else fx
        cx, cy = required("cx"), required("cy")
        if fx <= 0 or fy <= 0:
            raise DatasetError(f"{where}: focal lengths must be positive, got fl_x={fx:g}, fl_y={fy:g}")
        size = None
        if get("w") is not None or get("h") is not None:
            w, h = required("w"), required("h")
            if w != int(w) or h != int(h) or w < 1 or h < 1:
                raise DatasetError(f"{where}: 'w' and 'h' must be positive integers, got {w:g} and {h:g}")
            size = (int(w), int(h))
        distortion = np.array([_number(get(k) or 0, k, where) for k in _DISTORTION_KEYS[model]] + [0.0] * 4)[:4]
        if model == "OPENCV" and any(get(k) for k in ("k3", "k4")):
            warnings.append(f"{path}: k3/k4 are not part of the OPENCV camera model and were ignored")
        mask = raw.get("mask_path")
        if mask is not None and (not isinstance(mask, str) or not mask):
            raise DatasetError(f"{where}: 'mask_path' must be a file path")
        frames.append(_Frame(
            source=path, file_path=file_path, image_path=root / file_path, c2w=_pose(raw, where), model=model,
            distortion=distortion, intrinsics=(fx, fy, cx, cy), camera_angle_x=None, size=size,
            mask_path=root / mask if mask else None,
        ))
    if len(frames) < 2:
        raise DatasetError(f"{path}: needs at least 2 frames, found {len(frames)}")
    models = {f.model for f in frames} - {"PINHOLE"}  # PINHOLE frames join a distorted model with zeros
    if len(models) > 1:
        raise DatasetError(f"{path}: frames mix camera models {sorted(models)}; one model per dataset is supported")
    model = models.pop() if models else "PINHOLE"
    for f in frames:
        f.model = model
    frames.sort(key=lambda f: _natural_key(f.file_path))
    return (frames, *_split_every(len(frames)), list(dict.fromkeys(warnings)))


def _parse_blender_split(path: Path) -> list[_Frame]:
    """Frames of one transforms_<split>.json in file-name order."""
    meta = _read_json(path)
    if "camera_angle_x" not in meta:
        raise DatasetError(f"{path}: missing 'camera_angle_x'")
    angle = _number(meta["camera_angle_x"], "camera_angle_x", str(path))
    if not 0 < angle < math.pi:
        raise DatasetError(f"{path}: 'camera_angle_x' must be between 0 and pi radians, got {angle:g}")
    frames = []
    for raw, file_path, where in _frame_list(meta, path):
        image_path = path.parent / file_path
        if not image_path.suffix:  # Blender synthetic scenes list "./train/r_0" for train/r_0.png
            image_path = image_path.with_name(image_path.name + ".png")
        frames.append(_Frame(
            source=path, file_path=file_path, image_path=image_path, c2w=_pose(raw, where), model="PINHOLE",
            distortion=np.zeros(4), intrinsics=None, camera_angle_x=angle, size=None, mask_path=None,
        ))
    return sorted(frames, key=lambda f: _natural_key(f.file_path))


def _parse_blender(root: Path) -> tuple[list[_Frame], np.ndarray, np.ndarray, list[str]]:
    """Train frames then evaluation frames (test json, else val json, else every 8th train frame)."""
    train = _parse_blender_split(root / "transforms_train.json")
    for name in ("transforms_test.json", "transforms_val.json"):
        if (root / name).is_file():
            held_out = _parse_blender_split(root / name)
            n = len(train) + len(held_out)
            return (train + held_out, np.arange(len(train), dtype=np.int64),
                    np.arange(len(train), n, dtype=np.int64), [])
    if len(train) < 2:
        raise DatasetError(f"{root / 'transforms_train.json'}: needs at least 2 frames, found {len(train)}")
    return (train, *_split_every(len(train)), [])


# --- images -----------------------------------------------------------------------------------------

def _probe_image(frame: _Frame) -> tuple[int, int]:
    """(w, h) of the frame's image from its header, checked against the size the transforms file states."""
    path = frame.image_path
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found (listed in {frame.source.name})")
    try:
        with Image.open(path) as im:
            size = im.size
    except _PIL_ERRORS as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None
    if frame.size is not None and frame.size != size:
        raise DatasetError(f"{path}: image is {size[0]}x{size[1]} but {frame.source.name} says "
                           f"{frame.size[0]}x{frame.size[1]}")
    return size


def _target_sizes(sizes: list[tuple[int, int]], downscale: float,
                  max_side: int) -> tuple[list[tuple[int, int]], list[str]]:
    """Loaded size of every image: divided by ``downscale``, then by a power of two if still above max_side."""
    def shrink(size: tuple[int, int], factor: float) -> tuple[int, int]:
        return max(1, round(size[0] / factor)), max(1, round(size[1] / factor))

    largest = max(sizes, key=max)
    first = shrink(largest, downscale)
    if max(first) <= max_side:
        return [shrink(s, downscale) for s in sizes], []
    extra = 2
    while max(shrink(largest, downscale * extra)) > max_side:
        extra *= 2
    final = shrink(largest, downscale * extra)
    warning = (f"images are {first[0]}x{first[1]} at downscale {downscale:g}, above max_side {max_side}: "
               f"downscaled by a further {extra} to {final[0]}x{final[1]}")
    return [shrink(s, downscale * extra) for s in sizes], [warning]


def _decode(path: Path) -> tuple[np.ndarray, list[str]]:
    """Pixels as (H, W, C) uint8 or uint16 with C in 1..4 (L, LA, RGB, RGBA) and the conversions applied."""
    with Image.open(path) as im:
        rawmode = im.tile[0].args if im.format == "PNG" and im.tile else None
        if rawmode in _PNG16_OTHER_RAWMODE:
            return _decode_png16(path, im, rawmode), ["16-bit"]
        mode = im.mode
        if mode in ("L", "LA", "RGB", "RGBA"):
            kinds = ["grayscale"] if mode in ("L", "LA") else []
            arr = np.asarray(im)
        elif mode == "1":
            kinds, arr = ["grayscale"], np.asarray(im.convert("L"))
        elif mode == "I" or mode.startswith("I;16"):
            kinds, arr = ["grayscale", "16-bit"], np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        elif mode in ("P", "PA"):
            alpha = mode == "PA" or "transparency" in im.info
            kinds, arr = ["palette"], np.asarray(im.convert("RGBA" if alpha else "RGB"))
        else:  # CMYK, YCbCr, LAB, ...
            kinds, arr = [mode], np.asarray(im.convert("RGB"))
    return (arr[..., None] if arr.ndim == 2 else arr), kinds


def _decode_png16(path: Path, im: Image.Image, rawmode: str) -> np.ndarray:
    """Full 16-bit samples of a colour or grayscale+alpha PNG (PIL alone gives only the high bytes)."""
    with Image.open(path) as again:
        again.tile = [again.tile[0]._replace(args=_PNG16_OTHER_RAWMODE[rawmode])]
        other = np.asarray(again).astype(np.uint16)
    if rawmode == "LA;16B":  # decoded as RGBA bytes: (L high, L low, A high, A low)
        return np.stack([other[..., 0] << 8 | other[..., 1], other[..., 2] << 8 | other[..., 3]], -1)
    return np.asarray(im).astype(np.uint16) << 8 | other


def _read_rgb(path: Path, background: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(H, W, 3) uint8 RGB of an image file, alpha composited on ``background``; its (H, W) uint8 alpha
    (None when it has none); and the conversions made."""
    try:
        arr, kinds = _decode(path)
    except _PIL_ERRORS as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None
    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
    channels = arr.shape[-1]
    colour = arr[..., :3] if channels >= 3 else np.repeat(arr[..., :1], 3, axis=-1)
    alpha = None
    if channels in (2, 4):
        alpha = np.ascontiguousarray(arr[..., -1])
        opacity = alpha[..., None].astype(np.float32) / 255
        colour = colour * opacity + (background * 255).astype(np.float32) * (1 - opacity)
        colour = np.clip(np.round(colour), 0, 255).astype(np.uint8)
        kinds.append("alpha")
    return np.ascontiguousarray(colour), alpha, kinds


def _read_mask(frame: _Frame, size: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask at the loaded image size: True where the mask image is nonzero."""
    path = frame.mask_path
    if not path.is_file():
        raise DatasetError(f"{path}: mask file not found (listed in {frame.source.name})")
    try:
        with Image.open(path) as im:
            if im.size != size:
                raise DatasetError(f"{path}: mask is {im.size[0]}x{im.size[1]} but its image "
                                   f"{frame.image_path.name} is {size[0]}x{size[1]}")
            single = len(im.getbands()) == 1 and im.mode != "P"
            mask = np.asarray(im) != 0 if single else np.asarray(im.convert("RGB")).any(-1)
    except _PIL_ERRORS as e:
        raise DatasetError(f"{path}: cannot read mask ({e})") from None
    if target != size:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(target, Image.NEAREST)) > 127
    return mask


def _load_frame(frame: _Frame, size: tuple[int, int], target: tuple[int, int],
                background: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, list[str]]:
    """The frame's image (its alpha, its mask) resampled to ``target``, with the conversions made.

    Colour and alpha are box-filtered alike, so the composite stays ``colour·alpha + background·(1-alpha)``
    at the loaded size and another background can be put behind it (training on random backgrounds).
    """
    image, alpha, kinds = _read_rgb(frame.image_path, background)
    if target != size:
        image = np.asarray(Image.fromarray(image).resize(target, Image.BOX))
        if alpha is not None:
            alpha = np.asarray(Image.fromarray(alpha).resize(target, Image.BOX))
    mask = _read_mask(frame, size, target) if frame.mask_path is not None else None
    return image, alpha, mask, kinds


def _conversion_warnings(frames: list[_Frame], kinds: list[list[str]], fmt: str, background: np.ndarray) -> list[str]:
    """One warning per kind of conversion, with the count and the first file concerned."""
    seen: dict[str, list[Any]] = {}
    for frame, frame_kinds in zip(frames, kinds):
        for kind in frame_kinds:
            if kind == "alpha" and fmt == "blender":  # RGBA is the norm for Blender renders
                continue
            seen.setdefault(kind, [0, frame.file_path])[0] += 1
    text = {
        "grayscale": "grayscale and converted to RGB",
        "palette": "palette images and converted to RGB",
        "16-bit": "16-bit and converted to 8-bit",
        "alpha": "RGBA and composited on background " + str(tuple(round(float(v), 3) for v in background)),
    }
    warnings = []
    for kind, (count, first) in seen.items():
        what = text.get(kind, f"in {kind} colour mode and converted to RGB")
        warnings.append(f"{count} image{' was' if count == 1 else 's were'} {what} (first: {first})")
    return warnings


# --- cameras ----------------------------------------------------------------------------------------

def _cameras(frames: list[_Frame], sizes: list[tuple[int, int]], targets: list[tuple[int, int]],
             c2w: np.ndarray) -> Cameras:
    """Cameras with intrinsics rescaled from the stored image size to the loaded one."""
    params = []
    for frame, (w, h), (tw, th) in zip(frames, sizes, targets):
        if frame.intrinsics is not None:
            fx, fy, cx, cy = frame.intrinsics
        else:  # Blender: square pixels, principal point at the centre
            fx = fy = 0.5 * w / math.tan(0.5 * frame.camera_angle_x)
            cx, cy = w / 2, h / 2
        sx, sy = tw / w, th / h
        params.append((fx * sx, fy * sy, cx * sx, cy * sy))
    fx, fy, cx, cy = np.array(params, dtype=np.float64).T
    return Cameras(
        c2w=c2w, fx=fx, fy=fy, cx=cx, cy=cy, width=np.array([t[0] for t in targets]),
        height=np.array([t[1] for t in targets]), model=frames[0].model,
        distortion=np.stack([f.distortion for f in frames]),
    )


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation matrix taking unit vector ``a`` onto unit vector ``b`` (Rodrigues)."""
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:  # opposite vectors: half turn about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def _normalise_capture(c2w: np.ndarray) -> tuple[np.ndarray, float, list[str]]:
    """world_from_capture for a real capture: mean up to +z, centred where the optical axes meet,
    mean camera distance CAPTURE_CAMERA_DISTANCE."""
    warnings = []
    up = c2w[:, :3, 1].mean(0)
    rot = _rotation_between(up / np.linalg.norm(up), np.array([0.0, 0.0, 1.0])) if np.linalg.norm(up) > 1e-9 \
        else np.eye(3)
    origins = c2w[:, :3, 3]
    dirs = -c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=1, keepdims=True)
    projectors = np.eye(3) - dirs[:, :, None] * dirs[:, None, :]  # onto the plane normal to each axis
    a, b = projectors.sum(0), np.einsum("nij,nj->i", projectors, origins)
    mean = origins.mean(0)
    spread = np.linalg.norm(origins - mean, axis=1).mean()
    closest = np.linalg.solve(a, b) if np.linalg.cond(a) <= 1e6 else None
    if closest is not None and np.linalg.norm(closest - mean) <= 10 * spread:
        center = closest
    else:
        center = mean
        warnings.append("camera axes do not converge on a point; the scene is centred on the mean camera position")
    distance = np.linalg.norm(origins - center, axis=1).mean()
    if distance < 1e-12:
        warnings.append("all cameras are at the same position; the scene scale was left unchanged")
        scale = 1.0
    else:
        scale = CAPTURE_CAMERA_DISTANCE / distance
    m = np.eye(4)
    m[:3, :3] = scale * rot
    m[:3, 3] = -scale * rot @ center
    return m, float(scale), warnings


def _apply(world_from_capture: np.ndarray, scale: float, c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world matrices in the normalised world; rotations stay orthonormal (scale moves positions only)."""
    out = c2w.copy()
    out[:, :3, :3] = (world_from_capture[:3, :3] / scale) @ c2w[:, :3, :3]
    out[:, :3, 3] = c2w[:, :3, 3] @ world_from_capture[:3, :3].T + world_from_capture[:3, 3]
    return out
