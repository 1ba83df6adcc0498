"""Engine jobs on a worker thread, delivered to the UI thread as Qt signals.

The engine's jobs are generators of small events (engine/core/jobs.py).  ``JobRunner`` pulls them
on a QThread, so nothing the engine does blocks the UI, and re-emits each event as a signal
that Qt queues onto the UI thread.  The job runs at normal priority: a lower one (nice 10, as
before) let any other busy program take the cores from it (28 % of its speed alone beside a
two-thread neighbour, 41 % at normal priority, `python -m benchmarks.contention --only window`),
while the UI thread, which mostly sleeps, kept within its stall target either way.  Previews are throttled: at most one per interval reaches
the UI, a newer one replacing a held one, and the newest is always delivered.  Pausing stops pulling events
(the job sits between steps); cancelling sets the job's CancelToken and the job ends itself
cleanly (saving a checkpoint) — also when it is paused.  Any exception ends the job with an
``failed`` signal carrying a plain sentence and the details.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Callable

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from engine.core.errors import UserInputError
from engine.core.jobs import Artifact, CancelToken, Job, JobWarning, Metrics, Preview, Progress


class _Pump(QThread):
    """Pulls events from the job generator until it ends, is cancelled, or fails."""

    event = Signal(object)
    failed = Signal(str, str)

    def __init__(self, job: Job, runner: "JobRunner") -> None:
        super().__init__()
        self._job = job
        self._runner = runner

    def run(self) -> None:  # noqa: D102 - QThread entry point
        try:
            for event in self._job:
                self._runner._wait_while_paused()
                self.event.emit(event)
        except UserInputError as exc:
            self.failed.emit(str(exc), "")
        except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message
            self.failed.emit(f"The job stopped with an error: {exc}", traceback.format_exc())


class JobRunner(QObject):
    """Runs one engine job off the UI thread; connect to the signals before ``start``."""

    progress = Signal(object)  # engine.core.jobs.Progress
    metrics = Signal(object)  # engine.core.jobs.Metrics
    preview = Signal(object)  # engine.core.jobs.Preview (the newest, throttled)
    artifact = Signal(object)  # engine.core.jobs.Artifact
    warning = Signal(str)
    failed = Signal(str, str)  # message, details
    finished = Signal(bool)  # True when it ran to its end, False when cancelled or failed

    def __init__(self, make_job: Callable[[CancelToken], Job], min_preview_interval: float = 0.1,
                 parent: QObject | None = None) -> None:
        """``make_job(cancel)`` builds the generator; previews are shown at most every ``min_preview_interval`` s."""
        super().__init__(parent)
        self.cancel_token = CancelToken()
        self._make_job = make_job
        self._min_preview_interval = min_preview_interval
        self._last_preview = 0.0
        self._held_preview: Preview | None = None
        self._resume = threading.Event()
        self._resume.set()
        self._failed = False
        self._pump: _Pump | None = None

    def start(self) -> None:
        """Build the job and start pulling its events on a worker thread."""
        self._pump = _Pump(self._make_job(self.cancel_token), self)
        self._pump.event.connect(self._dispatch)
        self._pump.failed.connect(self._on_failed)
        self._pump.finished.connect(self._on_thread_finished)
        self._pump.start()

    @property
    def running(self) -> bool:
        return self._pump is not None and self._pump.isRunning()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def pause(self) -> None:
        """Stop between steps until ``resume`` (the job keeps its state)."""
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def cancel(self) -> None:
        """Ask the job to stop at its next step; it saves what it must and ends."""
        self.cancel_token.cancel()
        self._resume.set()

    def wait(self, ms: int = -1) -> bool:
        """Block until the worker thread ends (closing the window); True when it did."""
        return self._pump is None or (self._pump.wait() if ms < 0 else self._pump.wait(ms))

    def _wait_while_paused(self) -> None:
        while not self._resume.wait(0.05):
            if self.cancel_token.cancelled:
                return

    def _dispatch(self, event: object) -> None:
        if isinstance(event, Preview):
            wait = self._last_preview + self._min_preview_interval - time.monotonic()
            if wait > 0:
                if self._held_preview is None:
                    QTimer.singleShot(int(wait * 1000) + 1, self._flush_preview)
                self._held_preview = event
                return
            self._held_preview = None  # older than this one: never show it after
            self._emit_preview(event)
        elif isinstance(event, Progress):
            self.progress.emit(event)
        elif isinstance(event, Metrics):
            self.metrics.emit(event)
        elif isinstance(event, Artifact):
            self.artifact.emit(event)
        elif isinstance(event, JobWarning):
            self.warning.emit(event.message)

    def _emit_preview(self, event: Preview) -> None:
        self._last_preview = time.monotonic()
        self.preview.emit(event)

    def _flush_preview(self) -> None:
        if self._held_preview is not None:
            event, self._held_preview = self._held_preview, None
            self._emit_preview(event)

    def _on_failed(self, message: str, details: str) -> None:
        self._failed = True
        self.failed.emit(message, details)

    def _on_thread_finished(self) -> None:
        self._flush_preview()
        self.finished.emit(not self._failed and not self.cancel_token.cancelled)
