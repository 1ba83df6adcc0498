"""Settings, the settings / export / error dialogs and the log dock (pytest-qt; settings live in a temporary
INI file, never the user's real ones; no export is run)."""

from __future__ import annotations

import logging
import threading

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QByteArray, QObject, QSettings, QUrl, Slot  # noqa: E402
from PySide6.QtGui import QDesktopServices  # noqa: E402
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QMessageBox  # noqa: E402

from app.dialogs import ErrorDialog, ExportDialog, SettingsDialog, show_error  # noqa: E402
from app.log_dock import MAX_LINES, LogDock, QtLogHandler  # noqa: E402
from app.settings import MAX_RECENT_PROJECTS, AppSettings  # noqa: E402


def ini_settings(path) -> AppSettings:
    return AppSettings(QSettings(str(path), QSettings.Format.IniFormat))


@pytest.fixture
def ini(tmp_path):
    return tmp_path / "settings.ini"


@pytest.fixture
def settings(ini) -> AppSettings:
    return ini_settings(ini)


# ---------------------------------------------------------------- AppSettings

def test_defaults_of_fresh_settings(settings):
    assert settings.ip2p_model == "" and settings.ip2p_config_dir == ""
    assert settings.eg3d_checkpoint == ""
    assert (settings.device, settings.memory_preset, settings.lpips_backbone) == ("auto", "default", "auto")
    assert settings.precision == "full"  # Instruct-NeRF2NeRF's default, on every device
    assert settings.autosave_minutes == 2
    assert settings.recent_projects == []
    assert settings.window_geometry.isEmpty() and settings.window_state.isEmpty()


def test_every_setting_survives_a_round_trip_through_the_file(ini, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    written = ini_settings(ini)
    written.ip2p_model = "timbrooks/instruct-pix2pix"
    written.ip2p_config_dir = "/models/ip2p-configs"
    written.eg3d_checkpoint = "/models/eg3d.pkl"
    written.device = "cuda"
    written.memory_preset = "low"
    written.precision = "half"
    written.lpips_backbone = "/weights/alexnet.pth"
    written.autosave_minutes = 0
    written.add_recent(project)
    written.window_geometry = QByteArray(b"\x01\x02geometry")
    written.window_state = QByteArray(b"\x00state\xff")
    written.sync()

    read = ini_settings(ini)
    assert read.ip2p_model == "timbrooks/instruct-pix2pix"
    assert read.ip2p_config_dir == "/models/ip2p-configs"
    assert read.eg3d_checkpoint == "/models/eg3d.pkl"
    assert (read.device, read.memory_preset, read.lpips_backbone) == ("cuda", "low", "/weights/alexnet.pth")
    assert read.precision == "half"
    assert read.autosave_minutes == 0
    assert read.recent_projects == [str(project.resolve())]
    assert bytes(read.window_geometry) == b"\x01\x02geometry"
    assert bytes(read.window_state) == b"\x00state\xff"


def test_invalid_choices_are_refused(settings):
    with pytest.raises(ValueError, match="device"):
        settings.device = "tpu"
    with pytest.raises(ValueError, match="memory"):
        settings.memory_preset = "tiny"
    with pytest.raises(ValueError, match="precision"):
        settings.precision = "double"
    with pytest.raises(ValueError, match="autosave"):
        settings.autosave_minutes = -1


def test_recent_projects_most_recent_first_deduplicated_bounded_and_existing(ini, tmp_path):
    folders = [tmp_path / f"project{i}" for i in range(MAX_RECENT_PROJECTS + 2)]
    for folder in folders:
        folder.mkdir()
    settings = ini_settings(ini)
    for folder in folders:
        settings.add_recent(folder)
    settings.add_recent(folders[5])  # opened again: moves to the front, once
    recent = settings.recent_projects
    assert recent[0] == str(folders[5].resolve())
    assert recent[1] == str(folders[-1].resolve())
    assert len(recent) == MAX_RECENT_PROJECTS == len(set(recent))
    assert str(folders[0].resolve()) not in recent  # the oldest fell off

    folders[-1].rmdir()
    settings.sync()
    reread = ini_settings(ini).recent_projects
    assert str(folders[-1].resolve()) not in reread
    assert reread[0] == str(folders[5].resolve())


def test_resolved_device(settings, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert settings.resolved_device() == "cpu"  # auto on a machine without a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert settings.resolved_device() == "cuda"
    settings.device = "cpu"
    assert settings.resolved_device() == "cpu"  # an explicit choice wins


# ---------------------------------------------------------------- SettingsDialog

def settings_dialog(qtbot, settings) -> SettingsDialog:
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def click_ok(dialog: SettingsDialog) -> None:
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()


def test_missing_model_path_is_named_inline_and_the_dialog_stays_open(qtbot, settings, tmp_path):
    dialog = settings_dialog(qtbot, settings)
    missing = str(tmp_path / "no-such-model")
    dialog.model_edit.setText(missing)
    click_ok(dialog)
    assert dialog.error_label.isVisible()
    assert missing in dialog.error_label.text()
    assert dialog.isVisible() and dialog.result() != QDialog.DialogCode.Accepted
    assert settings.ip2p_model == ""


def test_single_checkpoint_without_its_configs_is_refused(qtbot, settings, tmp_path):
    checkpoint = tmp_path / "ip2p.safetensors"
    checkpoint.write_bytes(b"")
    dialog = settings_dialog(qtbot, settings)
    dialog.model_edit.setText(str(checkpoint))
    click_ok(dialog)
    assert "configs" in dialog.error_label.text() and dialog.isVisible()


def test_valid_values_are_written_to_the_settings(qtbot, ini, settings, tmp_path):
    model = tmp_path / "ip2p"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    eg3d = tmp_path / "eg3d.pkl"
    eg3d.write_bytes(b"")
    alexnet = tmp_path / "alexnet.pth"
    alexnet.write_bytes(b"")
    dialog = settings_dialog(qtbot, settings)
    dialog.model_edit.setText(str(model))
    dialog.eg3d_edit.setText(str(eg3d))
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
    dialog.memory_combo.setCurrentIndex(dialog.memory_combo.findData("low"))
    assert dialog.precision_combo.currentData() == "full" and "GB" in dialog.precision_combo.currentText()
    dialog.precision_combo.setCurrentIndex(dialog.precision_combo.findData("half"))
    dialog.lpips_combo.setCurrentIndex(dialog.lpips_combo.findData("file"))
    assert dialog.lpips_edit.isEnabled()
    dialog.lpips_edit.setText(str(alexnet))
    dialog.autosave_spin.setValue(5)
    click_ok(dialog)
    assert dialog.result() == QDialog.DialogCode.Accepted and not dialog.isVisible()

    stored = ini_settings(ini)
    assert stored.ip2p_model == str(model) and stored.eg3d_checkpoint == str(eg3d)
    assert (stored.device, stored.memory_preset, stored.lpips_backbone) == ("cpu", "low", str(alexnet))
    assert stored.precision == "half"
    assert stored.autosave_minutes == 5


def test_hub_id_is_accepted_and_dialog_shows_stored_values(qtbot, settings):
    settings.lpips_backbone = "off"
    settings.device = "cuda"
    dialog = settings_dialog(qtbot, settings)
    assert dialog.lpips_combo.currentData() == "off" and not dialog.lpips_edit.isEnabled()
    assert dialog.device_combo.currentData() == "cuda"
    dialog.model_edit.setText("timbrooks/instruct-pix2pix")
    click_ok(dialog)
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert settings.ip2p_model == "timbrooks/instruct-pix2pix"


def test_alexnet_weights_status_line(qtbot, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from engine.core.metrics import alexnet_weights_path

    weights = alexnet_weights_path()
    assert str(tmp_path) in str(weights)
    text = settings_dialog(qtbot, settings).lpips_status_label.text()
    assert "not in the torch cache" in text and str(weights) in text

    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    assert "found" in settings_dialog(qtbot, settings).lpips_status_label.text()


# ---------------------------------------------------------------- ExportDialog

@pytest.fixture
def export_dialog(qtbot, tmp_path) -> ExportDialog:
    dialog = ExportDialog(tmp_path / "project")
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def choose(dialog: ExportDialog, kind: str) -> None:
    dialog.kind_combo.setCurrentIndex(dialog.kind_combo.findData(kind))


def export(qtbot, dialog: ExportDialog):
    with qtbot.waitSignal(dialog.export_requested, timeout=1000) as blocker:
        dialog.export_button.click()
    return blocker.args[0]


def test_output_follows_the_kind_until_the_user_picks_one(export_dialog, tmp_path):
    exports = tmp_path / "project" / "exports"
    assert export_dialog.out_edit.text() == str(exports / "dataset")
    choose(export_dialog, "mesh")
    assert export_dialog.out_edit.text() == str(exports / "mesh.glb")
    assert export_dialog.options_stack.currentWidget() is export_dialog.options_widget("mesh")
    choose(export_dialog, "video")
    assert export_dialog.out_edit.text() == str(exports / "video.mp4")
    export_dialog.out_edit.setText(str(tmp_path / "mine.mp4"))
    choose(export_dialog, "cameras")
    assert export_dialog.out_edit.text() == str(tmp_path / "mine.mp4")


def test_option_tooltips_are_the_config_field_docstrings(export_dialog):
    tip = export_dialog.options_widget("mesh").editors["resolution"].toolTip()
    assert "samples per side" in tip
    assert "chunk" not in export_dialog.options_widget("mesh").editors


@pytest.mark.parametrize("kind", ["dataset", "cameras"])
def test_kinds_without_options(qtbot, export_dialog, tmp_path, kind):
    out = tmp_path / ("out.json" if kind == "cameras" else "out")
    choose(export_dialog, kind)
    export_dialog.out_edit.setText(str(out))
    cfg = export(qtbot, export_dialog)
    assert (cfg.project, cfg.what, cfg.out) == (str(tmp_path / "project"), kind, str(out))


def test_point_cloud_options(qtbot, export_dialog, tmp_path):
    choose(export_dialog, "pointcloud")
    editors = export_dialog.options_widget("pointcloud").editors
    editors["views"].setValue(4)
    editors["max_side"].setValue(128)
    editors["min_accumulation"].setValue(0.5)
    export_dialog.out_edit.setText(str(tmp_path / "cloud.ply"))
    cfg = export(qtbot, export_dialog)
    assert (cfg.what, cfg.out) == ("pointcloud", str(tmp_path / "cloud.ply"))
    assert (cfg.options.views, cfg.options.max_side, cfg.options.min_accumulation) == (4, 128, 0.5)
    assert cfg.options.neighbours == 16  # untouched fields keep their defaults


def test_mesh_options(qtbot, export_dialog, tmp_path):
    choose(export_dialog, "mesh")
    export_dialog.options_widget("mesh").editors["resolution"].setValue(64)
    export_dialog.options_widget("mesh").editors["threshold"].setValue(20.0)
    export_dialog.out_edit.setText(str(tmp_path / "mesh.obj"))
    cfg = export(qtbot, export_dialog)
    assert (cfg.what, cfg.out, cfg.options.resolution, cfg.options.threshold) == ("mesh", str(tmp_path / "mesh.obj"),
                                                                             64, 20.0)


def test_video_orbit_and_camera_path(qtbot, export_dialog, tmp_path):
    choose(export_dialog, "video")
    options = export_dialog.options_widget("video")
    options.orbit_spin.setValue(30)
    options.fps_spin.setValue(24)
    options.size_spin.setValue(96)
    cfg = export(qtbot, export_dialog)
    assert cfg.out == str(tmp_path / "project" / "exports" / "video.mp4")
    assert (cfg.options.orbit, cfg.options.camera_path, cfg.options.fps, cfg.options.size) == (30, None, 24.0, 96)

    export_dialog.set_done(cfg.out)
    path = tmp_path / "camera_path.json"
    path.write_text("{}")
    options.path_radio.setChecked(True)
    options.fps_spin.setValue(0)  # "the camera path's"
    options.path_edit.setText(str(path))
    export_dialog.out_edit.setText(str(tmp_path / "frames"))
    cfg = export(qtbot, export_dialog)
    assert (cfg.out, cfg.options.orbit, cfg.options.camera_path, cfg.options.fps) == (str(tmp_path / "frames"), None,
                                                                                str(path), None)


@pytest.mark.parametrize("kind, out, expected", [("mesh", "mesh.txt", "mesh.txt"),
                                                 ("cameras", "cameras.ply", ".json"),
                                                 ("video", "", "choose where")])
def test_invalid_choices_are_shown_inline_and_nothing_is_exported(qtbot, export_dialog, tmp_path, kind, out,
                                                                  expected):
    choose(export_dialog, kind)
    export_dialog.out_edit.setText(str(tmp_path / out) if out else "")
    with qtbot.assertNotEmitted(export_dialog.export_requested):
        export_dialog.export_button.click()
    assert export_dialog.error_label.isVisible() and expected in export_dialog.error_label.text()
    assert export_dialog.isVisible() and export_dialog.export_button.isEnabled()


def test_out_of_range_option_and_missing_camera_path_are_refused(qtbot, export_dialog, tmp_path):
    choose(export_dialog, "mesh")
    export_dialog.options_widget("mesh").editors["resolution"].setValue(4)
    with qtbot.assertNotEmitted(export_dialog.export_requested):
        export_dialog.export_button.click()
    assert "resolution" in export_dialog.error_label.text()

    choose(export_dialog, "video")
    export_dialog.options_widget("video").path_radio.setChecked(True)
    export_dialog.options_widget("video").path_edit.setText(str(tmp_path / "nowhere.json"))
    with qtbot.assertNotEmitted(export_dialog.export_requested):
        export_dialog.export_button.click()
    assert "nowhere.json" in export_dialog.error_label.text()


class UrlCatcher(QObject):
    """Receives the URLs QDesktopServices would hand to the desktop."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.urls.append(url)


def test_progress_done_and_open_folder(qtbot, export_dialog, tmp_path):
    choose(export_dialog, "pointcloud")
    out = tmp_path / "out" / "cloud.ply"
    export_dialog.out_edit.setText(str(out))
    export(qtbot, export_dialog)
    assert not export_dialog.export_button.isEnabled() and export_dialog.cancel_button.isVisible()
    assert not export_dialog.kind_combo.isEnabled()
    with qtbot.waitSignal(export_dialog.cancel_requested, timeout=1000):
        export_dialog.cancel_button.click()

    export_dialog.set_progress(0.25, "rendering view 4 of 16")
    assert export_dialog.progress_bar.value() == 250
    assert export_dialog.status_label.text() == "rendering view 4 of 16"
    export_dialog.set_progress(None, "loading the model")
    assert export_dialog.progress_bar.maximum() == 0  # busy: the fraction is unknown

    out.parent.mkdir()
    out.write_bytes(b"ply")
    assert export_dialog.open_folder_when_done
    export_dialog.set_done(str(out))
    assert export_dialog.progress_bar.value() == export_dialog.progress_bar.maximum() == 1000
    assert str(out) in export_dialog.status_label.text()
    assert export_dialog.open_folder_button.isVisible() and export_dialog.export_button.isEnabled()
    assert not export_dialog.cancel_button.isVisible()

    catcher = UrlCatcher()
    QDesktopServices.setUrlHandler("file", catcher, "open")
    try:
        export_dialog.open_folder_button.click()
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert [url.toLocalFile() for url in catcher.urls] == [str(out.parent)]


def test_failure_lets_the_user_retry(qtbot, export_dialog):
    export(qtbot, export_dialog)
    export_dialog.set_failed("Cancelled.")
    assert export_dialog.status_label.text() == "Cancelled."
    assert export_dialog.export_button.isEnabled() and export_dialog.kind_combo.isEnabled()
    assert not export_dialog.open_folder_button.isVisible()


# ---------------------------------------------------------------- errors

def test_error_dialog_text_and_details(qtbot):
    dialog = ErrorDialog("The model folder is missing.", "Traceback: ...")
    qtbot.addWidget(dialog)
    assert dialog.text() == "The model folder is missing."
    assert dialog.detailedText() == "Traceback: ..."
    assert dialog.icon() == QMessageBox.Icon.Critical
    plain = ErrorDialog("No details.")
    qtbot.addWidget(plain)
    assert plain.detailedText() == ""


def test_show_error_opens_without_blocking(qtbot):
    dialog = show_error(None, "Export failed.", "disk full")
    assert isinstance(dialog, ErrorDialog)
    qtbot.waitExposed(dialog)
    assert dialog.isVisible() and dialog.text() == "Export failed." and dialog.detailedText() == "disk full"
    dialog.close()


# ---------------------------------------------------------------- LogDock

def test_log_lines_with_levels_and_colours(qtbot):
    dock = LogDock()
    qtbot.addWidget(dock)
    assert dock.windowTitle() == "Log" and dock.text.isReadOnly()
    dock.log("project opened")
    dock.log("odd frame size", "warning")
    dock.log("export failed", "error")
    lines = dock.text.toPlainText().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["info: project opened", "warning: odd frame size",
                                                        "error: export failed"]
    assert lines[0][2] == ":" and lines[0][5] == ":"  # HH:MM:SS
    document = dock.text.document()
    colours = [document.findBlockByNumber(i).begin().fragment().charFormat().foreground().color().name()
               for i in range(3)]
    assert colours[1] != colours[0] and colours[2] not in (colours[0], colours[1])
    with pytest.raises(ValueError):
        dock.log("?", "debug")


def test_log_keeps_at_most_max_lines(qtbot):
    dock = LogDock()
    qtbot.addWidget(dock)
    for i in range(MAX_LINES + 5):
        dock.log(f"line {i}")
    assert dock.text.document().blockCount() == MAX_LINES
    assert dock.text.toPlainText().splitlines()[-1].endswith(f"line {MAX_LINES + 4}")


def test_logging_from_a_worker_thread_reaches_the_dock(qtbot):
    dock = LogDock()
    qtbot.addWidget(dock)
    handler = QtLogHandler(dock)
    logger = logging.getLogger("retouch3d.test_log_dock")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        worker = threading.Thread(target=lambda: (logger.info("trained 10 steps"), logger.error("out of memory")))
        worker.start()
        worker.join()
        qtbot.waitUntil(lambda: "out of memory" in dock.text.toPlainText(), timeout=2000)
    finally:
        logger.removeHandler(handler)
    text = dock.text.toPlainText()
    assert "info: retouch3d.test_log_dock: trained 10 steps" in text
    assert "error: retouch3d.test_log_dock: out of memory" in text
