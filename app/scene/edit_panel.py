"""The "point and type" panel of the editor window, and the side-by-side preview of a 2D edit.

``EditPanel`` collects everything an instruction edit needs (the instruction, the 2D editor and
its model, guidance, noise range, budget, what a second edit starts from and the edit region picked
in the viewport), checks it with the engine's own rules (``EditConfig.validate``, the one check of an
edit's inputs; the panel has none of its own) before anything starts, and hands the checked
``EditConfig`` to the main window, which runs the preview or the Iterative Dataset Update job.  The
panel itself does no engine work: validation only parses the instruction and checks paths.

Importing this module imports torch (through engine.editing), about a second and a half:
import it after the window is shown.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (QComboBox, QCompleter, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QMenu, QPushButton, QSizePolicy, QSlider, QSpinBox,
                               QToolButton, QVBoxLayout, QWidget)

from app.widgets import error_label, numpy_to_qimage, row
from engine.core.errors import UserInputError
from engine.editing.idu import EditConfig
from engine.editors import EDITORS
from engine.editors.base import Guidance
from engine.editors.offline import SUGGESTED_VARIATION, vocabulary

START_LABELS = {"current": "Current edits", "original": "Original captures"}
"""what an edit of an edited project may start from (EditConfig.start_from values) and how the combo names them"""
DEFAULT_RADIUS = 0.2
"""edit radius (capture units) until the main window sets one from the scene's size"""
RADIUS_SPAN = 10.0
"""the radius slider covers default / RADIUS_SPAN .. default · RADIUS_SPAN, logarithmically"""
SLIDER_STEPS = 1000
NO_REGION = "Click the scene to place the edit region"
PREVIEW_SIDE = 480
"""largest side (pixels) of each image in the preview dialog"""


def suggestions() -> list[str]:
    """The offline editor's vocabulary as instructions it understands, in its order."""
    return [entry.example for entry in vocabulary()]


def _sentence(message: str) -> str:
    """Engine messages start in lower case (they also follow a CLI prefix); the panel shows sentences."""
    return message[:1].upper() + message[1:]


def _float(value: object, default: float) -> float:
    """``value`` as a finite float, or ``default`` when a saved state holds something else."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _saved_point(value: object) -> tuple[float, float, float] | None:
    """A saved region point (three numbers), or None when absent or malformed."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    coords = tuple(_float(v, math.nan) for v in value)
    return None if any(math.isnan(c) for c in coords) else coords


class EditPanel(QWidget):
    """Instruction bar, editor choice, guidance, edit region and the Preview / Apply buttons."""

    preview_requested = Signal(object)  # EditConfig (project and machine settings not set), validated
    apply_requested = Signal(object)  # EditConfig (project and machine settings not set), validated
    region_changed = Signal(object, float)  # point in capture coordinates or None, radius

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._point: tuple[float, float, float] | None = None
        self._default_model = ""
        self._model_config = ""
        self._default_radius = DEFAULT_RADIUS
        defaults = Guidance()

        # Instruction bar with completion and the vocabulary menu.
        self.instruction_edit = QLineEdit()
        self.instruction_edit.setPlaceholderText("Type an instruction, e.g. make it look like a bronze statue")
        self.instruction_edit.setClearButtonEnabled(True)
        self.completer = QCompleter(suggestions(), self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setFilterMode(Qt.MatchFlag.MatchContains)  # "bronze" finds "make it look like a bronze statue"
        self.instruction_edit.setCompleter(self.completer)
        self.suggestions_button = QToolButton()
        self.suggestions_button.setText("Suggestions")
        self.suggestions_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.suggestions_button.setToolTip("Edits the offline editor knows")
        menu = QMenu(self.suggestions_button)
        menu.setToolTipsVisible(True)
        for entry in vocabulary():
            action = menu.addAction(entry.example)
            action.setToolTip(entry.description)
            action.triggered.connect(lambda _=False, text=entry.example: self._fill_instruction(text))
        self.suggestions_button.setMenu(menu)
        instruction_row = QHBoxLayout()
        instruction_row.addWidget(self.instruction_edit, 1)
        instruction_row.addWidget(self.suggestions_button)

        # Editor and its model.
        self.editor_combo = QComboBox()
        for entry in EDITORS.values():
            self.editor_combo.addItem(entry.label, entry.name)
        self.editor_note = QLabel()
        self.editor_note.setWordWrap(True)
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("InstructPix2Pix folder, .safetensors/.ckpt file or hub id")
        self.browse_button = QToolButton()
        self.browse_button.setText("Browse…")
        self.browse_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        browse_menu = QMenu(self.browse_button)
        browse_menu.addAction("Diffusers folder…", self._browse_folder)
        browse_menu.addAction("Checkpoint file…", self._browse_file)
        self.browse_button.setMenu(browse_menu)
        self.model_row = row(self.model_edit, self.browse_button)
        self.editor_form = QFormLayout()
        self.editor_form.addRow("Editor", self.editor_combo)
        self.editor_form.addRow("", self.editor_note)
        self.editor_form.addRow("Model", self.model_row)

        # Advanced settings, collapsed by default to keep the panel simple.
        self.text_guidance = self._double_spin(0.0, 100.0, 0.5, 2, defaults.text)
        self.text_guidance.setToolTip("s_T: how strongly the edit follows the instruction")
        self.image_guidance = self._double_spin(0.0, 20.0, 0.1, 2, defaults.image)
        self.image_guidance.setToolTip("s_I: how strongly the edit keeps the captured image")
        self.diffusion_steps = QSpinBox()
        self.diffusion_steps.setRange(1, 999)
        self.diffusion_steps.setValue(defaults.steps)
        self.diffusion_steps.setToolTip("DDIM denoising steps of each 2D edit")
        self.t_min = self._double_spin(0.0, 1.0, 0.01, 2, EditConfig.t_min)
        self.t_max = self._double_spin(0.0, 1.0, 0.01, 2, EditConfig.t_max)
        noise_row = QHBoxLayout()
        noise_row.addWidget(self.t_min)
        noise_row.addWidget(QLabel("to"))
        noise_row.addWidget(self.t_max)
        self.variation = self._double_spin(0.0, 1.0, 0.05, 2, 0.0)
        self.variation.setToolTip("Per-view random change of hue and strength, so single-view edits disagree "
                                  f"the way diffusion edits do ({SUGGESTED_VARIATION} makes them clearly differ)")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.minutes = self._double_spin(0.1, 24 * 60.0, 0.5, 1, EditConfig.minutes)
        self.minutes.setSuffix(" min")
        self.minutes.setToolTip("Time budget of the whole edit")
        self.start_from = QComboBox()
        for key, label in START_LABELS.items():
            self.start_from.addItem(label, key)
        self.start_from.setToolTip("On a scene edited before: Current edits applies this instruction on top of them; "
                                   "Original captures starts again from the captures (earlier edits stay in each "
                                   "view's history)")
        self.advanced_button = QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setAutoRaise(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced = QGroupBox()
        self.advanced_form = QFormLayout(self.advanced)
        self.advanced_form.addRow("Text guidance (s_T)", self.text_guidance)
        self.advanced_form.addRow("Image guidance (s_I)", self.image_guidance)
        self.advanced_form.addRow("Diffusion steps", self.diffusion_steps)
        self.advanced_form.addRow("Noise range", noise_row)
        self.advanced_form.addRow("Variation", self.variation)
        self.advanced_form.addRow("Seed", self.seed)
        self.advanced_form.addRow("Time budget", self.minutes)
        self.advanced_form.addRow("Start from", self.start_from)
        self.advanced.setVisible(False)
        self.advanced_button.toggled.connect(self._toggle_advanced)

        # Edit region.
        self.region_label = QLabel(NO_REGION)
        self.region_label.setWordWrap(True)
        self.radius_spin = self._double_spin(0.0001, 1e6, DEFAULT_RADIUS / 10, 4, DEFAULT_RADIUS)
        self.radius_spin.setToolTip("Radius of the edit region, in capture units")
        self.radius_slider = QSlider(Qt.Orientation.Horizontal)
        self.radius_slider.setRange(0, SLIDER_STEPS)
        self.clear_region_button = QPushButton("Clear region")
        self.clear_region_button.setToolTip("Edit the whole scene")
        self.clear_region_button.setEnabled(False)
        radius_row = QHBoxLayout()
        radius_row.addWidget(QLabel("Radius"))
        radius_row.addWidget(self.radius_slider, 1)
        radius_row.addWidget(self.radius_spin)
        region_box = QGroupBox("Region")
        region_layout = QVBoxLayout(region_box)
        region_layout.addWidget(self.region_label)
        region_layout.addLayout(radius_row)
        region_layout.addWidget(self.clear_region_button, 0, Qt.AlignmentFlag.AlignLeft)

        # Error line and actions.
        self.error_label = error_label()
        self.preview_button = QPushButton("Preview on this view")
        self.preview_button.setToolTip("Edit the current view in 2D and show it beside the render (no 3D change)")
        self.apply_button = QPushButton("Apply to scene")
        self.apply_button.setToolTip("Edit the 3D scene (Iterative Dataset Update)")
        self.apply_button.setDefault(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.apply_button)

        layout = QVBoxLayout(self)
        layout.addLayout(instruction_row)
        layout.addLayout(self.editor_form)
        layout.addWidget(self.advanced_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.advanced)
        layout.addWidget(region_box)
        layout.addWidget(self.error_label)
        layout.addLayout(buttons)
        layout.addStretch(1)

        self.instruction_edit.textEdited.connect(self._clear_error)
        self.model_edit.textEdited.connect(self._clear_error)
        self.editor_combo.currentIndexChanged.connect(self._editor_changed)
        self.radius_spin.valueChanged.connect(self._radius_changed)
        self.radius_slider.valueChanged.connect(self._slider_moved)
        self.clear_region_button.clicked.connect(lambda: self.set_region_point(None))
        self.preview_button.clicked.connect(lambda: self._request(self.preview_requested))
        self.apply_button.clicked.connect(lambda: self._request(self.apply_requested))
        self._sync_slider()
        self._editor_changed()

    # --- what the main window sets ---

    def set_default_model(self, path: str, config_dir: str = "") -> None:
        """The InstructPix2Pix model from the settings (and the config folder a checkpoint file needs); fills
        the model field unless the user chose another."""
        if self.model_edit.text().strip() in ("", self._default_model):
            self.model_edit.setText(path)
        self._default_model = path
        self._model_config = config_dir

    def set_default_radius(self, radius: float) -> None:
        """A radius that suits the scene's size (capture units); the slider spans around it."""
        if not radius > 0:
            raise ValueError(f"the default radius must be positive, got {radius}")
        self._default_radius = radius
        self.radius_spin.setSingleStep(radius / 10)
        self.radius_spin.setValue(radius)
        self._sync_slider()

    def set_region_point(self, point_capture: tuple[float, float, float] | None) -> None:
        """Place the edit region at a point in capture coordinates (None: edit the whole scene)."""
        if point_capture is not None:
            point_capture = tuple(float(c) for c in point_capture)
            if len(point_capture) != 3:
                raise ValueError(f"a region point has three coordinates, got {point_capture}")
        self._point = point_capture
        if point_capture is None:
            self.region_label.setText(NO_REGION)
        else:
            x, y, z = point_capture
            self.region_label.setText(f"Region at ({x:.3f}, {y:.3f}, {z:.3f}), capture units")
        self.clear_region_button.setEnabled(point_capture is not None)
        self.region_changed.emit(self._point, self.radius_spin.value())

    def set_busy(self, busy: bool) -> None:
        """Disable Preview and Apply while a job runs (one job at a time)."""
        self.preview_button.setEnabled(not busy)
        self.apply_button.setEnabled(not busy)

    # --- what the panel says ---

    def editor(self) -> str:
        """The chosen editor: offline | ip2p."""
        return self.editor_combo.currentData()

    def region_point(self) -> tuple[float, float, float] | None:
        return self._point

    def error_text(self) -> str:
        """The inline error shown under the settings ('' when there is none)."""
        return self.error_label.text()

    def options(self) -> EditConfig:
        """The edit as set now (not validated: Preview and Apply validate before they emit, which also strips the
        instruction)."""
        entry = EDITORS[self.editor()]
        model = self.model_edit.text().strip()
        local = self._point is not None
        return EditConfig(
            project="",
            instruction=self.instruction_edit.text(), editor=self.editor(),
            model=model if entry.needs_model and model else None,
            model_config=self._model_config if entry.needs_model and self._model_config else None,
            start_from=self.start_from.currentData(),
            guidance=Guidance(text=self.text_guidance.value(), image=self.image_guidance.value(),
                              steps=self.diffusion_steps.value()),
            t_min=self.t_min.value(), t_max=self.t_max.value(),
            variation=self.variation.value() if entry.deterministic else 0.0, seed=self.seed.value(),
            minutes=self.minutes.value(), point_3d=self._point,
            radius=self.radius_spin.value() if local else None)

    def state(self) -> dict:
        """The panel's settings as JSON-friendly values, saved with the project."""
        return {"instruction": self.instruction_edit.text(), "editor": self.editor(),
                "model": self.model_edit.text().strip(),
                "guidance": {"text": self.text_guidance.value(), "image": self.image_guidance.value(),
                             "steps": self.diffusion_steps.value()},
                "t_min": self.t_min.value(), "t_max": self.t_max.value(), "variation": self.variation.value(),
                "seed": self.seed.value(), "minutes": self.minutes.value(), "radius": self.radius_spin.value(),
                "start_from": self.start_from.currentData(),
                "point": list(self._point) if self._point is not None else None,
                "advanced": self.advanced_button.isChecked()}

    def restore(self, state: dict) -> None:
        """Settings from ``state()``; missing or malformed entries keep their current values."""
        if isinstance(state.get("instruction"), str):
            self.instruction_edit.setText(state["instruction"])
        for combo, key in ((self.editor_combo, "editor"), (self.start_from, "start_from")):
            index = combo.findData(state.get(key))
            if index >= 0:
                combo.setCurrentIndex(index)
        if isinstance(state.get("model"), str) and state["model"].strip():
            self.model_edit.setText(state["model"])
        guidance = state.get("guidance") if isinstance(state.get("guidance"), dict) else {}
        self.text_guidance.setValue(_float(guidance.get("text"), self.text_guidance.value()))
        self.image_guidance.setValue(_float(guidance.get("image"), self.image_guidance.value()))
        self.diffusion_steps.setValue(int(_float(guidance.get("steps"), self.diffusion_steps.value())))
        for name in ("t_min", "t_max", "variation", "minutes"):
            spin = getattr(self, name)
            spin.setValue(_float(state.get(name), spin.value()))
        self.seed.setValue(int(_float(state.get("seed"), self.seed.value())))
        if isinstance(state.get("advanced"), bool):
            self.advanced_button.setChecked(state["advanced"])
        self.radius_spin.setValue(_float(state.get("radius"), self.radius_spin.value()))
        if "point" in state:
            self.set_region_point(_saved_point(state["point"]))
        self._clear_error()

    # --- internals ---

    @staticmethod
    def _double_spin(lo: float, hi: float, step: float, decimals: int, value: float) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setDecimals(decimals)
        spin.setRange(lo, hi)
        spin.setSingleStep(step)
        spin.setValue(value)
        return spin

    def _toggle_advanced(self, expanded: bool) -> None:
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.advanced.setVisible(expanded)

    def _fill_instruction(self, text: str) -> None:
        self.instruction_edit.setText(text)
        self.instruction_edit.setFocus()
        self._clear_error()

    def _editor_changed(self) -> None:
        entry = EDITORS[self.editor()]
        self.editor_form.setRowVisible(self.model_row, entry.needs_model)
        self.advanced_form.setRowVisible(self.variation, entry.deterministic)
        self.editor_note.setText(entry.summary[0].upper() + entry.summary[1:])
        ignored = f"{entry.label} has a fixed strength and ignores guidance" if entry.deterministic else ""
        for spin in (self.text_guidance, self.image_guidance, self.diffusion_steps):
            spin.setEnabled(not entry.deterministic)
            self.advanced_form.labelForField(spin).setToolTip(ignored)
        self._clear_error()

    def _radius_changed(self, radius: float) -> None:
        self._sync_slider()
        self.region_changed.emit(self._point, radius)

    def _slider_range(self) -> tuple[float, float]:
        return self._default_radius / RADIUS_SPAN, self._default_radius * RADIUS_SPAN

    def _slider_moved(self, position: int) -> None:
        lo, hi = self._slider_range()
        self.radius_spin.setValue(lo * (hi / lo) ** (position / SLIDER_STEPS))

    def _sync_slider(self) -> None:
        """Move the slider to the spin box's radius without feeding the value back."""
        lo, hi = self._slider_range()
        fraction = math.log(max(self.radius_spin.value(), lo) / lo) / math.log(hi / lo)
        self.radius_slider.blockSignals(True)
        self.radius_slider.setValue(round(min(fraction, 1.0) * SLIDER_STEPS))
        self.radius_slider.blockSignals(False)

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "InstructPix2Pix diffusers folder", self._browse_start())
        if folder:
            self.model_edit.setText(folder)
            self._clear_error()

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "InstructPix2Pix checkpoint", self._browse_start(),
                                              "Checkpoints (*.safetensors *.ckpt)")
        if path:
            self.model_edit.setText(path)
            self._clear_error()

    def _browse_start(self) -> str:
        """Where the file dialogs open: at the current model, when there is one."""
        text = self.model_edit.text().strip()
        if not text:
            return ""
        current = Path(text).expanduser()
        return str(current if current.is_dir() else current.parent)

    def _request(self, signal: Signal) -> None:
        """Emit the edit, checked by the engine's own rules (``EditConfig.validate``: the panel checks nothing
        itself), or show why it cannot start.  The window's machine settings are checked when it makes the job."""
        options = self.options()
        try:
            options.validate()
        except UserInputError as exc:
            self.error_label.setText(_sentence(str(exc)))
            self.error_label.setVisible(True)
            return
        self._clear_error()
        signal.emit(options)

    def _clear_error(self) -> None:
        self.error_label.clear()
        self.error_label.setVisible(False)


class PreviewDialog(QDialog):
    """A 2D edit of the current view beside the render it started from (non-modal)."""

    def __init__(self, instruction: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setModal(False)
        self.render_label = QLabel()
        self.edited_label = QLabel()
        columns = QHBoxLayout()
        for caption, label in (("Render", self.render_label), ("Edited", self.edited_label)):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
            column = QVBoxLayout()
            column.addWidget(label)
            title = QLabel(caption)
            title.setAlignment(Qt.AlignmentFlag.AlignCenter)
            column.addWidget(title)
            columns.addLayout(column)
        self.note = QLabel("A 2D edit of this view only: the scene is unchanged until you apply the edit.")
        self.note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(columns)
        layout.addWidget(self.note)
        self.set_instruction(instruction)

    def set_instruction(self, instruction: str) -> None:
        """Title the dialog with the instruction being previewed."""
        self.setWindowTitle(f"Preview: {instruction}" if instruction else "Preview")

    def set_images(self, render: np.ndarray, edited: np.ndarray) -> None:
        """Show ``render`` and ``edited`` (HxWx3), each scaled to fit PREVIEW_SIDE keeping its aspect."""
        for label, image in ((self.render_label, render), (self.edited_label, edited)):
            pixmap = QPixmap.fromImage(numpy_to_qimage(image)).scaled(
                QSize(PREVIEW_SIDE, PREVIEW_SIDE), Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation)
            label.setPixmap(pixmap)
            label.setFixedSize(pixmap.size())
        self.adjustSize()
