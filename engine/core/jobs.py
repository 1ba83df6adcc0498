"""The one job protocol the GUI and the CLI both drive.

A job is a generator that yields small immutable events and checks a ``CancelToken``
between steps.  The CLI runs it with ``run_in_terminal`` (a progress bar with ETA); the GUI
wraps the same generator in a worker thread.  Arrays inside events are copies the job will
never touch again, so a consumer may keep them.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, TextIO, Union

import numpy as np


@dataclass(frozen=True)
class Progress:
    """``step`` of ``total`` done (total None when open-ended); ``fraction`` overrides step/total for time budgets;
    ``eta_seconds``: the job's own estimate of the time left (None: the consumer estimates from elapsed time)."""

    step: int
    total: int | None
    message: str = ""
    fraction: float | None = None
    eta_seconds: float | None = None


@dataclass(frozen=True)
class Metrics:
    """Named numbers measured at ``step`` (loss, PSNR, rays/s, ...)."""

    step: int
    values: dict[str, float]


@dataclass(frozen=True)
class Preview:
    """A render to show now: HxWx3 uint8 and the camera (4x4 camera-to-world + intrinsics) it was taken from."""

    step: int
    image: np.ndarray
    camera: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    """A file the job wrote (checkpoint, render, video, report)."""

    path: Path
    kind: str


@dataclass(frozen=True)
class JobWarning:
    """Something the user should know that does not stop the job."""

    message: str


Event = Union[Progress, Metrics, Preview, Artifact, JobWarning]
Job = Generator[Event, None, None]


class Cancelled(Exception):
    """Raised inside a long single step (a diffusion edit) when its CancelToken is set; the job
    that called it stops cleanly."""


class CancelToken:
    """Set from any thread; jobs check it between steps and stop cleanly (saving what they must)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise ``Cancelled`` when cancellation was asked for (between sub-steps of one step)."""
        if self._event.is_set():
            raise Cancelled("cancelled")


def _format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class TerminalProgress:
    """Renders job events on a terminal: one progress line with ETA, warnings and artifacts above it."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30, min_interval: float = 0.2) -> None:
        self.stream = stream
        self.width = width
        self.min_interval = min_interval
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._last_metrics: dict[str, float] = {}
        self._line_open = False

    def _print_line(self, text: str) -> None:
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Metrics):
            self._last_metrics = dict(event.values)
        elif isinstance(event, JobWarning):
            self._print_line(f"warning: {event.message}")
        elif isinstance(event, Artifact):
            self._print_line(f"wrote {event.kind}: {event.path}")
        elif isinstance(event, Progress):
            self._draw(event)

    def _draw(self, event: Progress) -> None:
        now = time.monotonic()
        frac = event.fraction
        if frac is None and event.total:
            frac = event.step / event.total
        done = frac is not None and frac >= 1
        if now - self._last_draw < self.min_interval and not done:
            return
        self._last_draw = now
        elapsed = now - self.start
        if frac is not None and frac > 0:
            filled = int(self.width * min(frac, 1))
            bar = "#" * filled + "-" * (self.width - filled)
            eta = _format_seconds(event.eta_seconds if event.eta_seconds is not None else elapsed * (1 - frac) / frac)
            head = f"[{bar}] {100 * min(frac, 1):5.1f}% ETA {eta}"
        else:
            head = f"[{'?' * self.width}]"
        metrics = " ".join(f"{k}={v:.4g}" for k, v in list(self._last_metrics.items())[:4])
        text = f"\r{head} step {event.step} {event.message} {metrics}"
        if self.stream.isatty():
            self.stream.write(text[: 160].ljust(100))
            self._line_open = True
        elif done or now - self.start > 0:  # plain logs: one line per draw interval
            self.stream.write(text.lstrip("\r") + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False


def run_job(job: Job, on_event: Callable[[Event], None]) -> list[Artifact]:
    """Drive ``job`` to the end, passing every event to ``on_event``; returns the artifacts written."""
    artifacts = []
    for event in job:
        if isinstance(event, Artifact):
            artifacts.append(event)
        on_event(event)
    return artifacts


def run_and_list(job: Job) -> int:
    """Run a job in the terminal and list the files it wrote on stdout (each once: a training's checkpoint is
    written again and again); 1 when it wrote none (cancelled)."""
    artifacts = run_in_terminal(job)
    for artifact in {a.path: a for a in artifacts}.values():
        print(f"wrote {artifact.kind}: {artifact.path}")
    return 0 if artifacts else 1


def run_in_terminal(job: Job, stream: TextIO = sys.stderr, min_interval: float = 2.0) -> list[Artifact]:
    """Run a job for the CLI with a progress bar; Ctrl-C cancels through the job's own token."""
    progress = TerminalProgress(stream, min_interval=min_interval if not stream.isatty() else 0.2)
    try:
        return run_job(job, progress)
    finally:
        progress.close()
