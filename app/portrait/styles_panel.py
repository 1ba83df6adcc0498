"""The Portrait tab's Styles page (FF3D, engine.portrait.ff3d_style): type a style, watch its few-shot set fill in
view by view (untick bad views), train I2T on it with progress, ETA, a live loss plot and a live orbit of the
result (Cancel stops it; Train again resumes), then apply any style of the library to a sampled head or a photo,
mix two styles with a slider, and export views, an orbit video or a mesh.

Styles live in a library folder, one folder per style (set/ and style/ inside).  Building, training and exporting
are jobs on a JobRunner (app.worker); the applied style renders on one newest-first worker (app.coalescing); so
nothing waits on the engine; the engine is a parameter (``StylesEngine``), so tests
run the page on a fake one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPaintEvent, QPen, QPixmap
from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
                               QListView, QListWidget, QListWidgetItem, QProgressBar, QPushButton, QSlider, QSpinBox,
                               QVBoxLayout, QWidget)

from app.coalescing import LatestRequestWorker
from app.core.formatting import format_duration
from app.portrait.edit_views import PictureView
from app.widgets import error_label, numpy_to_qimage, row
from app.worker import JobRunner
from engine.core.jobs import CancelToken, Preview

if TYPE_CHECKING:
    from app.portrait.workspace import PortraitWorkspace

LIBRARY = Path.home() / "Retouch3D" / "styles"
"""where the page keeps styles unless told otherwise"""
THUMB_PX = 56
GRIDS = ("10x10", "6x6", "4x4", "2x2")
PREVIEW_SIZE = 256
"""side of the applied style's view on the page"""


class StylesEngine:
    """What the page asks of FF3D: jobs to build a set, train a style and export, and a styled head to render."""

    def build_set(self, cfg, cancel):
        from engine.portrait.ff3d_style import build_set_job

        return build_set_job(cfg, cancel)

    def train(self, cfg, cancel):
        from engine.portrait.ff3d_style import train_style_job

        return train_style_job(cfg, cancel)

    def export(self, request, cancel):
        from engine.portrait.ff3d_style import apply_style_job

        return apply_style_job(request, cancel)

    def __init__(self) -> None:
        self._loaded: dict[tuple, Any] = {}
        """styles by (folder, weights' mtime) and priors by path, loaded once"""
        self._shown: tuple[Any, Any] | None = None
        """(request, StyledHead) of the last head styled: turning it only renders again"""

    def _load(self, key: tuple, load):
        if key not in self._loaded:
            self._loaded[key] = load()
        return self._loaded[key]

    def _style(self, folder: str):
        from engine.portrait.ff3d_style import load_style

        return self._load((folder, (Path(folder) / "i2t.safetensors").stat().st_mtime), lambda: load_style(folder))

    def apply(self, request, yaw: float, cancel):
        """Render a style on a head from ``yaw``: a Preview (the page's picture)."""
        from engine.core.imaging import to_uint8
        from engine.portrait.ff3d_style import StyledHead, load_style_prior, photo_head, sampled_head

        if self._shown is None or self._shown[0] != request:
            style = self._style(request.style)
            mix = self._style(request.mix) if request.mix else None
            prior = self._load(("prior", request.prior, style.meta.get("prior_path")),
                               lambda: load_style_prior(style, request.prior))
            head = sampled_head(prior, request.seed, style.network.shape.plane_size) if request.seed is not None \
                else photo_head(request.image)
            self._shown = (request, StyledHead(prior, style, head, None, mix, None, request.alpha))
        cancel.raise_if_cancelled()
        yield Preview(0, to_uint8(self._shown[1].render(yaw, 0.0, request.size)), {"layout": "styled"})


def slug(text: str) -> str:
    """A folder name for a style."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "style"


class LossPlot(QWidget):
    """The training loss as a line over the steps."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.values: list[float] = []
        self.setMinimumSize(160, 70)

    def add(self, value: float) -> None:
        self.values.append(value)
        self.update()

    def clear(self) -> None:
        self.values.clear()
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(28, 28, 31))
        if len(self.values) >= 2:
            low, high = min(self.values), max(self.values)
            span = (high - low) or 1.0
            w, h = self.width() - 8, self.height() - 8
            points = [(4 + w * k / (len(self.values) - 1), 4 + h * (1 - (v - low) / span))
                      for k, v in enumerate(self.values)]
            painter.setPen(QPen(QColor(102, 187, 106), 1.5))
            for (x0, y0), (x1, y1) in zip(points, points[1:]):
                painter.drawLine(int(x0), int(y0), int(x1), int(y1))
        painter.setPen(QColor(200, 200, 200))
        painter.drawText(6, 14, f"loss {self.values[-1]:.4f}" if self.values else "loss")
        painter.end()


class StylesPage(QWidget):
    """See the module docstring."""

    rendered = Signal(object)
    """a frame of the applied style (H x W x 3 uint8), from the render thread"""
    render_failed = Signal(str)

    def __init__(self, engine: Any | None = None, library: str | Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine or StylesEngine()
        self.library = Path(library) if library is not None else LIBRARY
        self.folder: Path | None = None
        """the style being made (set/ and style/ inside)"""
        self.runner: JobRunner | None = None
        self._applier = LatestRequestWorker("styles", self._render, self._render_failed, kinds=("apply",))
        self.set_complete = False
        self.photo: str | None = None

        self.style_edit = QLineEdit()
        self.style_edit.setPlaceholderText("a style, e.g. a bronze statue")
        self.editor_combo = QComboBox()
        self.editor_combo.addItem("Offline vocabulary", "offline")
        self.editor_combo.addItem("InstructPix2Pix", "ip2p")
        self.grid_combo = QComboBox()
        self.grid_combo.addItems(GRIDS)
        self.identities_spin = QSpinBox()
        self.identities_spin.setRange(1, 8)
        self.build_button = QPushButton("Build set")
        self.build_button.clicked.connect(self.build_set)
        self.views = QListWidget()
        self.views.setViewMode(QListView.ViewMode.IconMode)
        self.views.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.views.setResizeMode(QListView.ResizeMode.Adjust)
        self.views.setMinimumHeight(2 * THUMB_PX + 20)
        self.views.itemChanged.connect(self._view_ticked)
        self.minutes_spin = QSpinBox()
        self.minutes_spin.setRange(1, 120)
        self.minutes_spin.setValue(3)
        self.minutes_spin.setSuffix(" min")
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.eta_label = QLabel()
        self.loss_plot = LossPlot()
        self.orbit = PictureView("live orbit", minimum=96)
        self.status = error_label()

        self.library_list = QListWidget()
        self.library_list.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.mix_combo = QComboBox()
        self.alpha_slider = QSlider(Qt.Orientation.Horizontal)
        self.alpha_slider.setRange(0, 100)
        self.alpha_slider.setValue(50)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.photo_button = QPushButton("Photo…")
        self.photo_button.clicked.connect(self.choose_photo)
        self.apply_button = QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply)
        self.yaw_slider = QSlider(Qt.Orientation.Horizontal)
        self.yaw_slider.setRange(-30, 30)
        self.result = PictureView("styled", minimum=128)
        self.rendered.connect(self.result.set_image)
        self.render_failed.connect(self.status.setText)
        self.export_buttons = {kind: QPushButton(text) for kind, text in
                               (("views", "Views…"), ("video", "Orbit MP4…"), ("mesh", "Mesh…"))}
        for kind, button in self.export_buttons.items():
            button.clicked.connect(lambda _=False, kind=kind: self.export_dialog(kind))
        self.seed_spin.valueChanged.connect(self._seed_changed)
        for signal in (self.library_list.currentRowChanged, self.mix_combo.currentIndexChanged,
                       self.alpha_slider.valueChanged, self.yaw_slider.valueChanged):
            signal.connect(lambda *_: self.apply())
        self._layout()
        self.refresh_library()

    def _layout(self) -> None:
        make = QGroupBox("New style")
        form = QFormLayout(make)
        form.addRow("Style:", row(self.style_edit, self.build_button))
        form.addRow("Editor:", row(self.editor_combo, QLabel("grid"), self.grid_combo, QLabel("heads"),
                                   self.identities_spin))
        form.addRow(self.views)
        form.addRow("Training:", row(self.minutes_spin, self.train_button, self.cancel_button))
        form.addRow(row(self.progress, self.eta_label))
        plots = QHBoxLayout()
        plots.addWidget(self.loss_plot, 2)
        plots.addWidget(self.orbit, 1)
        form.addRow(plots)
        use = QGroupBox("Library")
        column = QVBoxLayout(use)
        column.addWidget(self.library_list)
        apply_form = QFormLayout()
        apply_form.addRow("Head:", row(self.seed_spin, self.photo_button, self.apply_button))
        apply_form.addRow("Mix with:", row(self.mix_combo, self.alpha_slider))
        apply_form.addRow("Yaw:", self.yaw_slider)
        column.addLayout(apply_form)
        column.addWidget(self.result, 1)
        column.addWidget(row(*self.export_buttons.values()))
        page = QVBoxLayout(self)
        page.addWidget(make)
        page.addWidget(use, 1)
        page.addWidget(self.status)

    # ---------------------------------------------------------------- making a style
    @property
    def busy(self) -> bool:
        return self.runner is not None and self.runner.running

    def _start(self, make_job, on_done, preview=None, metrics=None, interval: float = 0.1) -> JobRunner:
        runner = JobRunner(make_job, min_preview_interval=interval, parent=self)
        runner.progress.connect(self._progress)
        runner.failed.connect(lambda message, details: self.status.setText(message))
        runner.warning.connect(lambda message: self.status.setText(message))
        if preview is not None:
            runner.preview.connect(preview)
        if metrics is not None:
            runner.metrics.connect(metrics)
        runner.finished.connect(on_done)
        self.runner = runner
        self._set_busy(True)
        runner.start()
        return runner

    def _set_busy(self, busy: bool) -> None:
        for widget in (self.build_button, self.train_button, self.style_edit):
            widget.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _progress(self, event) -> None:
        if event.fraction is not None:
            self.progress.setValue(int(1000 * event.fraction))
        elif event.total:
            self.progress.setValue(int(1000 * event.step / event.total))
        eta = event.eta_seconds
        self.eta_label.setText(event.message + (f" · {format_duration(eta)} left" if eta is not None else ""))

    def build_set(self) -> None:
        """Build the set of the style typed (a new folder in the library)."""
        from engine.portrait.ff3d_style import BuildSetConfig

        text = self.style_edit.text().strip()
        if not text:
            self.status.setText("Type a style first, e.g. 'a bronze statue'.")
            return
        if self.busy:
            return
        folder = self.library / slug(text)
        count = 2
        while folder.exists():
            folder = self.library / f"{slug(text)}-{count}"
            count += 1
        self.folder = folder
        self.views.clear()
        self.set_complete = False
        self.status.setText("")
        cfg = BuildSetConfig(style=text, out=str(folder / "set"), editor=self.editor_combo.currentData(),
                             grid=self.grid_combo.currentText(), identities=self.identities_spin.value())
        self._start(lambda cancel: self.engine.build_set(cfg, cancel), self._set_built, preview=self._view_made,
                    interval=0.0)

    def _view_made(self, event) -> None:
        item = QListWidgetItem(QIcon(QPixmap.fromImage(numpy_to_qimage(np.ascontiguousarray(event.image)))),
                               f"{event.camera.get('yaw', 0):+.0f}/{event.camera.get('pitch', 0):+.0f}")
        item.setData(Qt.ItemDataRole.UserRole, event.camera.get("view", self.views.count()))
        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked)
        self.views.addItem(item)

    def _set_built(self, ok: bool) -> None:
        self._set_busy(False)
        self.set_complete = ok
        self.views.blockSignals(True)
        for k in range(self.views.count()):  # views can be rejected once the set is written
            item = self.views.item(k)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        self.views.blockSignals(False)
        if ok:
            self.status.setText(f"{self.views.count()} views made: untick the ones that went wrong, then Train.")

    def _view_ticked(self, item: QListWidgetItem) -> None:
        if not self.set_complete or self.folder is None:
            return
        from engine.portrait.ff3d_style import set_kept

        set_kept(self.folder / "set", {int(item.data(Qt.ItemDataRole.UserRole)):
                                       item.checkState() == Qt.CheckState.Checked})

    def train(self) -> None:
        """Fine-tune I2T on the set (a stopped run in the same folder resumes)."""
        from engine.portrait.ff3d_style import StyleTrainConfig

        if self.folder is None or not (self.folder / "set" / "set.json").is_file():
            self.status.setText("Build a set first.")
            return
        if self.busy:
            return
        self.loss_plot.clear()
        self.status.setText("")
        cfg = StyleTrainConfig(set=str(self.folder / "set"), out=str(self.folder / "style"),
                               minutes=float(self.minutes_spin.value()))
        self._start(lambda cancel: self.engine.train(cfg, cancel), self._trained,
                    preview=lambda event: self.orbit.set_image(np.ascontiguousarray(event.image)),
                    metrics=self._metrics)

    def _metrics(self, event) -> None:
        if "loss_total" in event.values:
            self.loss_plot.add(float(event.values["loss_total"]))

    def _trained(self, ok: bool) -> None:
        self._set_busy(False)
        resumable = self.folder is not None and (self.folder / "style" / "training_state.pt").is_file()
        if ok:
            self.status.setText(f"Learned: {self.folder.name}")
            self.refresh_library(select=self.folder.name)
            self.apply()
        elif resumable:
            self.train_button.setText("Resume")
            self.status.setText("Training stopped; Resume continues where it stopped.")

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    # ---------------------------------------------------------------- using styles
    def styles(self) -> list[Path]:
        """The library's learned styles."""
        if not self.library.is_dir():
            return []
        return sorted(p for p in self.library.iterdir() if (p / "style" / "i2t.safetensors").is_file())

    def refresh_library(self, select: str | None = None) -> None:
        """List the library's styles with their thumbnails."""
        for widget in (self.library_list, self.mix_combo):
            widget.blockSignals(True)
        self.library_list.clear()
        self.mix_combo.clear()
        self.mix_combo.addItem("(none)", None)
        for folder in self.styles():
            item = QListWidgetItem(QIcon(str(folder / "style" / "thumbnail.png")), folder.name)
            item.setData(Qt.ItemDataRole.UserRole, str(folder / "style"))
            self.library_list.addItem(item)
            self.mix_combo.addItem(folder.name, str(folder / "style"))
            if folder.name == select:
                self.library_list.setCurrentItem(item)
        for widget in (self.library_list, self.mix_combo):
            widget.blockSignals(False)
        self.train_button.setText("Train")

    def _seed_changed(self) -> None:
        self.photo = None  # a seed means a sampled head again
        self.apply()

    def choose_photo(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Portrait photo", str(Path.home()),
                                              "Images (*.png *.jpg *.jpeg);;All files (*)")
        if path:
            self.photo = path
            self.apply()

    def request(self, out: str = "") -> Any:
        """The StyleRequest the page shows (None without a chosen style)."""
        from engine.portrait.ff3d_style import StyleRequest

        item = self.library_list.currentItem()
        if item is None:
            return None
        return StyleRequest(style=item.data(Qt.ItemDataRole.UserRole), out=out,
                            seed=None if self.photo else self.seed_spin.value(), image=self.photo,
                            mix=self.mix_combo.currentData(), alpha=self.alpha_slider.value() / 100, size=PREVIEW_SIZE)

    def apply(self) -> None:
        """Render the chosen style (mixed as the slider says) on the head or photo: on one worker thread, newest
        request first, so a slider dragged fast never shows an older frame after a newer one."""
        request = self.request()
        if request is not None:
            self._applier.submit("apply", (request, float(self.yaw_slider.value())))

    def _render(self, kind: str, item: tuple) -> None:
        """The worker's side of ``apply``."""
        request, yaw = item
        for event in self.engine.apply(request, yaw, CancelToken()):
            if isinstance(event, Preview) and not self._applier.stopped:
                self.rendered.emit(np.ascontiguousarray(event.image))

    def _render_failed(self, kind: str, exc: Exception) -> None:
        if not self._applier.stopped:
            self.render_failed.emit(str(exc))

    def export_dialog(self, kind: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to", str(Path.home()))
        if folder:
            self.export(kind, folder)

    def export(self, kind: str, folder: str) -> JobRunner | None:
        """Write views (always), an orbit video or a mesh of the shown style into ``folder``."""
        request = self.request(folder)
        if request is None:
            self.status.setText("Choose a style in the library first.")
            return None
        request.video, request.mesh = kind == "video", kind == "mesh"
        request.size = None
        written: list[str] = []
        runner = self._start(lambda cancel: self.engine.export(request, cancel),
                             lambda ok: (self._set_busy(False),
                                         self.status.setText(f"Wrote {len(written)} files to {folder}" if ok else "")))
        runner.artifact.connect(lambda artifact: written.append(str(artifact.path)))
        return runner

    def stop(self) -> None:
        """Cancel and wait for running jobs (closing the window)."""
        self._applier.stop()
        if self.runner is not None:
            self.runner.cancel()
            self.runner.wait(5000)


def styles_panel(workspace: "PortraitWorkspace") -> QWidget:
    """The Styles page of the Portrait workspace; its head follows the workspace's seed."""
    page = StylesPage()
    page.seed_spin.setValue(workspace.seed_spin.value())
    workspace.seed_spin.valueChanged.connect(page.seed_spin.setValue)
    return page


__all__ = ["LossPlot", "StylesEngine", "StylesPage", "slug", "styles_panel"]
