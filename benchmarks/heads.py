"""Synthetic heads: rendering throughput of the procedural ground truth.

    python -m benchmarks.heads [--batch 16] [--repeats 7] [--threads N] [--out benchmarks/results]

Renders batches of ``--batch`` different heads (seeds drawn fresh for every batch) through
FFHQ-like cameras (yaw uniform in +-30 degrees, pitch in +-15) at 64x64 (the size the embedded
prior trains at) and 128x128, and reports images per second: the median over ``--repeats``
batches after one warm-up batch, with the slowest and fastest batch beside it.  Everything a
render returns is included (colour, depth, mask, both label maps).  Results go to OUT/heads.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import write_results
from engine.core.machine import machine_info
from engine.portrait.cameras import camera_labels
from engine.portrait.heads import PARAM_COUNT, HeadParams, render_heads

REPO = Path(__file__).resolve().parents[1]
RESOLUTIONS = (64, 128)


def measure(resolution: int, batch: int, repeats: int) -> dict:
    """Images per second rendering ``batch`` heads at ``resolution``: median, min and max over ``repeats`` batches."""
    rng = np.random.default_rng(resolution)
    rates, foreground = [], []
    for repeat in range(repeats + 1):
        heads = [HeadParams.from_seed(repeat * batch + i) for i in range(batch)]
        cameras = camera_labels(rng.uniform(-30, 30, batch), rng.uniform(-15, 15, batch))
        start = time.perf_counter()
        render = render_heads(heads, cameras, resolution)
        rates.append(batch / (time.perf_counter() - start))
        foreground.append(float(render.mask.mean()))
    rates = rates[1:]  # the warm-up batch pays for first-call allocations
    return {"resolution": resolution, "batch": batch, "repeats": repeats,
            "images_per_second_median": statistics.median(rates), "images_per_second_min": min(rates),
            "images_per_second_max": max(rates), "foreground_fraction_mean": statistics.mean(foreground)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (1 gives steadier figures on a busy machine)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {
        "machine": machine_info(),
        "head_parameters": PARAM_COUNT,
        "renders": [measure(r, args.batch, args.repeats) for r in RESOLUTIONS],
        "command": "python -m benchmarks.heads"}
    for row in results["renders"]:
        print(f"{row['resolution']}x{row['resolution']}, batches of {row['batch']}: "
              f"{row['images_per_second_median']:.1f} images/s median "
              f"(slowest batch {row['images_per_second_min']:.1f}, fastest {row['images_per_second_max']:.1f}); "
              f"foreground {100 * row['foreground_fraction_mean']:.0f}% of pixels", flush=True)
    write_results(args.out, "heads", results)


if __name__ == "__main__":
    main()
