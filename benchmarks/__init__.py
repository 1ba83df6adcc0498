"""Benchmarks: commands that print figures and write JSON (never timed unit tests)."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out_dir: str | Path, name: str, results: dict) -> Path:
    """Write ``results`` as OUT_DIR/NAME.json (the folder made if needed), say where, return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
    return path
