"""Exports: dataset round trips, point clouds and meshes against the demo scene's exact geometry,
file formats parsed back, videos at odd sizes, and the CLI contract."""

import json
import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from engine.core.cameras import project_points
from engine.core.errors import UserInputError
from engine.core.imaging import write_frames
from engine.core.jobs import CancelToken, JobWarning, run_job
from engine.core.meshes import write_mesh
from engine.export.cameras import capture_poses, to_capture
from engine.export.dataset import export_dataset
from engine.export.mesh import MeshConfig, extract_mesh
from engine.export.pointcloud import PointCloudConfig, point_cloud_job, surface_depth
from engine.scene import procedural as demo
from engine.scene.datasets import load_dataset

REPO = Path(__file__).resolve().parents[1]
GROUND_THICKNESS = 0.1  # the analytic stand-in gives the demo's ground disc this thickness below z = 0


# --- ground truth: the demo scene as a signed distance (capture frame) ---------------------------------

def _intersection_sdf(d: np.ndarray) -> np.ndarray:
    """Signed distance to the intersection of axis-aligned slabs, from signed distances (..., k) to each."""
    return np.linalg.norm(np.maximum(d, 0), axis=-1) + np.minimum(d.max(-1), 0)


def part_distances(p: np.ndarray) -> np.ndarray:
    """Signed distance (N, 4) from capture-frame points to the sphere, box, cylinder and ground slab."""
    sphere = np.linalg.norm(p - demo.SPHERE_CENTER, axis=-1) - demo.SPHERE_RADIUS
    a = math.radians(demo.BOX_YAW_DEG)
    box_to_world = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    box = _intersection_sdf(np.abs((p - demo.BOX_CENTER) @ box_to_world) - demo.BOX_HALF)
    radial = np.linalg.norm(p[:, :2] - demo.CYLINDER_CENTER_XY, axis=-1) - demo.CYLINDER_RADIUS
    height = np.abs(p[:, 2] - demo.CYLINDER_HEIGHT / 2) - demo.CYLINDER_HEIGHT / 2
    cylinder = _intersection_sdf(np.stack([radial, height], -1))
    disc = np.stack([np.linalg.norm(p[:, :2], axis=-1) - demo.GROUND_RADIUS,
                     np.abs(p[:, 2] + GROUND_THICKNESS / 2) - GROUND_THICKNESS / 2], -1)
    ground = _intersection_sdf(disc)
    return np.stack([sphere, box, cylinder, ground], -1)


def surface_distance(p: np.ndarray) -> np.ndarray:
    """Unsigned distance from capture-frame points to the scene's surface."""
    return np.abs(part_distances(p).min(-1))


PART_COLOURS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]])


class AnalyticField:
    """The demo scene as an exact field: dense inside the objects, each part one flat colour."""

    def __init__(self, dataset, sigma: float = 1e4) -> None:
        self.dataset, self.sigma = dataset, sigma

    def geometry(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = part_distances(to_capture(points.numpy(), self.dataset))
        inside = d.min(-1) < 0
        colour = PART_COLOURS[d.argmin(-1)]
        return torch.tensor(inside * self.sigma, dtype=torch.float32), torch.tensor(colour, dtype=torch.float32)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.geometry(points)[0]

    def colour(self, geo: torch.Tensor, dirs: torch.Tensor, image_idx) -> torch.Tensor:
        return geo


class AnalyticModel:
    """Stands in for a trained model: the exact field, no occupancy grid, a renderer that shows the
    colour of the first surface each ray meets."""

    training = False

    def __init__(self, dataset, step: float = 1 / 128) -> None:
        self.field, self.step = AnalyticField(dataset), step

    def render_rays(self, origins, dirs, image_idx, background=None, step_scale=1.0):
        opacity, depth = surface_depth(self, origins, dirs, self.step)
        hit = ~depth.isnan()
        _, colour = self.field.geometry(origins + (depth.nan_to_num(0) + 1e-3)[:, None] * dirs)
        rgb = torch.where(hit[:, None], colour, torch.zeros(3) if background is None else background)
        return {"rgb": rgb, "depth": depth.nan_to_num(0), "median_depth": depth.nan_to_num(torch.inf),
                "accumulation": opacity}

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


def ground_truth_colours(points: np.ndarray, dataset, views: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the capture-frame points that some of the first training cameras see, and their
    exact colours (0-255) there."""
    poses, cams = capture_poses(dataset), dataset.cameras
    seen, index, colours = np.zeros(len(points), bool), [], []
    for f in dataset.train_indices[:views]:
        w, h = int(cams.width[f]), int(cams.height[f])
        gt = demo.render_ground_truth(poses[f], cams.fx[f], cams.fy[f], cams.cx[f], cams.cy[f], w, h)
        uv = project_points(torch.tensor(points), torch.tensor(poses[f]), cams.fx[f], cams.fy[f], cams.cx[f],
                            cams.cy[f]).numpy()
        u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = ~seen & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        distance = np.linalg.norm(points - poses[f][:3, 3], axis=-1)
        k = np.nonzero(inside)[0]
        k = k[np.abs(gt["depth"][v[k], u[k]] - distance[k]) < 0.05]  # the first thing its pixel sees
        seen[k] = True
        index.append(k)
        colours.append(gt["rgb"][v[k], u[k]] * 255)
    return np.concatenate(index), np.concatenate(colours)


def random_scene_points(n: int = 20000) -> np.ndarray:
    """Uniform points over the scene's extent: the distance a guess would score."""
    rng = np.random.default_rng(0)
    return np.column_stack([rng.uniform(-1.4, 1.4, (n, 2)), rng.uniform(0, 1.0, n)])


# --- readers written from the format specifications -------------------------------------------------

def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    counts = {line.split()[1]: int(line.split()[2]) for line in header if line.startswith("element")}
    vertex = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    assert [line for line in header if line.startswith("property")][:6] == [
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue"]
    v = np.frombuffer(data, vertex, counts["vertex"], end)
    faces = None
    if "face" in counts:
        f = np.frombuffer(data, np.dtype([("n", "u1"), ("i", "<i4", (3,))]), counts["face"],
                          end + vertex.itemsize * counts["vertex"])
        assert (f["n"] == 3).all()
        faces = f["i"].astype(np.int64)
        assert len(data) == end + vertex.itemsize * counts["vertex"] + f.itemsize * counts["face"]
    xyz = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float64)
    return xyz, np.stack([v["r"], v["g"], v["b"]], -1), faces


def read_glb(path: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data)) and length % 4 == 0
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    gltf = json.loads(data[20:20 + json_len])
    bin_len, bin_type = struct.unpack_from("<II", data, 20 + json_len)
    assert bin_type == 0x004E4942 and bin_len % 4 == 0 and 28 + json_len + bin_len == len(data)
    blob = data[28 + json_len:]
    assert gltf["buffers"][0]["byteLength"] <= bin_len

    def accessor(k: int, dtype: str, width: int) -> np.ndarray:
        acc = gltf["accessors"][k]
        view = gltf["bufferViews"][acc["bufferView"]]
        assert view["byteOffset"] % 4 == 0
        count = acc["count"] * width
        return np.frombuffer(blob, dtype, count, view["byteOffset"] + acc.get("byteOffset", 0)).reshape(-1, width)

    prim = gltf["meshes"][0]["primitives"][0]
    assert prim["mode"] == 4
    positions = accessor(prim["attributes"]["POSITION"], "<f4", 3)
    colours = accessor(prim["attributes"]["COLOR_0"], "<f4", 3)
    assert gltf["accessors"][prim["indices"]]["type"] == "SCALAR"  # count = number of indices
    indices = accessor(prim["indices"], "<u4", 1).reshape(-1, 3)
    return gltf, positions, colours, indices


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [line.split() for line in path.read_text().splitlines() if line and not line.startswith("#")]
    v = np.array([[float(x) for x in r[1:]] for r in rows if r[0] == "v"])
    f = np.array([[int(x) for x in r[1:]] for r in rows if r[0] == "f"]) - 1
    return v[:, :3], v[:, 3:], f


def _finish(gen):
    """Drive a generator that returns a value (extract_mesh) to the end."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


# --- dataset and cameras ---------------------------------------------------------------------------

def _cameras_equal(a, b, atol=1e-9):
    assert a.model == b.model
    np.testing.assert_allclose(a.c2w, b.c2w, atol=atol)
    for key in ("fx", "fy", "cx", "cy", "width", "height", "distortion"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), atol=atol, err_msg=key)


def _distorted_capture(tiny_demo: Path, root: Path) -> Path:
    """The demo capture relabelled OPENCV with distortion, a per-frame focal length and masks."""
    shutil.copytree(tiny_demo / "images", root / "images")
    meta = json.loads((tiny_demo / "transforms.json").read_text())
    meta.update(camera_model="OPENCV", k1=0.01, k2=-0.002, p1=0.0005, p2=-0.0003)
    meta["frames"][3]["fl_x"] = meta["fl_x"] * 1.01
    (root / "masks").mkdir()
    for i, frame in enumerate(meta["frames"][:4]):
        mask = np.zeros((48, 48), np.uint8)
        mask[i:, : 40 - i] = 255
        Image.fromarray(mask).save(root / "masks" / f"m{i}.png")
        frame["mask_path"] = f"masks/m{i}.png"
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def test_dataset_export_reloads_with_the_same_cameras_images_and_masks(tiny_demo, tmp_path):
    original = load_dataset(_distorted_capture(tiny_demo, tmp_path / "capture"))
    edited = [np.ascontiguousarray(255 - image) for image in original.images]  # the hook: images to write
    run_job(export_dataset(original, edited, tmp_path / "export"), lambda e: None)
    again = load_dataset(tmp_path / "export")
    _cameras_equal(again.cameras, original.cameras)
    np.testing.assert_allclose(again.world_from_capture, original.world_from_capture, atol=1e-9)
    np.testing.assert_allclose(capture_poses(again), capture_poses(original), atol=1e-9)
    assert [p.name for p in again.image_paths] == [p.name for p in original.image_paths]
    assert all(np.array_equal(a, b) for a, b in zip(again.images, edited))
    assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(again.masks, original.masks))
    meta = json.loads((tmp_path / "export" / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and meta["k1"] == 0.01
    assert meta["frames"][3]["fl_x"] == 1.01 * meta["frames"][2]["fl_x"]  # per-frame where frames differ
    # poses in the capture frame: exactly those of the capture's own file
    source = json.loads((tmp_path / "capture" / "transforms.json").read_text())["frames"]
    np.testing.assert_allclose([f["transform_matrix"] for f in meta["frames"]],
                               [f["transform_matrix"] for f in source], atol=1e-9)


def test_dataset_export_replaces_only_its_own_exports_and_leaves_them_whole_when_cancelled(tiny_demo, tmp_path):
    dataset = load_dataset(tiny_demo)
    out = tmp_path / "export"
    run_job(export_dataset(dataset, dataset.images, out), lambda e: None)
    cancel = CancelToken()
    cancel.cancel()
    dark = [np.zeros_like(image) for image in dataset.images]
    events = []
    run_job(export_dataset(dataset, dark, out, cancel), events.append)
    assert any(isinstance(e, JobWarning) for e in events)
    assert np.array_equal(load_dataset(out).images[0], dataset.images[0])  # the earlier export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary folder left behind
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not a Retouch3D dataset export"):
        next(export_dataset(dataset, dataset.images, tmp_path / "other"))
    with pytest.raises(UserInputError, match="expected uint8"):
        next(export_dataset(dataset, [image[:-1] for image in dataset.images], out))


def test_blender_export_keeps_frame_order_and_capture_poses(tmp_path):
    root = tmp_path / "blender"
    frames = {}
    for split, angles in (("train", (0, 90, 180)), ("test", (45, 270))):
        (root / split).mkdir(parents=True)
        frames[split] = []
        for i, deg in enumerate(angles):
            a = math.radians(deg)
            c2w = np.eye(4)
            c2w[:3, 3] = [2 * math.cos(a), 2 * math.sin(a), 0.5]
            Image.fromarray(np.full((6, 8, 4), 40 * i + 60, np.uint8)).save(root / split / f"r_{i}.png")
            frames[split].append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w.tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames[split]}))
    original = load_dataset(root)
    run_job(export_dataset(original, original.images, tmp_path / "export"), lambda e: None)
    again = load_dataset(tmp_path / "export")
    # train/r_0 and test/r_0 would collide and reorder under one folder: frame numbers keep them apart
    assert [p.name for p in again.image_paths] == ["00000_r_0.png", "00001_r_1.png", "00002_r_2.png",
                                                   "00003_r_0.png", "00004_r_1.png"]
    np.testing.assert_allclose(capture_poses(again), capture_poses(original), atol=1e-9)
    assert all(np.array_equal(a, b) for a, b in zip(again.images, original.images))


# --- point clouds and meshes against the exact scene -----------------------------------------------

def test_point_cloud_of_an_exact_field_lies_on_the_surface_with_its_colours(tiny_demo, tmp_path):
    dataset = load_dataset(tiny_demo)
    cfg = PointCloudConfig(views=4, step=1 / 128)
    run_job(point_cloud_job(AnalyticModel(dataset), dataset, tmp_path / "pc.ply", cfg), lambda e: None)
    xyz, rgb, faces = read_ply(tmp_path / "pc.ply")
    assert faces is None
    # one point per pixel that sees the scene inside the box, less a few outliers at silhouettes, plus a
    # few where the ground slab's rim shows (the demo's ground is a disc without thickness)
    frames = np.round(np.linspace(0, len(dataset.train_indices) - 1, 4)).astype(int)
    poses, cams, expected = capture_poses(dataset), dataset.cameras, 0
    for f in dataset.train_indices[frames]:
        gt = demo.render_ground_truth(poses[f], cams.fx[f], cams.fy[f], cams.cx[f], cams.cy[f], 48, 48)
        v, u = np.nonzero(gt["mask"])
        rays = np.stack([(u + 0.5 - cams.cx[f]) / cams.fx[f], -(v + 0.5 - cams.cy[f]) / cams.fy[f],
                         -np.ones_like(u)], -1)
        rays = rays / np.linalg.norm(rays, axis=-1, keepdims=True) @ poses[f][:3, :3].T
        hits = poses[f][:3, 3] + gt["depth"][v, u, None] * rays
        expected += int((np.abs(hits @ dataset.world_from_capture[:3, :3].T
                                + dataset.world_from_capture[:3, 3]).max(-1) <= 1).sum())
    assert 0.93 * expected <= len(xyz) <= 1.03 * expected
    normalised = np.abs(xyz @ dataset.world_from_capture[:3, :3].T + dataset.world_from_capture[:3, 3]).max(-1)
    assert normalised.max() <= 1 + 1e-5
    # within one sample step of the surface, except where the ground slab is cut by the box's side
    step_in_capture = (1 / 128) / dataset.scale
    assert surface_distance(xyz[normalised < 0.99]).max() <= 1.01 * step_in_capture
    part = part_distances(xyz).argmin(-1)
    assert np.mean(np.all(rgb == np.round(PART_COLOURS[part] * 255), -1)) > 0.98
    assert set(np.unique(part)) == {0, 1, 2, 3}


def test_mesh_of_an_exact_field_in_every_format(tiny_demo, tmp_path):
    dataset = load_dataset(tiny_demo)
    res = 48
    mesh = _finish(extract_mesh(AnalyticModel(dataset), dataset, MeshConfig(resolution=res, threshold=5e3)))
    voxel = 2 / (res - 1) / dataset.scale
    d = surface_distance(mesh.vertices)
    assert d.max() <= voxel and np.median(d) < 0.25 * voxel
    # counter-clockwise seen from outside: face normals point up the distance field
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    normal, centre = np.cross(b - a, c - a), (a + b + c) / 3
    eps = 1e-4
    grad = np.stack([part_distances(centre + eps * e).min(-1) - part_distances(centre - eps * e).min(-1)
                     for e in np.eye(3)], -1)
    assert np.mean(np.einsum("ij,ij->i", normal, grad) > 0) > 0.98
    part = part_distances(mesh.vertices).argmin(-1)
    assert np.mean(np.all(mesh.colours == np.round(PART_COLOURS[part] * 255), -1)) > 0.9

    write_mesh(mesh, tmp_path / "m.glb")
    gltf, positions, colours, indices = read_glb(tmp_path / "m.glb")
    np.testing.assert_allclose(positions, mesh.vertices, atol=1e-5)
    np.testing.assert_array_equal(indices, mesh.faces)
    np.testing.assert_allclose(gltf["accessors"][0]["min"], positions.min(0))
    np.testing.assert_allclose(gltf["accessors"][0]["max"], positions.max(0))
    srgb = mesh.colours / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(colours, linear, atol=1e-6)

    write_mesh(mesh, tmp_path / "m.ply")
    xyz, rgb, faces = read_ply(tmp_path / "m.ply")
    np.testing.assert_allclose(xyz, mesh.vertices, atol=1e-5)
    np.testing.assert_array_equal(rgb, mesh.colours)
    np.testing.assert_array_equal(faces, mesh.faces)

    write_mesh(mesh, tmp_path / "m.obj")
    xyz, rgb, faces = read_obj(tmp_path / "m.obj")
    np.testing.assert_allclose(xyz, mesh.vertices, atol=1e-4)
    np.testing.assert_allclose(rgb * 255, mesh.colours, atol=0.2)
    np.testing.assert_array_equal(faces, mesh.faces)


# --- videos ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(33, 45), (32, 48)])
def test_videos_keep_the_exact_frame_size(tmp_path, size):
    rng = np.random.default_rng(1)
    frames = [np.repeat(rng.integers(0, 256, (*size, 1), dtype=np.uint8), 3, -1) for _ in range(5)]
    write_frames(frames, tmp_path / "v.mp4", fps=10)
    video = imageio.mimread(tmp_path / "v.mp4")
    assert len(video) == 5 and all(frame.shape == (*size, 3) for frame in video)
    assert np.abs(video[2].astype(int) - frames[2]).mean() < 12  # the same picture, not a resampled one


# --- a trained project through the CLI -------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def project(trained_tiny) -> Path:
    """The briefly trained tiny field (tests that change it work on a copy)."""
    return trained_tiny


def test_cli_point_cloud_of_a_trained_field(project, tiny_demo, tmp_path):
    proc = _cli("export", "--project", str(project), "--what", "pointcloud", "--out", str(tmp_path / "pc.ply"),
                "--views", "6", "--min-accumulation", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote point cloud: {tmp_path / 'pc.ply'}" in proc.stdout
    xyz, rgb, _ = read_ply(tmp_path / "pc.ply")
    assert len(xyz) > 500
    guess = np.median(surface_distance(random_scene_points()))
    assert np.median(surface_distance(xyz)) < 0.6 * guess
    # plausible colours: each channel follows the scene's exact colours, on the whole as bright as they are
    seen, truth = ground_truth_colours(xyz, load_dataset(tiny_demo))
    assert len(seen) > 200
    ours = rgb[seen].astype(float)
    assert all(np.corrcoef(ours[:, k], truth[:, k])[0, 1] > 0.15 for k in range(3))
    np.testing.assert_allclose(ours.mean(0), truth.mean(0), atol=40)


def test_cli_mesh_of_a_trained_field_in_all_formats(project, tmp_path):
    for suffix in (".glb", ".ply", ".obj"):
        proc = _cli("export", "--project", str(project), "--what", "mesh", "--out", str(tmp_path / f"m{suffix}"),
                    "--resolution", "48", "--threshold", "2")
        assert proc.returncode == 0, proc.stderr
    _, positions, _, indices = read_glb(tmp_path / "m.glb")
    xyz, _, faces = read_ply(tmp_path / "m.ply")
    obj_xyz, _, obj_faces = read_obj(tmp_path / "m.obj")
    counts = {(len(positions), len(indices)), (len(xyz), len(faces)), (len(obj_xyz), len(obj_faces))}
    assert len(counts) == 1 and positions.shape[0] > 100
    assert indices.max() < len(positions)
    guess = np.median(surface_distance(random_scene_points()))
    assert np.median(surface_distance(xyz)) < 0.6 * guess


def test_cli_dataset_cameras_and_video_exports(project, tiny_demo, tmp_path):
    proc = _cli("export", "--project", str(project), "--what", "dataset", "--out", str(tmp_path / "ds"))
    assert proc.returncode == 0, proc.stderr
    original, again = load_dataset(tiny_demo), load_dataset(tmp_path / "ds")
    _cameras_equal(again.cameras, original.cameras)
    assert all(np.array_equal(a, b) for a, b in zip(again.images, original.images))

    proc = _cli("export", "--project", str(project), "--what", "cameras", "--out", str(tmp_path / "cams.json"))
    assert proc.returncode == 0, proc.stderr
    beside = tmp_path / "capture"
    shutil.copytree(tiny_demo / "images", beside / "images")
    shutil.copyfile(tmp_path / "cams.json", beside / "transforms.json")
    _cameras_equal(load_dataset(beside).cameras, original.cameras)

    proc = _cli("export", "--project", str(project), "--what", "video", "--out", str(tmp_path / "v.mp4"),
                "--orbit", "3", "--size", "47")
    assert proc.returncode == 0, proc.stderr
    video = imageio.mimread(tmp_path / "v.mp4")
    assert len(video) == 3 and video[0].shape == (47, 47, 3)


def test_cli_rejects_bad_input_in_one_line(project, tmp_path, capsys):
    from engine.cli import main

    untrained = tmp_path / "untrained"
    shutil.copytree(project, untrained, ignore=shutil.ignore_patterns("checkpoints"))
    cases = [
        (["--project", str(untrained), "--what", "mesh", "--out", str(tmp_path / "m.glb")], "never trained"),
        (["--project", str(project), "--what", "hologram", "--out", str(tmp_path / "x")], "unknown export"),
        (["--project", str(project), "--what", "mesh", "--out", str(tmp_path / "m.stl")], ".glb or .ply or .obj"),
        (["--project", str(project), "--what", "pointcloud", "--out", str(tmp_path / "p.xyz")], ".ply"),
        (["--project", str(project), "--what", "dataset", "--out", str(tmp_path / "d.zip")], "a folder"),
        (["--project", str(project), "--what", "video", "--out", str(tmp_path / "v.mp4")], "--orbit N"),
        (["--project", str(project), "--what", "mesh", "--out", str(tmp_path / "m.glb"), "--threshold", "1e6",
          "--resolution", "16"],
         "no surface at density"),
    ]
    for args, message in cases:
        assert main(["export", *args]) == 2, args
        err = capsys.readouterr().err.splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], (args, err)
        assert not any(line.startswith("Traceback") for line in err)
    assert not list(tmp_path.glob("m.*")) and not list(tmp_path.glob(".*"))  # nothing half-written
    proc = _cli("export", "--project", str(tmp_path / "missing"), "--what", "mesh", "--out", str(tmp_path / "m.glb"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "not a Retouch3D project" in proc.stderr


def test_dataset_export_writes_the_current_edits(project, tiny_demo, tmp_path):
    from engine.editing.store import EditStore
    from engine.export import ExportConfig, export_job

    copy = tmp_path / "project"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("checkpoints"))  # needs no trained field
    original = load_dataset(tiny_demo)
    edited = np.ascontiguousarray(original.images[5][:, ::-1])
    EditStore(copy).add(original.image_paths[5].stem, edited, instruction="mirror it")
    run_job(export_job(ExportConfig(project=str(copy), what="dataset", out=str(tmp_path / "ds"))), lambda e: None)
    again = load_dataset(tmp_path / "ds")
    assert np.array_equal(again.images[5], edited)
    assert all(np.array_equal(again.images[i], original.images[i]) for i in range(len(original.images)) if i != 5)


def test_export_never_loads_a_diffusion_model(project, tmp_path):
    code = ("import sys; from engine.cli import main; "
            f"rc = main(['export', '--project', {str(project)!r}, '--what', 'mesh', '--out', "
            f"{str(tmp_path / 'm.ply')!r}, '--resolution', '16', '--threshold', '1']); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('diffusers', 'transformers')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.split("\n")[-2] == "0 []", proc.stdout + proc.stderr
