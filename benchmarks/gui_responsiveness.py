"""Editor responsiveness: window start-up, UI-thread stalls while training, orbit frame rate.

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m benchmarks.gui_responsiveness [--seconds 60] [--out DIR]

Start-up: ``python main.py`` in fresh processes, from launch until the shown window handles
its first events (median of 3).  Then, in one window on the procedural demo scene: a training
job runs while a 10 ms heartbeat timer measures how late the UI thread serves it (max and 99th
percentile over ``--seconds``); for 15 s of that a synthetic left-drag orbits the viewport and
the low-resolution frames it gets are counted; after training, the same drag on the idle field.
First, training speed in the window (steps per second over 40 s while the user only watches, the
real event loop running) is compared with the command line's over the same steps of the same scene.  Results go to OUT/gui_responsiveness.json.
``--window-training SECONDS`` measures only that and prints it (benchmarks.contention uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import write_results
from engine.core.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
HEARTBEAT_MS = 10
DRAG_INTERVAL_MS = 16
DRAG_SECONDS = 15.0
WATCH_SECONDS = 40.0
"""training speed in the window is measured over this long, before the other figures"""
WARM_STEPS = 30
"""... from this step on, past the first and slowest steps (the occupancy grid's first passes)"""


def startup_seconds(runs: int = 3) -> list[float]:
    """Seconds from launching ``python main.py`` until its window is shown and handling events."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "shown"
            env = os.environ | {"RETOUCH3D_STARTUP_PROBE": str(probe), "XDG_CONFIG_HOME": tmp}
            start = time.time()
            subprocess.run([sys.executable, str(REPO / "main.py")], env=env, check=True, timeout=120,
                           capture_output=True)
            times.append(float(probe.read_text()) - start)
    return times


class Drag:
    """A left-button drag across the viewport, one mouse move every DRAG_INTERVAL_MS."""

    def __init__(self, viewport) -> None:
        from PySide6.QtCore import QTimer

        self.viewport = viewport
        self.frames = 0
        self.sides: list[int] = []
        self.timer = QTimer()
        self.timer.setInterval(DRAG_INTERVAL_MS)
        self.timer.timeout.connect(self._move)
        self._t = 0
        self._counting = False

    def _event(self, kind, x: float, y: float) -> None:
        from PySide6.QtCore import QPointF, Qt
        from PySide6.QtGui import QMouseEvent
        from PySide6.QtWidgets import QApplication

        pos = QPointF(x, y)
        button = Qt.MouseButton.NoButton if kind == QMouseEvent.Type.MouseMove else Qt.MouseButton.LeftButton
        held = Qt.MouseButton.NoButton if kind == QMouseEvent.Type.MouseButtonRelease else Qt.MouseButton.LeftButton
        QApplication.sendEvent(self.viewport, QMouseEvent(kind, pos, self.viewport.mapToGlobal(pos), button, held,
                                                          Qt.KeyboardModifier.NoModifier))

    def on_frame(self, frame, interactive: bool) -> None:
        if self._counting and interactive:
            self.frames += 1
            self.sides.append(max(frame.image.shape[:2]))

    def _position(self) -> tuple[float, float]:
        w, h = self.viewport.width(), self.viewport.height()
        return w / 2 + 150 * np.sin(self._t * DRAG_INTERVAL_MS / 1000 * 1.5), h / 2

    def start(self) -> None:
        from PySide6.QtGui import QMouseEvent

        self.frames, self.sides, self._t, self._counting = 0, [], 0, True
        self._event(QMouseEvent.Type.MouseButtonPress, *self._position())
        self.timer.start()

    def _move(self) -> None:
        from PySide6.QtGui import QMouseEvent

        self._t += 1
        self._event(QMouseEvent.Type.MouseMove, *self._position())

    def stop(self) -> None:
        from PySide6.QtGui import QMouseEvent

        self.timer.stop()
        self._counting = False
        self._event(QMouseEvent.Type.MouseButtonRelease, *self._position())


def wait(app, condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.005)
    return condition()


def training_window(train_seconds: float):
    """An editor window on a new demo-scene project whose training has passed WARM_STEPS steps."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.settings import AppSettings
    from engine.scene.procedural import DemoSceneConfig, write_demo_dataset

    qapp = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="retouch3d-bench-"))
    window = MainWindow(AppSettings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)), tmp / "projects")
    window.show_error = lambda message, details="": print("error:", message, file=sys.stderr)
    window.resize(1280, 800)
    window.show()
    data = write_demo_dataset(tmp / "data", DemoSceneConfig())
    window.new_project(data, tmp / "projects" / "demo")
    assert wait(qapp, lambda: window.session is not None and window.idle, 120), "the project did not open"
    window.scene.train_minutes.setValue(train_seconds / 60)
    window.scene.train()
    assert wait(qapp, lambda: window.session.live.ready, 120), "training did not start"
    assert wait(qapp, lambda: steps_done(window) >= WARM_STEPS, 300), "training made no progress"
    return qapp, window


def steps_done(window) -> int:
    """Training steps taken in the window (publishing the model bumped the live version once, then every step)."""
    return window.session.live.version - 1


def watch_training(window, seconds: float) -> tuple[int, int, float]:
    """Steps before and after ``seconds`` of the real event loop (no polling, no heartbeat: the user
    only watches), and the seconds it took."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    first, began = steps_done(window), time.perf_counter()
    QTimer.singleShot(round(seconds * 1000), loop.quit)
    loop.exec()
    return first, steps_done(window), time.perf_counter() - began


def run_window(seconds: float) -> dict:
    """Heartbeat and orbit figures in one editor window on the demo scene."""
    from PySide6.QtCore import Qt, QTimer

    qapp, window = training_window(seconds + WATCH_SECONDS + 60)
    drag = Drag(window.scene.viewport)
    window.scene.service.frame_ready.connect(drag.on_frame)
    first_step, last_step, watched = watch_training(window, WATCH_SECONDS)

    beats: list[float] = []
    heartbeat = QTimer()
    heartbeat.setTimerType(Qt.TimerType.PreciseTimer)
    heartbeat.setInterval(HEARTBEAT_MS)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    steps_before = window.session.live.version
    heartbeat.start()
    start = time.perf_counter()
    drag_start = start + (seconds - DRAG_SECONDS) / 2
    dragging = done_drag = False
    while time.perf_counter() - start < seconds:
        qapp.processEvents()
        now = time.perf_counter()
        if not dragging and not done_drag and now >= drag_start:
            drag.start()
            dragging, drag_began = True, now
        if dragging and now >= drag_start + DRAG_SECONDS:
            drag.stop()
            dragging, done_drag = False, True
            training_fps = drag.frames / (now - drag_began)
            training_sides = list(drag.sides)
        time.sleep(0.001)
    heartbeat.stop()
    steps_during = window.session.live.version - steps_before
    window.cancel_job()
    assert wait(qapp, lambda: window.idle, 120), "training did not stop"

    wait(qapp, lambda: False, 1.0)
    drag.start()
    began = time.perf_counter()
    wait(qapp, lambda: False, DRAG_SECONDS)
    drag.stop()
    idle_fps = drag.frames / (time.perf_counter() - began)
    window.scene.service.stop()

    late_ms = np.maximum(np.diff(np.array(beats)) * 1000 - HEARTBEAT_MS, 0)
    return {"heartbeat_ms": HEARTBEAT_MS, "heartbeats": len(beats), "seconds": seconds,
            "stall_max_ms": float(late_ms.max()), "stall_p99_ms": float(np.percentile(late_ms, 99)),
            "stall_median_ms": float(np.median(late_ms)),
            "orbit_fps_training": training_fps, "orbit_frame_side_training_median": statistics.median(training_sides),
            "orbit_fps_idle": idle_fps, "orbit_frame_side_idle_median": statistics.median(drag.sides),
            "training_steps_during_measurement": int(steps_during),
            "window_training_steps": [first_step, last_step],
            "window_training_steps_per_second": (last_step - first_step) / watched}


def cli_steps_per_second(first: int, last: int) -> float:
    """Training steps per second of the command line over the same steps of the same scene: the time of a
    run of ``last`` steps minus one of ``first`` (training is deterministic, so the steps are the same work)."""
    from engine.scene.procedural import DemoSceneConfig, write_demo_dataset

    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_demo_dataset(Path(tmp) / "data", DemoSceneConfig())
        for steps in (first, last):
            out = Path(tmp) / f"p{steps}"
            subprocess.run([sys.executable, str(REPO / "main.py"), "train", "--data", str(data), "--steps",
                            str(steps), "--out", str(out)], check=True, capture_output=True)
            seconds.append(json.loads((out / "report.json").read_text())["train_seconds"])
    return (last - first) / (seconds[1] - seconds[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the heartbeat measurement")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--window-training", type=float, metavar="SECONDS",
                        help="only measure training in the window over SECONDS and print {\"rate\": steps/s} "
                             "(benchmarks.contention runs it beside a busy neighbour)")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY"):
        raise SystemExit("run it under an X server, e.g. xvfb-run -a -s '-screen 0 1600x1000x24' python -m "
                         "benchmarks.gui_responsiveness")
    if args.window_training:
        _, window = training_window(args.window_training + 120)
        first, last, watched = watch_training(window, args.window_training)
        window.cancel_job()
        assert window.wait_for_job(120), "training did not stop"
        window.scene.service.stop()
        print(json.dumps({"rate": (last - first) / watched, "steps": [first, last]}))
        return
    startup = startup_seconds()
    print(f"start-up: median {statistics.median(startup):.2f} s ({', '.join(f'{s:.2f}' for s in startup)})",
          flush=True)
    figures = run_window(args.seconds)
    cli_rate = cli_steps_per_second(*figures["window_training_steps"])
    figures |= {"cli_training_steps_per_second": cli_rate,
                "window_vs_cli_training_speed": figures["window_training_steps_per_second"] / cli_rate}
    result = {"machine": machine_info(),
              "startup_seconds": startup, "startup_seconds_median": statistics.median(startup), **figures}
    print(f"UI thread while training ({figures['heartbeats']} beats over {args.seconds:.0f} s): "
          f"max stall {figures['stall_max_ms']:.1f} ms, p99 {figures['stall_p99_ms']:.1f} ms")
    print(f"orbit drag: {figures['orbit_fps_training']:.1f} frames/s while training "
          f"(median side {figures['orbit_frame_side_training_median']} px), {figures['orbit_fps_idle']:.1f} frames/s "
          f"idle (median side {figures['orbit_frame_side_idle_median']} px)")
    first, last = figures["window_training_steps"]
    print(f"training in the window: {figures['window_training_steps_per_second']:.2f} steps/s over steps "
          f"{first}-{last}, the command line {cli_rate:.2f} steps/s on the same steps "
          f"({100 * figures['window_vs_cli_training_speed']:.0f} %; target >= 80 %)")
    write_results(args.out, "gui_responsiveness", result)


if __name__ == "__main__":
    main()
