"""Procedural demo scene: dataset round trip, exact geometry, camera poses, overwrite safety."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from engine.core.cameras import look_at
from engine.core.errors import UserInputError
from engine.scene import procedural as P

SMALL = P.DemoSceneConfig(n_views=8, image_size=32, seed=3)


def _pixel_dirs(c2w: np.ndarray, f: float, c: float, size: int) -> np.ndarray:
    """World unit directions through every pixel centre (OpenGL camera, pinhole)."""
    v, u = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    d = np.stack([(u - c) / f, -(v - c) / f, -np.ones_like(u)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return d @ c2w[:3, :3].T


def test_dataset_round_trip(tmp_path):
    out = P.write_demo_dataset(tmp_path / "demo", SMALL)
    meta = json.loads((out / "transforms.json").read_text())
    f = 0.5 * 32 / math.tan(math.radians(SMALL.fov_deg) / 2)
    assert (meta["w"], meta["h"], meta["camera_model"]) == (32, 32, "PINHOLE")
    assert meta["fl_x"] == pytest.approx(f) and meta["fl_y"] == pytest.approx(f)
    assert (meta["cx"], meta["cy"]) == (16.0, 16.0)
    assert meta[P.DEMO_KEY] == {"n_views": 8, "image_size": 32, "camera_radius": 4.0, "fov_deg": 40.0, "seed": 3}
    assert [fr["file_path"] for fr in meta["frames"]] == [f"images/frame_{i:05d}.png" for i in range(1, 9)]
    for fr in meta["frames"]:
        img = Image.open(out / fr["file_path"])
        assert img.mode == "RGB" and img.size == (32, 32)
        gt = P.render_ground_truth(np.array(fr["transform_matrix"]), meta["fl_x"], meta["fl_y"],
                                   meta["cx"], meta["cy"], meta["w"], meta["h"])
        assert np.abs(np.asarray(img) / 255.0 - gt["rgb"]).max() <= 1 / 255
    assert not list(out.rglob("*.tmp"))


def test_render_outputs_are_consistent():
    cams = P.demo_cameras(SMALL)
    gt = P.render_ground_truth(cams.c2w[0], cams.fx[0], cams.fy[0], cams.cx[0], cams.cy[0], 32, 32)
    assert gt["rgb"].shape == (32, 32, 3) and gt["rgb"].dtype == np.float32
    assert gt["rgb"].min() >= 0 and gt["rgb"].max() <= 1
    assert gt["depth"].dtype == np.float32 and gt["part"].dtype == np.int8 and gt["mask"].dtype == bool
    assert np.array_equal(gt["mask"], gt["part"] >= 0)
    assert np.array_equal(gt["mask"], np.isfinite(gt["depth"]))
    assert set(np.unique(gt["part"])) <= {-1, 0, 1, 2, 3}
    assert (gt["depth"][gt["mask"]] > 0).all()


def test_top_down_view_depths():
    size, height = 33, 4.0
    f = 0.5 * size / math.tan(math.radians(40.0) / 2)
    c2w = look_at(np.array([0.0, 0.0, height]), np.zeros(3))
    gt = P.render_ground_truth(c2w, f, f, size / 2, size / 2, size, size)
    mid = size // 2
    # the ray straight down the z axis hits the top of the sphere
    dxy2 = float(np.sum(P.SPHERE_CENTER[:2] ** 2))
    expected = height - (P.SPHERE_CENTER[2] + math.sqrt(P.SPHERE_RADIUS**2 - dxy2))
    assert gt["part"][mid, mid] == 0
    assert gt["depth"][mid, mid] == pytest.approx(expected, abs=1e-5)

    dirs = _pixel_dirs(c2w, f, size / 2, size)
    t_ground = height / -dirs[..., 2]
    at_ground = dirs[..., :2] * t_ground[..., None]
    at_top = dirs[..., :2] * ((height - 1.0) / -dirs[..., 2])[..., None]  # every object lies below z = 1
    r_ground, r_top = np.linalg.norm(at_ground, axis=-1), np.linalg.norm(at_top, axis=-1)
    # horizontal reach of the objects from the origin: sphere, box corners, cylinder
    corners = np.array([[sx, sy, 0.0] for sx in (-1, 1) for sy in (-1, 1)]) * P.BOX_HALF
    box_xy = P.BOX_CENTER[:2] + (corners @ P._BOX_R.T)[:, :2]
    reach = max(np.linalg.norm(P.SPHERE_CENTER[:2]) + P.SPHERE_RADIUS, np.linalg.norm(box_xy, axis=-1).max(),
                np.linalg.norm(P.CYLINDER_CENTER_XY) + P.CYLINDER_RADIUS)

    background = (r_ground > P.GROUND_RADIUS + 0.1) & (r_top > reach + 0.1)
    assert background.sum() > 20
    assert np.isinf(gt["depth"][background]).all() and (gt["part"][background] == -1).all()
    assert np.allclose(gt["rgb"][background], P.BACKGROUND, atol=1e-6)

    ground = (r_ground < P.GROUND_RADIUS - 0.05) & (r_top > reach + 0.05)  # between objects and rim
    assert ground.sum() > 20
    assert (gt["part"][ground] == 3).all()
    assert np.allclose(gt["depth"][ground], t_ground[ground], atol=1e-5)


def test_ray_at_sphere_centre_hits_at_radius():
    size = 31
    f = 0.5 * size / math.tan(math.radians(30.0) / 2)
    for eye in ([3.0, -2.0, 2.5], [-1.0, 3.5, 1.2], [0.3, 0.2, 5.0]):
        eye = np.array(eye)
        gt = P.render_ground_truth(look_at(eye, P.SPHERE_CENTER), f, f, size / 2, size / 2, size, size)
        mid = size // 2
        assert gt["part"][mid, mid] == 0
        expected = np.linalg.norm(eye - P.SPHERE_CENTER) - P.SPHERE_RADIUS
        assert gt["depth"][mid, mid] == pytest.approx(expected, abs=1e-5)


def test_camera_poses_valid():
    cfg = P.DemoSceneConfig()
    cams = P.demo_cameras(cfg)
    assert len(cams) == cfg.n_views
    for c2w in cams.c2w:
        r, eye = c2w[:3, :3], c2w[:3, 3]
        assert np.allclose(r.T @ r, np.eye(3), atol=1e-9) and np.linalg.det(r) == pytest.approx(1.0)
        assert np.allclose(c2w[3], [0, 0, 0, 1])
        axis = -r[:, 2]  # OpenGL cameras look down -z
        assert np.linalg.norm(np.cross(axis, -eye)) < 1e-6 and axis @ -eye > 0
        assert np.linalg.norm(eye) == pytest.approx(cfg.camera_radius)
        el = math.degrees(math.asin(eye[2] / np.linalg.norm(eye)))
        assert P.ELEVATION_RANGE_DEG[0] <= el <= P.ELEVATION_RANGE_DEG[1]
        assert r[2, 1] > 0  # world z points up in the image
    az = np.sort(np.arctan2(cams.c2w[:, 1, 3], cams.c2w[:, 0, 3]))
    assert np.diff(np.concatenate([az, az[:1] + 2 * math.pi])).max() < math.radians(30)  # all around
    assert np.array_equal(P.demo_cameras(cfg).c2w, cams.c2w)
    assert not np.allclose(P.demo_cameras(P.DemoSceneConfig(seed=1)).c2w, cams.c2w)


def test_refuses_non_demo_folder(tmp_path):
    other = tmp_path / "my_capture"
    other.mkdir()
    (other / "transforms.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(UserInputError, match="my_capture"):
        P.write_demo_dataset(other, SMALL)
    assert json.loads((other / "transforms.json").read_text()) == {"frames": []}
    assert not (other / "images").exists()


def test_overwrites_older_demo(tmp_path):
    out = tmp_path / "demo"
    P.write_demo_dataset(out, P.DemoSceneConfig(n_views=5, image_size=16))
    P.write_demo_dataset(out, P.DemoSceneConfig(n_views=3, image_size=24))
    meta = json.loads((out / "transforms.json").read_text())
    assert meta[P.DEMO_KEY]["n_views"] == 3 and meta["w"] == 24
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"frame_{i:05d}.png" for i in (1, 2, 3)]
    assert Image.open(out / "images" / "frame_00001.png").size == (24, 24)


def test_bad_config_is_user_error():
    with pytest.raises(UserInputError):
        P.DemoSceneConfig(n_views=0)
    with pytest.raises(UserInputError):
        P.DemoSceneConfig(camera_radius=1.0)


def test_blender_dataset_is_the_scene_on_a_transparent_background(tmp_path):
    from engine.scene.datasets import BLENDER_SCALE, load_dataset

    out = P.write_blender_dataset(tmp_path / "blender", n_train=3, n_test=2, image_size=40)
    rgba = np.asarray(Image.open(out / "train" / "r_0.png"))
    assert rgba.shape == (40, 40, 4)
    assert rgba[..., 3].min() == 0 and rgba[..., 3].max() == 255  # background transparent, objects opaque
    ds = load_dataset(out)
    assert ds.format == "blender" and ds.bounded
    assert list(ds.train_indices) == [0, 1, 2] and list(ds.eval_indices) == [3, 4]
    assert ds.cameras.fx[0] == pytest.approx(20 / math.tan(P.BLENDER_CAMERA_ANGLE_X / 2))
    # the loaded image is the exact render composited on white, seen from the loaded (rescaled) camera
    c2w = ds.cameras.c2w[4].copy()
    c2w[:3, 3] /= BLENDER_SCALE
    gt = P.render_ground_truth(c2w, ds.cameras.fx[4], ds.cameras.fy[4], ds.cameras.cx[4], ds.cameras.cy[4], 40, 40)
    alpha = gt["alpha"][..., None]
    expected = gt["rgb_object"] * alpha + (1 - alpha)
    assert np.abs(ds.images[4] / 255 - expected).mean() < 0.01
    assert np.abs(ds.alphas[4] / 255 - gt["alpha"]).mean() < 0.01  # kept, so other backgrounds can go behind
    assert np.linalg.norm(c2w[:3, 3]) == pytest.approx(4.0)
