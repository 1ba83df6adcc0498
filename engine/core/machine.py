"""What machine a benchmark ran on: figures move between CPUs of the same kind, so every JSON says."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The processor's marketing name (``model name`` in /proc/cpuinfo, as lscpu shows it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU model, cores, torch threads, OS and torch version, for a benchmark's JSON."""
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "torch": torch.__version__}


def write_report(path: str | Path | None, figures: dict) -> None:
    """Write a benchmark's figures with the machine they ran on as JSON at ``path`` (nothing when None)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**figures, "machine": machine_info()}, indent=2) + "\n")
