"""The editor window end to end (pytest-qt under Xvfb): a project from a capture, training with
the viewport following it, point and type, an IDU edit, an export; and the bad-input cases
(a folder that is not a capture, a damaged manifest, a missing model, closing during a job)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtWidgets import QMessageBox  # noqa: E402


def _frames(window) -> list[np.ndarray]:
    shown: list[np.ndarray] = []
    window.scene.service.frame_ready.connect(lambda frame, interactive: shown.append(frame.image.copy()))
    return shown


def _open(qtbot, window, data, root) -> None:
    assert window.new_project(data, root)
    qtbot.waitUntil(lambda: window.session is not None and window.idle, timeout=60_000)


def test_capture_to_edit_to_export(qtbot, window, tiny_demo, trained_tiny, tmp_path):
    import shutil

    import imageio

    from engine.editing.store import EditStore
    from engine.export import ExportConfig
    from engine.export.video import VideoConfig

    shown = _frames(window)
    _open(qtbot, window, tiny_demo, tmp_path / "new")
    assert window.session.view_names and window.scene.strip.thumbnail_list.count() == len(window.session.view_names)
    assert not window.session.trained and not window.scene.edit_panel.apply_button.isEnabled()

    # train a few steps: the viewport shows the field as it is being trained
    window.scene.train_minutes.setValue(0.1)
    window.scene.train()
    qtbot.waitUntil(lambda: len(shown) >= 1, timeout=30_000)
    first = shown[0]
    qtbot.waitUntil(lambda: window.idle, timeout=60_000)
    assert window.session.trained and not window.errors
    window.scene.viewport.refresh()
    count = len(shown)
    qtbot.waitUntil(lambda: len(shown) > count, timeout=30_000)
    assert first.shape != shown[-1].shape or np.abs(first.astype(int) - shown[-1].astype(int)).mean() > 1

    # a field trained longer (the same tiny scene), reopened from its folder
    shutil.copytree(trained_tiny, tmp_path / "proj")
    window.open_project(tmp_path / "proj", check_unsaved=False)
    qtbot.waitUntil(lambda: window.session.root == tmp_path / "proj" and window.idle, timeout=60_000)
    assert window.session.trained and window.scene.edit_panel.apply_button.isEnabled()

    # point: snap to a training camera (double-click its thumbnail), click where the view shows the
    # scene; the region is placed there and drawn
    name = window.session.view_names[0]
    frame_index = [p.stem for p in window.session.dataset.image_paths].index(name)
    window.scene.strip.snap_requested.emit(name)
    assert np.allclose(window.scene.viewport.camera.c2w(), window.session.dataset.cameras.c2w[frame_index], atol=1e-9)
    frames = []
    window.scene.service.frame_ready.connect(lambda frame, interactive: frames.append(frame))
    qtbot.waitUntil(lambda: any(not f.camera is None and np.allclose(f.camera.c2w(), window.scene.viewport.camera.c2w())
                                for f in frames), timeout=20_000)
    frame = frames[-1]
    row, col = np.unravel_index(np.argmax(frame.accumulation), frame.accumulation.shape)
    window.scene.viewport.clicked.emit((col + 0.5) * window.scene.viewport.width() / frame.image.shape[1],
                                 (row + 0.5) * window.scene.viewport.height() / frame.image.shape[0])
    qtbot.waitUntil(lambda: window.scene.edit_panel.region_point() is not None, timeout=10_000)
    assert window.scene.viewport._region is not None  # the gizmo is drawn where the region is

    # preview on this view: a 2D edit beside the render, the scene untouched
    window.scene.edit_panel.instruction_edit.setText("make it red")
    window.scene.edit_panel.preview_button.click()
    qtbot.waitUntil(lambda: window.scene._preview_dialog is not None and window.scene._preview_dialog.isVisible()
                    and window.idle, timeout=30_000)
    assert not (tmp_path / "proj" / "edits").exists()
    window.scene._preview_dialog.close()

    # type: an offline instruction, a short IDU edit
    window.scene.edit_panel.minutes.setValue(0.1)
    window.scene.edit_panel.apply_button.click()
    assert window.busy and window.holding("scene") == "edit"
    strip = window.scene.strip  # browsing stays, but no reverts while the job writes edits
    assert strip.isEnabled() and strip.history_locked and not strip.revert_button.isEnabled()
    assert not window.scene.undo_action.isEnabled()
    qtbot.waitUntil(lambda: window.idle, timeout=120_000)
    assert not window.errors
    report = json.loads((tmp_path / "proj" / "edits" / "report.json").read_text())
    assert report["instruction"] == "make it red" and report["views_edited"] >= 1 and report["originals_unchanged"]
    assert report["region"] is not None
    edited = EditStore(tmp_path / "proj").views()
    assert edited and all(window.scene.strip.is_edited(v) for v in edited)

    # export a turntable video through the window's export path
    out = tmp_path / "turntable.mp4"
    window.scene.export(ExportConfig(project=str(tmp_path / "proj"), what="video", out=str(out),
                               options=VideoConfig(orbit=6, size=32)))
    qtbot.waitUntil(lambda: window.idle, timeout=60_000)
    assert not window.errors
    assert len(imageio.mimread(out)) == 6

    # save and reopen: the field, edits and the window's settings come back
    window.scene.set_render_mode("depth")
    window.save_project()
    window.session = None
    window.open_project(tmp_path / "proj")
    qtbot.waitUntil(lambda: window.session is not None and window.idle, timeout=60_000)
    assert window.session.trained and window.scene.render_mode == "depth"
    assert window.scene.edit_panel.instruction_edit.text() == "make it red"
    assert window.scene.edit_panel.region_point() is not None


def test_dropping_a_folder_that_is_not_a_capture(window, tmp_path):
    folder = tmp_path / "holiday photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    window.open_dropped(folder)
    assert window.session is None and not (window.projects_root / "holiday photos").exists()
    assert len(window.errors) == 1 and "holiday photos" in window.errors[0] and "transforms.json" in window.errors[0]


def test_dropping_a_capture_starts_a_project(qtbot, window, tiny_demo):
    window.open_dropped(tiny_demo)
    qtbot.waitUntil(lambda: window.session is not None and window.idle, timeout=60_000)
    assert window.session.root.parent == window.projects_root
    assert window.settings.recent_projects[0] == str(window.session.root)


def test_damaged_manifest_is_restored_from_its_backup(qtbot, window, tiny_demo, tmp_path):
    root = tmp_path / "proj"
    _open(qtbot, window, tiny_demo, root)
    window.scene.edit_panel.instruction_edit.setText("make it blue")
    window.save_project()
    window.session = None
    (root / "retouch3d.json").write_text('{"schema": 1, "train_co')  # damaged outside the program
    asked = []
    window.ask = lambda title, text: asked.append(text) or True
    window.open_project(root)
    qtbot.waitUntil(lambda: window.session is not None and window.idle, timeout=60_000)
    assert "unreadable project manifest" in asked[0]
    assert json.loads((root / "retouch3d.json").read_text())["app"]["scene"]["edit_panel"]["instruction"] == "make it blue"


def test_damaged_manifest_without_backup_is_a_clear_error(window, tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "retouch3d.json").write_text("not json")
    window.open_project(root)
    assert window.session is None and "unreadable project manifest" in window.errors[0]
    assert (root / "retouch3d.json").read_text() == "not json"  # nothing overwritten


def test_missing_instructpix2pix_model_is_reported_in_the_panel(qtbot, window, tiny_demo, tmp_path):
    _open(qtbot, window, tiny_demo, tmp_path / "proj")
    window.session.trained = True  # the panel checks its inputs before any job
    window._update_actions()
    panel = window.scene.edit_panel
    panel.editor_combo.setCurrentIndex(panel.editor_combo.findData("ip2p"))
    panel.model_edit.setText(str(tmp_path / "no-such-model"))
    panel.instruction_edit.setText("make it snowy")
    panel.apply_button.click()
    assert not window.busy and "no-such-model" in panel.error_text()


def test_unsaved_changes_prompt_and_close_during_a_job(qtbot, window, tiny_demo, tmp_path):
    root = tmp_path / "proj"
    _open(qtbot, window, tiny_demo, root)
    window.scene.edit_panel.instruction_edit.setText("make it green")
    window.mark_dirty()
    window.ask_save = lambda: QMessageBox.StandardButton.Cancel
    assert not window.close() and window.isVisible()  # cancelled: nothing happens

    window.scene.train_minutes.setValue(5)
    window.scene.train()
    qtbot.waitUntil(lambda: window.session.live.ready, timeout=30_000)
    assert window.close()  # asks (answered yes), cancels the job, saves
    assert not window.busy
    assert sorted((root / "checkpoints").glob("step_*.pt"))  # the job saved its checkpoint
    saved = json.loads((root / "retouch3d.json").read_text())
    assert saved["app"]["scene"]["edit_panel"]["instruction"] == "make it green"

    from app.core.project_session import open_job

    result = {}
    list(open_job(root, result))  # the project still opens, with the field trained so far
    assert result["session"].trained


def test_a_training_and_an_export_run_side_by_side_each_in_its_own_row(qtbot, window, trained_tiny, tmp_path):
    import shutil

    import imageio

    from engine.export import ExportConfig
    from engine.export.video import VideoConfig

    shutil.copytree(trained_tiny, tmp_path / "proj")
    window.open_project(tmp_path / "proj", check_unsaved=False)
    qtbot.waitUntil(lambda: window.session is not None and window.idle, timeout=60_000)
    window.scene.train_minutes.setValue(0.2)
    window.scene.train()
    out = tmp_path / "turntable.mp4"
    assert window.scene.export(ExportConfig(project=str(tmp_path / "proj"), what="video", out=str(out),
                                            options=VideoConfig(orbit=4, size=32))) is not None
    assert window.holding("scene") == "train" and window.holding("export") == "export"
    assert [row.title_label.text() for row in window.jobs_panel.rows[:2]] == ["Export video", "Training proj"]
    window.scene.train()  # a second training of the same field is refused, saying why
    assert window.errors and "the train job (Training proj) runs" in window.errors[-1]
    assert not window.scene.train_action.isEnabled() and not window.open_action.isEnabled()
    qtbot.waitUntil(lambda: window.idle, timeout=120_000)
    assert len(window.errors) == 1 and len(imageio.mimread(out)) == 4
    assert all(row.status_label.text() == "finished" for row in window.jobs_panel.rows[:2])
