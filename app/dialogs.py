"""Dialogs: errors with their details, the settings editor and the export dialog.

Engine modules that import torch are imported inside the dialogs, not at module level, so
that importing the app (and opening its window) stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFileDialog, QFormLayout, QLabel, QLineEdit, QMessageBox, QProgressBar, QPushButton,
                               QRadioButton, QSpinBox, QStackedWidget, QVBoxLayout, QWidget)

from app.config_form import ConfigForm
from app.settings import DEVICES, MEMORY_PRESETS, PRECISIONS, AppSettings
from app.widgets import error_label, row
from app.core.project_session import check_dataset_folder, unique_folder
from engine.core.config import field_docs
from engine.core.errors import UserInputError
from engine.editors.sources import DEFAULT_HUB_ID, check_model_source

if TYPE_CHECKING:
    from engine.export import ExportConfig
    from engine.export.video import VideoConfig

"""owner/name: what load_ip2p takes for a hub id rather than a path"""


class ErrorDialog(QMessageBox):
    """An error as one plain sentence; the technical details sit behind the "Show Details..." button."""

    def __init__(self, message: str, details: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setIcon(QMessageBox.Icon.Critical)
        self.setWindowTitle("Retouch3D")
        self.setText(message)
        if details:
            self.setDetailedText(details)
        self.setStandardButtons(QMessageBox.StandardButton.Ok)


def show_error(parent: QWidget | None, message: str, details: str = "") -> ErrorDialog:
    """Show an error without blocking (window-modal over ``parent``); the dialog deletes itself when closed."""
    dialog = ErrorDialog(message, details, parent)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.open()
    return dialog


def looks_like_path(text: str) -> bool:
    """Whether the user meant a file or folder (rather than a name such as a hub id)."""
    return "/" in text or "\\" in text or text.startswith(("~", "."))


def _choice_combo(choices: dict[str, str], current: str) -> QComboBox:
    """A combo of ``choices`` (value → what it means), each shown as "Value (meaning)", ``current`` selected."""
    combo = QComboBox()
    for value, meaning in choices.items():
        combo.addItem(f"{value.capitalize()} ({meaning})", value)
    combo.setCurrentIndex(combo.findData(current))
    return combo


def _start_dir(text: str) -> str:
    """Where a file chooser opens: the current value's folder when there is one."""
    path = Path(text).expanduser() if text else Path.home()
    return str(path if path.is_dir() else path.parent)


class SettingsDialog(QDialog):
    """Edits AppSettings; OK writes them only when every path the user typed exists."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._settings = settings
        form = QFormLayout()

        self.model_edit = QLineEdit(settings.ip2p_model)
        self.model_edit.setPlaceholderText("diffusers folder, .safetensors/.ckpt file, or a hub id such as "
                                           f"{DEFAULT_HUB_ID}")
        model_folder = QPushButton("Folder…")
        model_folder.clicked.connect(lambda: self._browse_folder(self.model_edit, "InstructPix2Pix model folder"))
        model_file = QPushButton("File…")
        model_file.clicked.connect(lambda: self._browse_file(self.model_edit, "InstructPix2Pix checkpoint",
                                                             "Checkpoints (*.safetensors *.ckpt)"))
        form.addRow("InstructPix2Pix model:", row(self.model_edit, model_folder, model_file))

        self.model_config_edit = QLineEdit(settings.ip2p_config_dir)
        self.model_config_edit.setPlaceholderText("only for a single checkpoint file")
        self.model_config_edit.setToolTip("The diffusers folder of the same model, for its configs; a single "
                                          ".safetensors/.ckpt file does not hold them")
        config_browse = QPushButton("Browse…")
        config_browse.clicked.connect(lambda: self._browse_folder(self.model_config_edit, "Configs folder"))
        form.addRow("Its configs folder:", row(self.model_config_edit, config_browse))

        self.eg3d_edit = QLineEdit(settings.eg3d_checkpoint)
        eg3d_browse = QPushButton("Browse…")
        eg3d_browse.clicked.connect(lambda: self._browse_file(self.eg3d_edit, "EG3D checkpoint", "All files (*)"))
        form.addRow("EG3D checkpoint:", row(self.eg3d_edit, eg3d_browse))

        self.threedpe_edit = QLineEdit(settings.threedpe_checkpoint)
        self.threedpe_edit.setPlaceholderText("empty: the embedded editor")
        self.threedpe_edit.setToolTip("The official 3DPE network (3dpe.pt) for the Portrait tab's 3DPE page; "
                                      "it takes image prompts, and text prompts go through InstructPix2Pix")
        threedpe_browse = QPushButton("Browse…")
        threedpe_browse.clicked.connect(lambda: self._browse_file(self.threedpe_edit, "3DPE checkpoint",
                                                                  "3DPE checkpoints (*.pt);;All files (*)"))
        form.addRow("3DPE checkpoint:", row(self.threedpe_edit, threedpe_browse))


        self.device_combo = QComboBox()
        for value, label in zip(DEVICES, ("Automatic (GPU when available)", "CPU", "GPU (CUDA)")):
            self.device_combo.addItem(label, value)
        self.device_combo.setCurrentIndex(DEVICES.index(settings.device))
        form.addRow("Device:", self.device_combo)

        self.memory_combo = _choice_combo(MEMORY_PRESETS, settings.memory_preset)
        self.memory_combo.setToolTip("GPU memory used by InstructPix2Pix; changes nothing on the CPU. Low needs the "
                                     "accelerate package: pip install accelerate")
        form.addRow("GPU memory:", self.memory_combo)

        self.precision_combo = _choice_combo(PRECISIONS, settings.precision)
        self.precision_combo.setToolTip("InstructPix2Pix weights. Full is Instruct-NeRF2NeRF's default and runs "
                                        "everywhere; half halves the GPU memory, on CUDA only. The field being "
                                        "trained needs GPU memory on top.")
        form.addRow("Precision:", self.precision_combo)

        self.lpips_combo = QComboBox()
        for value, label in (("auto", "Automatic (torch cache)"), ("off", "Off (L1 loss only)"),
                             ("file", "Weights file")):
            self.lpips_combo.addItem(label, value)
        self.lpips_edit = QLineEdit()
        self.lpips_edit.setPlaceholderText("AlexNet weights file (.pth)")
        self._lpips_browse = QPushButton("Browse…")
        self._lpips_browse.clicked.connect(lambda: self._browse_file(self.lpips_edit, "AlexNet weights",
                                                                     "PyTorch weights (*.pth *.pt);;All files (*)"))
        backbone = settings.lpips_backbone
        if backbone in ("auto", "off"):
            self.lpips_combo.setCurrentIndex(self.lpips_combo.findData(backbone))
        else:
            self.lpips_combo.setCurrentIndex(self.lpips_combo.findData("file"))
            self.lpips_edit.setText(backbone)
        self.lpips_combo.currentIndexChanged.connect(self._update_lpips_file_enabled)
        self._update_lpips_file_enabled()
        lpips_row = row(self.lpips_edit, self._lpips_browse)
        lpips_row.layout().insertWidget(0, self.lpips_combo)
        form.addRow("LPIPS backbone:", lpips_row)
        self.lpips_status_label = QLabel(self._alexnet_status())
        self.lpips_status_label.setWordWrap(True)
        self.lpips_status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("", self.lpips_status_label)

        self.autosave_spin = QSpinBox()
        self.autosave_spin.setRange(0, 240)
        self.autosave_spin.setSuffix(" min")
        self.autosave_spin.setSpecialValueText("Off")
        self.autosave_spin.setValue(settings.autosave_minutes)
        form.addRow("Autosave every:", self.autosave_spin)

        self.error_label = error_label()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    @staticmethod
    def _alexnet_status() -> str:
        """Whether LPIPS's AlexNet weights are in the torch cache, and where to put them otherwise."""
        from engine.core import metrics

        path = metrics.alexnet_weights_path()
        if path.is_file():
            return f"ImageNet AlexNet weights found in the torch cache ({path})."
        return (f"ImageNet AlexNet weights are not in the torch cache: download "
                f"https://download.pytorch.org/models/{metrics.ALEXNET_FILE} to {path}, or choose the file. "
                "Without them edits use the L1 loss only.")

    def _update_lpips_file_enabled(self) -> None:
        is_file = self.lpips_combo.currentData() == "file"
        self.lpips_edit.setEnabled(is_file)
        self._lpips_browse.setEnabled(is_file)

    def _browse_file(self, edit: QLineEdit, title: str, filters: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, title, _start_dir(edit.text().strip()), filters)
        if path:
            edit.setText(path)

    def _browse_folder(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title, _start_dir(edit.text().strip()))
        if path:
            edit.setText(path)

    def lpips_backbone(self) -> str:
        """The LPIPS choice as AppSettings stores it: "auto", "off" or the weights file."""
        choice = self.lpips_combo.currentData()
        return self.lpips_edit.text().strip() if choice == "file" else choice

    def problems(self) -> list[str]:
        """What keeps the values from being saved, one sentence each (empty when all is well)."""
        problems = []
        model = self.model_edit.text().strip()
        configs = self.model_config_edit.text().strip()
        if model:  # the engine's rules for a model source, so the editor and the command line say the same
            try:
                check_model_source(model, configs or None)
            except UserInputError as exc:
                problems.append(f"InstructPix2Pix model: {exc}")
        if configs and not Path(configs).expanduser().is_dir():
            problems.append(f"Configs folder: {configs} is not a folder.")
        eg3d = self.eg3d_edit.text().strip()
        if eg3d and looks_like_path(eg3d) and not Path(eg3d).expanduser().exists():
            problems.append(f"EG3D checkpoint: {eg3d} does not exist.")
        threedpe = self.threedpe_edit.text().strip()
        if threedpe and not Path(threedpe).expanduser().is_file():
            problems.append(f"3DPE checkpoint: {threedpe} is not a file.")
        if self.lpips_combo.currentData() == "file":
            weights = self.lpips_edit.text().strip()
            if not weights:
                problems.append("LPIPS backbone: choose the AlexNet weights file, or Automatic or Off.")
            elif not Path(weights).expanduser().is_file():
                problems.append(f"LPIPS backbone: {weights} does not exist.")
        return problems

    def accept(self) -> None:
        """Save and close when every value is usable; otherwise say why and stay open."""
        problems = self.problems()
        if problems:
            self.error_label.setText("\n".join(problems))
            self.error_label.show()
            return
        self.error_label.hide()
        settings = self._settings
        settings.ip2p_model = self.model_edit.text().strip()
        settings.ip2p_config_dir = self.model_config_edit.text().strip()
        settings.eg3d_checkpoint = self.eg3d_edit.text().strip()
        settings.threedpe_checkpoint = self.threedpe_edit.text().strip()
        settings.device = self.device_combo.currentData()
        settings.memory_preset = self.memory_combo.currentData()
        settings.precision = self.precision_combo.currentData()
        settings.lpips_backbone = self.lpips_backbone()
        settings.autosave_minutes = self.autosave_spin.value()
        settings.sync()
        super().accept()


class VideoOptions(QWidget):
    """A turntable orbit or a camera path file, the frame rate and the frame size of a video export."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from engine.export.video import VideoConfig

        docs = field_docs(VideoConfig)
        self.orbit_radio = QRadioButton("Turntable orbit")
        self.orbit_radio.setChecked(True)
        self.orbit_spin = QSpinBox()
        self.orbit_spin.setRange(1, 100_000)
        self.orbit_spin.setValue(60)
        self.orbit_spin.setSuffix(" frames")
        self.orbit_spin.setToolTip(docs.get("orbit", ""))
        self.path_radio = QRadioButton("Camera path")
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("camera_path.json")
        self.path_edit.setToolTip(docs.get("camera_path", ""))
        path_browse = QPushButton("Browse…")
        path_browse.clicked.connect(self._browse_path)
        self.path_row = row(self.path_edit, path_browse)
        group = QButtonGroup(self)
        group.addButton(self.orbit_radio)
        group.addButton(self.path_radio)
        self.orbit_radio.toggled.connect(self._update_enabled)

        self.fps_spin = QDoubleSpinBox()
        self.fps_spin.setRange(0.0, 1000.0)
        self.fps_spin.setDecimals(2)
        self.fps_spin.setSpecialValueText("Default (the camera path's, or 30)")
        self.fps_spin.setToolTip(docs.get("fps", ""))
        self.size_spin = QSpinBox()
        self.size_spin.setRange(0, 16384)
        self.size_spin.setSuffix(" px")
        self.size_spin.setSpecialValueText("Training size")
        self.size_spin.setToolTip(docs.get("size", ""))

        form = QFormLayout(self)
        form.addRow(self.orbit_radio, self.orbit_spin)
        form.addRow(self.path_radio, self.path_row)
        form.addRow("Frame rate:", self.fps_spin)
        form.addRow("Longer side:", self.size_spin)
        self._update_enabled()

    def _update_enabled(self) -> None:
        orbit = self.orbit_radio.isChecked()
        self.orbit_spin.setEnabled(orbit)
        self.path_row.setEnabled(not orbit)
        self.size_spin.setEnabled(orbit)  # a camera path carries its own frame size

    def _browse_path(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Camera path", _start_dir(self.path_edit.text().strip()),
                                              "Camera paths (*.json)")
        if path:
            self.path_edit.setText(path)
            self.path_radio.setChecked(True)

    def config(self) -> VideoConfig:
        """The VideoConfig shown; raises UserInputError for a camera path file that is not there."""
        from engine.export.video import VideoConfig

        fps = self.fps_spin.value() or None
        if self.orbit_radio.isChecked():
            return VideoConfig(orbit=self.orbit_spin.value(), fps=fps, size=self.size_spin.value() or None)
        camera_path = self.path_edit.text().strip()
        if not camera_path:
            raise UserInputError("choose the camera path file (a nerfstudio camera_path.json), or a turntable orbit")
        if not Path(camera_path).expanduser().is_file():
            raise UserInputError(f"{camera_path}: no such camera path file")
        return VideoConfig(camera_path=str(Path(camera_path).expanduser()), fps=fps)


OPTION_WIDGETS = {"video": lambda: VideoOptions()}
"""export kinds whose settings get their own widget (a choice between a turntable and a camera path); every other
kind with settings gets the form of its config, one without a note saying what it writes"""


class ExportDialog(QDialog):
    """Chooses an export of a project (any kind the CLI writes) and shows its progress.

    "Export" validates the choice and emits ``export_requested(ExportConfig)``; the dialog stays
    open and the main window, which runs the job, reports back through ``set_progress``,
    ``set_done`` and ``set_failed``.  "Cancel export" emits ``cancel_requested``.
    """

    export_requested = Signal(object)  # engine.export.ExportConfig, validated
    cancel_requested = Signal()

    def __init__(self, project_dir: str | Path, parent: QWidget | None = None, kind: str = "dataset") -> None:
        super().__init__(parent)
        from engine.export import EXPORTS

        self.setWindowTitle("Export")
        self.setMinimumWidth(480)
        self._project = Path(project_dir)
        self._output: Path | None = None

        self.kind_combo = QComboBox()
        for kind in EXPORTS.values():
            self.kind_combo.addItem(kind.label, kind.name)
        self.out_edit = QLineEdit()
        out_browse = QPushButton("Browse…")
        out_browse.clicked.connect(self._browse_out)
        self._out_hint = QLabel()
        self._out_hint.setWordWrap(True)

        self.options_stack = QStackedWidget()
        self._pages: dict[str, QWidget] = {}
        """each kind's settings widget (``config()`` gives its settings), or a note for a kind without settings"""
        for kind in EXPORTS.values():
            if kind.name in OPTION_WIDGETS:
                self._pages[kind.name] = OPTION_WIDGETS[kind.name]()
            elif kind.options is not None:
                self._pages[kind.name] = ConfigForm(kind.options)
            else:
                self._pages[kind.name] = QLabel(kind.about)
        for page in self._pages.values():
            if isinstance(page, QLabel):
                page.setWordWrap(True)
                page.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            self.options_stack.addWidget(page)

        self._form = QWidget()
        form = QFormLayout(self._form)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Export:", self.kind_combo)
        form.addRow("Write to:", row(self.out_edit, out_browse))
        form.addRow("", self._out_hint)
        form.addRow(self.options_stack)

        self.error_label = error_label()
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_when_done_check = QCheckBox("Open the folder when done")
        self.open_when_done_check.setChecked(True)

        self._buttons = QDialogButtonBox()
        self.export_button = self._buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = self._buttons.addButton("Cancel export", QDialogButtonBox.ButtonRole.ActionRole)
        self.open_folder_button = self._buttons.addButton("Open folder", QDialogButtonBox.ButtonRole.ActionRole)
        self._buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.cancel_button.hide()
        self.open_folder_button.hide()
        self._buttons.accepted.connect(self._export)
        self._buttons.rejected.connect(self.reject)
        self.cancel_button.clicked.connect(lambda: self.cancel_requested.emit())
        self.open_folder_button.clicked.connect(self.open_folder)

        layout = QVBoxLayout(self)
        layout.addWidget(self._form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.open_when_done_check)
        layout.addWidget(self._buttons)

        self.kind_combo.currentIndexChanged.connect(self._kind_changed)
        self._suggested = ""
        self.kind_combo.setCurrentIndex(max(0, self.kind_combo.findData(kind)))
        self._kind_changed()

    @property
    def kind(self) -> str:
        """The export kind chosen (a name in engine.export.EXPORTS)."""
        return self.kind_combo.currentData()

    def options_widget(self, kind: str) -> QWidget:
        """The settings widget (or note) shown for export ``kind``."""
        return self._pages[kind]

    @property
    def open_folder_when_done(self) -> bool:
        """Whether the user wants the output folder opened when the export finishes."""
        return self.open_when_done_check.isChecked()

    def suggested_output(self, kind: str) -> Path:
        """PROJECT/exports/<kind><suffix>: where an export goes unless the user picks another place."""
        from engine.export import EXPORTS

        return self._project / "exports" / f"{kind}{EXPORTS[kind].suffixes[0]}"  # the first: the usual format

    def _kind_changed(self) -> None:
        kind = self.kind
        self.options_stack.setCurrentWidget(self._pages[kind])
        from engine.export import EXPORTS

        hint = EXPORTS[kind].out_help
        self._out_hint.setText(hint[0].upper() + hint[1:] + ".")
        # follow the kind only while the output is still our suggestion, never over the user's choice
        if self.out_edit.text().strip() in ("", self._suggested):
            self._suggested = str(self.suggested_output(kind))
            self.out_edit.setText(self._suggested)
        self.error_label.hide()

    def _browse_out(self) -> None:
        start = self.out_edit.text().strip() or str(self.suggested_output(self.kind))
        from engine.export import EXPORTS

        file_filter = EXPORTS[self.kind].file_filter
        if file_filter is None:
            path = QFileDialog.getExistingDirectory(self, f"Export the {self.kind} to", _start_dir(start))
        else:
            path, _ = QFileDialog.getSaveFileName(self, "Export to", start, file_filter)
        if path:
            self.out_edit.setText(path)

    def config(self) -> ExportConfig:
        """The engine's ExportConfig for what is shown, validated; raises UserInputError saying what is wrong."""
        from engine.export import ExportConfig

        out = self.out_edit.text().strip()
        if not out:
            raise UserInputError("choose where to write the export")
        page = self._pages[self.kind]
        options = page.config() if hasattr(page, "config") else None
        cfg = ExportConfig(project=str(self._project), what=self.kind, out=str(Path(out).expanduser()), options=options)
        cfg.validate()
        return cfg

    def _export(self) -> None:
        try:
            cfg = self.config()
        except UserInputError as exc:
            self.error_label.setText(str(exc))
            self.error_label.show()
            return
        self.error_label.hide()
        self._output = Path(cfg.out)
        self.open_folder_button.hide()
        self._set_running(True)
        self.set_progress(0.0, "Starting…")
        self.export_requested.emit(cfg)

    def _set_running(self, running: bool) -> None:
        self._form.setEnabled(not running)
        self.export_button.setEnabled(not running)
        self.cancel_button.setVisible(running)

    def set_progress(self, fraction: float | None, text: str) -> None:
        """Show how far the export is (``fraction`` in [0, 1]; None when unknown) and what it is doing."""
        if fraction is None:
            self.progress_bar.setRange(0, 0)  # a busy indicator
        else:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(round(min(max(fraction, 0.0), 1.0) * 1000))
        self.status_label.setText(text)

    def set_done(self, path: str) -> None:
        """The export wrote ``path``: full bar, say where, offer to open its folder."""
        self._output = Path(path)
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(1000)
        self.status_label.setText(f"Wrote {path}")
        self._set_running(False)
        self.open_folder_button.show()

    def set_failed(self, message: str) -> None:
        """The export failed or was cancelled: say so and let the user change the options and retry."""
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.status_label.setText(message)
        self._set_running(False)

    def output_folder(self) -> Path | None:
        """The folder holding the last output (the output itself when it is a folder); None before an export."""
        if self._output is None:
            return None
        return self._output if self._output.is_dir() else self._output.parent

    def open_folder(self) -> bool:
        """Open the output folder in the desktop's file manager; False when there is none or it cannot be opened."""
        folder = self.output_folder()
        return folder is not None and QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


class NewProjectDialog(QDialog):
    """Chooses the capture, the project folder and how to load the images."""

    def __init__(self, data: str, projects_root: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New project")
        self.data_edit = QLineEdit(data)
        self.root_edit = QLineEdit()
        self.downscale = QDoubleSpinBox()
        self.downscale.setRange(1, 16)
        self.downscale.setValue(1)
        self.downscale.setToolTip("resample the images by this factor on load (large photos train faster at 2-4)")
        browse_data, browse_root = QPushButton("Browse…"), QPushButton("Browse…")
        browse_data.clicked.connect(self._browse_data)
        browse_root.clicked.connect(self._browse_root)
        self._projects_root = projects_root
        self.error_label = error_label()
        form = QFormLayout(self)
        form.addRow("Capture folder:", row(self.data_edit, browse_data))
        form.addRow("Project folder:", row(self.root_edit, browse_root))
        form.addRow("Downscale images:", self.downscale)
        form.addRow(self.error_label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.data_edit.textChanged.connect(self._suggest_root)
        self._suggest_root()

    def _suggest_root(self) -> None:
        name = Path(self.data_edit.text().strip() or "project").name or "project"
        self.root_edit.setText(str(unique_folder(self._projects_root, name)))

    def _browse_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Capture folder (transforms.json)", self.data_edit.text())
        if folder:
            self.data_edit.setText(folder)

    def _browse_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the project", str(self._projects_root))
        if folder:
            self.root_edit.setText(str(unique_folder(Path(folder), Path(self.data_edit.text()).name or "project")))

    def accept(self) -> None:
        try:
            check_dataset_folder(self.data_edit.text().strip())
        except UserInputError as exc:
            self.error_label.setText(str(exc))
            return
        super().accept()
