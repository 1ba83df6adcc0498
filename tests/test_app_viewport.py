"""The GL viewport under Xvfb (pixels in its framebuffer, mouse and keys moving the camera, overlays,
clicks) and the render service on a tiny untrained field (adaptive frame size, coalescing, picking)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("OpenGL")
from PySide6.QtCore import QEvent, QObject, QPoint, QPointF, Qt, Signal  # noqa: E402
from PySide6.QtGui import QImage, QMouseEvent, QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.scene.render_service import RenderService  # noqa: E402
from app.scene.viewport import SETTLE_MS, Viewport  # noqa: E402
from engine.scene.orbit import OrbitCamera  # noqa: E402
from engine.scene.viewer import ViewFrame  # noqa: E402

WIDTH, HEIGHT = 200, 150
BACKGROUND_RGB = (28, 28, 31)  # app.scene.viewport.BACKGROUND in 8 bits


@pytest.fixture
def viewport(qtbot) -> Viewport:
    """A shown viewport with no overlays, or a skip where no OpenGL context can be made."""
    view = Viewport()
    holder = view.widget()
    qtbot.addWidget(holder)
    holder.resize(WIDTH, HEIGHT)
    holder.show()
    qtbot.waitExposed(holder)
    qtbot.waitUntil(lambda: view.isExposed() and view.size() == holder.size())
    if view.grab_image().isNull() or not view.isValid():
        pytest.skip("no OpenGL context could be created on this display")
    view.show_frustums = view.show_box = view.show_axes = False
    return view


def pixels(view: Viewport) -> np.ndarray:
    """The widget's framebuffer as an (H, W, 3) uint8 array."""
    image = view.grab_image().convertToFormat(QImage.Format.Format_RGB888)
    height, width = image.height(), image.width()
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(height, image.bytesPerLine())
    return rows[:, :width * 3].reshape(height, width, 3).copy()


def mouse(view: Viewport, kind: QEvent.Type, pos: tuple[float, float], button=Qt.MouseButton.LeftButton,
          modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
    event = QMouseEvent(kind, QPointF(*pos), view.mapToGlobal(QPointF(*pos)),
                        Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else button, held, modifiers)
    QApplication.sendEvent(view, event)


def drag(view: Viewport, start: tuple[float, float], end: tuple[float, float], button=Qt.MouseButton.LeftButton,
         modifiers=Qt.KeyboardModifier.NoModifier, steps: int = 5) -> None:
    mouse(view, QEvent.Type.MouseButtonPress, start, button, modifiers)
    for i in range(1, steps + 1):
        f = i / steps
        mouse(view, QEvent.Type.MouseMove, (start[0] + (end[0] - start[0]) * f, start[1] + (end[1] - start[1]) * f),
              button, modifiers)
    mouse(view, QEvent.Type.MouseButtonRelease, end, button, modifiers)


def project(camera: OrbitCamera, point: np.ndarray) -> tuple[int, int]:
    """Widget pixel of a scene point under ``camera`` in a WIDTH x HEIGHT view."""
    clip = camera.projection(WIDTH / HEIGHT) @ camera.view_matrix() @ np.append(point, 1.0)
    ndc = clip[:3] / clip[3]
    return int((ndc[0] + 1) / 2 * WIDTH), int((1 - ndc[1]) / 2 * HEIGHT)


def yaw_deg(camera: OrbitCamera) -> float:
    back = camera.rotation[:, 2]
    return float(np.degrees(np.arctan2(back[1], back[0])))


class FakeService(QObject):
    """Records the viewport's frame requests (the RenderService interface the viewport uses)."""

    frame_ready = Signal(object, bool)

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[OrbitCamera, int, int, str, bool, bool]] = []

    def request(self, camera, width, height, mode="rgb", interactive=False, paced=False) -> None:
        self.requests.append((camera.copy(), width, height, mode, interactive, paced))


# ---- the viewport ---------------------------------------------------------------------------


def test_an_uploaded_image_fills_the_widget_quadrant_by_quadrant(viewport):
    image = np.zeros((30, 40, 3), np.uint8)  # the widget's 4:3 aspect: no bars
    image[:15, :20] = (255, 0, 0)
    image[:15, 20:] = (0, 255, 0)
    image[15:, :20] = (0, 0, 255)
    image[15:, 20:] = (255, 255, 255)
    viewport.set_image(image)
    shown = pixels(viewport)
    assert shown.shape == (HEIGHT, WIDTH, 3)
    for (y, x), colour in {(37, 50): (255, 0, 0), (37, 150): (0, 255, 0), (112, 50): (0, 0, 255),
                           (112, 150): (255, 255, 255)}.items():
        np.testing.assert_allclose(shown[y, x], colour, atol=3)

    viewport.set_image(np.full((10, 10, 3), 200, np.uint8))  # square image: letterboxed, newest wins
    shown = pixels(viewport)
    np.testing.assert_allclose(shown[75, 100], (200, 200, 200), atol=3)
    np.testing.assert_allclose(shown[75, 5], BACKGROUND_RGB, atol=3)  # bar beside the image
    np.testing.assert_allclose(shown[75, WIDTH - 5], BACKGROUND_RGB, atol=3)


def test_left_drag_orbits_and_the_full_frame_is_requested_once_the_camera_rests(viewport, qtbot):
    service = FakeService()
    viewport.attach(service, lambda: "depth")
    qtbot.wait(SETTLE_MS + 50)  # let the frames asked for on show / resize settle
    service.requests.clear()
    changes: list[tuple[OrbitCamera, bool]] = []
    viewport.camera_changed.connect(lambda cam, interactive: changes.append((cam, interactive)))
    before = viewport.camera.copy()
    expected = before.copy()
    expected.orbit(100, 0)

    drag(viewport, (50, 75), (150, 75))

    cam = viewport.camera
    assert yaw_deg(cam) == pytest.approx(yaw_deg(before) - 100 * OrbitCamera.ORBIT_DEG_PER_PIXEL, abs=1e-6)
    np.testing.assert_allclose(cam.eye, expected.eye, atol=1e-9)
    assert cam.distance == before.distance and np.allclose(cam.target, before.target)
    assert changes and all(interactive for _, interactive in changes)
    assert service.requests and all(r[4] and r[3] == "depth" and (r[1], r[2]) == (WIDTH, HEIGHT)
                                    for r in service.requests)
    assert not any(r[5] for r in service.requests), "frames the user asks for by dragging are never paced"
    np.testing.assert_allclose(service.requests[-1][0].eye, cam.eye)

    qtbot.waitUntil(lambda: not changes[-1][1], timeout=2000)
    assert [interactive for _, interactive in changes].count(False) == 1
    np.testing.assert_allclose(changes[-1][0].eye, cam.eye)
    last = service.requests[-1]
    assert not last[4] and np.allclose(last[0].eye, cam.eye)  # the full frame of where the camera stopped
    assert not last[5]  # asked for by the user: a training job waits for it

    frame = ViewFrame(np.full((HEIGHT // 2, WIDTH // 2, 3), 90, np.uint8), np.zeros((1, 1), np.float32),
                      np.zeros((1, 1), np.float32), cam.copy(), "depth", 0.01)
    service.frame_ready.emit(frame, True)
    shown = pixels(viewport)
    np.testing.assert_allclose(shown[75, 50], (90, 90, 90), atol=3)
    assert (shown[10:24, 10:60] > 200).any()  # the "Depth · 100 px" label in the corner
    assert viewport.image_camera is not None and np.allclose(viewport.image_camera.eye, cam.eye)


def test_frames_the_user_did_not_ask_for_are_paced(viewport, qtbot):
    """A refresh after training steps or a restored view must not take the cores from training."""
    service = FakeService()
    viewport.attach(service, lambda: "rgb")
    qtbot.wait(SETTLE_MS + 50)
    service.requests.clear()
    viewport.refresh(quick=True)
    assert service.requests[-1][4:] == (True, True)
    viewport.refresh()  # the field changed for good (a job ended): its full frame at once
    assert service.requests[-1][4:] == (False, False)

    service.requests.clear()
    viewport.set_camera(OrbitCamera(distance=3.0), by_user=False)
    qtbot.waitUntil(lambda: any(not r[4] for r in service.requests), timeout=2000)
    assert all(r[5] for r in service.requests)
    service.requests.clear()
    viewport.reset_view()  # the user's own jump
    qtbot.waitUntil(lambda: any(not r[4] for r in service.requests), timeout=2000)
    assert not any(r[5] for r in service.requests)


def test_right_or_shift_drag_pans_and_the_wheel_zooms(viewport):
    before = viewport.camera.copy()
    expected = before.copy()
    expected.pan(60, -30, HEIGHT)
    drag(viewport, (100, 75), (160, 45), button=Qt.MouseButton.RightButton)
    np.testing.assert_allclose(viewport.camera.target, expected.target, atol=1e-9)
    assert not np.allclose(viewport.camera.target, before.target)
    np.testing.assert_allclose(viewport.camera.rotation, before.rotation)
    assert viewport.camera.distance == before.distance

    expected.pan(-40, 0, HEIGHT)
    drag(viewport, (100, 75), (60, 75), modifiers=Qt.KeyboardModifier.ShiftModifier)
    np.testing.assert_allclose(viewport.camera.target, expected.target, atol=1e-9)

    wheel = QWheelEvent(QPointF(100, 75), viewport.mapToGlobal(QPointF(100, 75)), QPoint(0, 0), QPoint(0, 120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(viewport, wheel)
    assert viewport.camera.distance == pytest.approx(before.distance * OrbitCamera.ZOOM_PER_STEP)


def test_keys_orbit_zoom_reset_and_focus(viewport, qtbot):
    home = OrbitCamera(np.array([0.1, 0.0, 0.0]), 3.0, OrbitCamera.rotation_from_angles(10.0, 20.0), 40.0)
    viewport.set_home(home)
    viewport.reset_view()
    qtbot.keyClick(viewport, Qt.Key.Key_Right)
    assert yaw_deg(viewport.camera) == pytest.approx(10.0 - 15 * OrbitCamera.ORBIT_DEG_PER_PIXEL, abs=1e-6)
    qtbot.keyClick(viewport, Qt.Key.Key_Plus)
    assert viewport.camera.distance == pytest.approx(3.0 * OrbitCamera.ZOOM_PER_STEP)
    qtbot.keyClick(viewport, Qt.Key.Key_Minus)
    assert viewport.camera.distance == pytest.approx(3.0)
    viewport.set_region(np.array([0.2, -0.3, 0.1]), 0.25)
    qtbot.keyClick(viewport, Qt.Key.Key_F)
    np.testing.assert_allclose(viewport.camera.target, [0.2, -0.3, 0.1])
    qtbot.keyClick(viewport, Qt.Key.Key_R)
    np.testing.assert_allclose(viewport.camera.eye, home.eye)
    assert viewport.camera.fov_y_deg == 40.0

    pose = OrbitCamera(np.zeros(3), 2.0, OrbitCamera.rotation_from_angles(70.0, 5.0)).c2w()
    viewport.snap_to(pose, 35.0)
    np.testing.assert_allclose(viewport.camera.c2w(), pose, atol=1e-9)
    eye, forward = pose[:3, 3], -pose[:3, 2]
    nearest_to_home_target = eye + forward * ((home.target - eye) @ forward)
    np.testing.assert_allclose(viewport.camera.target, nearest_to_home_target, atol=1e-9)


def test_a_click_without_drag_reports_its_position(viewport, qtbot):
    clicks: list[tuple[float, float]] = []
    viewport.clicked.connect(lambda x, y: clicks.append((x, y)))
    before = viewport.camera.copy()
    mouse(viewport, QEvent.Type.MouseButtonPress, (30, 40))
    mouse(viewport, QEvent.Type.MouseMove, (32, 41))  # a hand's tremble, still a click
    mouse(viewport, QEvent.Type.MouseButtonRelease, (32, 41))
    assert clicks == [(32.0, 41.0)]
    np.testing.assert_allclose(viewport.camera.eye, before.eye)

    drag(viewport, (30, 40), (80, 40))  # a drag is not a click
    drag(viewport, (30, 40), (30, 40), button=Qt.MouseButton.RightButton)  # nor a right click
    assert clicks == [(32.0, 41.0)]


@pytest.mark.parametrize("overlay", ["frustums", "box", "axes", "region"])
def test_each_overlay_draws_where_the_current_camera_projects_it(viewport, overlay):
    cam = viewport.camera
    viewport.set_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    off = pixels(viewport)
    if overlay == "frustums":
        pose = OrbitCamera(np.zeros(3), 1.5, OrbitCamera.rotation_from_angles(80.0, 10.0)).c2w()
        viewport.set_frustums(pose[None], 50.0, 1.0, highlight=None)
        viewport.show_frustums = True
        anchor = pose[:3, 3]  # the apex of its pyramid
    elif overlay == "box":
        viewport.show_box = True
        anchor = np.array([1.0, 1.0, 1.0])
    elif overlay == "axes":
        viewport.show_axes = True
        anchor = np.array([0.25, 0.0, 0.0])
    else:
        viewport.set_region(np.zeros(3), 0.5)
        anchor = np.array([0.5, 0.0, 0.0])
    on = pixels(viewport)
    x, y = project(cam, anchor)
    near = (slice(max(y - 3, 0), y + 4), slice(max(x - 3, 0), x + 4))
    assert (on[near] != off[near]).any(), f"{overlay} not drawn near its projection ({x}, {y})"
    corner = (slice(0, 5), slice(0, 5))
    assert (on[corner] == off[corner]).all()

    if overlay == "frustums":
        viewport.show_frustums = False
        assert (pixels(viewport)[near] == off[near]).all()
        viewport.set_frustums(pose[None], 50.0, 1.0, highlight=0)
        viewport.show_frustums = True
        highlighted = pixels(viewport)[near].reshape(-1, 3).astype(int)
        assert (highlighted[:, 2] > highlighted[:, 0] + 40).any()  # drawn in the highlight colour (cyan)


# ---- the render service on a tiny field ------------------------------------------------------


@pytest.fixture(scope="module")
def field_view():
    import torch

    from engine.scene.presets import build_model, model_config
    from engine.scene.viewer import FieldView

    torch.manual_seed(0)
    model = build_model(model_config("fast"), num_images=1, contracted=False)  # untrained: faint haze, fast
    return FieldView(model, dataset=None, background=torch.ones(3))


@pytest.fixture
def service(qtbot, field_view):
    svc = RenderService(frame_budget_s=0.002, max_side=96, first_interactive_side=48)
    svc.set_field(field_view)
    yield svc
    svc.stop()


def test_interactive_frames_are_smaller_than_the_full_frame(service, qtbot):
    cam = OrbitCamera()
    sizes = {}
    for interactive in (True, True, False):
        with qtbot.waitSignal(service.frame_ready, timeout=5000) as got:
            service.request(cam, 160, 120, "rgb", interactive=interactive)
        frame, flag = got.args
        assert flag is interactive and isinstance(frame, ViewFrame)
        sizes.setdefault(interactive, []).append(frame.image.shape)
    assert sizes[False] == [(72, 96, 3)]  # full size, longer side capped at max_side
    assert sizes[True][0] == (36, 48, 3)  # before any frame was timed
    assert sizes[True][1] == (24, 32, 3)  # timed against a tiny budget: the smallest side allowed


def test_a_resting_frame_nobody_asked_for_is_a_quick_one_while_a_job_trains(service, field_view, qtbot):
    """The field changes with every step: a full frame of it is wasted on training's time."""
    import threading
    import time

    stop = threading.Event()

    def job() -> None:
        while not stop.is_set():
            with field_view.live.step():
                time.sleep(0.002)

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    try:
        with qtbot.waitSignal(service.frame_ready, timeout=10000) as got:
            service.request(OrbitCamera(), 160, 120, "rgb", interactive=False, paced=True)
    finally:
        stop.set()
        thread.join(2)
    frame, interactive = got.args
    assert interactive and max(frame.image.shape[:2]) < 96
    from engine.scene.viewer import JOB_ACTIVE_S

    qtbot.wait(round(JOB_ACTIVE_S * 1000) + 100)
    with qtbot.waitSignal(service.frame_ready, timeout=5000) as got:  # the job ended: full size again
        service.request(OrbitCamera(), 160, 120, "rgb", interactive=False, paced=True)
    assert not got.args[1] and got.args[0].image.shape == (72, 96, 3)


def test_quick_requests_are_coalesced_and_the_newest_is_rendered_last(service, qtbot):
    frames = []
    service.frame_ready.connect(lambda frame, interactive: frames.append(frame))
    distances = [3.0 + 0.1 * i for i in range(15)]
    for d in distances:
        service.request(OrbitCamera(distance=d), 64, 48, "depth", interactive=True)
    qtbot.waitUntil(lambda: bool(frames) and frames[-1].camera.distance == distances[-1], timeout=5000)
    qtbot.wait(100)
    assert 1 <= len(frames) < len(distances)
    assert frames[-1].camera.distance == distances[-1] and frames[-1].mode == "depth"


def test_pick_answers_off_the_ui_thread_and_errors_become_messages(service, qtbot):
    with qtbot.waitSignal(service.picked, timeout=5000) as got:
        service.pick(OrbitCamera(), 64, 48, 32, 24)
    point = got.args[0]
    assert point is None or (isinstance(point, np.ndarray) and point.shape == (3,))

    with qtbot.waitSignal(service.failed, timeout=5000) as failed:
        service.request(OrbitCamera(), 64, 48, "normals")
    assert "unknown render mode" in failed.args[0]

    service.set_field(None)
    with qtbot.waitSignal(service.picked, timeout=5000) as got:
        service.pick(OrbitCamera(), 64, 48, 32, 24)
    assert got.args[0] is None

    service.stop()
    service.stop()  # idempotent
    with qtbot.assertNotEmitted(service.frame_ready, wait=100):
        service.request(OrbitCamera(), 64, 48)
