"""Reconstruction benchmark: held-out quality after a fixed step count, its time, throughput, preview speed, memory.

    python -m benchmarks.reconstruction [--only demo,blender,face,preview] [--out benchmarks/results]

Each training run is the real CLI (`python main.py train ...`) in a fresh process, so the
figures are what a user gets; the preview figure is the median of repeated 256x256 renders.
Step counts, not time budgets: the quality is then the same on any machine, and the time it
took says how fast this one is (the counts are what this 2-core CPU trains in 3, 5 and 4 minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import write_results
from engine.core.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
FACE = REPO.parent / "shared" / "data" / "in2n-face"
DEMO_STEPS = 2000
"""training steps of the demo scene's row (what this CPU trained in 3 minutes when the row was set)"""
FACE_STEPS = 4700
"""training steps of the face capture at --downscale 4 (5 minutes here when the row was set)"""
BLENDER_STEPS = 1000
"""training steps of the Blender-format procedural scene at --downscale 2"""


def train(data: Path, out: Path, steps: int, extra: list[str]) -> dict:
    report = out / "report.json"
    cmd = [sys.executable, str(REPO / "main.py"), "train", "--data", str(data), "--steps", str(steps),
           "--out", str(out / "project"), "--report", str(report), *extra]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stderr[-2000:]}")
    print(proc.stdout.strip(), flush=True)
    return json.loads(report.read_text())


def preview_seconds(project: Path, repeats: int = 10) -> dict:
    """Median time to render a 256x256 preview of a trained project (the viewport's frame)."""
    from engine.scene.paths import orbit_cameras
    from engine.scene.render import PREVIEW_STEP_SCALE, render_image
    from engine.scene.trainer import fixed_background, load_trained

    model, dataset, _, _ = load_trained(project)
    cams = orbit_cameras(dataset, repeats + 2, size=256)
    background = fixed_background(dataset)
    result = {}
    for name, scale in (("preview_256", PREVIEW_STEP_SCALE), ("full_quality_256", 1.0)):
        times = []
        for i in range(len(cams)):
            start = time.perf_counter()
            render_image(model, cams, i, background, step_scale=scale)
            times.append(time.perf_counter() - start)
        times = times[2:]  # the first frames warm caches
        result[f"{name}_seconds_median"] = statistics.median(times)
        result[f"{name}_seconds_all"] = times
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="demo,blender,face,preview",
                        help="comma-separated subset of demo,blender,face,preview")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--demo-steps", type=int, default=DEMO_STEPS)
    parser.add_argument("--face-steps", type=int, default=FACE_STEPS)
    parser.add_argument("--blender-steps", type=int, default=BLENDER_STEPS)
    args = parser.parse_args()
    which = set(args.only.split(","))
    results: dict = {"machine": machine_info()}
    work = Path(tempfile.mkdtemp(prefix="retouch3d-bench-"))
    demo_project = None
    if "demo" in which or "preview" in which:
        from engine.scene.procedural import DemoSceneConfig, write_demo_dataset

        data = write_demo_dataset(work / "demo-data", DemoSceneConfig())
        r = train(data, work / "demo", args.demo_steps, [])
        demo_project = work / "demo" / "project"
        results["demo"] = {k: r[k] for k in ("psnr_mean", "ssim_mean", "train_seconds", "steps", "rays_per_second",
                                             "samples_per_ray", "peak_rss_mb")}
        results["demo"]["command"] = f"python main.py train --data DEMO --steps {args.demo_steps}"
    if "blender" in which:
        from engine.scene.procedural import write_blender_dataset

        data = write_blender_dataset(work / "blender-data")
        r = train(data, work / "blender", args.blender_steps, ["--downscale", "2"])
        results["blender"] = {k: r[k] for k in ("psnr_mean", "ssim_mean", "train_seconds", "steps", "rays_per_second",
                                                "samples_per_ray", "peak_rss_mb")}
        results["blender"]["command"] = (f"python main.py train --data BLENDER --downscale 2 "
                                         f"--steps {args.blender_steps}")
    if "face" in which:
        if not (FACE / "transforms.json").exists():
            print(f"skipping face: {FACE} is absent")
        else:
            r = train(FACE, work / "face", args.face_steps, ["--downscale", "4"])
            results["face"] = {k: r[k] for k in ("psnr_mean", "ssim_mean", "train_seconds", "steps",
                                                 "rays_per_second", "samples_per_ray", "peak_rss_mb")}
            results["face"]["command"] = (f"python main.py train --data ../shared/data/in2n-face --downscale 4 "
                                          f"--steps {args.face_steps}")
    if "preview" in which and demo_project is not None:
        results["preview"] = preview_seconds(demo_project)
    write_results(args.out, "reconstruction", results)
    print("\n== results ==")
    for name in ("demo", "blender", "face"):
        if name in results:
            r = results[name]
            print(f"{name:7s} PSNR {r['psnr_mean']:.2f} dB  SSIM {r['ssim_mean']:.3f}  {r['steps']} steps in "
                  f"{r['train_seconds']:.0f} s  {r['rays_per_second']:.0f} rays/s "
                  f"({r['samples_per_ray']:.1f} samples/ray)  peak {r['peak_rss_mb']:.0f} MB")
    if "preview" in results:
        p = results["preview"]
        print(f"256x256 frame: preview {p['preview_256_seconds_median'] * 1000:.0f} ms, full quality "
              f"{p['full_quality_256_seconds_median'] * 1000:.0f} ms (medians)")


if __name__ == "__main__":
    main()
