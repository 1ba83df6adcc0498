"""InstructPix2Pix editor overhead: the time of one edit spent outside the UNet vs inside it.

    python -m benchmarks.ip2p_overhead [--repeats 7] [--steps 20] [--threads N] [--out benchmarks/results]

Runs ``InstructPix2PixEditor.edit`` on the tiny random pipeline of tests/tiny_ip2p.py (no
weights are needed).  Its VAE downsamples 8x like Stable Diffusion's, so the latents, the
resizing and the scheduling are those of a real edit; only the models are tiny, which makes
this an upper bound on the share of the editor's own work: a real UNet is thousands of times
slower while the bookkeeping stays the same.  Two inputs: 512x512 (the working size, no
resize) and 1024x768 (edited at 512x384, then resized back).  The UNet, the VAE encoder and
the VAE decoder are wrapped with timers; figures are medians over repeats after a warm-up
edit (which also fills the text-embedding cache, as the second edit of an IDU run finds it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tiny_ip2p import write_tiny_ip2p  # noqa: E402  (tests/ is not a package)

from benchmarks import write_results
from engine.core.machine import machine_info
from engine.editors.base import Guidance  # noqa: E402
from engine.editors.ip2p import load_ip2p, working_size  # noqa: E402

SIZES = ((512, 512), (1024, 768))


class Timer:
    """Wraps a callable and adds the seconds spent in it to ``seconds``."""

    def __init__(self, function: Callable) -> None:
        self.function = function
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def measure(height: int, width: int, steps: int, repeats: int, folder: Path) -> dict:
    """Median seconds of one edit at ``height`` x ``width``: total, UNet, VAE and the rest."""
    editor = load_ip2p(folder)
    unet, encode, decode = Timer(editor.unet), Timer(editor.vae.encode), Timer(editor.vae.decode)
    editor.unet, editor.vae.encode, editor.vae.decode = unet, encode, decode
    generator = torch.Generator().manual_seed(0)
    render, original = torch.rand(2, height, width, 3, generator=generator)
    guidance = Guidance(steps=steps)
    rows = []
    for repeat in range(repeats + 1):
        for timer in (unet, encode, decode):
            timer.seconds = 0.0
        start = time.perf_counter()
        editor.edit(render, original, "make it bronze", 1.0, seed=repeat, guidance=guidance)
        total = time.perf_counter() - start
        rows.append(dict(total=total, unet=unet.seconds, vae=encode.seconds + decode.seconds,
                         other=total - unet.seconds - encode.seconds - decode.seconds))
    rows = rows[1:]  # the warm-up edit encodes the instruction and warms allocator caches
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return {"input": [height, width], "working_size": list(working_size(height, width, editor.size_multiple)),
            "steps": steps, "repeats": repeats,
            **{f"{key}_seconds_median": value for key, value in median.items()},
            "outside_unet_fraction": (median["total"] - median["unet"]) / median["total"],
            "unet_ms_per_step": 1000 * median["unet"] / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (1 gives steadier figures on a busy machine)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = write_tiny_ip2p(Path(tempfile.mkdtemp(prefix="retouch3d-ip2p-")) / "tiny-ip2p")
    editor = load_ip2p(folder)
    results: dict = {
        "machine": machine_info(),
        "pipeline": {name: sum(p.numel() for p in getattr(editor, name).parameters())
                     for name in ("unet", "vae", "text_encoder")},
        "edits": [measure(h, w, args.steps, args.repeats, folder) for h, w in SIZES]}
    for row in results["edits"]:
        h, w = row["input"]
        print(f"{h}x{w} (edited at {row['working_size'][0]}x{row['working_size'][1]}), {row['steps']} steps: "
              f"edit {row['total_seconds_median']:.3f} s = UNet {row['unet_seconds_median']:.3f} s "
              f"+ VAE {row['vae_seconds_median']:.3f} s + rest (schedule, guidance, resizing) "
              f"{1000 * row['other_seconds_median']:.1f} ms; outside the UNet {100 * row['outside_unet_fraction']:.0f}%",
              flush=True)
    write_results(args.out, "ip2p_overhead", results)


if __name__ == "__main__":
    main()
