"""The Portrait tab's 3DPE page (pytest-qt under Xvfb) on a fake network: opening a photo, applying a prompt,
the strength slider, orbiting, errors, undo and redo, dragging and clicking landmarks, adaptation and export as
jobs.  The page is built with a small host that runs jobs on JobRunners, so nothing waits on the window's
engine warm-up; the network, the adapt job and the export job are the page's parameters."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QEvent, QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import app.portrait.workspace as portrait_workspace  # noqa: E402
from app.core.jobs import PORTRAIT  # noqa: E402
from app.dialogs import SettingsDialog  # noqa: E402
from app.portrait.edit_dialogs import EditExportDialog, ExportOptions  # noqa: E402
from app.portrait.edit_panel import PortraitEditPage  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.worker import JobRunner  # noqa: E402
from engine.core.errors import UserInputError  # noqa: E402
from engine.core.jobs import Artifact, Metrics, Progress  # noqa: E402
from engine.portrait.editing import EditEngine  # noqa: E402

TIMEOUT_MS = 5_000
VOCABULARY = {"blond hair": 0.8, "bronze statue": 0.4}
"""the fake network's prompts and the red its edit renders at strength 1"""
LANDMARKS = np.array([[125.0, 160.0], [195.0, 160.0], [160.0, 200.0], [132.0, 240.0], [188.0, 240.0]])
"""five plausible landmarks of a 320 x 400 photo"""


class FakeEngine(EditEngine):
    """Planes filled with the prompt's value (zeros for the reconstruction); renders red from the planes (so
    from the strength) and green from the camera's x position (so from the yaw)."""

    size = 16

    def planes(self, photo, request):
        if request.prompt is not None and request.prompt not in VOCABULARY:
            raise UserInputError(f"{request.prompt!r} is not in the vocabulary: {', '.join(VOCABULARY)}")
        value = VOCABULARY.get(request.prompt, 0.6)
        return torch.full((1, 3, 4, 4), value), torch.zeros(1, 3, 4, 4)

    def render(self, planes, c):
        image = torch.zeros(len(c), 3, self.size, self.size)
        image[:, 0] = planes.mean()
        image[:, 1] = torch.sigmoid(c[:, 3])[:, None, None]
        return image


class FakeHost:
    """The window as the page sees it: jobs run on JobRunners; errors are collected."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.jobs: list[tuple[str, frozenset[str], JobRunner]] = []

    def run_job(self, kind, title, make_job, lanes, on_done=None, on_preview=None):
        runner = JobRunner(make_job)
        runner.failed.connect(lambda message, details: self.errors.append(message))
        if on_done is not None:
            runner.finished.connect(on_done)
        self.jobs.append((kind, lanes, runner))
        runner.start()
        return runner

    def engine_ready(self) -> bool:
        return True

    def show_error(self, message: str, details: str = "") -> None:
        self.errors.append(message)


@pytest.fixture
def settings(tmp_path) -> AppSettings:
    return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def make_page(qtbot, settings):
    """Build the page on the fake network (``adapt_job`` / ``export_job`` as given), shown and active."""
    pages = []

    def make(**jobs) -> PortraitEditPage:
        engines = []
        page = PortraitEditPage(FakeHost(), settings, engine_factory=lambda request: engines.append(request)
                                or FakeEngine(), **jobs)
        page.engine_requests = engines
        qtbot.addWidget(page)
        page.resize(700, 900)
        page.show()
        qtbot.waitExposed(page)
        page.activateWindow()
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.stop()


def _photo(folder, size=(512, 512), landmarks=None):
    """A photo with a gradient in it; ``landmarks`` are written to detections/NAME.txt beside it."""
    width, height = size
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    pixels = np.stack([x, y, 255 - x], -1).astype(np.uint8)
    path = folder / "face.png"
    Image.fromarray(pixels).save(path)
    if landmarks is not None:
        (folder / "detections").mkdir()
        (folder / "detections" / "face.txt").write_text("".join(f"{px} {py}\n" for px, py in landmarks))
    return path


def _open(qtbot, page, path):
    page.open_photo(str(path))
    qtbot.waitUntil(lambda: page.crop is not None, timeout=TIMEOUT_MS)


def _apply(qtbot, page, prompt):
    page.prompt_edit.setText(prompt)
    page.apply_button.click()
    qtbot.waitUntil(lambda: page.committed is not None and page.committed.prompt == prompt and page.frame is not None
                    and page.frame.view.choice == page.current_choice(), timeout=TIMEOUT_MS)
    return page.frame


def _red(frame) -> float:
    return float(frame.image[..., 0].mean()) / 255


def _mouse(widget, kind: QEvent.Type, point: QPointF) -> None:
    button = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else Qt.MouseButton.LeftButton
    held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else Qt.MouseButton.LeftButton
    QApplication.sendEvent(widget, QMouseEvent(kind, point, widget.mapToGlobal(point), button, held,
                                               Qt.KeyboardModifier.NoModifier))


def _drag(widget, start: QPointF, end: QPointF, steps: int = 4) -> None:
    _mouse(widget, QEvent.Type.MouseButtonPress, start)
    for k in range(1, steps + 1):
        _mouse(widget, QEvent.Type.MouseMove, start + (end - start) * (k / steps))
    _mouse(widget, QEvent.Type.MouseButtonRelease, end)


def test_a_prompt_edits_the_photo_and_the_result_turns_when_dragged(qtbot, make_page, tmp_path):
    page = make_page()
    assert "blond hair" in page.completions.stringList() and "InstructPix2Pix" in page.model_label.text()
    assert not page.apply_button.isEnabled() and not page.export_button.isEnabled()
    _open(qtbot, page, _photo(tmp_path))
    assert page.crop.shape == (512, 512, 3) and page.landmarks is None  # a 512² photo is the crop itself
    assert "aligned" in page.hint_label.text() and page.apply_button.isEnabled()

    front = _apply(qtbot, page, "blond hair")
    assert _red(front) == pytest.approx(0.8, abs=0.01) and page.result_view.image is not None
    assert page.engine_requests[0].model == "embedded" and page.undo_stack.count() == 1
    assert page.export_button.isEnabled()

    # dragging the result turns it: re-rendered from the cached planes, not edited again
    view = page.result_view
    centre = QPointF(view.width() / 2, view.height() / 2)
    _drag(view, centre, centre + QPointF(50, 10))
    assert page.yaw == pytest.approx(-50 * 0.4) and page.pitch == pytest.approx(10 * 0.4)
    qtbot.waitUntil(lambda: page.frame.view.yaw == page.yaw, timeout=TIMEOUT_MS)
    assert abs(float(page.frame.image[..., 1].mean()) - float(front.image[..., 1].mean())) > 5
    assert _red(page.frame) == pytest.approx(0.8, abs=0.01) and len(page.engine_requests) == 1
    assert page.undo_stack.count() == 1  # orbiting is no edit

    # the wipe lays the crop over the result's left part
    page.wipe_slider.setValue(40)
    assert view.wipe == pytest.approx(0.4) and view.before is not None
    assert not page.host.errors


def test_the_strength_slider_blends_the_edit_and_each_release_is_one_undo_step(qtbot, make_page, tmp_path):
    page = make_page()
    _open(qtbot, page, _photo(tmp_path))
    _apply(qtbot, page, "blond hair")
    slider = page.strength_slider

    slider.setSliderDown(True)  # dragging: frames follow, no undo step yet
    for value in (80, 60, 50):
        slider.setValue(value)
    qtbot.waitUntil(lambda: page.frame.view.choice.strength == 0.5, timeout=TIMEOUT_MS)
    assert _red(page.frame) == pytest.approx(0.4, abs=0.01) and page.undo_stack.count() == 1
    slider.setSliderDown(False)  # released
    assert page.undo_stack.count() == 2 and page.committed.strength == 0.5

    slider.setValue(25)  # a click or the keyboard: settled at once
    qtbot.waitUntil(lambda: page.frame.view.choice.strength == 0.25, timeout=TIMEOUT_MS)
    assert _red(page.frame) == pytest.approx(0.2, abs=0.01) and page.undo_stack.count() == 3
    assert page.strength_label.text() == "0.25"


def test_a_prompt_outside_the_vocabulary_is_explained_and_the_edit_shown_stays(qtbot, make_page, tmp_path):
    page = make_page()
    _open(qtbot, page, _photo(tmp_path))
    shown = _apply(qtbot, page, "blond hair")
    page.prompt_edit.setText("purple spaceship")
    page.apply_button.click()
    qtbot.waitUntil(page.error_label.isVisible, timeout=TIMEOUT_MS)
    assert "vocabulary" in page.error_label.text() and "blond hair" in page.error_label.text()
    assert page.committed.prompt == "blond hair" and page.applying is None and page.frame is shown
    assert page.undo_stack.count() == 1 and not page.host.errors

    page.prompt_edit.setText("")  # nothing typed: said, nothing asked of the network
    page.apply_prompt()
    assert "Type an edit" in page.error_label.text()

    _apply(qtbot, page, "bronze statue")  # the next edit works and the error goes away
    assert not page.error_label.isVisible()


def test_undo_and_redo_restore_the_prompt_the_strength_and_the_result(qtbot, make_page, tmp_path):
    page = make_page()
    _open(qtbot, page, _photo(tmp_path))
    blond = _apply(qtbot, page, "blond hair")
    page.strength_slider.setValue(50)
    qtbot.waitUntil(lambda: page.frame.view.choice.strength == 0.5, timeout=TIMEOUT_MS)
    bronze = _apply(qtbot, page, "bronze statue")
    assert _red(bronze) == pytest.approx(0.2, abs=0.01)  # applied at the slider's strength
    assert page.undo_stack.count() == 3

    page.result_view.setFocus()  # the page's keys: Ctrl+Z, Ctrl+Shift+Z
    qtbot.keyClick(page.result_view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: page.frame.view.choice.prompt == "blond hair", timeout=TIMEOUT_MS)
    assert page.prompt_edit.text() == "blond hair" and page.strength_slider.value() == 50
    assert _red(page.frame) == pytest.approx(0.4, abs=0.01)

    page.undo_action.trigger()
    qtbot.waitUntil(lambda: page.frame.view.choice.strength == 1.0, timeout=TIMEOUT_MS)
    assert np.array_equal(page.frame.image, blond.image) and page.strength_label.text() == "1.00"

    page.undo_action.trigger()  # before the first edit: no result
    assert page.committed is None and page.frame is None and page.result_view.image is None

    for _ in range(3):
        qtbot.keyClick(page.result_view, Qt.Key.Key_Z,
                       Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: page.frame is not None and page.frame.view.choice.prompt == "bronze statue",
                    timeout=TIMEOUT_MS)
    assert np.array_equal(page.frame.image, bronze.image) and page.prompt_edit.text() == "bronze statue"
    assert not page.undo_stack.canRedo() and not page.host.errors


def test_dragging_a_landmark_moves_the_crop_and_the_edit_follows(qtbot, make_page, tmp_path):
    page = make_page()
    _open(qtbot, page, _photo(tmp_path, (320, 400), LANDMARKS))
    assert np.allclose(page.landmarks, LANDMARKS) and page.crop.shape == (512, 512, 3)
    assert "Drag a landmark" in page.hint_label.text()
    _apply(qtbot, page, "blond hair")
    first_crop, first_id = page.crop.copy(), page.crop_id

    view = page.landmark_view
    start = view.to_widget(LANDMARKS[0])
    _drag(view, start, start + QPointF(-12, -8))
    qtbot.waitUntil(lambda: page.crop_id != first_id, timeout=TIMEOUT_MS)
    assert not np.allclose(page.landmarks[0], LANDMARKS[0]) and np.allclose(page.landmarks[1:], LANDMARKS[1:])
    assert not np.array_equal(page.crop, first_crop)
    qtbot.waitUntil(lambda: page.frame.view.crop_id == page.crop_id, timeout=TIMEOUT_MS)  # edited again
    assert page.committed.prompt == "blond hair" and page.undo_stack.count() == 1 and not page.host.errors


def test_without_a_face_the_user_clicks_the_five_landmarks(qtbot, make_page, tmp_path, monkeypatch):
    import engine.portrait.alignment as alignment

    def no_face(photo, landmarks_path=None):
        raise UserInputError("no face found")

    monkeypatch.setattr(alignment, "locate_landmarks", no_face)
    page = make_page()
    page.open_photo(str(_photo(tmp_path, (320, 400))))
    qtbot.waitUntil(lambda: page.photo is not None, timeout=TIMEOUT_MS)
    assert "click the left eye" in page.hint_label.text() and page.crop is None
    view = page.landmark_view
    for k, point in enumerate(LANDMARKS):
        _mouse(view, QEvent.Type.MouseButtonPress, view.to_widget(point))
        _mouse(view, QEvent.Type.MouseButtonRelease, view.to_widget(point))
        if k < 4:
            assert f"({k + 2} of 5)" in page.hint_label.text()
    qtbot.waitUntil(lambda: page.crop is not None, timeout=TIMEOUT_MS)
    assert np.allclose(page.landmarks, LANDMARKS, atol=1.0) and not page.error_label.isVisible()


def test_adaptation_runs_as_a_job_with_a_live_loss_plot_and_can_be_cancelled(qtbot, make_page, tmp_path):
    configs = []
    release = threading.Event()

    def adapt(cfg, cancel):
        configs.append(cfg)
        yield Progress(0, None, "adapting")
        for step, loss in ((10, 0.5), (20, 0.3), (30, 0.2)):
            yield Metrics(step, {"loss_total": loss, "loss_image": loss / 2})
            yield Progress(step, None, "adapting", fraction=step / 40)
        deadline = time.monotonic() + 2
        while not (release.is_set() or cancel.cancelled) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not cancel.cancelled:
            yield Artifact(tmp_path / "editor", "editor")

    page = make_page(adapt_job=adapt)
    pairs = tmp_path / "pairs"
    for sub in ("input", "edited"):
        (pairs / sub).mkdir(parents=True)
    page.adapt_button.click()
    dialog = page.adapt_window
    assert dialog.isVisible()
    dialog.start_button.click()  # no folder, no name: said in the dialog, no job
    assert "pairs folder" in dialog.error_label.text() and not page.host.jobs

    dialog.pairs_edit.setText(str(pairs))
    dialog.name_edit.setText("marble statue")
    dialog.minutes_spin.setValue(2.5)
    dialog.start_button.click()
    kind, lanes, runner = page.host.jobs[0]
    assert kind == "portrait-adapt" and lanes == frozenset({PORTRAIT}) and dialog.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: dialog.progress_bar.value() == 750, timeout=TIMEOUT_MS)  # 30 of 40 steps
    assert dialog.loss_points == [(10, 0.5), (20, 0.3), (30, 0.2)]
    assert list(dialog._loss_curve.getData()[1]) == pytest.approx(np.log10([0.5, 0.3, 0.2]))  # log-scale plot
    release.set()
    qtbot.waitUntil(lambda: dialog.runner is None, timeout=TIMEOUT_MS)
    assert (configs[0].pairs, configs[0].name, configs[0].minutes) == (str(pairs), "marble statue", 2.5)
    assert "learned 'marble statue'" in dialog.status_label.text()
    assert "marble statue" in page.completions.stringList() and page._engine_choice().editor_generation == 1

    release.clear()
    dialog.start_button.click()  # again, cancelled this time: the editor stays
    qtbot.waitUntil(lambda: len(dialog.loss_points) == 3, timeout=TIMEOUT_MS)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: dialog.runner is None, timeout=TIMEOUT_MS)
    assert "stopped" in dialog.status_label.text() and page._engine_choice().editor_generation == 1
    assert not page.host.errors


def test_export_runs_the_edit_job_with_the_chosen_options_and_the_landmarks_on_screen(qtbot, make_page,
                                                                                        tmp_path, settings):
    requests = []

    def export(request, cancel):
        requests.append(request)
        yield Artifact(tmp_path / "out" / "edited.png", "edited image")

    page = make_page(export_job=export)
    page.export(ExportOptions(str(tmp_path / "early")))  # nothing to export yet: said, no job
    assert page.host.errors and not page.host.jobs
    page.host.errors.clear()

    _open(qtbot, page, _photo(tmp_path, (320, 400), LANDMARKS))
    _apply(qtbot, page, "blond hair")
    page.strength_slider.setValue(70)
    settings.ip2p_model = "/models/ip2p"
    runner = page.export(ExportOptions(str(tmp_path / "out"), views=2, video=True, mesh=False))
    assert page.host.jobs[0][:2] == ("portrait-edit", frozenset({PORTRAIT}))
    qtbot.waitUntil(lambda: not runner.running and "Exported" in page.status_label.text(), timeout=TIMEOUT_MS)
    request = requests[0]
    assert (request.image, request.out) == (str(tmp_path / "face.png"), str(tmp_path / "out"))
    assert (request.prompt, request.reference, request.strength) == ("blond hair", None, 0.7)
    assert (request.views, request.video, request.mesh) == (2, True, False)
    assert (request.model, request.ip2p_model, request.device) == ("embedded", "/models/ip2p", "auto")
    written = np.loadtxt(request.landmarks)
    assert np.allclose(written, LANDMARKS, atol=1e-3) and not page.host.errors

    dialog = EditExportDialog(str(tmp_path / "dialog"))
    qtbot.addWidget(dialog)
    dialog.views_spin.setValue(6)
    dialog.mesh_check.setChecked(True)
    assert dialog.options() == ExportOptions(str(tmp_path / "dialog"), 6, False, True)
    dialog.folder_edit.setText("")
    dialog.accept()
    assert dialog.error_label.isVisibleTo(dialog) and dialog.result() != dialog.DialogCode.Accepted


def test_a_reference_image_edits_too_and_the_official_checkpoint_is_read_from_the_settings(qtbot, make_page,
                                                                                          tmp_path, settings):
    checkpoint = tmp_path / "3dpe.pt"
    checkpoint.write_bytes(b"weights")
    settings.threedpe_checkpoint = str(checkpoint)
    page = make_page()
    assert "Official 3DPE (3dpe.pt)" in page.model_label.text() and "InstructPix2Pix" in page.model_label.text()
    _open(qtbot, page, _photo(tmp_path))
    reference = tmp_path / "reference.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(reference)
    page.reference_view.dropped.emit(str(reference))  # as a drop on the reference well
    qtbot.waitUntil(lambda: page.committed is not None, timeout=TIMEOUT_MS)
    assert page.committed.reference == str(reference) and page.reference_view.image is not None
    assert _red(page.frame) == pytest.approx(0.6, abs=0.01) and page.engine_requests[0].model == str(checkpoint)

    page.set_reference(str(tmp_path / "face.txt"))  # not an image: said, nothing edited
    assert "not an image" in page.error_label.text() and page.undo_stack.count() == 1


def test_the_portrait_workspace_has_the_page_and_the_settings_dialog_its_checkpoint(qtbot, settings, tmp_path):
    workspace = portrait_workspace.PortraitWorkspace(FakeHost(), settings)
    qtbot.addWidget(workspace)
    page = workspace.panels["3DPE edit"]
    assert isinstance(page, PortraitEditPage) and workspace.engines.tabText(1) == "3DPE edit"
    page.stop()
    workspace.stop()

    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    dialog.threedpe_edit.setText(str(tmp_path / "missing.pt"))
    assert any("3DPE checkpoint" in problem for problem in dialog.problems())
    checkpoint = tmp_path / "3dpe.pt"
    checkpoint.write_bytes(b"weights")
    dialog.threedpe_edit.setText(str(checkpoint))
    dialog.accept()
    assert settings.threedpe_checkpoint == str(checkpoint)
