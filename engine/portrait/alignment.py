"""Portrait input, shared by every portrait engine: a photo read safely, its five landmarks, the EG3D crop.

A photo is aligned the way EG3D's in-the-wild preprocessing does it (Deep3DFaceRecon's alignment; facts in
DESIGN.md §8): the five landmarks (left eye, right eye, nose tip, left and right mouth corner, as they appear in
the image, y down) are fitted by least squares to the standard 5-point 3D template under scaled orthographic
projection ("POS"); the image is scaled by ``RESCALE / s``, cropped to ``TARGET`` pixels about the fitted
translation, centre-cropped to ``CENTRE`` and resized to 512 (Lanczos).  The scaled image is never built
whole: the crop's window is resampled straight from the photo (PIL's resize of a box gives the same pixels),
so a small face in a large photo costs no more memory than a large one.  The same fit gives the head's pose
(``estimate_pose``), for the engines that need one; 3DPE itself uses the frontal camera.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from engine.core.errors import UserInputError

TEMPLATE = np.array([[-0.311487, 0.290361, 0.13378], [0.309799, 0.28972, 0.131795], [0.003253, -0.046179, 0.552442],
                     [-0.252169, -0.381339, 0.224057], [0.248466, -0.381282, 0.222358]])
"""the standard 5-point 3D face template (Deep3DFaceRecon's similarity_Lm3D_all reduced to 5 points):
x toward the image's right, y up, z toward the camera"""
LANDMARK_NAMES = ("left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner")
TARGET, RESCALE, CENTRE, OUTPUT = 1024, 300.0, 700, 512
"""EG3D's crop: scale so the template spans RESCALE pixels, crop TARGET, centre-crop CENTRE, resize to OUTPUT"""
MIN_SIDE = 64
"""photos smaller than this on either side are refused"""
MAX_PIXELS = 64_000_000
"""larger photos are refused before they are decoded (a file from someone else must not exhaust memory)"""


@dataclass(frozen=True)
class Photo:
    """A photo as the portrait engines read it: RGB uint8 (H, W, 3), where it came from, what was converted."""

    image: np.ndarray
    path: Path
    notes: tuple[str, ...] = ()
    """conversions made on reading (16-bit, CMYK, palette, alpha, grayscale), one sentence each"""


@dataclass(frozen=True)
class AlignedFace:
    """The OUTPUT² crop of a photo and where its landmarks landed in it (pixels, y down)."""

    image: np.ndarray
    landmarks: np.ndarray | None
    """None for a photo taken as aligned already"""
    scale: float
    """photo pixels to TARGET-crop pixels"""
    notes: tuple[str, ...] = ()
    """what reading and aligning the photo converted or chose, one sentence each"""


def read_photo(path: str | Path) -> Photo:
    """Read an image file as RGB uint8, turned upright by its EXIF orientation.  Unreadable or non-image
    files, images under MIN_SIDE pixels and oversized images are a UserInputError naming the file; 16-bit,
    CMYK, palette, alpha and grayscale images are converted, each conversion noted in ``Photo.notes``."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > MAX_PIXELS:
                raise UserInputError(f"{path}: {width}x{height} pixels is too large for a portrait (at most "
                                     f"{MAX_PIXELS // 1_000_000} megapixels); scale it down first")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                opened.load()
            image = ImageOps.exif_transpose(opened)
    except UserInputError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UserInputError(f"{path}: not an image Retouch3D can read ({exc})") from None
    if min(image.size) < MIN_SIDE:
        raise UserInputError(f"{path}: {image.size[0]}x{image.size[1]} pixels is too small for a portrait "
                             f"(at least {MIN_SIDE} on each side)")
    image, notes = _to_rgb(image, path)
    return Photo(np.asarray(image, dtype=np.uint8).copy(), path, notes)


def _to_rgb(image: Image.Image, path: Path) -> tuple[Image.Image, tuple[str, ...]]:
    mode = image.mode
    if mode == "RGB":
        return image, ()
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB"), (f"{path}: a 16-bit or high-precision grayscale image, "
                                                      "converted to 8-bit RGB",)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), (f"{path}: transparent parts shown on white",)
    described = {"CMYK": "a CMYK image", "P": "a palette image", "L": "a grayscale image", "1": "a black and "
                 "white image", "YCbCr": "a YCbCr image", "LAB": "a Lab image", "HSV": "an HSV image"}
    return image.convert("RGB"), (f"{path}: {described.get(mode, f'a {mode} image')}, converted to RGB",)


def read_landmarks(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Five landmarks (5, 2) from a text file of one "x y" per line (Deep3DFaceRecon's ``detections/NAME.txt``);
    with ``size`` (width, height) every point must lie in the image.  Anything else is a UserInputError."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the landmarks ({exc})") from None
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if len(rows) != 5 or any(len(row) != 2 for row in rows):
        raise UserInputError(f"{path}: expected 5 lines of \"x y\" ({', '.join(LANDMARK_NAMES)}), found "
                             f"{len(rows)} line(s)" + ("" if len(rows) != 5 else " not all with two numbers"))
    try:
        points = np.array([[float(x), float(y)] for x, y in rows])
    except ValueError:
        raise UserInputError(f"{path}: the landmarks must be numbers (\"x y\" per line)") from None
    if size is not None:
        check_landmarks(points, size, str(path))
    return points


def check_landmarks(points: np.ndarray, size: tuple[int, int], source: str = "the landmarks") -> np.ndarray:
    """``points`` as a finite (5, 2) float array inside an image of ``size`` (width, height), or a UserInputError."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise UserInputError(f"{source}: expected 5 finite (x, y) points ({', '.join(LANDMARK_NAMES)})")
    width, height = size
    outside = [LANDMARK_NAMES[i] for i, (x, y) in enumerate(points) if not (0 <= x <= width and 0 <= y <= height)]
    if outside:
        raise UserInputError(f"{source}: {', '.join(outside)} outside the {width}x{height} image")
    return points


def detections_file(photo_path: str | Path) -> Path:
    """Where a photo's landmarks are looked for when none are given: ``detections/NAME.txt`` beside it."""
    photo_path = Path(photo_path)
    return photo_path.parent / "detections" / f"{photo_path.stem}.txt"


@dataclass(frozen=True)
class Landmarks:
    """Five landmarks (5, 2) of a photo and where they came from (a file, or the detector)."""

    points: np.ndarray
    source: str
    notes: tuple[str, ...] = ()


def locate_landmarks(photo: Photo, landmarks_path: str | Path | None = None) -> Landmarks:
    """The photo's five landmarks: from ``landmarks_path``, else from ``detections/NAME.txt`` beside the photo,
    else from the built-in face detector (the largest face, said so when there are several).  No face is a
    UserInputError that says how to give the landmarks instead."""
    size = photo.image.shape[1::-1]
    path = Path(landmarks_path) if landmarks_path is not None else detections_file(photo.path)
    if landmarks_path is not None or path.is_file():
        return Landmarks(read_landmarks(path, size), str(path))
    found = detect_landmarks(photo.image)
    if found is None:
        raise UserInputError(f"{photo.path}: no face found; give its five landmarks ({', '.join(LANDMARK_NAMES)}) "
                             f"in a text file of \"x y\" lines (--landmarks FILE, or {detections_file(photo.path)}), "
                             "or click them in the Portrait tab")
    points, faces = found
    notes = (f"{photo.path}: {faces} faces found; aligned the largest",) if faces > 1 else ()
    return Landmarks(check_landmarks(points, size, f"{photo.path}: the detected face"), "the built-in face detector",
                     notes)


def detect_landmarks(image: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The built-in detector's five landmarks of the largest face in ``image`` (H, W, 3 uint8) and how many faces
    it found; None without a face."""
    faces = _detector().detect(image)
    if not faces:
        return None
    # a face cut by the image's edge may put a point just beyond it
    return np.clip(faces[0].landmarks, 0, image.shape[1::-1]), len(faces)


@functools.lru_cache(maxsize=1)
def _detector():
    """The built-in face detector, read once per process."""
    from engine.portrait.mtcnn import load_mtcnn

    return load_mtcnn()


def fit_template(landmarks: np.ndarray, height: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Least-squares scaled orthographic fit of TEMPLATE to ``landmarks`` (image pixels, y down, in an image
    ``height`` tall): the translation (2,) and scale in y-up pixels, and the rotation's first two rows (2, 3)."""
    points = np.asarray(landmarks, dtype=np.float64).copy()
    points[:, 1] = height - 1 - points[:, 1]
    design = np.zeros((10, 8))
    design[0::2, 0:3], design[0::2, 3] = TEMPLATE, 1.0
    design[1::2, 4:7], design[1::2, 7] = TEMPLATE, 1.0
    solution = np.linalg.lstsq(design, points.reshape(-1), rcond=None)[0]
    rows = np.stack([solution[0:3], solution[4:7]])
    scale = float(np.linalg.norm(rows, axis=1).mean())
    return np.array([solution[3], solution[7]]), scale, rows / np.linalg.norm(rows, axis=1, keepdims=True)


def estimate_pose(landmarks: np.ndarray, height: int) -> tuple[float, float]:
    """The camera's (yaw, pitch) in degrees relative to the frontal view, in engine.portrait.cameras' convention
    (positive yaw: the camera toward the subject's left cheek; positive pitch: the camera above, looking down),
    from the template fit.  Five points under orthographic projection: an estimate, good to several degrees."""
    _, _, rows = fit_template(landmarks, height)
    toward_camera = np.cross(rows[0], rows[1])  # the camera's backward axis in the face's frame
    x, y, z = toward_camera / np.linalg.norm(toward_camera)
    return math.degrees(math.atan2(x, z)), math.degrees(math.atan2(y, math.hypot(x, z)))


def align_face(image: np.ndarray, landmarks: np.ndarray, labels: bool = False) -> AlignedFace:
    """The OUTPUT² EG3D crop of ``image`` (H, W, 3 uint8) for its five ``landmarks`` (pixels, y down); ``labels``:
    the image is a label map (H, W), resampled by nearest neighbour so no label is blended with another."""
    height, width = image.shape[:2]
    landmarks = check_landmarks(landmarks, (width, height))
    translation, fitted, _ = fit_template(landmarks, height)
    if fitted <= 1e-6:
        raise UserInputError("the landmarks do not span a face (they coincide)")
    scale = RESCALE / fitted
    scaled_w, scaled_h = int(width * scale), int(height * scale)
    left = int(scaled_w / 2 - TARGET / 2 + (translation[0] - width / 2) * scale)
    up = int(scaled_h / 2 - TARGET / 2 + (height / 2 - translation[1]) * scale)
    offset = (TARGET - CENTRE) // 2
    box = np.array([left + offset, up + offset, left + offset + CENTRE, up + offset + CENTRE], dtype=np.float64)
    sx, sy = scaled_w / width, scaled_h / height
    source = box / np.array([sx, sy, sx, sy])
    filters = (Image.Resampling.NEAREST,) * 2 if labels else (Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)
    crop = _resample(np.repeat(image[..., None], 3, -1) if labels else image, source, CENTRE, filters[0])
    aligned = np.asarray(crop.resize((OUTPUT, OUTPUT), filters[1]), dtype=np.uint8)
    points = (landmarks * np.array([sx, sy]) - box[:2]) * (OUTPUT / CENTRE)
    return AlignedFace((aligned[..., 0] if labels else aligned).copy(), points, scale)


def _resample(image: np.ndarray, box: np.ndarray, side: int,
              resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """The window ``box`` (x0, y0, x1, y1 in photo pixels) resampled to side² with ``resample``, as resizing
    the whole photo then cropping would give; output pixels beyond the photo are black, as EG3D's crop leaves them.
    Only the part of the photo inside the window is resampled, however large the window."""
    height, width = image.shape[:2]
    step = np.array([box[2] - box[0], box[3] - box[1]]) / side
    first = np.maximum(0, np.ceil(-box[:2] / step)).astype(int)
    last = np.minimum(side, np.floor((np.array([width, height]) - box[:2]) / step)).astype(int)
    canvas = Image.new("RGB", (side, side))
    if (last > first).all():
        inner = (*np.maximum(box[:2] + first * step, 0.0), *np.minimum(box[:2] + last * step, [width, height]))
        part = Image.fromarray(image).resize(tuple(int(v) for v in last - first), resample, box=inner)
        canvas.paste(part, (int(first[0]), int(first[1])))
    return canvas


def portrait_input(path: str | Path, landmarks_path: str | Path | None = None) -> AlignedFace:
    """The OUTPUT² crop every portrait engine takes: a photo of exactly OUTPUT² pixels given without landmarks
    (and without a detections file) is an EG3D-aligned crop already and is used as is; any other photo is aligned
    from its landmarks (``locate_landmarks``)."""
    photo = read_photo(path)
    if photo.image.shape[:2] == (OUTPUT, OUTPUT) and landmarks_path is None \
            and not detections_file(photo.path).is_file():
        return AlignedFace(photo.image, None, 1.0, photo.notes)
    landmarks = locate_landmarks(photo, landmarks_path)
    aligned = align_face(photo.image, landmarks.points)
    return AlignedFace(aligned.image, aligned.landmarks, aligned.scale, photo.notes + landmarks.notes)
