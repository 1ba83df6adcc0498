"""Numbers the way the panels show them: durations people say, log-axis ticks that do not collide."""

from __future__ import annotations

import math


def log_ticks(low: float, high: float) -> list[list[tuple[float, str]]]:
    """Labelled ticks for a log-scale axis over [low, high] (positive), in log10 units as pyqtgraph
    places them: decades, plus 2x and 5x marks when the range spans less than two decades
    (pyqtgraph's own log ticks label every minor mark and the labels run into each other)."""
    low, high = max(low, 1e-30), max(high, low)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    factors = (1, 2, 5) if math.log10(high / low) < 2 else (1,)
    marks = [(math.log10(f) + d, f"{f * 10.0 ** d:.3g}") for d in range(first, last + 1) for f in factors]
    return [marks, []]


def format_duration(seconds: float) -> str:
    """A duration the way people say it: "45 s", "1 min 20 s", "2 h 05 min"."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
