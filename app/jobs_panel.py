"""The jobs panel: a row per job the window runs (several may run at once: a training beside an export, a
portrait video beside a scene training), each with progress and ETA, pause / resume / cancel, and live loss and
PSNR plots of what a ``JobRunner`` (app/worker.py) reports.  The newest job is on top; the last few finished
ones stay below it with how they ended.

pyqtgraph is imported when a job first reports metrics, not at window start-up: it costs about 0.15-0.2 s on
top of Qt and numpy, and no plot is needed before a job trains something.
"""

from __future__ import annotations

import math
import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QVBoxLayout,
                               QWidget)

from app.core.formatting import format_duration, log_ticks
from app.worker import JobRunner
from engine.core.jobs import Metrics, Progress

ETA_MIN_FRACTION = 0.02  # below this an ETA is mostly noise
_BAR_RESOLUTION = 1000
_PLOT_REFRESH_MS = 2000  # redraw plots at most every 2 s however fast metrics come (a redraw costs tens of ms)
LOSS_COLOUR = "#d9711a"
PSNR_COLOUR = "#1f77b4"
_STATUS_CHARS = 90  # longer warnings are cut in the panel so the plots keep their room
_PROGRESS_REFRESH_S = 0.5  # progress text at most twice a second: each change repaints part of the window
_LOSS_KEYS = ("loss", "l1", "mse")  # the training loss under the first name the job reports


MAX_FINISHED_ROWS = 3
"""finished jobs kept in the panel below the running ones"""


class JobRow(QFrame):
    """One job: follows ``runner`` from construction (before ``runner.start()``) until it ends.

    Loss points take ``values["loss"]``, else ``values["l1"]``, else ``values["mse"]`` (trainer
    and IDU report "loss"; a job without it still gets a curve); PSNR points take
    ``values["psnr_train"]``.  Both are kept as ``(step, value)`` lists in ``loss_points`` and
    ``psnr_points``.  Elapsed time and ETA leave out time spent paused.
    """

    ended = Signal()  # the job ended and the row shows how

    def __init__(self, runner: JobRunner, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.loss_points: list[tuple[int, float]] = []
        self.psnr_points: list[tuple[int, float]] = []
        self._runner: JobRunner | None = None
        self._connections: list[tuple[object, object]] = []
        self._started = 0.0
        self._paused_since: float | None = None
        self._paused_total = 0.0
        self._failure: str | None = None
        self._plots_dirty = False

        self.title_label = QLabel(title)
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, _BAR_RESOLUTION)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("")
        self.eta_label = QLabel("ETA —")
        self.elapsed_label = QLabel("")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self._on_pause_toggled)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._on_cancel)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self._clock = QTimer(self)  # shows the newest progress and ticks the elapsed time (also for slow steps)
        self._clock.setInterval(int(_PROGRESS_REFRESH_S * 1000))
        self._clock.timeout.connect(self._draw_progress)
        self._pending_progress: Progress | None = None
        self._last_progress_draw = 0.0
        self._plot_timer = QTimer(self)
        self._plot_timer.setSingleShot(True)
        self._plot_timer.setInterval(_PLOT_REFRESH_MS)
        self._plot_timer.timeout.connect(self._redraw_plots)

        self.loss_plot = None  # pyqtgraph PlotWidgets, built by the first attach
        self.psnr_plot = None
        self._loss_curve = None
        self._psnr_curve = None

        times = QHBoxLayout()
        times.addWidget(self.eta_label)
        times.addStretch(1)
        times.addWidget(self.elapsed_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        self._plots_row = QHBoxLayout()
        layout = QVBoxLayout(self)
        layout.addWidget(self.title_label)
        layout.addWidget(self.progress_bar)
        layout.addLayout(times)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addLayout(self._plots_row, 1)
        self._follow(runner)

    def _follow(self, runner: JobRunner) -> None:
        self._runner = runner
        self._started = time.monotonic()
        self.progress_bar.setFormat("starting")
        self.elapsed_label.setText("elapsed 0 s")
        self.status_label.setText("running")
        for signal, slot in ((runner.progress, self._on_progress), (runner.metrics, self._on_metrics),
                             (runner.warning, self._on_warning), (runner.failed, self._on_failed),
                             (runner.finished, self._on_finished)):
            signal.connect(slot)
            self._connections.append((signal, slot))
        self._clock.start()

    def detach(self) -> None:
        """Stop following the job: buttons off, the last progress, plots and status stay on screen."""
        for signal, slot in self._connections:
            signal.disconnect(slot)
        self._connections.clear()
        self._runner = None
        self._clock.stop()
        self._draw_progress()
        self._set_buttons_enabled(False)
        if self._plots_dirty:
            self._redraw_plots()

    @property
    def runner(self) -> JobRunner | None:
        """The runner being followed, None once its job ended."""
        return self._runner

    @property
    def running(self) -> bool:
        return self._runner is not None

    def _active_seconds(self) -> float:
        paused = self._paused_total + (time.monotonic() - self._paused_since if self._paused_since else 0.0)
        return time.monotonic() - self._started - paused

    def _update_elapsed(self) -> None:
        self.elapsed_label.setText(f"elapsed {format_duration(self._active_seconds())}")

    def _on_progress(self, event: Progress) -> None:
        self._pending_progress = event
        if time.monotonic() - self._last_progress_draw >= _PROGRESS_REFRESH_S:
            self._draw_progress()

    def _draw_progress(self) -> None:
        """Show the newest progress event (events come every step; the UI thread sees a few a second)."""
        event, self._pending_progress = self._pending_progress, None
        self._last_progress_draw = time.monotonic()
        if event is None:
            self._update_elapsed()
            return
        fraction = event.fraction
        if fraction is None and event.total:
            fraction = event.step / event.total
        text = f"step {event.step} / {event.total}" if event.total is not None else f"step {event.step}"
        if event.message:
            text += f" – {event.message}"
        if fraction is None:
            self.progress_bar.setRange(0, 0)  # open-ended with no time budget: a busy bar
        else:
            self.progress_bar.setRange(0, _BAR_RESOLUTION)
            self.progress_bar.setValue(round(_BAR_RESOLUTION * min(max(fraction, 0.0), 1.0)))
        self.progress_bar.setFormat(text)
        elapsed = self._active_seconds()
        if event.eta_seconds is not None:  # the job's own estimate (its steps' pace, a resumed run's budget)
            self.eta_label.setText(f"ETA {format_duration(event.eta_seconds)}")
        elif fraction is not None and fraction > ETA_MIN_FRACTION:
            self.eta_label.setText(f"ETA {format_duration(elapsed * (1 - min(fraction, 1.0)) / fraction)}")
        else:
            self.eta_label.setText("ETA —")
        self._update_elapsed()

    def _on_metrics(self, event: Metrics) -> None:
        loss = next((event.values[k] for k in _LOSS_KEYS if k in event.values), None)
        if loss is not None and math.isfinite(loss):
            self.loss_points.append((event.step, float(loss)))
        psnr = event.values.get("psnr_train")
        if psnr is not None and math.isfinite(psnr):
            self.psnr_points.append((event.step, float(psnr)))
        self._plots_dirty = True
        self._ensure_plots()
        if not self._plot_timer.isActive():
            self._plot_timer.start()

    def _on_warning(self, message: str) -> None:
        short = message if len(message) <= _STATUS_CHARS else message[:_STATUS_CHARS - 1] + "…"
        self.status_label.setText(f"warning: {short}")  # the whole message: tooltip and log dock
        self.status_label.setToolTip(message)

    def _on_failed(self, message: str, _details: str) -> None:
        self._failure = message

    def _on_finished(self, ok: bool) -> None:
        if ok:
            self.status_label.setText("finished")
            self._pending_progress = None  # e.g. the last evaluation step: no longer what the bar says
            self.progress_bar.setFormat("done")
            self.progress_bar.setRange(0, _BAR_RESOLUTION)
            self.progress_bar.setValue(_BAR_RESOLUTION)
            self.eta_label.setText("ETA —")
        elif self._failure is not None:
            self.status_label.setText(f"failed: {self._failure}")
        else:
            self.status_label.setText("cancelled")
        self._update_elapsed()
        self.detach()
        self.ended.emit()

    def _on_pause_toggled(self, paused: bool) -> None:
        if self._runner is None:
            return
        if paused:
            self._runner.pause()
            self._paused_since = time.monotonic()
            self.pause_button.setText("Resume")
            self.status_label.setText("paused (between steps)")
        else:
            self._runner.resume()
            if self._paused_since is not None:
                self._paused_total += time.monotonic() - self._paused_since
                self._paused_since = None
            self.pause_button.setText("Pause")
            self.status_label.setText("running")

    def _on_cancel(self) -> None:
        if self._runner is None:
            return
        self._runner.cancel()
        self.cancel_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self.status_label.setText("cancelling: the job saves its work and stops…")

    def _set_buttons_enabled(self, enabled: bool) -> None:
        self.pause_button.setEnabled(enabled)
        self.cancel_button.setEnabled(enabled)

    def _ensure_plots(self) -> None:
        if self.loss_plot is not None:
            return
        import pyqtgraph  # deferred: see the module docstring

        palette = self.palette()
        text = palette.color(QPalette.ColorRole.WindowText)
        tick_font = self.font()
        tick_font.setPointSizeF(max(tick_font.pointSizeF() - 1.5, 6.0))
        self.loss_plot = pyqtgraph.PlotWidget(background=palette.color(QPalette.ColorRole.Base))
        self.loss_plot.setLogMode(x=False, y=True)
        self.psnr_plot = pyqtgraph.PlotWidget(background=palette.color(QPalette.ColorRole.Base))
        for plot, title, tip in ((self.loss_plot, "loss", "Training loss per step (log scale)"),
                                 (self.psnr_plot, "PSNR (dB)", "PSNR of the training rays of each step, in dB")):
            plot.setTitle(title, color=text.name(), size=f"{tick_font.pointSizeF() + 1:.0f}pt")
            plot.setToolTip(tip)
            plot.setLabel("bottom", "step", color=text.name())
            for side in ("left", "bottom"):
                axis = plot.getAxis(side)
                axis.setTextPen(text)
                axis.setPen(text)
                axis.setStyle(tickFont=tick_font, tickTextOffset=3)
            plot.getAxis("left").setWidth(42)
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setMinimumHeight(120)
            plot.setClipToView(True)  # long runs: draw only what is visible, decimated
            plot.setDownsampling(auto=True, mode="peak")
            self._plots_row.addWidget(plot)
        self._loss_curve = self.loss_plot.plot(pen=pyqtgraph.mkPen(LOSS_COLOUR, width=1.5))
        self._psnr_curve = self.psnr_plot.plot(pen=pyqtgraph.mkPen(PSNR_COLOUR, width=1.5))

    def _redraw_plots(self) -> None:
        self._plots_dirty = False
        for curve, points in ((self._loss_curve, self.loss_points), (self._psnr_curve, self.psnr_points)):
            if curve is None:
                continue
            if points:
                steps, values = zip(*points)
                curve.setData(list(steps), list(values))
                if curve is self._loss_curve:
                    self.loss_plot.getAxis("left").setTicks(log_ticks(min(values), max(values)))
            else:
                curve.clear()


class JobsPanel(QScrollArea):
    """A row per job: running ones on top (newest first), then the last MAX_FINISHED_ROWS finished ones."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.rows: list[JobRow] = []
        """newest first"""
        self.idle_label = QLabel("No job running")
        holder = QWidget()
        self._column = QVBoxLayout(holder)
        self._column.addWidget(self.idle_label)
        self._column.addStretch(1)
        self.setWidget(holder)

    def attach(self, runner: JobRunner, title: str) -> JobRow:
        """A new row following ``runner`` (call before ``runner.start()``)."""
        row = JobRow(runner, title)
        row.ended.connect(self._trim)
        self.rows.insert(0, row)
        self._column.insertWidget(0, row)
        self.idle_label.hide()
        self._trim()
        return row

    def row_of(self, runner: JobRunner) -> JobRow | None:
        return next((row for row in self.rows if row.runner is runner), None)

    def _trim(self) -> None:
        finished = [row for row in self.rows if not row.running]
        for row in finished[MAX_FINISHED_ROWS:]:
            self.rows.remove(row)
            row.deleteLater()
        self.idle_label.setVisible(not self.rows)
