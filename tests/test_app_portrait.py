"""The Portrait workspace in the editor window (pytest-qt under Xvfb) on a tiny random generator
(tests/tiny_portrait.py): sampling, orbiting with the sliders and by dragging the image, the
three view modes, checkpoints (no semantic view, truncation, errors) and the orbit video job."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from tiny_portrait import write_tiny_generator  # noqa: E402

import app.portrait.renderer as portrait_renderer  # noqa: E402
import app.portrait.workspace as portrait_workspace  # noqa: E402
from engine.portrait.cameras import camera_label  # noqa: E402

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    return write_tiny_generator(tmp_path_factory.mktemp("portrait") / "tiny")


@pytest.fixture
def window(window, tiny_generator, monkeypatch):
    """The editor window (conftest's) with its portrait workspace reading the tiny generator as its
    prior; the workspace is not shown yet, so nothing is loaded."""
    monkeypatch.setattr(portrait_renderer, "SEMANTIC_RESOLUTION", 24)  # ground truth is slow to trace on a CPU
    monkeypatch.setattr(portrait_renderer, "SEMANTIC_DRAG_RESOLUTION", 16)
    window.portrait.prior_path = str(tiny_generator)
    return window


def _next_frame(qtbot, workspace, **expected):
    """Wait for a shown frame whose request has the ``expected`` values (and is a full one unless said)."""
    expected.setdefault("interactive", False)
    qtbot.waitUntil(lambda: workspace.shown is not None and all(
        getattr(workspace.shown.request, key) == value for key, value in expected.items()), timeout=TIMEOUT_MS)
    return workspace.shown


def _differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or np.abs(a.astype(int) - b.astype(int)).mean() > 0.5


def _mouse(widget, kind: QEvent.Type, x: float, y: float) -> None:
    button = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else Qt.MouseButton.LeftButton
    held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else Qt.MouseButton.LeftButton
    QApplication.sendEvent(widget, QMouseEvent(kind, QPointF(x, y), widget.mapToGlobal(QPointF(x, y)), button, held,
                                               Qt.KeyboardModifier.NoModifier))


def test_sample_orbit_and_switch_views(qtbot, window):
    workspace = window.portrait
    window.workspace_actions[1].trigger()  # View → Portrait workspace: the prior loads on first show
    assert window.tabs.currentWidget() is workspace
    first = _next_frame(qtbot, workspace, seed=0, yaw=0.0)
    assert first.image.shape == (128, 128, 3) and np.array_equal(first.camera, camera_label(0, 0))
    assert workspace.session.kind == "prior" and str(workspace.session.path) == workspace.prior_path
    assert workspace.view.image is not None and not window.errors

    # the yaw slider turns the head: another image, from the camera at that yaw
    workspace.yaw_slider.setValue(200)
    turned = _next_frame(qtbot, workspace, yaw=20.0)
    assert _differ(turned.image, first.image) and np.array_equal(turned.camera, camera_label(20, 0))
    assert workspace.yaw_label.text() == "+20.0°"

    # dragging the image orbits: small frames while the button is held, the full frame on release
    view = workspace.view
    _mouse(view, QEvent.Type.MouseButtonPress, 100, 100)
    for x in range(110, 160, 10):
        _mouse(view, QEvent.Type.MouseMove, x, 110)
    dragged = _next_frame(qtbot, workspace, interactive=True)
    assert dragged.image.shape[0] < first.image.shape[0]
    _mouse(view, QEvent.Type.MouseButtonRelease, 150, 110)
    assert workspace.yaw == pytest.approx(20.0 - 50 * portrait_workspace.DRAG_DEG_PER_PX)  # dragged right: yaw down
    assert workspace.pitch == pytest.approx(10 * portrait_workspace.DRAG_DEG_PER_PX)
    released = _next_frame(qtbot, workspace, yaw=workspace.yaw, pitch=workspace.pitch)
    assert released.image.shape == first.image.shape

    # another seed is another head
    workspace.seed_spin.setValue(5)
    other = _next_frame(qtbot, workspace, seed=5)
    assert _differ(other.image, released.image)

    # depth and semantic views of the same head and camera differ from each other and from RGB
    workspace.set_mode("depth")
    depth = _next_frame(qtbot, workspace, mode="depth")
    workspace.set_mode("semantic")
    semantic = _next_frame(qtbot, workspace, mode="semantic")
    assert _differ(depth.image, other.image) and _differ(semantic.image, depth.image)
    from engine.portrait.workspace import SEMANTIC_PALETTE

    colours = {tuple(c) for c in semantic.image.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in SEMANTIC_PALETTE.tolist()} and view.legend  # palette colours, a legend
    assert not window.errors


def test_a_missing_prior_is_explained_and_a_checkpoint_can_be_loaded(qtbot, window, tiny_generator, tmp_path):
    workspace = window.portrait
    workspace.prior_path = str(tmp_path / "no-prior")
    window.tabs.setCurrentWidget(window.portrait)
    qtbot.waitUntil(lambda: "generator.safetensors" in workspace.source_label.text(), timeout=TIMEOUT_MS)
    assert "Load checkpoint" in workspace.source_label.text() and not window.errors  # said here, no dialog
    assert workspace.session is None and not workspace.video_button.isEnabled()

    # a checkpoint path that does not exist: the error dialog names it; nothing changes
    workspace.load_checkpoint(str(tmp_path / "missing.pkl"))
    qtbot.waitUntil(lambda: bool(window.errors), timeout=TIMEOUT_MS)
    assert "missing.pkl" in window.errors[0] and "not found" in window.errors[0] and workspace.session is None

    # the tiny generator as an EG3D checkpoint: no semantic view, truncation adjustable
    workspace.load_checkpoint(str(tiny_generator))
    first = _next_frame(qtbot, workspace, truncation=0.7)
    assert workspace.session.kind == "checkpoint" and window.settings.eg3d_checkpoint == str(tiny_generator)
    semantic = workspace.mode_buttons["semantic"]
    assert not semantic.isEnabled() and "SemFaceEdit" in semantic.toolTip()
    assert workspace.truncation_slider.isEnabled() and workspace.source_combo.currentIndex() == 1
    workspace.truncation_slider.setValue(100)
    untruncated = _next_frame(qtbot, workspace, truncation=1.0)
    assert _differ(untruncated.image, first.image)
    assert len(window.errors) == 1


def test_orbit_video_runs_as_a_job_and_announces_the_file(qtbot, window, tmp_path):
    import imageio

    workspace = window.portrait
    window.tabs.setCurrentWidget(window.portrait)
    _next_frame(qtbot, workspace, seed=0)
    workspace.frames_spin.setValue(6)
    out = tmp_path / "orbit.mp4"
    runner = workspace.render_video(out)
    assert runner is not None and window.busy and window.holding("portrait") == "portrait-video"
    assert window.jobs_panel.rows[0].title_label.text() == "Orbit video of seed 0"  # progress in the Jobs panel
    qtbot.waitUntil(lambda: window.idle, timeout=TIMEOUT_MS)
    assert not window.errors
    frames = imageio.mimread(out)
    assert len(frames) == 6 and frames[0].shape == (128, 128, 3)
    assert "orbit.mp4" in workspace.status_label.text() and "<a href" in workspace.status_label.text()


def test_each_workspace_shows_its_own_docks_toolbar_and_menu(qtbot, window):
    scene_docks = [window.docks[title] for title in ("Point and type", "Dataset")]
    engines = window.docks["Portrait engines"]
    assert all(dock.isVisible() for dock in scene_docks) and not engines.isVisible()
    assert window.scene.toolbar.isVisible() and window.scene.menus[0].menuAction().isVisible()
    window.docks["Dataset"].close()  # the user closes a dock: it stays closed across switches
    window.tabs.setCurrentWidget(window.portrait)
    assert not any(dock.isVisible() for dock in scene_docks) and engines.isVisible()
    assert not window.scene.toolbar.isVisible() and not window.scene.menus[0].menuAction().isVisible()
    assert window.docks["Jobs"].isVisible()  # shared by every workspace
    assert window.portrait.engines.tabText(0) == "Heads"
    window.tabs.setCurrentWidget(window.scene)
    assert window.docks["Point and type"].isVisible() and not window.docks["Dataset"].isVisible()
    assert not engines.isVisible() and window.scene.toolbar.isVisible()


def test_a_method_registered_for_portraits_gets_a_page_and_runs_as_a_job(qtbot, window, monkeypatch, tmp_path):
    import json

    from engine.methods import METHODS, Method

    method = Method("count-heads", "count heads and write them down", "tests.test_methods:CountConfig",
                    "tests.test_methods:count_job", "portrait")
    monkeypatch.setitem(METHODS, method.name, method)
    window.tabs.setCurrentWidget(window.portrait)
    qtbot.waitUntil(lambda: "count-heads" in window.portrait.panels, timeout=TIMEOUT_MS)
    panel = window.portrait.panels["count-heads"]
    panel.form.editors["out"].setText(str(tmp_path / "heads.json"))
    panel.form.editors["count"].setValue(2)
    panel.run_button.click()
    assert window.jobs_panel.rows[0].title_label.text().startswith("count-heads")
    qtbot.waitUntil(lambda: window.idle, timeout=TIMEOUT_MS)
    assert json.loads((tmp_path / "heads.json").read_text()) == ["number 1", "number 2"] and not window.errors
