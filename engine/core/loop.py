"""The one budgeted loop every training shares (a field, an edit, the portrait prior, and the trainings
that come next): a step or time budget, the learning rate following the budget, progress with an ETA,
metrics every few steps, atomic checkpoints every so many seconds, resume and cancel.

A job drives it like this (diffusers' numbered steps, with the events a job yields)::

    loop = BudgetedLoop(budget, cancel, "training", save=save_checkpoint, optimizer=optimizer,
                        learning_rate=lambda fraction: ..., step=resumed_step, seconds=resumed_seconds)
    for step in loop:                 # sets the learning rate and starts the step's clock
        ...one optimisation step...
        loop.done(loss=float(loss))   # stops the clock; the values are averaged into the next Metrics
        yield from loop.events()      # Progress, Metrics every ``metrics_every`` steps, a due checkpoint
    yield from loop.finish()          # the last checkpoint; a cancelled run says how to resume

Only the steps' own time counts against a time budget: the time a consumer (the window, a terminal) takes
over the events between steps does not.  A run whose last iterate is noisy saves a ``WeightAverage`` of its
weights instead.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from engine.core.errors import UserInputError
from engine.core.jobs import Artifact, CancelToken, Event, JobWarning, Metrics, Progress


@dataclass
class Budget:
    """How long a run goes: a number of steps when one is given, else a time budget."""

    steps: int | None = None
    """optimisation steps (a fixed amount of work: the same result on a slower machine)"""
    minutes: float | None = None
    """time budget, counting the steps' own time only (used when no step count is given)"""

    def validate(self, what: str) -> None:
        """The budget in use is given and positive; raises UserInputError naming what runs."""
        if self.steps is not None:
            if self.steps < 1:
                raise UserInputError(f"--steps must be at least 1 (got {self.steps})")
        elif self.minutes is None:
            raise UserInputError(f"give a {what} budget: --steps S or --minutes M")
        elif not self.minutes > 0:
            raise UserInputError(f"--minutes must be positive (got {self.minutes})")

    def fraction(self, step: int, seconds: float) -> float:
        """How much of the budget is spent (0 → 1, more once over): drives learning rates and progress."""
        if self.steps is not None:
            return step / max(self.steps, 1)
        return seconds / (60 * self.minutes)


def exponential_decay(start: float, end: float) -> Callable[[float], float]:
    """A learning rate falling exponentially from ``start`` to ``end`` over the budget (nerfacto's schedule)."""
    return lambda fraction: start * (end / start) ** min(fraction, 1.0)


class WeightAverage:
    """An exponential moving average of a network's weights (StyleGAN's G_ema): what is saved and shown, because
    the last iterate of a small-batch run follows its last few steps' samples.  The half-life, in steps, grows
    with the run (``rampup`` × the steps taken) up to ``half_life`` (StyleGAN2-ADA's ema_rampup)."""

    def __init__(self, network: torch.nn.Module, half_life: float, rampup: float | None = 0.1) -> None:
        if half_life < 0:
            raise UserInputError(f"the weights' moving average needs a half-life of 0 steps or more, got {half_life}")
        self.network = copy.deepcopy(network).requires_grad_(False).eval()
        self.half_life, self.rampup = half_life, rampup

    @torch.no_grad()
    def update(self, network: torch.nn.Module, step: int) -> None:
        """Move the average towards ``network`` after step ``step`` (1-based)."""
        half_life = self.half_life if self.rampup is None else min(self.half_life, self.rampup * step)
        keep = 0.5 ** (1 / half_life) if half_life > 0 else 0.0
        for mine, theirs in zip(self.network.parameters(), network.parameters()):
            mine.lerp_(theirs, 1 - keep)
        for mine, theirs in zip(self.network.buffers(), network.buffers()):
            mine.copy_(theirs)


class BudgetedLoop:
    """Steps until the budget is spent or the run is cancelled; see the module docstring."""

    def __init__(self, budget: Budget, cancel: CancelToken, what: str, *, save: Callable[[], Path],
                 message: str | None = None,
                 optimizer=None, learning_rate: Callable[[float], float] | None = None,
                 checkpoint_every_s: float = 60.0, metrics_every: int = 25, step: int = 0, seconds: float = 0.0,
                 extra_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None) -> None:
        self.budget = budget
        self.cancel = cancel
        self.what = what
        """what runs, as a warning names it ("training", "edit")"""
        self.message = message or what
        """what the progress line says the run is doing"""
        self.save = save
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.checkpoint_every_s = checkpoint_every_s
        self.metrics_every = metrics_every
        self.extra_metrics = extra_metrics
        """figures added to every Metrics event, from the step values' means (PSNR from the mean loss, rays/s, ...)"""
        self.step = step
        """steps done, over every run of this job (a resumed run continues the count)"""
        self.seconds = seconds
        """the steps' own time, over every run"""
        self.lr: float | None = None
        self._started_step = step
        self._started_seconds = seconds
        self._clock: float | None = None
        self._recent: dict[str, list[float]] = {}
        self._last_checkpoint = time.monotonic()

    @property
    def fraction(self) -> float:
        return self.budget.fraction(self.step, self.seconds)

    @property
    def complete(self) -> bool:
        """Whether the budget is spent (not cancelled): a checkpoint written now is the run's result."""
        return self.fraction >= 1 and not self.cancel.cancelled

    def __iter__(self) -> Iterator[int]:
        while self.fraction < 1 and not self.cancel.cancelled:
            if self.learning_rate is not None:
                self.lr = self.learning_rate(self.fraction)
                for group in self.optimizer.param_groups:  # a group's "lr_scale" keeps it at a fraction of the rate
                    group["lr"] = self.lr * group.get("lr_scale", 1.0)
            self._clock = time.perf_counter()
            yield self.step
            if self._clock is not None:
                raise RuntimeError("a BudgetedLoop step ended without loop.done()")

    def done(self, **values: float) -> None:
        """End the current step: stop its clock and keep ``values`` for the next Metrics event."""
        self.seconds += time.perf_counter() - self._clock
        self._clock = None
        self.step += 1
        for key, value in values.items():
            self._recent.setdefault(key, []).append(float(value))

    def eta_seconds(self) -> float | None:
        """Seconds left at this run's pace, None before a step has been measured."""
        if self.budget.steps is None:
            return max(60 * self.budget.minutes - self.seconds, 0.0)
        steps, seconds = self.step - self._started_step, self.seconds - self._started_seconds
        return max(self.budget.steps - self.step, 0) * seconds / steps if steps > 0 else None

    def events(self) -> Iterator[Event]:
        """The events due after a step: progress, metrics every ``metrics_every`` steps, a checkpoint when due."""
        if self.step % self.metrics_every == 0 and self._recent:
            values = {key: math.fsum(v) / len(v) for key, v in self._recent.items()}
            self._recent.clear()
            if self.lr is not None:
                values["lr"] = self.lr
            if self.extra_metrics is not None:
                values.update(self.extra_metrics(values))
            yield Metrics(self.step, values)
        yield Progress(self.step, self.budget.steps, self.message, fraction=min(self.fraction, 1.0),
                       eta_seconds=self.eta_seconds())
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_every_s:
            self._last_checkpoint = time.monotonic()
            yield Artifact(self.save(), "checkpoint")

    def finish(self, resume_hint: str = "run the same command again to resume") -> Iterator[Event]:
        """The last checkpoint; when the run was cancelled, a warning saying where it stopped."""
        yield Artifact(self.save(), "checkpoint")
        if self.cancel.cancelled:
            yield JobWarning(f"{self.what} cancelled at step {self.step}; {resume_hint}")
