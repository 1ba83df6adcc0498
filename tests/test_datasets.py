"""Tests for engine.scene.datasets: formats, splits, resampling, normalisation, bad input and conversions."""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from engine.core.cameras import look_at, orbit_poses
from engine.core.errors import DatasetError
from engine.scene.datasets import SceneDataset, detect_format, load_dataset

IN2N_FACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "in2n-face"
W, H = 16, 12
TARGET = np.array([0.3, -0.2, 0.5])


def frame_colour(i: int) -> np.ndarray:
    return np.array([10 * i, 255 - 10 * i, 7], np.uint8)


def uniform_image(i: int, size: tuple[int, int] = (W, H)) -> Image.Image:
    return Image.fromarray(np.broadcast_to(frame_colour(i), (size[1], size[0], 3)).copy())


def tilted_ring(n: int, radius: float = 2.0) -> np.ndarray:
    """Cameras on a ring looking at TARGET, in a capture frame whose up is not +z."""
    poses = orbit_poses(n, radius, elevation_deg=25.0)
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    angle = 1.1
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rigid = np.eye(4)
    rigid[:3, :3] = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    rigid[:3, 3] = TARGET
    return rigid @ poses


def write_nerfstudio(root: Path, n: int = 10, image: Callable[[int], Image.Image] = uniform_image,
                     ext: str = "png", meta: dict[str, Any] | None = None, poses: np.ndarray | None = None,
                     frame_extra: Callable[[int], dict[str, Any]] | None = None) -> Path:
    """A nerfstudio folder with frames frame_1..frame_n (unpadded names) listed in shuffled order."""
    (root / "images").mkdir(parents=True)
    poses = tilted_ring(n) if poses is None else poses
    frames = []
    for i in range(n):
        name = f"images/frame_{i + 1}.{ext}"
        image(i).save(root / name)
        extra = frame_extra(i) if frame_extra else {}
        frames.append({"file_path": name, "transform_matrix": poses[i].tolist(), **extra})
    order = np.random.default_rng(0).permutation(n)
    content = {"fl_x": 20.0, "fl_y": 21.0, "cx": 8.5, "cy": 6.25, "w": W, "h": H, **(meta or {}),
               "frames": [frames[i] for i in order]}
    (root / "transforms.json").write_text(json.dumps(content))
    return root


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def frame_by_name(meta: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in meta["frames"] if f["file_path"].endswith(name))


def write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA), which neither PIL nor imageio can write."""
    pixels = np.asarray(pixels, np.uint16)
    h, w = pixels.shape[:2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[1 if pixels.ndim == 2 else pixels.shape[2]]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def blender_frames(folder: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    poses = orbit_poses(n, 4.0)
    return [{"file_path": f"./{folder}/r_{start + i}", "transform_matrix": poses[i].tolist()} for i in range(n)]


def write_blender(root: Path, splits: dict[str, int], angle: float = 0.69,
                  rgba: tuple[int, int, int, int] = (200, 100, 50, 128)) -> Path:
    """A Blender synthetic folder with RGBA renders for each split; frame i of a split lists r_i."""
    for split, n in splits.items():
        (root / split).mkdir(parents=True)
        for i in range(n):
            pixels = np.zeros((H, W, 4), np.uint8)
            pixels[...] = rgba
            pixels[0, 0] = (10 * i, 0, 0, 255)
            Image.fromarray(pixels).save(root / split / f"r_{i}.png")
        frames = blender_frames(split, n)
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames[::-1]}))
    return root


# --- nerfstudio ---------------------------------------------------------------------------------------

def test_nerfstudio_order_split_and_top_level_intrinsics(tmp_path: Path) -> None:
    ds = load_dataset(write_nerfstudio(tmp_path, n=17))
    assert isinstance(ds, SceneDataset) and ds.format == "nerfstudio" and detect_format(tmp_path) == "nerfstudio"
    assert [p.name for p in ds.image_paths] == [f"frame_{i}.png" for i in range(1, 18)]
    for i, image in enumerate(ds.images):
        assert image.dtype == np.uint8 and image.shape == (H, W, 3)
        assert (image == frame_colour(i)).all()
    assert ds.eval_indices.tolist() == [0, 8, 16] and ds.eval_indices.dtype == np.int64
    assert ds.train_indices.tolist() == [i for i in range(17) if i % 8]
    cams = ds.cameras
    assert cams.model == "PINHOLE" and len(cams) == 17
    assert np.allclose(cams.fx, 20) and np.allclose(cams.fy, 21)
    assert np.allclose(cams.cx, 8.5) and np.allclose(cams.cy, 6.25)
    assert (cams.width == W).all() and (cams.height == H).all()
    assert np.array_equal(cams.distortion, np.zeros((17, 4)))
    assert ds.masks == [None] * 17 and not ds.bounded and ds.background is None and ds.warnings == []


def test_nerfstudio_per_frame_intrinsics_override_top_level(tmp_path: Path) -> None:
    def extra(i: int) -> dict[str, Any]:
        return {"fl_x": 30.0, "cx": 7.0} if i == 3 else {}
    write_nerfstudio(tmp_path, n=5, frame_extra=extra)
    edit_json(tmp_path / "transforms.json", lambda m: m.pop("fl_y"))
    cams = load_dataset(tmp_path).cameras
    assert cams.fx.tolist() == [20, 20, 20, 30, 20]
    assert cams.fy.tolist() == cams.fx.tolist()  # fl_y missing: fl_x
    assert cams.cx.tolist() == [8.5, 8.5, 8.5, 7.0, 8.5] and np.allclose(cams.cy, 6.25)


def test_nerfstudio_intrinsics_only_per_frame(tmp_path: Path) -> None:
    write_nerfstudio(tmp_path, n=3, frame_extra=lambda i: {"fl_x": 10.0 + i, "fl_y": 11.0, "cx": 8.0, "cy": 6.0})
    edit_json(tmp_path / "transforms.json", lambda m: [m.pop(k) for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")])
    cams = load_dataset(tmp_path).cameras
    assert cams.fx.tolist() == [10, 11, 12] and np.allclose(cams.fy, 11) and (cams.width == W).all()


@pytest.mark.parametrize("model, coefficients, expected", [
    ("OPENCV", {"k1": 0.1, "k2": -0.02, "p1": 0.003}, [0.1, -0.02, 0.003, 0.0]),
    ("OPENCV_FISHEYE", {"k1": 0.1, "k2": -0.02, "k3": 0.004, "k4": -0.0005}, [0.1, -0.02, 0.004, -0.0005]),
    ("PINHOLE", {"k1": 0.1}, [0.0, 0.0, 0.0, 0.0]),
])
def test_nerfstudio_distortion(tmp_path: Path, model: str, coefficients: dict[str, float],
                               expected: list[float]) -> None:
    write_nerfstudio(tmp_path, n=3, meta={"camera_model": model, **coefficients})
    cams = load_dataset(tmp_path).cameras
    assert cams.model == model
    assert np.allclose(cams.distortion, np.tile(expected, (3, 1)))


def test_nerfstudio_per_frame_camera_models(tmp_path: Path) -> None:
    write_nerfstudio(tmp_path / "mixed", n=3, frame_extra=lambda i: {"camera_model": "OPENCV", "k1": 0.2} if i else {})
    cams = load_dataset(tmp_path / "mixed").cameras  # PINHOLE frames join OPENCV with zero distortion
    assert cams.model == "OPENCV" and cams.distortion[:, 0].tolist() == [0.0, 0.2, 0.2]
    write_nerfstudio(tmp_path / "clash", n=3,
                     frame_extra=lambda i: {"camera_model": "OPENCV_FISHEYE" if i else "OPENCV"})
    with pytest.raises(DatasetError, match=r"transforms\.json.*mix camera models"):
        load_dataset(tmp_path / "clash")


def test_nerfstudio_masks_and_downscale(tmp_path: Path) -> None:
    size = (40, 30)
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[:, :20] = 255

    def image(i: int) -> Image.Image:
        pixels = np.zeros((size[1], size[0], 3), np.uint8)
        pixels[::2, ::2] = 200  # a 2x2 pattern whose box average is 50
        return Image.fromarray(pixels)

    intrinsics = {"w": 40, "h": 30, "fl_x": 40.0, "fl_y": 44.0, "cx": 20.0, "cy": 15.0}
    write_nerfstudio(tmp_path, n=3, image=image, meta=intrinsics,
                     frame_extra=lambda i: {"mask_path": f"masks/m_{i}.png"})
    (tmp_path / "masks").mkdir()
    for i in range(3):
        Image.fromarray(mask).save(tmp_path / "masks" / f"m_{i}.png")

    full = load_dataset(tmp_path)
    assert full.masks[0].dtype == bool and full.masks[0].shape == (30, 40)
    assert full.masks[0][:, :20].all() and not full.masks[0][:, 20:].any()

    half = load_dataset(tmp_path, downscale=2)
    assert half.images[0].shape == (15, 20, 3) and (half.images[0] == 50).all()
    assert half.masks[0].shape == (15, 20) and half.masks[0][:, :10].all() and not half.masks[0][:, 10:].any()
    cams = half.cameras
    assert (cams.width == 20).all() and (cams.height == 15).all()
    assert np.allclose(cams.fx, 20) and np.allclose(cams.fy, 22)
    assert np.allclose(cams.cx, 10) and np.allclose(cams.cy, 7.5)

    third = load_dataset(tmp_path, downscale=3)  # 40x30 -> round(13.3) x 10
    assert third.images[0].shape == (10, 13, 3) and third.masks[0].shape == (10, 13)
    assert np.allclose(third.cameras.fx, 40 * 13 / 40) and np.allclose(third.cameras.fy, 44 * 10 / 30)
    assert np.allclose(third.cameras.cx, 20 * 13 / 40) and np.allclose(third.cameras.cy, 15 * 10 / 30)


def test_huge_images_are_halved_until_they_fit(tmp_path: Path) -> None:
    write_nerfstudio(tmp_path, n=2)
    ds = load_dataset(tmp_path, max_side=5)  # 16x12 -> /4 -> 4x3
    assert ds.images[0].shape == (3, 4, 3) and np.allclose(ds.cameras.fx, 20 / 4)
    assert len(ds.warnings) == 1 and "4x3" in ds.warnings[0] and "max_side" in ds.warnings[0]


def test_nerfstudio_normalisation(tmp_path: Path) -> None:
    poses = tilted_ring(12, radius=2.0)
    ds = load_dataset(write_nerfstudio(tmp_path, n=12, poses=poses))
    c2w = ds.cameras.c2w
    centres = c2w[:, :3, 3]
    assert np.linalg.norm(centres, axis=1).mean() == pytest.approx(3.0)
    assert ds.scale == pytest.approx(3.0 / 2.0)
    rot = c2w[:, :3, :3]
    assert np.allclose(np.einsum("nji,njk->nik", rot, rot), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(rot), 1)
    mapped = poses[:, :3, 3] @ ds.world_from_capture[:3, :3].T + ds.world_from_capture[:3, 3]
    assert np.allclose(mapped, centres)  # frames are in file-name order, as the poses were written
    target = ds.world_from_capture @ np.append(TARGET, 1)
    assert np.allclose(target[:3], 0, atol=1e-9)  # the ring's look-at point
    up = c2w[:, :3, 1].mean(0)
    assert np.allclose(up / np.linalg.norm(up), [0, 0, 1])
    assert np.allclose(ds.world_from_capture[3], [0, 0, 0, 1])


def test_normalisation_falls_back_to_mean_position_for_parallel_cameras(tmp_path: Path) -> None:
    eyes = [np.array([x, y, 0.0]) for x in (-1.0, 0.0, 1.0) for y in (-1.0, 1.0)]
    poses = np.stack([look_at(e, e + [0.0, 5.0, 0.0]) for e in eyes])  # all looking along +y
    ds = load_dataset(write_nerfstudio(tmp_path, n=6, poses=poses))
    assert np.linalg.norm(ds.cameras.c2w[:, :3, 3], axis=1).mean() == pytest.approx(3.0)
    assert np.allclose(ds.cameras.c2w[:, :3, 3].mean(0), 0, atol=1e-9)
    assert any("mean camera position" in w for w in ds.warnings)


# --- blender ------------------------------------------------------------------------------------------

def test_blender_train_only_split_focal_and_background(tmp_path: Path) -> None:
    write_blender(tmp_path, {"train": 9})
    background = (0.0, 0.5, 1.0)
    ds = load_dataset(tmp_path, background=background)
    assert ds.format == "blender" and detect_format(tmp_path) == "blender"
    assert [p.name for p in ds.image_paths] == [f"r_{i}.png" for i in range(9)]
    assert ds.eval_indices.tolist() == [0, 8] and ds.train_indices.tolist() == list(range(1, 8))
    alpha = 128 / 255
    expected = np.round(np.array([200, 100, 50]) * alpha + np.array(background) * 255 * (1 - alpha))
    assert ds.images[1][5, 5].tolist() == expected.tolist() == [100, 114, 152]
    assert ds.images[3][0, 0].tolist() == [30, 0, 0]
    assert ds.bounded and np.allclose(ds.background, background) and ds.warnings == []
    focal = 0.5 * W / math.tan(0.5 * 0.69)
    cams = ds.cameras
    assert cams.model == "PINHOLE" and np.allclose(cams.fx, focal) and np.allclose(cams.fy, focal)
    assert np.allclose(cams.cx, W / 2) and np.allclose(cams.cy, H / 2)
    original = orbit_poses(9, 4.0)
    assert ds.scale == pytest.approx(1 / 1.5)
    assert np.allclose(cams.c2w[:, :3, :3], original[:, :3, :3])
    assert np.allclose(cams.c2w[:, :3, 3], original[:, :3, 3] / 1.5)


def test_blender_train_and_test_ignore_val(tmp_path: Path) -> None:
    write_blender(tmp_path, {"train": 3, "val": 4, "test": 2})
    ds = load_dataset(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.image_paths] == [
        "train/r_0.png", "train/r_1.png", "train/r_2.png", "test/r_0.png", "test/r_1.png"]
    assert ds.train_indices.tolist() == [0, 1, 2] and ds.eval_indices.tolist() == [3, 4]
    assert (ds.images[0][5, 5] == np.round(np.array([200, 100, 50]) * 128 / 255 + 255 * 127 / 255)).all()


def test_blender_val_is_eval_without_test(tmp_path: Path) -> None:
    write_blender(tmp_path, {"train": 3, "val": 2})
    ds = load_dataset(tmp_path)
    assert ds.eval_indices.tolist() == [3, 4] and ds.image_paths[3].parent.name == "val"


# --- bad input ----------------------------------------------------------------------------------------

def set_frame(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: frame_by_name(m, name).__setitem__(key, value)


def scaled_pose() -> list[list[float]]:
    pose = tilted_ring(10)[2]
    pose[:3, :3] *= 1.1
    return pose.tolist()


def mirrored_pose() -> list[list[float]]:
    pose = tilted_ring(10)[2]
    pose[:3, 0] *= -1
    return pose.tolist()


def bad_last_row() -> list[list[float]]:
    pose = tilted_ring(10)[2]
    pose[3, 0] = 0.5
    return pose.tolist()


@pytest.mark.parametrize("change, named", [
    (lambda m: m.pop("frames"), "transforms.json"),
    (lambda m: m.__setitem__("frames", m["frames"][:1]), "transforms.json"),
    (lambda m: [m.pop(k) for k in ("fl_x", "fl_y")], "fl_x"),
    (lambda m: m.pop("cx"), "cx"),
    (lambda m: m.__setitem__("camera_model", "EQUIRECTANGULAR"), "EQUIRECTANGULAR"),
    (set_frame("frame_3.png", "transform_matrix", None), "frame_3.png"),
    (lambda m: frame_by_name(m, "frame_3.png").pop("transform_matrix"), "frame_3.png"),
    (set_frame("frame_3.png", "transform_matrix", [[1, 0, 0, 0]] * 3), "frame_3.png"),
    (set_frame("frame_3.png", "transform_matrix", [[float("nan")] * 4] * 4), "frame_3.png"),
    (set_frame("frame_3.png", "transform_matrix", scaled_pose()), "frame_3.png"),
    (set_frame("frame_3.png", "transform_matrix", mirrored_pose()), "frame_3.png"),
    (set_frame("frame_3.png", "transform_matrix", bad_last_row()), "frame_3.png"),
    (set_frame("frame_3.png", "file_path", "images/missing.png"), "missing.png"),
    (set_frame("frame_3.png", "mask_path", "masks/gone.png"), "gone.png"),
    (lambda m: m.__setitem__("w", 20), "frame_1.png"),
])
def test_bad_nerfstudio_json_content(tmp_path: Path, change: Callable[[dict[str, Any]], None], named: str) -> None:
    write_nerfstudio(tmp_path)
    edit_json(tmp_path / "transforms.json", change)
    with pytest.raises(DatasetError, match=named.replace(".", r"\.")) as info:
        load_dataset(tmp_path)
    assert "\n" not in str(info.value)


def test_size_mismatch_names_both_sizes(tmp_path: Path) -> None:
    write_nerfstudio(tmp_path, n=3)
    Image.new("RGB", (20, 12)).save(tmp_path / "images" / "frame_2.png")
    with pytest.raises(DatasetError, match=r"frame_2\.png.*20x12.*16x12"):
        load_dataset(tmp_path)


def test_missing_folder_and_transforms(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nowhere"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="transforms"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="transforms"):
        detect_format(tmp_path)
    write_blender(tmp_path / "b", {"train": 2})
    with pytest.raises(DatasetError, match=r"transforms\.json.*not found"):
        load_dataset(tmp_path / "b", format="nerfstudio")


def test_invalid_json_names_file_and_location(tmp_path: Path) -> None:
    write_nerfstudio(tmp_path, n=2)
    (tmp_path / "transforms.json").write_text('{\n  "fl_x": 20,\n  "frames": [\n}')
    with pytest.raises(DatasetError, match=r"transforms\.json.*line 4 column 1"):
        load_dataset(tmp_path)
    (tmp_path / "transforms.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetError, match=r"transforms\.json"):
        load_dataset(tmp_path)
    (tmp_path / "transforms.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match=r"transforms\.json"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_corrupt_image_names_file(tmp_path: Path, content: bytes | str) -> None:
    write_nerfstudio(tmp_path, n=3, ext="jpg")
    path = tmp_path / "images" / "frame_2.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
    with pytest.raises(DatasetError, match=r"frame_2\.jpg"):
        load_dataset(tmp_path)


def test_bad_blender_input(tmp_path: Path) -> None:
    write_blender(tmp_path / "one", {"train": 1})
    with pytest.raises(DatasetError, match=r"transforms_train\.json.*at least 2"):
        load_dataset(tmp_path / "one")
    write_blender(tmp_path / "angle", {"train": 3})
    edit_json(tmp_path / "angle" / "transforms_train.json", lambda m: m.pop("camera_angle_x"))
    with pytest.raises(DatasetError, match=r"transforms_train\.json.*camera_angle_x"):
        load_dataset(tmp_path / "angle")
    write_blender(tmp_path / "image", {"train": 3})
    (tmp_path / "image" / "train" / "r_1.png").unlink()
    with pytest.raises(DatasetError, match=r"r_1\.png"):
        load_dataset(tmp_path / "image")


# --- conversions --------------------------------------------------------------------------------------

def load_converted(tmp_path: Path, image: Callable[[int], Image.Image], ext: str = "png",
                   **kwargs: Any) -> SceneDataset:
    ds = load_dataset(write_nerfstudio(tmp_path, n=3, image=image, ext=ext), **kwargs)
    for converted in ds.images:
        assert converted.dtype == np.uint8 and converted.shape == (H, W, 3)
    return ds


def one_warning(ds: SceneDataset, *words: str) -> None:
    matching = [w for w in ds.warnings if all(word in w for word in words)]
    assert len(matching) == 1, ds.warnings


def test_grayscale_is_converted(tmp_path: Path) -> None:
    gray = np.arange(W * H, dtype=np.uint8).reshape(H, W)
    ds = load_converted(tmp_path, lambda i: Image.fromarray(gray))
    assert (ds.images[0] == gray[..., None]).all()
    one_warning(ds, "3 images", "grayscale")


def test_grayscale_alpha_and_rgba_are_composited(tmp_path: Path) -> None:
    def image(i: int) -> Image.Image:
        if i == 0:
            return Image.fromarray(np.full((H, W, 2), (90, 0), np.uint8), "LA")
        return Image.fromarray(np.full((H, W, 4), (10, 20, 30, 255), np.uint8))

    ds = load_converted(tmp_path, image, background=(0.2, 0.4, 0.6))
    assert ds.images[0][0, 0].tolist() == [51, 102, 153]  # fully transparent: the background
    assert ds.images[1][0, 0].tolist() == [10, 20, 30]
    # every image is transparent around its object: the background is known, and the opacity kept
    assert ds.background.tolist() == [0.2, 0.4, 0.6]
    assert ds.alphas[0][0, 0] == 0 and ds.alphas[1][0, 0] == 255
    one_warning(ds, "3 images", "RGBA", "(0.2, 0.4, 0.6)")
    one_warning(ds, "1 image was grayscale")


def test_palette_is_converted(tmp_path: Path) -> None:
    palette = [0, 0, 0, 255, 0, 0, 0, 128, 255] + [0] * (256 * 3 - 9)

    def image(i: int) -> Image.Image:
        im = Image.fromarray((np.arange(W * H) % 3).astype(np.uint8).reshape(H, W), "P")
        im.putpalette(palette)
        return im

    ds = load_converted(tmp_path, image)
    assert ds.images[0][0, :3].tolist() == [[0, 0, 0], [255, 0, 0], [0, 128, 255]]
    one_warning(ds, "3 images", "palette")


def test_16bit_grayscale_is_scaled(tmp_path: Path) -> None:
    values = np.array([0, 257, 300, 32896, 65280, 65535], np.uint16)
    gray = np.resize(values, (H, W)).astype(np.uint16)
    ds = load_converted(tmp_path, lambda i: Image.fromarray(gray))
    assert (ds.images[0][..., 0] == np.round(gray / 257)).all() and ds.images[0][0, :6, 1].tolist() == [
        0, 1, 1, 128, 254, 255]
    one_warning(ds, "16-bit")
    one_warning(ds, "grayscale")


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_is_scaled_exactly(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 65536, (H, W, channels)).astype(np.uint16)
    pixels[..., -1 if channels != 3 else 0] = 65535  # opaque alpha keeps the colour exact
    pixels[0, 0, 0] = 65280  # PIL alone truncates this to 255; 65280 / 257 = 254
    (tmp_path / "images").mkdir(parents=True)
    paths = []
    for i in range(3):
        paths.append(f"images/f_{i}.png")
        write_png16(tmp_path / paths[-1], pixels)
    frames = [{"file_path": p, "transform_matrix": pose.tolist()} for p, pose in zip(paths, tilted_ring(3))]
    (tmp_path / "transforms.json").write_text(json.dumps({"fl_x": 20, "cx": 8, "cy": 6, "frames": frames}))
    ds = load_dataset(tmp_path)
    colour = pixels[..., :3] if channels >= 3 else np.repeat(pixels[..., :1], 3, -1)
    assert ds.images[0].dtype == np.uint8 and (ds.images[0] == np.round(colour / 257)).all()
    one_warning(ds, "3 images", "16-bit")


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    ds = load_converted(tmp_path, lambda i: Image.new("CMYK", (W, H), (0, 255, 255, 0)), ext="jpg")
    pixel = ds.images[0][6, 8].astype(int)
    assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60  # red
    one_warning(ds, "3 images", "CMYK")


def test_exif_orientation_is_not_applied(tmp_path: Path) -> None:
    write_nerfstudio(tmp_path, n=3, ext="jpg")
    for i in range(3):
        im = uniform_image(i)
        exif = im.getexif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
        im.save(tmp_path / "images" / f"frame_{i + 1}.jpg", exif=exif)
    with Image.open(tmp_path / "images" / "frame_1.jpg") as im:
        assert im.getexif()[0x0112] == 6
    ds = load_dataset(tmp_path)
    assert ds.images[0].shape == (H, W, 3) and ds.warnings == []


# --- the real capture ---------------------------------------------------------------------------------

@pytest.mark.skipif(not (IN2N_FACE / "transforms.json").is_file(), reason="in2n-face capture not in shared/data")
def test_real_capture_in2n_face() -> None:
    meta = json.loads((IN2N_FACE / "transforms.json").read_text())
    start = time.perf_counter()
    ds = load_dataset(IN2N_FACE)
    assert time.perf_counter() - start < 2.0
    assert len(ds.images) == 65 and ds.images[0].shape == (512, 512, 3)
    assert ds.cameras.model == "OPENCV"
    assert np.allclose(ds.cameras.distortion, [meta["k1"], meta["k2"], meta["p1"], meta["p2"]])
    assert len(ds.eval_indices) == 9 and len(ds.train_indices) == 56
    assert [p.name for p in ds.image_paths[:2]] == ["frame_00001.jpg", "frame_00002.jpg"]
    assert np.linalg.norm(ds.cameras.c2w[:, :3, 3], axis=1).mean() == pytest.approx(3.0)
    small = load_dataset(IN2N_FACE, downscale=4)
    assert small.images[0].shape == (128, 128, 3)
    assert (small.cameras.width == 128).all() and (small.cameras.height == 128).all()
    assert np.allclose(small.cameras.fx, meta["fl_x"] / 4) and np.allclose(small.cameras.fy, meta["fl_y"] / 4)
