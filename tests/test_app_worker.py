"""The Qt adapter around engine jobs: events arrive on the UI thread, previews are throttled,
pause / cancel work between steps, failures become messages (pytest-qt, a fake job, no torch work)."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QThread  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.worker import JobRunner  # noqa: E402
from engine.core.errors import UserInputError  # noqa: E402
from engine.core.jobs import Artifact, JobWarning, Metrics, Preview, Progress  # noqa: E402


def fake_job(steps: int = 20, delay: float = 0.01, previews: bool = True, fail_at: int | None = None,
             error: Exception | None = None):
    """A job like the engine's: progress each step, a preview each step, metrics and a warning."""

    def make(cancel):
        yield JobWarning("starting")
        for step in range(1, steps + 1):
            if cancel.cancelled:
                yield Artifact("checkpoint-at-%d" % step, "checkpoint")
                return
            if fail_at == step:
                raise error
            time.sleep(delay)
            yield Progress(step, steps)
            if previews:
                yield Preview(step, np.full((4, 4, 3), step, np.uint8))
            if step % 5 == 0:
                yield Metrics(step, {"loss": 1.0 / step})
        yield Artifact("report.json", "report")

    return make


def test_events_reach_the_ui_thread_and_the_newest_preview_wins(qtbot):
    runner = JobRunner(fake_job(steps=30), min_preview_interval=0.05)
    seen: dict[str, list] = {"progress": [], "preview": [], "metrics": [], "artifact": [], "warning": []}
    threads = set()
    for name in seen:
        getattr(runner, name).connect(lambda ev, name=name: (seen[name].append(ev),
                                                             threads.add(QThread.currentThread())))
    with qtbot.waitSignal(runner.finished, timeout=10_000) as done:
        runner.start()
    assert done.args == [True]
    assert threads == {QApplication.instance().thread()}  # every signal handled on the UI thread
    assert [p.step for p in seen["progress"]] == list(range(1, 31))
    assert [m.step for m in seen["metrics"]] == [5, 10, 15, 20, 25, 30]
    assert seen["warning"] == ["starting"] and seen["artifact"][-1].kind == "report"
    shown = [p.step for p in seen["preview"]]
    assert 1 <= len(shown) < 30 and shown == sorted(shown) and shown[-1] == 30  # throttled, newest delivered


def test_pause_holds_the_job_between_steps_and_resume_continues(qtbot):
    runner = JobRunner(fake_job(steps=200, delay=0.005, previews=False))
    steps = []
    runner.progress.connect(lambda ev: steps.append(ev.step))
    runner.start()
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=5000)
    runner.pause()
    qtbot.wait(150)
    held = len(steps)
    qtbot.wait(300)
    assert runner.paused and len(steps) <= held + 1  # at most the step already in flight
    with qtbot.waitSignal(runner.finished, timeout=10_000):
        runner.resume()
    assert steps[-1] == 200


def test_cancel_stops_a_paused_job_cleanly(qtbot):
    runner = JobRunner(fake_job(steps=500, delay=0.005, previews=False))
    artifacts = []
    runner.artifact.connect(artifacts.append)
    runner.start()
    qtbot.wait(50)
    runner.pause()
    with qtbot.waitSignal(runner.finished, timeout=10_000) as done:
        runner.cancel()
    assert done.args == [False]
    assert artifacts and artifacts[-1].kind == "checkpoint"  # the job saved on its way out
    assert not runner.running


@pytest.mark.parametrize("error, expected, has_details", [
    (UserInputError("data/x.json: unreadable JSON"), "data/x.json: unreadable JSON", False),
    (RuntimeError("boom"), "The job stopped with an error: boom", True),
])
def test_a_failing_job_becomes_a_message_not_a_crash(qtbot, error, expected, has_details):
    runner = JobRunner(fake_job(steps=10, fail_at=3, error=error))
    failures = []
    runner.failed.connect(lambda message, details: failures.append((message, details)))
    with qtbot.waitSignal(runner.finished, timeout=10_000) as done:
        runner.start()
    assert done.args == [False]
    assert failures[0][0] == expected and bool(failures[0][1]) == has_details
    assert not runner.running
