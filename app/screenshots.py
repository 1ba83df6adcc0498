"""Screenshots of the editor window in its main states, for the README and the docs.

Drives a real ``MainWindow`` the way a user would, on the procedural demo scene: a new project,
a short training run, a region clicked on the striped sphere, an instruction typed and applied,
then the depth view.  Each shot waits for the viewport's full-resolution frame of the current
view, so no shot shows a blurry in-between frame.  Run it under Xvfb::

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m app.screenshots --out docs/screenshots

The user's settings and projects are never touched: the window works on a temporary INI file
and a temporary projects folder, both removed at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import QEventLoop, QPoint, QRect, QSettings, Qt, QTimer
from PySide6.QtGui import QImage, QPainter
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

WINDOW_SIZE = (1440, 900)
VIEW_YAW_DEG, VIEW_PITCH_DEG = -30.0, 28.0
"""the 3/4 view of the demo scene: the sphere in front, the box and cylinder beside it"""
VIEW_TARGET_CAPTURE = np.array([0.0, 0.0, 0.3])
"""the point the view orbits, in the demo's capture coordinates: the middle of its objects"""
VIEW_DISTANCE_FACTOR = 1.2
"""viewer distance as a multiple of the training cameras' distance: the nearer frustums stay in view"""
VIEW_FOV_DEG = 50.0
INSTRUCTION = "make it look like a bronze statue"
REGION_RADIUS_FACTOR = 1.1
"""edit radius / sphere radius: the region holds the whole sphere even where the picked depth
of a briefly trained field lies inside it rather than on its surface"""
EDIT_MINUTES = 1.0
EDIT_SHOT_AFTER_S = 45.0
"""the running-edit shot is taken this long after the edit starts: progress, ETA and edited views show"""
MAX_PNG_BYTES = 400_000
FRAME_TIMEOUT_S = 120.0
REQUEST_AGAIN_S = 3.0
"""a frame request can be overtaken by the live refresh of a running job: ask again after this long"""


class ScreenshotError(RuntimeError):
    """A step of the screenshot run did not happen (a job failed, a frame never came)."""


def wait_for(seconds: float) -> None:
    """Keep the UI running for ``seconds``.

    An event loop rather than QTest.qWait: PySide keeps the GIL through qWait, which starves the
    render and job threads (frames stop coming while the script waits for them).
    """
    loop = QEventLoop()
    QTimer.singleShot(max(0, round(seconds * 1000)), loop.quit)
    loop.exec()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Keep the UI running until ``condition()`` holds; ScreenshotError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise ScreenshotError(f"timed out after {timeout_s:g} s waiting for {what}")
        wait_for(0.05)


class ScreenshotRun:
    """Takes the screenshots of one window, in order; each method is one step of the story."""

    def __init__(self, window, out_dir: Path, train_minutes: float) -> None:
        self.window = window
        self.out_dir = out_dir
        self.train_minutes = train_minutes
        self.written: list[Path] = []
        self._last_frame = None
        self._edit_started = 0.0
        window.scene.service.frame_ready.connect(self._remember_frame)

    # ----------------------------------------------------------------------------- the story
    def run(self, data_root: Path) -> list[Path]:
        """All shots; returns the PNGs written."""
        self.open_demo_project(data_root)
        self.train()
        self.shoot("01-trained.png")
        self.place_region_on_sphere()
        self.start_edit()
        self.wait_for_edited_views()
        self.shoot("02-point-and-type.png")
        self.finish_edit()
        self.window.scene.set_render_mode("depth")
        self.shoot("03-depth.png")
        return self.written

    def open_demo_project(self, data_root: Path) -> None:
        """Write the demo capture, start a project on it and turn the viewport to the 3/4 view."""
        from engine.scene.procedural import DemoSceneConfig, write_demo_dataset

        window = self.window
        started = time.monotonic()
        data = write_demo_dataset(data_root / "demo-data", DemoSceneConfig())
        print(f"demo dataset written in {time.monotonic() - started:.0f} s", flush=True)
        if not window.new_project(data, window.projects_root / "demo"):
            raise ScreenshotError(f"could not create the demo project: {self._error()}")
        wait_until(lambda: window.session is not None and window.idle, 120, "the project to open")
        self._check_no_error("opening the project")
        window.scene.viewport.set_camera(self.three_quarter_view())

    def three_quarter_view(self):
        """An orbit camera looking at the scene from above one corner, far enough out to show frustums."""
        from engine.scene.orbit import OrbitCamera

        dataset = self.window.session.dataset
        rotation = dataset.world_from_capture[:3, :3] / dataset.scale  # capture axes in the scene
        yaw, pitch = math.radians(VIEW_YAW_DEG), math.radians(VIEW_PITCH_DEG)
        back_capture = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
        back = rotation @ back_capture
        scene_yaw = math.degrees(math.atan2(back[1], back[0]))
        scene_pitch = math.degrees(math.asin(float(np.clip(back[2], -1, 1))))
        target = (dataset.world_from_capture @ np.append(VIEW_TARGET_CAPTURE, 1.0))[:3]
        distance = VIEW_DISTANCE_FACTOR * float(np.linalg.norm(dataset.cameras.c2w[:, :3, 3], axis=1).mean())
        return OrbitCamera(target, distance, OrbitCamera.rotation_from_angles(scene_yaw, scene_pitch), VIEW_FOV_DEG)

    def train(self) -> None:
        """Train for the chosen minutes from the toolbar, the viewport following the field."""
        window = self.window
        window.scene.train_minutes.setValue(self.train_minutes)
        window.scene.train()
        if window.holding("scene") != "train":
            raise ScreenshotError(f"training did not start: {self._error()}")
        ok = self._wait_for_job("training", self.train_minutes * 60 + 300)
        if not ok or not window.session.trained:
            raise ScreenshotError(f"training did not finish: {self._error()}")
        window.scene.strip.select_view(window.session.view_names[0])  # the compare pane shows a capture

    def place_region_on_sphere(self) -> None:
        """Click the viewport where it shows the striped sphere (the first candidate pixel whose picked
        point lies on or in it), then widen the region to take in the whole sphere."""
        from engine.scene.procedural import SPHERE_CENTER, SPHERE_RADIUS

        window = self.window
        dataset = window.session.dataset
        centre = (dataset.world_from_capture @ np.append(SPHERE_CENTER, 1.0))[:3]
        radius = SPHERE_RADIUS * dataset.scale
        picked: list = []
        window.scene.service.picked.connect(picked.append)
        try:
            for x, y in self._sphere_pixels(centre, radius):
                count = len(picked)
                QTest.mouseClick(window.scene.viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                                 QPoint(round(x), round(y)))
                wait_until(lambda: len(picked) > count, 60, "the clicked point")
                point = picked[-1]
                # a briefly trained field's depth can lie inside the sphere: anywhere in it is on the object
                if point is not None and np.linalg.norm(point - centre) < 1.2 * radius:
                    wait_until(lambda: window.scene.edit_panel.region_point() is not None, 10, "the edit region")
                    window.scene.edit_panel.radius_spin.setValue(REGION_RADIUS_FACTOR * SPHERE_RADIUS)
                    return
        finally:
            window.scene.service.picked.disconnect(picked.append)
        raise ScreenshotError("no click in the viewport landed on the sphere (is the field trained enough?)")

    def _sphere_pixels(self, centre: np.ndarray, radius: float) -> list[tuple[float, float]]:
        """Viewport pixels to try: points on the sphere's side facing the viewer, then its centre."""
        import torch

        from engine.core.cameras import project_points

        viewport = self.window.scene.viewport
        width, height = viewport.width(), viewport.height()
        cams = viewport.camera.cameras(width, height)
        # the side of the sphere towards the viewer and a little up: its stripes, not its shaded underside
        towards_eye = viewport.camera.eye - centre
        towards_eye /= np.linalg.norm(towards_eye)
        aims = [centre + radius * 0.5 * (towards_eye + viewport.camera.rotation[:, 1] * s) for s in (0.6, 0.0, 1.0)]
        aims.append(centre)
        pixels = project_points(torch.tensor(np.array(aims)), torch.tensor(cams.c2w[0]), float(cams.fx[0]),
                                float(cams.fy[0]), float(cams.cx[0]), float(cams.cy[0])).numpy()
        return [(float(x), float(y)) for x, y in pixels if 0 <= x < width and 0 <= y < height]

    def start_edit(self) -> None:
        """Type the instruction, set the edit's time budget and press Apply (an IDU job starts)."""
        window = self.window
        panel = window.scene.edit_panel
        panel.instruction_edit.setFocus()
        panel.instruction_edit.setText(INSTRUCTION)
        panel.minutes.setValue(EDIT_MINUTES)
        panel.apply_button.click()
        if panel.error_text():
            raise ScreenshotError(f"the edit panel refused the edit: {panel.error_text()}")
        if window.holding("scene") != "edit":
            raise ScreenshotError(f"the edit did not start: {self._error()}")
        self._edit_started = time.monotonic()

    def wait_for_edited_views(self) -> None:
        """Let the edit run until the shot time, then show an edited view in the compare pane."""
        window = self.window
        strip = window.scene.strip
        names = window.session.view_names
        wait_until(lambda: time.monotonic() - self._edit_started >= EDIT_SHOT_AFTER_S or not window.busy,
                   EDIT_SHOT_AFTER_S + 60, "the edit to run a while")
        if not window.busy:
            raise ScreenshotError(f"the edit ended before its screenshot (after {EDIT_SHOT_AFTER_S:g} s): "
                                  f"{self._error() or 'raise EDIT_MINUTES'}")
        strip.refresh_all()
        edited = [name for name in names if strip.is_edited(name)]
        if not edited:
            raise ScreenshotError(f"no view was edited after {EDIT_SHOT_AFTER_S:g} s of editing")
        dataset = window.session.dataset
        originals = dict(zip(names, (dataset.images[i] for i in dataset.train_indices)))
        # the compare pane shows the view the edit changed most: the wipe then shows a difference
        shown = max(edited, key=lambda name: float(np.abs(strip.store.current(name).astype(np.int16)
                                                          - originals[name]).mean()))
        strip.select_view(shown)
        strip.thumbnail_list.scrollToItem(strip.thumbnail_list.item(names.index(shown)))
        strip.compare_slider.setValue(self._sphere_split_percent(dataset.train_indices[names.index(shown)]))

    def _sphere_split_percent(self, frame: int) -> int:
        """Where the compare wipe cuts training image ``frame``: through the sphere, half edit, half original."""
        import torch

        from engine.core.cameras import project_points
        from engine.scene.procedural import SPHERE_CENTER

        dataset = self.window.session.dataset
        cams = dataset.cameras
        centre = (dataset.world_from_capture @ np.append(SPHERE_CENTER, 1.0))[:3]
        u = project_points(torch.tensor(centre[None]), torch.tensor(cams.c2w[frame]), float(cams.fx[frame]),
                           float(cams.fy[frame]), float(cams.cx[frame]), float(cams.cy[frame]))[0, 0]
        return int(np.clip(round(100 * float(u) / float(cams.width[frame])), 0, 100))

    def finish_edit(self) -> None:
        """Wait for the edit job to end; ScreenshotError when it failed or was cancelled."""
        if not self._wait_for_job("editing", EDIT_MINUTES * 60 + 300):
            raise ScreenshotError(f"the edit did not finish: {self._error()}")

    # ----------------------------------------------------------------------------------- shots
    def shoot(self, name: str) -> None:
        """Wait for the full-resolution frame of the current view, then save the window as ``name``."""
        image = self._grab_settled()
        path = self.out_dir / name
        save_png(image, path)
        self.written.append(path)
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)", flush=True)

    def _remember_frame(self, frame, interactive: bool) -> None:
        self._last_frame = (frame, interactive)

    def _is_settled_frame(self, entry) -> bool:
        """Whether ``entry`` (frame, interactive) is a full frame of the viewport's current view and mode."""
        if entry is None:
            return False
        frame, interactive = entry
        camera = self.window.scene.viewport.camera
        return (not interactive and frame.mode == self.window.scene.render_mode
                and np.allclose(frame.camera.c2w(), camera.c2w()) and frame.camera.fov_y_deg == camera.fov_y_deg)

    def _grab_settled(self) -> QImage:
        window = self.window
        viewport = window.scene.viewport
        wait_for(0.5)  # the viewport's own settle request goes first
        deadline = time.monotonic() + FRAME_TIMEOUT_S
        while time.monotonic() < deadline:
            self._last_frame = None
            viewport.refresh()
            asked = time.monotonic()
            while time.monotonic() - asked < REQUEST_AGAIN_S and not self._is_settled_frame(self._last_frame):
                wait_for(0.02)
            if not self._is_settled_frame(self._last_frame):
                continue
            shown = self._last_frame
            wait_for(0.15)  # the viewport paints it
            if self._last_frame is shown:  # no newer (low-resolution) frame replaced it meanwhile
                return self._grab_window()
        raise ScreenshotError(f"no full-resolution frame of the view came within {FRAME_TIMEOUT_S:g} s")

    def _grab_window(self) -> QImage:
        """The window as it looks.  QWidget.grab leaves out the viewport (a native OpenGL window), so
        the viewport's own framebuffer is drawn in where it sits."""
        window, viewport = self.window, self.window.scene.viewport
        image = window.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
        framebuffer = viewport.grab_image()
        if looks_empty(framebuffer):
            raise ScreenshotError("the viewport came out empty in the screenshot")
        painter = QPainter(image)
        holder = viewport.widget()
        painter.drawImage(QRect(holder.mapTo(window, QPoint(0, 0)), holder.size()), framebuffer)
        painter.end()
        return image

    # ------------------------------------------------------------------------------- helpers
    def _wait_for_job(self, what: str, timeout_s: float) -> bool:
        """Wait for the running job; True when it finished without failing or being cancelled."""
        runner = self.window.lanes.holding("scene").runner
        results: list[bool] = []
        runner.finished.connect(results.append)
        started = time.monotonic()
        if not self.window.wait_for_job(timeout_s):
            raise ScreenshotError(f"{what} did not end within {timeout_s:g} s")
        wait_until(lambda: bool(results), 10, f"the end of {what}")
        print(f"{what} took {time.monotonic() - started:.0f} s", flush=True)
        return results[0]

    def _error(self) -> str:
        return getattr(self.window, "last_error", "") or "see the log"

    def _check_no_error(self, what: str) -> None:
        message = getattr(self.window, "last_error", "")
        if message:
            raise ScreenshotError(f"{what} failed: {message}")


def looks_empty(image: QImage) -> bool:
    """True for an image of (nearly) one colour: a grab that missed the GL content."""
    small = image.scaled(64, 64).convertToFormat(QImage.Format.Format_RGB888)
    pixels = np.frombuffer(small.constBits(), np.uint8, small.sizeInBytes()).reshape(64, small.bytesPerLine())
    pixels = pixels[:, :64 * 3].reshape(64, 64, 3).astype(np.float32)
    return float(pixels.std(axis=(0, 1)).max()) < 4.0


def save_png(image: QImage, path: Path) -> None:
    """Save at full size with the strongest compression; scale down only if it is still over MAX_PNG_BYTES."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = 1.0
    while True:
        shown = image if scale == 1.0 else image.scaledToWidth(round(image.width() * scale),
                                                               Qt.TransformationMode.SmoothTransformation)
        if not shown.save(str(path), "PNG", 0):  # quality 0: maximum zlib compression
            raise ScreenshotError(f"could not write {path}")
        if path.stat().st_size <= MAX_PNG_BYTES or scale < 0.5:
            return
        scale *= 0.9


def lpips_choice() -> str:
    """LPIPS as the app would use it, or "off" where its AlexNet weights are missing: the edit then
    runs the same, without a warning about a file that screenshots do not need filling the jobs panel."""
    from engine.core.metrics import alexnet_weights_path

    return "auto" if alexnet_weights_path().is_file() else "off"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.screenshots",
                                     description="Screenshots of the Retouch3D window in its main states "
                                                 "(run under Xvfb: xvfb-run -a -s \"-screen 0 1600x1000x24\").")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="folder for the PNG files")
    parser.add_argument("--train-minutes", type=float, default=1.0,
                        help="how long to train the demo scene before the shots (default 1.0; on a "
                             "2-core CPU 3 gives a clean field, 1 a blurry one)")
    args = parser.parse_args(argv)
    if not args.train_minutes > 0:
        parser.error(f"--train-minutes must be positive, got {args.train_minutes}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Take the screenshots; 0 on success, 1 with a message on stderr otherwise."""
    args = parse_args(argv)
    if sys.platform.startswith("linux") and not any(os.environ.get(name) for name in
                                                    ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        print('screenshots: error: no display; run under Xvfb: xvfb-run -a -s "-screen 0 1600x1000x24" '
              "python -m app.screenshots", file=sys.stderr)
        return 1
    from app.main_window import MainWindow
    from app.settings import APPLICATION, ORGANIZATION, AppSettings

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="retouch3d-screenshots-") as tmp:
        tmp_dir = Path(tmp)
        settings = AppSettings(QSettings(str(tmp_dir / "settings.ini"), QSettings.Format.IniFormat))
        settings.lpips_backbone = lpips_choice()
        window = MainWindow(settings, tmp_dir / "projects")
        window.resize(*WINDOW_SIZE)
        window.show()
        try:
            wait_until(lambda: window.isVisible() and window.scene.viewport.isValid(), 30, "the window to show")
            written = ScreenshotRun(window, args.out, args.train_minutes).run(tmp_dir)
        except ScreenshotError as exc:
            print(f"screenshots: error: {exc}", file=sys.stderr)
            return 1
        finally:
            if window.busy:
                window.cancel_all_jobs()
                window.wait_for_job(120)
            window.save_project()
            window.close()
            window.scene.service.stop()
    for path in written:
        print(path)
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
