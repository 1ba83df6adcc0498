"""The GUI-free viewer core: the orbit camera's geometry, sharing a field with a training job,
frames in every mode, picking a surface point, scene/capture coordinates, and the project
manifest's backup and error messages.  No Qt; everything runs in well under a second or two."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
import torch

from engine.core.cameras import project_points
from engine.core.errors import UserInputError
from engine.core.imaging import colorize_depth
from engine.core.project import MANIFEST_BACKUP_NAME, MANIFEST_NAME, Project
from engine.scene.orbit import WORLD_UP, OrbitCamera
from engine.scene.picking import capture_to_scene, scene_to_capture
from engine.scene.viewer import FieldView, LiveField, ViewFrame, home_camera


def azimuth_deg(camera: OrbitCamera) -> float:
    back = camera.rotation[:, 2]
    return math.degrees(math.atan2(back[1], back[0]))


def elevation_deg(camera: OrbitCamera) -> float:
    return math.degrees(math.asin(np.clip(camera.rotation[2, 2], -1, 1)))


def pixel_of(camera: OrbitCamera, width: int, height: int, point: np.ndarray) -> np.ndarray:
    """Pixel (u, v) of a world point in ``camera``'s ``width`` x ``height`` view, via the engine's projection."""
    cams = camera.cameras(width, height)
    uv = project_points(torch.tensor(np.asarray(point, float)[None], dtype=torch.float64),
                        torch.tensor(cams.c2w[0], dtype=torch.float64),
                        float(cams.fx[0]), float(cams.fy[0]), float(cams.cx[0]), float(cams.cy[0]))
    return uv[0].numpy()


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def assert_rigid(camera: OrbitCamera) -> None:
    c2w = camera.c2w()
    rot = c2w[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
    np.testing.assert_allclose(c2w[:3, 3], camera.target + camera.distance * rot[:, 2], atol=1e-12)


# ---- OrbitCamera -------------------------------------------------------------------------------


def test_c2w_is_a_rigid_transform_with_the_eye_behind_the_target() -> None:
    cam = OrbitCamera(target=np.array([0.3, -0.2, 0.1]), distance=2.5,
                      rotation=OrbitCamera.rotation_from_angles(-70.0, 40.0))
    assert_rigid(cam)
    # the camera looks down its -z axis, straight at the target
    to_target = cam.target - cam.eye
    np.testing.assert_allclose(to_target / np.linalg.norm(to_target), -cam.rotation[:, 2], atol=1e-12)
    assert np.linalg.norm(to_target) == pytest.approx(2.5)
    np.testing.assert_allclose(cam.view_matrix() @ cam.c2w(), np.eye(4), atol=1e-12)


@pytest.mark.parametrize("dx", [1.0, 37.0, -120.0])
def test_horizontal_orbit_turns_about_world_up_by_the_set_rate(dx: float) -> None:
    cam = OrbitCamera(target=np.array([0.5, 0.2, -0.3]), distance=3.0,
                      rotation=OrbitCamera.rotation_from_angles(20.0, 35.0))
    target, distance, elevation, azimuth = cam.target.copy(), cam.distance, elevation_deg(cam), azimuth_deg(cam)
    cam.orbit(dx, 0)
    assert_rigid(cam)
    np.testing.assert_allclose(cam.target, target)
    assert cam.distance == distance
    assert elevation_deg(cam) == pytest.approx(elevation, abs=1e-9)
    # dragging right turns the scene with the mouse: the camera swings the other way round the up axis
    turned = (azimuth_deg(cam) - azimuth + 180) % 360 - 180
    assert turned == pytest.approx(-OrbitCamera.ORBIT_DEG_PER_PIXEL * dx, abs=1e-9)
    assert cam.rotation[:, 0] @ WORLD_UP == pytest.approx(0.0, abs=1e-12)  # no roll is introduced


def test_vertical_orbit_changes_elevation_and_keeps_the_target() -> None:
    cam = OrbitCamera(rotation=OrbitCamera.rotation_from_angles(0.0, 10.0))
    cam.orbit(0, -50)  # mouse up by 50 px: the camera goes down by 15 degrees
    assert elevation_deg(cam) == pytest.approx(10.0 - 50 * OrbitCamera.ORBIT_DEG_PER_PIXEL, abs=1e-9)
    assert azimuth_deg(cam) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(cam.target, 0)
    assert cam.distance == 4.0


def assert_upright(cam: OrbitCamera) -> None:
    assert_rigid(cam)
    assert abs(-cam.rotation[:, 2] @ WORLD_UP) < 1.0
    assert cam.rotation[:, 1] @ WORLD_UP >= 0.0  # the image's up never points down: no flip


def test_dragging_up_and_down_in_small_steps_never_flips_over_the_poles() -> None:
    cam = OrbitCamera()
    rng = np.random.default_rng(1)
    for dy in [30.0] * 30 + [-30.0] * 60 + list(rng.uniform(-30, 30, 200)):
        cam.orbit(float(rng.uniform(-30, 30)), float(dy))
        assert_upright(cam)
    assert cam.distance == 4.0
    np.testing.assert_allclose(cam.target, 0)


@pytest.mark.parametrize("dy", [250.0, -250.0, 450.0, 600.0, -600.0, 1000.0])
def test_one_large_vertical_move_never_flips_over_the_poles(dy: float) -> None:
    """A fast flick while the UI is busy arrives as one large mouse move; it must stop at the pole too."""
    cam = OrbitCamera()  # elevation 25 degrees
    cam.orbit(0, dy)
    assert_upright(cam)


def test_many_large_vertical_drags_never_flip_over_the_poles() -> None:
    cam = OrbitCamera()
    rng = np.random.default_rng(2)
    for dy in rng.uniform(-400, 400, 100):
        cam.orbit(float(rng.uniform(-50, 50)), float(dy))
        assert_upright(cam)


@pytest.mark.parametrize("dx, dy", [(10.0, 0.0), (0.0, -7.0), (-23.5, 41.0)])
def test_pan_moves_the_target_point_with_the_mouse(dx: float, dy: float) -> None:
    width, height = 320, 240
    cam = OrbitCamera(target=np.array([0.2, 0.1, -0.4]), distance=3.0,
                      rotation=OrbitCamera.rotation_from_angles(110.0, -20.0))
    point = cam.target.copy()
    rotation, distance = cam.rotation.copy(), cam.distance
    before = pixel_of(cam, width, height, point)
    np.testing.assert_allclose(before, [width / 2, height / 2], atol=1e-9)
    cam.pan(dx, dy, height)
    after = pixel_of(cam, width, height, point)
    np.testing.assert_allclose(after - before, [dx, dy], rtol=1e-6, atol=1e-9)  # image y runs down
    np.testing.assert_allclose(cam.rotation, rotation)
    assert cam.distance == distance
    # the target stays in the camera's image plane: its depth does not change
    assert (cam.target - point) @ cam.rotation[:, 2] == pytest.approx(0.0, abs=1e-12)


def test_zoom_scales_the_distance_per_step_and_keeps_the_target() -> None:
    cam = OrbitCamera(distance=2.0)
    cam.zoom(1)
    assert cam.distance == pytest.approx(2.0 * OrbitCamera.ZOOM_PER_STEP)
    cam.zoom(-1)
    assert cam.distance == pytest.approx(2.0)
    cam.zoom(3)
    assert cam.distance == pytest.approx(2.0 * OrbitCamera.ZOOM_PER_STEP ** 3)
    cam.zoom(10_000)
    assert cam.distance == OrbitCamera.MIN_DISTANCE
    np.testing.assert_allclose(cam.target, 0)


@pytest.mark.parametrize("seed", range(5))
def test_looking_at_reproduces_any_pose_including_roll(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c2w = np.eye(4)
    c2w[:3, :3] = random_rotation(rng)
    c2w[:3, 3] = rng.normal(size=3) * 3
    forward = -c2w[:3, 2]
    pivot = c2w[:3, 3] + forward * rng.uniform(0.5, 5) + rng.normal(size=3) * 0.3
    cam = OrbitCamera.looking_at(c2w, 42.0, pivot)
    np.testing.assert_allclose(cam.c2w(), c2w, atol=1e-12)
    assert cam.fov_y_deg == 42.0
    # it orbits about the point on its axis nearest the pivot
    assert cam.distance == pytest.approx((pivot - c2w[:3, 3]) @ forward)
    behind = OrbitCamera.looking_at(c2w, 42.0, c2w[:3, 3] - forward)  # a pivot behind still gives the pose
    np.testing.assert_allclose(behind.c2w(), c2w, atol=1e-12)
    assert behind.distance > 0


def test_cameras_have_square_pixels_and_a_centred_principal_point() -> None:
    cam = OrbitCamera(fov_y_deg=60.0)
    cams = cam.cameras(200, 100)
    focal = 100 / 2 / math.tan(math.radians(30.0))
    assert len(cams) == 1 and cams.model == "PINHOLE"
    assert cams.fx[0] == pytest.approx(focal) and cams.fy[0] == pytest.approx(focal)
    assert (cams.cx[0], cams.cy[0]) == (100.0, 50.0)
    assert (int(cams.width[0]), int(cams.height[0])) == (200, 100)
    np.testing.assert_allclose(cams.c2w[0], cam.c2w())


def ndc_of(cam: OrbitCamera, aspect: float, point: np.ndarray) -> np.ndarray:
    clip = cam.projection(aspect) @ cam.view_matrix() @ np.append(point, 1.0)
    return clip[:3] / clip[3]


def test_projection_matches_the_pixel_cameras() -> None:
    width, height = 300, 200
    cam = OrbitCamera(target=np.array([0.1, 0.2, 0.3]), distance=2.0,
                      rotation=OrbitCamera.rotation_from_angles(45.0, 30.0), fov_y_deg=55.0)
    forward = -cam.rotation[:, 2]
    for depth in (0.05, 1.0, 2.0, 50.0):
        ndc = ndc_of(cam, width / height, cam.eye + forward * depth)
        assert ndc[:2] == pytest.approx([0.0, 0.0], abs=1e-12)
        assert -1 < ndc[2] < 1
    assert ndc_of(cam, width / height, cam.eye + forward * 0.05)[2] < ndc_of(cam, width / height, cam.eye + forward)[2]

    off_axis = cam.target + 0.4 * cam.rotation[:, 0] - 0.25 * cam.rotation[:, 1] + 0.3 * cam.rotation[:, 2]
    ndc = ndc_of(cam, width / height, off_axis)
    from_gl = np.array([(ndc[0] + 1) / 2 * width, (1 - ndc[1]) / 2 * height])  # NDC y up, pixel rows down
    np.testing.assert_allclose(from_gl, pixel_of(cam, width, height, off_axis), rtol=1e-9)


# ---- LiveField ---------------------------------------------------------------------------------


class Occupancy:
    """Counts who is inside the shared model at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inside = 0
        self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.inside -= 1


def test_a_viewer_goes_before_the_next_step_and_training_goes_on_between_frames() -> None:
    live = LiveField()
    occupancy = Occupancy()
    stop = threading.Event()
    steps = []

    def job() -> None:
        while not stop.is_set():
            with live.step(), occupancy:
                time.sleep(0.02)
            steps.append(live.version)

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    try:
        waits, versions = [], []
        time.sleep(0.05)
        for _ in range(20):
            asked = time.perf_counter()
            with live.viewing(), occupancy:
                waits.append(time.perf_counter() - asked)
                versions.append(live.version)
                time.sleep(0.002)
            time.sleep(0.01)
        assert max(waits) < 0.1, f"a viewer waited {max(waits):.3f} s for a frame"

        paused_at = live.version
        time.sleep(0.2)  # the viewer rests: steps run back to back
        assert live.version >= paused_at + 3
    finally:
        stop.set()
        thread.join(2)
    assert not thread.is_alive()
    assert occupancy.most == 1, "a step and a frame used the model at the same time"
    assert versions == sorted(versions) and versions[-1] > versions[0]  # the viewer sees training progress
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # every step bumps the version


class SteppingJob:
    """A job thread taking ``step_s`` steps on a LiveField until stopped; counts its steps."""

    def __init__(self, live: LiveField, step_s: float, occupancy: Occupancy | None = None) -> None:
        self.live, self.step_s, self.occupancy = live, step_s, occupancy or Occupancy()
        self.steps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.live.step(), self.occupancy:
                time.sleep(self.step_s)
            self.steps += 1

    def __enter__(self) -> "SteppingJob":
        self._thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        assert not self._thread.is_alive()


def test_frames_nobody_asked_for_take_a_small_share_of_a_training_job() -> None:
    """The refresh after training steps must not slow training down much (it took 86 % of it)."""
    live = LiveField(paced_share=0.1)
    occupancy = Occupancy()
    with SteppingJob(live, 0.01, occupancy) as job:
        began, viewing = time.perf_counter(), 0.0
        while time.perf_counter() - began < 1.5:
            with live.viewing(paced=True), occupancy:
                time.sleep(0.02)
                viewing += 0.02
        elapsed = time.perf_counter() - began
    assert viewing / elapsed <= 0.15, f"paced frames took {100 * viewing / elapsed:.0f} % of the time"
    assert viewing > 0.05, "paced frames never got a turn"
    assert job.steps * 0.01 / elapsed >= 0.75
    assert occupancy.most == 1


def test_paced_frames_go_at_once_when_no_job_steps_or_the_user_moves_the_camera() -> None:
    live = LiveField(paced_share=0.1)
    began = time.perf_counter()
    for _ in range(10):
        with live.viewing(paced=True):
            time.sleep(0.01)
    assert time.perf_counter() - began < 0.3, "an idle field's frames were held back"

    with SteppingJob(live, 0.01):
        with live.viewing(paced=True):
            time.sleep(0.05)  # the next paced frame would wait 0.45 s ...
        live.hold(1.0)  # ... but the user moves the camera now
        asked = time.perf_counter()
        with live.viewing(paced=True):
            waited = time.perf_counter() - asked
    assert waited < 0.1, f"a frame waited {waited:.2f} s while the user moved the camera"


def test_a_frame_lets_training_steps_in_between_its_chunks_and_is_the_same_image(monkeypatch) -> None:
    """A slow frame (seconds on a barely trained field) must not stop training until it is done."""
    from engine.scene import viewer
    from engine.scene.presets import build_model, model_config

    torch.manual_seed(0)
    model = build_model(model_config("fast"), num_images=1, contracted=False)
    view = FieldView(model, dataset=None, background=torch.ones(3))
    alone = view.render(OrbitCamera(), 48, 32, "rgb", paced=True)
    monkeypatch.setattr(viewer, "VIEW_CHUNK_RAYS", 256)  # six chunks
    with SteppingJob(view.live, 0.005) as job:  # steps that leave the model as it is
        before = job.steps
        shared = view.render(OrbitCamera(), 48, 32, "rgb", paced=True)
        during = job.steps - before
    assert during >= 3, f"only {during} steps ran while a six-chunk frame rendered"
    np.testing.assert_array_equal(shared.image, alone.image)


def test_publish_makes_the_field_ready_and_bumps_the_version() -> None:
    live = LiveField()
    assert not live.ready
    live.publish(object(), None, None)
    assert live.ready and live.version == 1
    with live.step():
        pass
    assert live.version == 2
    with live.viewing():
        pass
    assert live.version == 2  # viewing does not change the field


# ---- FieldView frames --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def field_view() -> FieldView:
    from engine.scene.presets import build_model, model_config

    torch.manual_seed(0)
    model = build_model(model_config("fast"), num_images=1, contracted=False)  # untrained: faint haze, fast
    return FieldView(model, dataset=None, background=torch.ones(3))


def test_rgb_frames_have_the_requested_size(field_view: FieldView) -> None:
    cam = OrbitCamera()
    frame = field_view.render(cam, 40, 24, "rgb")
    assert isinstance(frame, ViewFrame) and frame.mode == "rgb"
    assert frame.image.shape == (24, 40, 3) and frame.image.dtype == np.uint8
    assert frame.depth.shape == (24, 40) and frame.accumulation.shape == (24, 40)
    assert frame.seconds > 0
    cam.orbit(100, 0)  # the frame keeps the camera it was rendered with
    assert not np.allclose(frame.camera.rotation, cam.rotation)


def test_accumulation_frames_show_opacity_in_grey(field_view: FieldView) -> None:
    frame = field_view.render(OrbitCamera(distance=1.5), 32, 20, "accumulation")
    assert frame.image.shape == (20, 32, 3) and frame.image.dtype == np.uint8
    assert (frame.image == frame.image[..., :1]).all()
    expected = np.clip(frame.accumulation, 0, 1) * 255
    assert np.abs(frame.image[..., 0].astype(np.float64) - expected).max() <= 0.5 + 1e-3
    assert frame.seconds > 0


def test_depth_frames_are_black_where_nothing_is_solid(field_view: FieldView) -> None:
    frame = field_view.render(OrbitCamera(), 32, 20, "depth")
    assert frame.image.shape == (20, 32, 3) and frame.image.dtype == np.uint8
    assert (frame.image[frame.accumulation <= 0.5] == 0).all()


def test_unknown_render_mode_is_named_in_the_error(field_view: FieldView) -> None:
    with pytest.raises(ValueError, match="normals"):
        field_view.render(OrbitCamera(), 16, 16, "normals")


def test_colorize_depth_makes_near_bright_far_dark_and_empty_black() -> None:
    depth = np.tile(np.linspace(1.0, 5.0, 16, dtype=np.float32), (8, 1))
    acc = np.ones_like(depth)
    acc[:, 12:] = 0.0  # the farthest columns are empty space
    acc[0, 3] = 0.5  # exactly half opaque is not solid
    image = colorize_depth(depth, acc)
    assert image.shape == (8, 16, 3) and image.dtype == np.uint8
    brightness = image.astype(int).sum(-1)
    assert (brightness[:, 12:] == 0).all() and (image[0, 3] == 0).all()
    row = brightness[1, :12]
    assert row[0] > row[6] > row[11] > 0
    assert (np.diff(row) <= 0).all()  # brightness falls with depth
    assert (colorize_depth(depth, np.zeros_like(depth)) == 0).all()
    assert (colorize_depth(depth, np.full_like(depth, 0.5)) == 0).all()


# ---- FieldView.pick on an analytic plane --------------------------------------------------------


class PlaneModel:
    """A stand-in field: an opaque plane ``normal . p = offset``, rendered exactly."""

    def __init__(self, normal: np.ndarray, offset: float) -> None:
        self.normal = torch.tensor(normal / np.linalg.norm(normal), dtype=torch.float32)
        self.offset = float(offset / np.linalg.norm(normal))
        self.training = True
        self.calls = []

    def train(self, mode: bool = True) -> "PlaneModel":
        self.training = mode
        return self

    def eval(self) -> "PlaneModel":
        return self.train(False)

    def render_rays(self, origins, dirs, image_idx, background, step_scale: float = 1.0) -> dict:
        self.calls.append(self.training)
        facing = dirs @ self.normal
        t = (self.offset - origins @ self.normal) / torch.where(facing.abs() > 1e-9, facing, torch.ones_like(facing))
        hit = (facing.abs() > 1e-9) & (t > 0)
        depth = torch.where(hit, t, torch.zeros_like(t))
        acc = hit.float()
        rgb = acc[:, None].expand(-1, 3).clone()
        return {"rgb": rgb, "depth": depth, "median_depth": torch.where(hit, t, torch.inf), "accumulation": acc}


def test_pick_returns_the_surface_point_under_the_pixel() -> None:
    plane = PlaneModel(np.array([0.0, 0.0, 1.0]), 0.0)  # the ground, z = 0
    view = FieldView(plane)
    target = np.array([0.3, -0.2, 0.0])
    cam = OrbitCamera(target=target, distance=3.0, rotation=OrbitCamera.rotation_from_angles(30.0, 40.0))
    width, height = 101, 81  # odd sizes: the centre pixel's ray is the optical axis
    point = view.pick(cam, width, height, 50.5, 40.5)
    assert point is not None and point.shape == (3,)
    np.testing.assert_allclose(point, target, atol=1e-5)
    assert plane.calls == [False] and plane.training  # rendered in eval mode, then restored

    # off-centre: a point on the plane that projects back to the clicked pixel
    point = view.pick(cam, width, height, 10.5, 70.5)
    assert point is not None and abs(point[2]) < 1e-5
    np.testing.assert_allclose(pixel_of(cam, width, height, point), [10.5, 70.5], atol=1e-3)


def test_pick_in_a_tilted_plane_at_a_known_distance() -> None:
    normal = np.array([1.0, -2.0, 0.5])
    plane = PlaneModel(normal, 1.2)
    rng = np.random.default_rng(3)
    c2w = np.eye(4)
    c2w[:3, :3] = random_rotation(rng)
    forward = -c2w[:3, 2]
    unit = normal / np.linalg.norm(normal)
    on_plane = unit * 1.2 / np.linalg.norm(normal)
    c2w[:3, 3] = on_plane - forward * 2.5  # 2.5 units in front of the camera along its axis
    cam = OrbitCamera.looking_at(c2w, 50.0, on_plane)
    point = FieldView(plane).pick(cam, 65, 49, 32.5, 24.5)
    np.testing.assert_allclose(point, on_plane, atol=1e-5)


def test_pick_in_empty_space_returns_none() -> None:
    plane = PlaneModel(np.array([0.0, 0.0, 1.0]), 0.0)
    view = FieldView(plane)
    # the eye is above the ground and looks up: its rays never meet the plane
    above = OrbitCamera(target=np.array([0.0, 0.0, 2.0]), distance=1.0,
                        rotation=OrbitCamera.rotation_from_angles(0.0, -45.0))  # eye above z=0, looking up
    assert above.eye[2] > 0
    assert view.pick(above, 33, 33, 16.5, 16.5) is None

    class Haze(PlaneModel):
        def render_rays(self, origins, dirs, image_idx, background, step_scale=1.0):
            out = super().render_rays(origins, dirs, image_idx, background, step_scale)
            out["accumulation"] = out["accumulation"] * 0.49  # just short of solid
            return out

    assert FieldView(Haze(np.array([0.0, 0.0, 1.0]), 0.0)).pick(OrbitCamera(), 33, 33, 16.5, 16.5) is None


# ---- datasets: coordinates and the home view ----------------------------------------------------


@pytest.fixture(scope="module")
def demo_dataset(tiny_demo):
    from engine.scene.datasets import load_dataset

    return load_dataset(tiny_demo)


def test_scene_to_capture_inverts_capture_to_scene(demo_dataset) -> None:

    rng = np.random.default_rng(7)
    for _ in range(5):
        capture_point, capture_radius = rng.normal(size=3) * 2, float(rng.uniform(0.05, 1.0))
        scene_point, scene_radius = capture_to_scene(demo_dataset, tuple(capture_point), capture_radius)
        back_point, back_radius = scene_to_capture(demo_dataset, scene_point, scene_radius)
        np.testing.assert_allclose(back_point, capture_point, atol=1e-9)
        assert back_radius == pytest.approx(capture_radius, rel=1e-12)
        # and the other way round
        again_point, again_radius = capture_to_scene(demo_dataset, tuple(back_point), back_radius)
        np.testing.assert_allclose(again_point, scene_point, atol=1e-9)
        assert again_radius == pytest.approx(scene_radius, rel=1e-12)


def test_home_camera_looks_at_the_origin_from_the_mean_camera_distance(demo_dataset) -> None:
    cam = home_camera(demo_dataset)
    eyes = demo_dataset.cameras.c2w[:, :3, 3]
    mean_distance = float(np.linalg.norm(eyes, axis=1).mean())
    np.testing.assert_allclose(cam.target, 0)
    assert cam.distance == pytest.approx(mean_distance)
    assert np.linalg.norm(cam.eye) == pytest.approx(mean_distance)
    np.testing.assert_allclose(-cam.rotation[:, 2], -cam.eye / np.linalg.norm(cam.eye), atol=1e-12)
    assert_upright(cam)
    assert cam.eye[2] > 0  # from above
    fy, h = demo_dataset.cameras.fy[0], demo_dataset.cameras.height[0]
    assert cam.cameras(int(demo_dataset.cameras.width[0]), int(h)).fy[0] == pytest.approx(fy)


# ---- project manifest ---------------------------------------------------------------------------


def test_write_manifest_keeps_a_backup_and_updates_keep_other_fields(tmp_path) -> None:
    project = Project(tmp_path / "proj")
    project.write_manifest({"app": {"panel": "edit"}, "dataset": "data"})
    assert json.loads((project.root / MANIFEST_BACKUP_NAME).read_text()) == json.loads(project.manifest_path.read_text())

    project.update_manifest(train_config={"steps": 100})
    manifest = project.read_manifest()
    assert manifest["app"] == {"panel": "edit"} and manifest["dataset"] == "data"
    assert manifest["train_config"] == {"steps": 100} and manifest["schema"] == 1
    assert json.loads(project.backup_path.read_text()) == manifest

    fresh = Project(tmp_path / "new")
    assert fresh.update_manifest(app={"x": 1}) == {"app": {"x": 1}}
    assert fresh.read_manifest() == {"schema": 1, "app": {"x": 1}}


def test_a_damaged_manifest_names_the_file_and_the_backup_and_can_be_restored(tmp_path) -> None:
    project = Project(tmp_path / "proj")
    project.write_manifest({"app": {"view": 3}})
    good = project.read_manifest()
    text = project.manifest_path.read_text()
    project.manifest_path.write_text(text[: len(text) // 2])  # truncated, as by a crash of another tool

    with pytest.raises(UserInputError) as err:
        project.read_manifest()
    message = str(err.value)
    assert str(project.manifest_path) in message
    assert "unreadable project manifest" in message
    assert MANIFEST_BACKUP_NAME in message

    project.restore_backup()
    assert project.read_manifest() == good


@pytest.mark.parametrize("backup", ["missing", "damaged"])
def test_without_a_readable_backup_the_message_does_not_offer_one(tmp_path, backup: str) -> None:
    project = Project(tmp_path / "proj")
    project.write_manifest({"app": {}})
    if backup == "missing":
        project.backup_path.unlink()
    else:
        project.backup_path.write_text("{\"sche")
    project.manifest_path.write_text("{\"schema\": 1, ")

    with pytest.raises(UserInputError) as err:
        project.read_manifest()
    message = str(err.value)
    assert "unreadable project manifest" in message and str(project.manifest_path) in message
    hint = message.replace(str(project.manifest_path), "")  # tmp_path's own name holds the test's name
    assert ".bak" not in hint and "backup" not in hint
    with pytest.raises(UserInputError, match="backup"):
        project.restore_backup()


@pytest.mark.parametrize("content, found", [("[1, 2]", "'list'"), ('{"schema": 99}', "99"), ("{}", "None")])
def test_a_manifest_of_another_schema_is_refused(tmp_path, content: str, found: str) -> None:
    project = Project(tmp_path)
    project.root.mkdir(exist_ok=True)
    (project.root / MANIFEST_NAME).write_text(content)
    with pytest.raises(UserInputError, match=r"schema .* not supported") as err:
        project.read_manifest()
    assert found in str(err.value) and str(project.manifest_path) in str(err.value)
