"""The point-and-type panel: suggestions, validation before anything starts, the options it hands
to the engine, region and settings round-trips, and the side-by-side preview (pytest-qt, no torch work)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QPoint, Qt  # noqa: E402

from app.scene.edit_panel import EditPanel, PreviewDialog, suggestions  # noqa: E402
from engine.core.errors import UserInputError  # noqa: E402
from engine.editing.idu import EditConfig  # noqa: E402
from engine.editors.base import Guidance  # noqa: E402
from engine.editors.offline import resolve, vocabulary  # noqa: E402


@pytest.fixture
def panel(qtbot) -> EditPanel:
    widget = EditPanel()
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def completions(panel: EditPanel, prefix: str) -> list[str]:
    """What the completer offers for ``prefix``."""
    completer = panel.completer
    completer.setCompletionPrefix(prefix)
    model = completer.completionModel()
    return [model.index(row, 0).data() for row in range(model.rowCount())]


def choose_editor(panel: EditPanel, editor: str) -> None:
    panel.editor_combo.setCurrentIndex(panel.editor_combo.findData(editor))


def test_suggestions_are_the_vocabulary_and_picking_one_fills_the_bar(panel):
    entries = vocabulary()
    assert len(suggestions()) == len(entries)
    for entry, text in zip(entries, suggestions()):
        assert resolve(text) == entry.name  # every suggestion is an instruction the offline editor understands
    assert completions(panel, "bronze") == ["make it look like a bronze statue"]
    assert "make it a marble statue" in completions(panel, "MARBLE")
    menu_texts = [action.text() for action in panel.suggestions_button.menu().actions()]
    assert menu_texts == suggestions()
    sepia = next(a for a in panel.suggestions_button.menu().actions() if "sepia" in a.text())
    sepia.trigger()
    assert panel.instruction_edit.text() == "make it look like an old sepia photo"


def test_unknown_or_empty_instruction_shows_the_engines_message_and_emits_nothing(panel, qtbot):
    emitted = []
    panel.apply_requested.connect(emitted.append)
    panel.preview_requested.connect(emitted.append)
    panel.instruction_edit.setText("give him a moustache and a hat made of cheese")
    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert panel.error_label.isVisible()
    assert "does not understand" in panel.error_text() and "bronze statue" in panel.error_text()
    assert panel.error_text()[0].isupper()
    panel.instruction_edit.setText("   ")
    qtbot.mouseClick(panel.preview_button, Qt.MouseButton.LeftButton)
    assert "instruction is empty" in panel.error_text()
    assert emitted == []
    qtbot.keyClicks(panel.instruction_edit, "make it gold")  # typing clears the error
    assert not panel.error_label.isVisible()


def test_instructpix2pix_needs_an_existing_model(panel, qtbot, tmp_path):
    emitted = []
    panel.apply_requested.connect(emitted.append)
    assert not panel.model_row.isVisible()
    choose_editor(panel, "ip2p")
    assert panel.model_row.isVisible() and not panel.variation.isVisible()
    panel.instruction_edit.setText("give him a red beard")  # free-form text is fine for InstructPix2Pix
    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert panel.error_text().startswith("The InstructPix2Pix editor needs a model") and "Browse" in panel.error_text()
    missing = tmp_path / "no-such-model"
    panel.model_edit.setText(str(missing))
    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert str(missing) in panel.error_text()
    panel.model_edit.setText(str(tmp_path))  # a folder, but not a diffusers one
    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert "no model_index.json" in panel.error_text()
    checkpoint = tmp_path / "ip2p.safetensors"
    checkpoint.write_bytes(b"")
    panel.model_edit.setText(str(checkpoint))
    qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert "--model-config" in panel.error_text()  # a checkpoint file needs its config folder (Settings)
    assert emitted == []
    (tmp_path / "model_index.json").write_text("{}")
    panel.set_default_model("", config_dir=str(tmp_path))
    with qtbot.waitSignal(panel.apply_requested, timeout=1000) as signal:
        qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert signal.args[0].model == str(checkpoint) and signal.args[0].model_config == str(tmp_path)
    panel.model_edit.setText(str(tmp_path))
    with qtbot.waitSignal(panel.apply_requested, timeout=1000) as signal:
        qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    options = signal.args[0]
    assert options.editor == "ip2p" and options.model == str(tmp_path) and options.variation == 0.0
    assert not panel.error_label.isVisible()


@pytest.mark.parametrize("text", ["give him a red beard", "make the car blue", "don't make it red"])
def test_the_offline_editor_refuses_what_it_would_misread(panel, qtbot, text):
    panel.instruction_edit.setText(text)
    with qtbot.assertNotEmitted(panel.apply_requested):
        qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert "does not understand" in panel.error_text() and "InstructPix2Pix" in panel.error_text()


def test_default_model_prefills_unless_the_user_chose_another(panel):
    panel.set_default_model("/models/ip2p")
    assert panel.model_edit.text() == "/models/ip2p"
    panel.set_default_model("/models/ip2p-v2")  # settings changed, user never touched the field
    assert panel.model_edit.text() == "/models/ip2p-v2"
    panel.model_edit.setText("/mine")
    panel.set_default_model("/models/other")
    assert panel.model_edit.text() == "/mine"


def test_valid_offline_instruction_applies_with_an_engine_config_that_validates(panel, qtbot, tmp_path):
    panel.instruction_edit.setText("  make it look like a bronze statue ")
    panel.advanced_button.setChecked(True)
    panel.text_guidance.setValue(9.0)
    panel.t_min.setValue(0.1)
    panel.t_max.setValue(0.7)
    panel.variation.setValue(0.8)
    panel.seed.setValue(7)
    panel.minutes.setValue(3.5)
    with qtbot.waitSignal(panel.apply_requested, timeout=1000) as signal:
        qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    options = signal.args[0]
    assert isinstance(options, EditConfig)
    config = dataclasses.replace(options, project=str(tmp_path), lpips_backbone="off")
    config.validate()
    assert (config.editor, config.instruction, config.model) == ("offline", "make it look like a bronze statue",
                                                                 None)
    assert (config.t_min, config.t_max) == (0.1, 0.7)
    assert config.guidance == Guidance(text=9.0, image=1.5, steps=20)
    assert (config.variation, config.seed, config.minutes, config.steps) == (0.8, 7, 3.5, None)
    assert (config.project, config.lpips_backbone) == (str(tmp_path), "off")
    assert not config.local and config.point_3d is None and config.radius is None


def test_defaults_follow_the_engine(panel):
    options = panel.options()
    assert options.guidance == Guidance() and (options.t_min, options.t_max) == (0.02, 0.98)
    default = EditConfig(project="", instruction="")
    assert (options.variation, options.minutes, options.point_3d) == (0.0, default.minutes, None)
    assert options.start_from == default.start_from == "current" and options.steps is None
    assert not panel.advanced.isVisible()
    panel.advanced_button.setChecked(True)
    assert panel.advanced.isVisible()


def test_noise_range_is_checked_before_anything_starts(panel, qtbot):
    panel.instruction_edit.setText("make it night")
    panel.t_min.setValue(0.9)
    panel.t_max.setValue(0.3)
    with qtbot.assertNotEmitted(panel.preview_requested):
        qtbot.mouseClick(panel.preview_button, Qt.MouseButton.LeftButton)
    assert "noise range" in panel.error_text()


def test_region_point_and_radius_make_a_local_edit_and_clear_makes_it_global(panel, qtbot):
    panel.set_default_radius(0.5)
    assert panel.radius_spin.value() == 0.5
    with qtbot.waitSignal(panel.region_changed, timeout=1000) as placed:
        panel.set_region_point((0.1, -0.25, 1.0))
    assert placed.args == [(0.1, -0.25, 1.0), 0.5]
    assert "(0.100, -0.250, 1.000)" in panel.region_label.text() and panel.clear_region_button.isEnabled()
    with qtbot.waitSignal(panel.region_changed, timeout=1000) as resized:
        panel.radius_slider.setValue(panel.radius_slider.maximum())  # the slider reaches 10x the default
    assert resized.args[0] == (0.1, -0.25, 1.0) and resized.args[1] == pytest.approx(5.0)
    panel.radius_spin.setValue(0.75)
    panel.instruction_edit.setText("make it blue")
    with qtbot.waitSignal(panel.apply_requested, timeout=1000) as signal:
        qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    config = dataclasses.replace(signal.args[0], project="p", lpips_backbone="off")
    config.validate()
    assert config.local and config.point_3d == (0.1, -0.25, 1.0) and config.radius == 0.75
    with qtbot.waitSignal(panel.region_changed, timeout=1000) as cleared:
        qtbot.mouseClick(panel.clear_region_button, Qt.MouseButton.LeftButton)
    assert cleared.args == [None, 0.75]
    assert panel.region_label.text().startswith("Click the scene") and not panel.clear_region_button.isEnabled()
    config = dataclasses.replace(panel.options(), project="p", lpips_backbone="off")
    config.validate()
    assert not config.local and config.point_3d is None and config.radius is None


def test_the_panel_checks_an_edit_only_with_the_engines_one_check(panel, qtbot, monkeypatch):
    """Each click checks the edit once, with ``EditConfig.validate`` (the check the job makes too); the panel has
    no rule of its own, and shows the engine's one message."""
    checked = []
    validate = EditConfig.validate

    def counted(config):
        checked.append(config.instruction)
        validate(config)

    monkeypatch.setattr(EditConfig, "validate", counted)
    panel.instruction_edit.setText("give him a hat")
    with qtbot.assertNotEmitted(panel.apply_requested):
        qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert checked == ["give him a hat"]
    with pytest.raises(UserInputError) as engine:
        validate(EditConfig(project="", instruction="give him a hat"))
    assert panel.error_text() == str(engine.value)[0].upper() + str(engine.value)[1:]
    panel.instruction_edit.setText("  make it gold ")
    with qtbot.waitSignal(panel.apply_requested, timeout=1000) as signal:
        qtbot.mouseClick(panel.apply_button, Qt.MouseButton.LeftButton)
    assert checked == ["give him a hat", "  make it gold "]
    assert signal.args[0].instruction == "make it gold"  # the checked config, as the engine normalised it
    monkeypatch.setattr(EditConfig, "validate", lambda config: checked.append(config.instruction))
    panel.instruction_edit.setText("")
    with qtbot.waitSignal(panel.preview_requested, timeout=1000):  # with the engine's check gone, nothing stops it
        qtbot.mouseClick(panel.preview_button, Qt.MouseButton.LeftButton)
    assert checked[-1] == ""


def test_busy_disables_preview_and_apply(panel):
    panel.set_busy(True)
    assert not panel.apply_button.isEnabled() and not panel.preview_button.isEnabled()
    panel.set_busy(False)
    assert panel.apply_button.isEnabled() and panel.preview_button.isEnabled()


def test_state_round_trips_through_json_and_tolerates_missing_keys(panel, qtbot):
    choose_editor(panel, "ip2p")
    panel.instruction_edit.setText("turn him into a clown")
    panel.model_edit.setText("timbrooks/instruct-pix2pix")
    panel.text_guidance.setValue(10.5)
    panel.image_guidance.setValue(1.2)
    panel.diffusion_steps.setValue(30)
    panel.t_min.setValue(0.3)
    panel.t_max.setValue(0.6)
    panel.seed.setValue(42)
    panel.minutes.setValue(12.0)
    panel.set_default_radius(0.3)
    panel.radius_spin.setValue(0.4)
    panel.set_region_point((1.0, 2.0, 3.0))
    panel.start_from.setCurrentIndex(panel.start_from.findData("original"))
    saved = json.loads(json.dumps(panel.state()))

    other = EditPanel()
    qtbot.addWidget(other)
    with qtbot.waitSignal(other.region_changed, timeout=1000):
        other.restore(saved)
    assert other.state() == saved
    assert other.editor() == "ip2p" and other.options().model == "timbrooks/instruct-pix2pix"
    assert other.options().point_3d == (1.0, 2.0, 3.0) and other.options().radius == 0.4
    assert other.options().start_from == "original"

    fresh = EditPanel()
    qtbot.addWidget(fresh)
    before = fresh.state()
    fresh.restore({})
    fresh.restore({"guidance": "broken", "seed": "x", "point": [1, 2], "editor": "nope", "t_min": None,
                   "start_from": "later"})
    assert fresh.state() == before
    fresh.restore({"instruction": "make it red"})
    assert fresh.options().instruction == "make it red" and fresh.options().editor == "offline"


def test_preview_dialog_shows_render_and_edit_side_by_side(qtbot):
    dialog = PreviewDialog("make it blue")
    qtbot.addWidget(dialog)
    render = np.zeros((40, 60, 3), np.uint8)
    render[..., 0] = 255
    edited = np.zeros((40, 60, 3), np.float32)
    edited[..., 2] = 1.0
    dialog.set_images(render, edited)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert not dialog.isModal() and "make it blue" in dialog.windowTitle()
    shot = dialog.grab().toImage()
    left = dialog.render_label.geometry().center()
    right = dialog.edited_label.geometry().center()
    assert left.x() < right.x()
    ratio = shot.width() / dialog.width()  # device pixels per widget pixel
    for centre, colour in ((left, (255, 0, 0)), (right, (0, 0, 255))):
        pixel = shot.pixelColor(QPoint(round(centre.x() * ratio), round(centre.y() * ratio)))
        assert (pixel.red(), pixel.green(), pixel.blue()) == colour
