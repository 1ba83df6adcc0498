"""Shared fixtures: the data beside the repository and small generated scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
FACE = SHARED / "data" / "in2n-face"

needs_face = pytest.mark.skipif(not (FACE / "transforms.json").exists(),
                                reason=f"the in2n-face capture is not at {FACE} (../shared is absent in a user's clone)")


@pytest.fixture(autouse=True)
def _kernel_cache(tmp_path_factory, monkeypatch):
    """Compile the C kernels once per session into a temporary cache."""
    monkeypatch.setenv("RETOUCH3D_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A small procedural demo dataset (24 views, 48 px) written once per session."""
    from engine.scene.procedural import DemoSceneConfig, write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "data", DemoSceneConfig(n_views=24, image_size=48))


@pytest.fixture(scope="session")
def trained_tiny(tiny_demo, tmp_path_factory) -> Path:
    """A field trained briefly (300 steps) on the tiny demo scene, with its report and held-out renders;
    copy it before changing it."""
    from engine.core.jobs import run_job
    from engine.scene.trainer import TrainConfig, train_job

    out = tmp_path_factory.mktemp("trained") / "trained"
    run_job(train_job(TrainConfig(data=str(tiny_demo), out=str(out), steps=300)), lambda ev: None)
    return out


@pytest.fixture
def window(qtbot, tmp_path):
    """The editor window, shown, with settings in a temporary file; errors are collected in
    ``window.errors`` and questions answered, so no modal dialog waits on a test."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow
    from app.settings import AppSettings

    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    win = MainWindow(settings, projects_root=tmp_path / "projects")
    win.errors = []
    win.show_error = lambda message, details="": win.errors.append(message)
    win.ask = lambda title, text: True
    win.ask_save = lambda: QMessageBox.StandardButton.Discard  # a failed test must not hang on the prompt
    qtbot.addWidget(win)
    win.resize(900, 640)
    win.show()
    qtbot.waitExposed(win)
    yield win
    if win.busy:
        win.cancel_all_jobs()
        win.wait_for_job(60)
    for workspace in win.workspaces:
        workspace.stop()
