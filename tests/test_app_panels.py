"""The dataset strip (thumbnails, compare wipe, revert / version history with undo) and the jobs
panel (progress, ETA, plots, pause / resume / cancel) with pytest-qt and a fake job; no torch work."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402

from app.scene.dataset_strip import DatasetStrip  # noqa: E402
from app.core.formatting import format_duration, log_ticks  # noqa
from app.jobs_panel import JobsPanel  # noqa: E402
from app.worker import JobRunner  # noqa: E402
from engine.core.jobs import JobWarning, Metrics, Progress  # noqa: E402
from engine.editing.store import EditStore  # noqa: E402

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def solid(colour: tuple[int, int, int], h: int = 24, w: int = 32) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def close_to(colour: QColor, expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip((colour.red(), colour.green(), colour.blue()), expected))


@pytest.fixture
def strip(qtbot, tmp_path) -> DatasetStrip:
    """Three red views; view_a has two blue-ish edits (v2 current), view_b one green edit, view_c none."""
    store = EditStore(tmp_path)
    store.add("view_a", solid((20, 20, 150)), instruction="make it blue")
    store.add("view_a", solid(BLUE), instruction="bluer")
    store.add("view_b", solid(GREEN), instruction="make it green")
    widget = DatasetStrip()
    qtbot.addWidget(widget)
    widget.resize(700, 500)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_views(["view_a", "view_b", "view_c"], [solid(RED)] * 3, store)
    return widget


def sample_wipe(strip: DatasetStrip) -> tuple[QColor, QColor]:
    """Colours at a quarter and three quarters of the compare image's width, mid-height."""
    image = strip.compare_view.grab().toImage()
    rect = strip.compare_view.image_rect()
    ratio = image.width() / strip.compare_view.width()  # grab() is in device pixels
    y = int((rect.top() + rect.height() / 2) * ratio)
    left = image.pixelColor(int((rect.left() + rect.width() * 0.25) * ratio), y)
    right = image.pixelColor(int((rect.left() + rect.width() * 0.75) * ratio), y)
    return left, right


def test_strip_shows_every_view_and_marks_the_edited_ones(strip):
    items = [strip.thumbnail_list.item(row) for row in range(strip.thumbnail_list.count())]
    assert len(items) == 3
    assert items[0].text() == "view_a\nedited (v2)" and items[1].text() == "view_b\nedited (v1)"
    assert items[2].text() == "view_c" and "edited" not in items[2].text()
    # an edited view's thumbnail holds the original and the edit side by side, 96 px high
    edited_icon = items[0].icon().availableSizes()[0]
    plain_icon = items[2].icon().availableSizes()[0]
    assert edited_icon.height() == plain_icon.height() == 96 and edited_icon.width() > 2 * plain_icon.width()


def test_cells_are_as_wide_as_the_thumbnails_they_hold(qtbot, tmp_path):
    strip = DatasetStrip()
    qtbot.addWidget(strip)
    store = EditStore(tmp_path)
    strip.set_views(["view_a", "view_b"], [solid(RED)] * 2, store)  # 32 x 24 images: 128 x 96 thumbnails
    assert strip.thumbnail_list.gridSize().width() == 128 + 12  # originals only: no gaps between them
    store.add("view_b", solid(GREEN), instruction="make it green")
    strip.refresh_view("view_b")
    assert strip.thumbnail_list.gridSize().width() == 2 * 128 + 2 + 12  # room for original beside edit


def test_selecting_a_view_shows_a_wipe_between_edit_and_original(qtbot, strip):
    with qtbot.waitSignal(strip.view_selected, timeout=1000) as selected:
        strip.select_view("view_a")
    assert selected.args == ["view_a"]
    assert strip.compare_slider.isEnabled() and strip.compare_slider.value() == 50
    left, right = sample_wipe(strip)
    assert close_to(left, BLUE) and close_to(right, RED)
    strip.compare_slider.setValue(100)  # all edit
    left, right = sample_wipe(strip)
    assert close_to(left, BLUE) and close_to(right, BLUE)

    strip.select_view("view_c")  # never edited: the original alone, nothing to compare
    assert not strip.compare_slider.isEnabled() and not strip.revert_button.isEnabled()
    left, right = sample_wipe(strip)
    assert close_to(left, RED) and close_to(right, RED)


def test_revert_is_undoable_and_redoable(qtbot, strip):
    store = strip.store
    strip.select_view("view_b")
    assert strip.is_edited("view_b")
    with qtbot.waitSignal(strip.edits_changed, timeout=1000) as changed:
        qtbot.mouseClick(strip.revert_button, Qt.MouseButton.LeftButton)
    assert changed.args == ["view_b"]
    assert EditStore(store.root.parent).current("view_b") is None  # written to the project on disk
    assert strip.thumbnail_list.item(1).text() == "view_b"
    assert not strip.compare_slider.isEnabled() and strip.undo_stack.canUndo()

    with qtbot.waitSignal(strip.edits_changed, timeout=1000):
        qtbot.mouseClick(strip.undo_button, Qt.MouseButton.LeftButton)
    edit = EditStore(store.root.parent).current("view_b")
    assert edit is not None and tuple(edit[0, 0]) == GREEN
    assert strip.thumbnail_list.item(1).text() == "view_b\nedited (v1)"
    left, right = sample_wipe(strip)
    assert close_to(left, GREEN) and close_to(right, RED)

    with qtbot.waitSignal(strip.edits_changed, timeout=1000):
        qtbot.mouseClick(strip.redo_button, Qt.MouseButton.LeftButton)
    assert EditStore(store.root.parent).current_index("view_b") == -1


def test_a_locked_history_still_lets_the_user_browse_and_compare(qtbot, strip):
    strip.select_view("view_b")
    qtbot.mouseClick(strip.revert_button, Qt.MouseButton.LeftButton)
    strip.select_view("view_a")
    strip.set_history_locked(True)  # an edit job writes the views' edits
    assert strip.undo_stack.canUndo() and not strip.undo_button.isEnabled()
    assert not (strip.revert_button.isEnabled() or strip.previous_button.isEnabled())
    assert strip.compare_slider.isEnabled()
    strip.select_view("view_b")
    assert strip.selected_view == "view_b" and strip.version_label.text() == "view_b: original (1 edit in its history)"
    strip.set_history_locked(False)
    assert strip.undo_button.isEnabled() and not strip.redo_button.isEnabled()


def test_version_steps_walk_the_history_through_the_undo_stack(qtbot, strip):
    strip.select_view("view_a")
    assert strip.previous_button.isEnabled() and not strip.next_button.isEnabled()  # v2 of 2
    changes = []
    strip.edits_changed.connect(changes.append)
    qtbot.mouseClick(strip.previous_button, Qt.MouseButton.LeftButton)
    assert strip.store.current_index("view_a") == 0 and strip.next_button.isEnabled()
    assert strip.thumbnail_list.item(0).text() == "view_a\nedited (v1)"
    qtbot.mouseClick(strip.previous_button, Qt.MouseButton.LeftButton)
    assert strip.store.current_index("view_a") == -1 and not strip.previous_button.isEnabled()
    strip.undo_stack.undo()
    strip.undo_stack.undo()
    assert strip.store.current_index("view_a") == 1
    assert changes == ["view_a"] * 4


def test_refresh_view_sees_an_edit_the_job_wrote_through_its_own_store(strip, tmp_path):
    strip.select_view("view_c")
    EditStore(tmp_path).add("view_c", solid(BLUE), instruction="from the job")
    strip.refresh_view("view_c")
    assert strip.thumbnail_list.item(2).text() == "view_c\nedited (v1)"
    assert strip.compare_slider.isEnabled()
    left, right = sample_wipe(strip)
    assert close_to(left, BLUE) and close_to(right, RED)


def test_double_click_asks_to_snap_to_that_camera(qtbot, strip):
    item = strip.thumbnail_list.item(1)
    with qtbot.waitSignal(strip.snap_requested, timeout=1000) as snap:
        strip.thumbnail_list.itemDoubleClicked.emit(item)
    assert snap.args == ["view_b"]


def fake_job(steps: int = 40, delay: float = 0.01):
    """Progress every step, loss and PSNR every other step, a warning halfway."""

    def make(cancel):
        for step in range(1, steps + 1):
            if cancel.cancelled:
                return
            time.sleep(delay)
            yield Progress(step, steps)
            if step % 2 == 0:
                yield Metrics(step, {"loss": 1.0 / step, "psnr_train": 10.0 + step})
            if step == steps // 2:
                yield JobWarning("halfway there")

    return make


@pytest.fixture
def panel(qtbot) -> JobsPanel:
    widget = JobsPanel()
    qtbot.addWidget(widget)
    widget.show()
    return widget


def test_jobs_panel_follows_a_job_through_pause_and_resume_to_the_end(qtbot, panel):
    assert panel.rows == [] and panel.idle_label.isVisible()
    runner = JobRunner(fake_job(steps=150))  # long enough to pause it after the ETA shows
    row = panel.attach(runner, "Training")
    assert row.title_label.text() == "Training" and row.cancel_button.isEnabled() and not panel.idle_label.isVisible()
    runner.start()
    qtbot.waitUntil(lambda: row.eta_label.text() != "ETA —", timeout=5000)
    assert row.eta_label.text().startswith("ETA ") and row.eta_label.text().endswith(" s")

    qtbot.mouseClick(row.pause_button, Qt.MouseButton.LeftButton)
    assert runner.paused and row.pause_button.text() == "Resume"
    qtbot.wait(100)
    with qtbot.waitSignal(runner.finished, timeout=10_000) as done:
        qtbot.mouseClick(row.pause_button, Qt.MouseButton.LeftButton)
    assert done.args == [True] and row.pause_button.text() == "Pause"

    assert row.progress_bar.value() == row.progress_bar.maximum()
    assert row.progress_bar.format() == "done"  # not the last step's message (e.g. "evaluating")
    assert row.status_label.text() == "finished"
    assert row.loss_points == [(s, 1.0 / s) for s in range(2, 151, 2)]
    assert row.psnr_points == [(s, 10.0 + s) for s in range(2, 151, 2)]
    x, _y = row.psnr_plot.listDataItems()[0].getData()  # the plot drew what the row received
    assert list(x) == list(range(2, 151, 2))
    assert not row.pause_button.isEnabled() and not row.cancel_button.isEnabled()


def test_jobs_run_side_by_side_each_in_its_row_and_finished_rows_are_trimmed(qtbot, panel):
    from app.jobs_panel import MAX_FINISHED_ROWS

    slow, quick = JobRunner(fake_job(steps=400, delay=0.005)), JobRunner(fake_job(steps=20))
    slow_row, quick_row = panel.attach(slow, "Training"), panel.attach(quick, "Export video")
    assert panel.rows == [quick_row, slow_row]  # the newest on top
    slow.start()
    with qtbot.waitSignal(quick.finished, timeout=10_000):
        quick.start()
    assert quick_row.status_label.text() == "finished" and slow_row.running
    assert quick_row.loss_plot is not None and slow_row.loss_points != quick_row.loss_points  # each its own plots
    with qtbot.waitSignal(slow.finished, timeout=10_000):
        slow.cancel()
    assert slow_row.status_label.text() == "cancelled" and quick_row.status_label.text() == "finished"
    for k in range(MAX_FINISHED_ROWS + 1):
        runner = JobRunner(fake_job(steps=2))
        panel.attach(runner, f"job {k}")
        with qtbot.waitSignal(runner.finished, timeout=5000):
            runner.start()
    assert len(panel.rows) == MAX_FINISHED_ROWS and panel.rows[0].title_label.text() == f"job {MAX_FINISHED_ROWS}"


def test_cancel_mid_job_says_cancelled_and_disables_the_buttons(qtbot, panel):
    runner = JobRunner(fake_job(steps=500, delay=0.005))
    panel = panel.attach(runner, "Editing")
    runner.start()
    qtbot.waitUntil(lambda: panel.progress_bar.value() > 0, timeout=5000)
    with qtbot.waitSignal(runner.finished, timeout=10_000) as done:
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert done.args == [False]
    assert panel.status_label.text() == "cancelled"
    assert not panel.pause_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert 0 < panel.progress_bar.value() < panel.progress_bar.maximum()  # the last state stays shown


def test_a_failed_job_and_warnings_reach_the_status_line(qtbot, panel):
    def make(cancel):
        yield Progress(1, None, fraction=0.5)
        yield Metrics(1, {"l1": 0.25})
        yield JobWarning("the model runs on the CPU")
        raise RuntimeError("out of memory")

    runner = JobRunner(make)
    panel = panel.attach(runner, "Editing")
    warnings = []
    runner.warning.connect(lambda message: warnings.append(panel.status_label.text()))
    with qtbot.waitSignal(runner.finished, timeout=5000):
        runner.start()
    assert warnings == ["warning: the model runs on the CPU"]
    assert panel.status_label.text() == "failed: The job stopped with an error: out of memory"
    assert panel.progress_bar.format() == "step 1"  # open-ended total, the bar from the fraction
    assert panel.progress_bar.value() == panel.progress_bar.maximum() // 2
    assert panel.loss_points == [(1, 0.25)]


def test_durations_read_like_speech():
    assert format_duration(45) == "45 s"
    assert format_duration(80) == "1 min 20 s"
    assert format_duration(2 * 3600 + 5 * 60 + 10) == "2 h 05 min"


def test_loss_axis_ticks_are_few_and_readable():
    marks, minor = log_ticks(9e-4, 0.016)  # a typical run: about one decade
    labels = {label: position for position, label in marks}
    assert {"0.001", "0.002", "0.005", "0.01", "0.02"} <= set(labels) and minor == []
    assert labels["0.002"] == pytest.approx(np.log10(0.002))
    wide, _ = log_ticks(1e-4, 3.0)  # several decades: decades only
    assert [label for _, label in wide] == ["0.0001", "0.001", "0.01", "0.1", "1", "10"]
