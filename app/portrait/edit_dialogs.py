"""The dialogs of the Portrait tab's 3DPE page (app.portrait.edit_panel): what and where to export
(EditExportDialog, answering ExportOptions) and the adaptation of the embedded editor to a new style, run as a
job with its progress and loss plot (AdaptDialog).

The page opens them and runs the export itself; the adaptation job is a parameter (AdaptJob), so tests run it on
fakes.  They live apart from the page to keep each module small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout, QLabel,
                               QLineEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app.core.host import WorkspaceHost
from app.core.jobs import PORTRAIT
from app.widgets import error_label, row
from engine.core.jobs import CancelToken, Job, Metrics, Progress

if TYPE_CHECKING:
    from app.worker import JobRunner
    from engine.portrait.adapt import AdaptConfig

AdaptJob: TypeAlias = Callable[["AdaptConfig", CancelToken], Job]
"""runs the adaptation of a config (engine.portrait.adapt.adapt_job; a fake in tests)"""


@dataclass(frozen=True)
class ExportOptions:
    """What an export writes, into ``out``: ``views`` novel views, and on request the orbit video and the mesh."""

    out: str
    views: int = 4
    video: bool = False
    mesh: bool = False


class EditExportDialog(QDialog):
    """Asks for the folder and what to write in it; ``options()`` once accepted."""

    def __init__(self, suggested: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export the 3DPE edit")
        self.folder_edit = QLineEdit(suggested)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.views_spin = QSpinBox()
        self.views_spin.setRange(0, 64)
        self.views_spin.setValue(ExportOptions.views)
        self.views_spin.setToolTip("Novel views written as PNG images, spread over yaw ±30°")
        self.video_check = QCheckBox("Orbit video (orbit.mp4)")
        self.mesh_check = QCheckBox("Mesh (mesh.ply and mesh.glb, vertex colours)")
        self.error_label = error_label()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Folder:", row(self.folder_edit, browse))
        form.addRow("Novel views:", self.views_spin)
        form.addRow(self.video_check)
        form.addRow(self.mesh_check)
        form.addRow(self.error_label)
        form.addRow(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    def options(self) -> ExportOptions:
        return ExportOptions(self.folder_edit.text().strip(), self.views_spin.value(), self.video_check.isChecked(),
                             self.mesh_check.isChecked())

    def accept(self) -> None:
        """Close only with a folder to write to."""
        if not self.options().out:
            self.error_label.setText("Choose the folder to write the edit to.")
            self.error_label.show()
            return
        super().accept()


class AdaptDialog(QDialog):
    """Teaches the embedded editor a new style from a pairs folder (input/ and edited/ images of the same names)
    as a job, with its progress, a live loss plot and Cancel; ``adapted(name)`` when the editor learned it.
    Closing the dialog leaves the job running (its row in the Jobs panel follows it)."""

    adapted = Signal(str)

    def __init__(self, host: WorkspaceHost, adapt_job: AdaptJob, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph  # deferred: only when the user adapts (see app.jobs_panel)

        self.setWindowTitle("Adapt the 3DPE editor to a new style")
        self.host, self._adapt_job = host, adapt_job
        self.runner: JobRunner | None = None
        self.loss_points: list[tuple[int, float]] = []
        self._failure = ""

        self.pairs_edit = QLineEdit()
        self.pairs_edit.setPlaceholderText("a folder with input/ and edited/ images of the same names")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("e.g. marble statue: its words become prompt words")
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setRange(0.1, 120.0)
        self.minutes_spin.setDecimals(1)
        self.minutes_spin.setSuffix(" min")
        self.minutes_spin.setValue(5.0)
        self.start_button = QPushButton("Adapt")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel adaptation")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.status_label = QLabel("About ten pairs of aligned square portraits, before and after the edit.")
        self.status_label.setWordWrap(True)
        self.error_label = error_label()
        self.loss_plot = pyqtgraph.PlotWidget()
        self.loss_plot.setLogMode(x=False, y=True)
        self.loss_plot.setTitle("loss")
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.setMinimumHeight(160)
        self._loss_curve = self.loss_plot.plot(pen=pyqtgraph.mkPen("#d9711a", width=1.5))

        form = QFormLayout()
        form.addRow("Pairs:", row(self.pairs_edit, browse))
        form.addRow("Style name:", self.name_edit)
        form.addRow("Time budget:", self.minutes_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(row(self.progress_bar, self.start_button, self.cancel_button))
        layout.addWidget(self.status_label)
        layout.addWidget(self.loss_plot, 1)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Pairs folder", self.pairs_edit.text())
        if folder:
            self.pairs_edit.setText(folder)

    def problems(self) -> list[str]:
        """What keeps the adaptation from starting, one sentence each."""
        pairs, name = Path(self.pairs_edit.text().strip()), self.name_edit.text().strip()
        problems = []
        if not self.pairs_edit.text().strip() or not (pairs / "input").is_dir() or not (pairs / "edited").is_dir():
            problems.append("Choose a pairs folder holding input/ and edited/ folders.")
        if not name:
            problems.append("Name the style (its words become prompt words).")
        return problems

    def start(self) -> "JobRunner | None":
        """Run the adaptation as a job (the runner; None when it could not start, and the user was told why)."""
        problems = self.problems()
        self.error_label.setText("\n".join(problems))
        self.error_label.setVisible(bool(problems))
        if problems:
            return None
        pairs, name, minutes = self.pairs_edit.text().strip(), self.name_edit.text().strip(), self.minutes_spin.value()
        adapt_job = self._adapt_job

        def job(cancel: CancelToken) -> Iterator:
            from engine.portrait.adapt import AdaptConfig

            yield from adapt_job(AdaptConfig(pairs=pairs, name=name, minutes=minutes), cancel)

        runner = self.host.run_job("portrait-adapt", f"Adapt the 3DPE editor to {name!r}", job, frozenset({PORTRAIT}),
                                   on_done=lambda ok: self._on_done(ok, name))
        if runner is None:
            return None
        self.runner, self._failure = runner, ""
        self.loss_points.clear()
        self._loss_curve.clear()
        self.progress_bar.setValue(0)
        self.status_label.setText(f"Adapting to {name!r}…")
        runner.progress.connect(self._on_progress)
        runner.metrics.connect(self._on_metrics)
        runner.failed.connect(self._on_failed)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        return runner

    def cancel(self) -> None:
        """Stop the adaptation (the editor stays as it was)."""
        if self.runner is not None:
            self.runner.cancel()

    def _on_failed(self, message: str, details: str) -> None:
        self._failure = message
        self.status_label.setText(message)

    def _on_progress(self, event: Progress) -> None:
        fraction = event.fraction if event.fraction is not None else (event.step / event.total if event.total else 0)
        self.progress_bar.setValue(round(1000 * min(fraction, 1.0)))
        if event.message:
            self.status_label.setText(event.message)

    def _on_metrics(self, event: Metrics) -> None:
        loss = event.values.get("loss_total")
        if loss is None:
            return
        self.loss_points.append((event.step, float(loss)))
        steps, values = zip(*self.loss_points)
        self._loss_curve.setData(list(steps), list(values))

    def _on_done(self, ok: bool, name: str) -> None:
        self.runner = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if ok:
            self.progress_bar.setValue(1000)
            self.status_label.setText(f"The editor learned {name!r}: type it as a prompt.")
            self.adapted.emit(name)
        elif not self._failure:
            self.status_label.setText("Adaptation stopped; the editor is unchanged.")
