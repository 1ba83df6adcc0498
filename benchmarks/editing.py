"""Editing benchmark: the demo end to end, and instruction edits of the face capture.

    python -m benchmarks.editing [--only demo,patches,face] [--out benchmarks/results]

Every run is the real CLI in a fresh process.  Face: a field trained for 5 minutes at
--downscale 4, then on copies of it a bronze-statue edit (fidelity against the offline
editor's ground truth), the same edit with per-edit variation (consolidation: how far the 3D
result lands from the variation-free one) and a local edit (change outside the region).
Patches: the demo's bronze edit at one time budget with 1 patch a step (the default) and with
IN2N's 16, on copies of one trained field: what the default is chosen by.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchmarks import write_results
from engine.cli import DEMO_TRAIN_STEPS
from engine.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
FACE = REPO.parent / "shared" / "data" / "in2n-face"
INSTRUCTION = "make it look like a bronze statue"


def cli(*args: str) -> float:
    """Run ``python main.py ARGS``; returns its wall time in seconds."""
    cmd = [sys.executable, str(REPO / "main.py"), *args]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed:\n{proc.stderr[-3000:]}")
    print(proc.stdout.strip(), flush=True)
    return seconds


def edit(project: Path, copy_to: Path, minutes: float, *extra: str) -> dict:
    """Edit a copy of a trained project; the report plus the command's wall time."""
    shutil.copytree(project, copy_to)
    report = copy_to / "report_edit.json"
    seconds = cli("edit", "--project", str(copy_to), "--instruction", INSTRUCTION, "--minutes", str(minutes),
                  "--report", str(report), *extra)
    return json.loads(report.read_text()) | {"wall_seconds": seconds}


def variation_spread(variation: float, pairs: int = 10) -> dict:
    """How much single-view edits of one face view disagree under ``variation``: the median PSNR
    between the edits of two seeds, and the spread of the edits' PSNR against the variation-free edit."""
    import statistics

    from engine.editing.offline import OfflineEditor
    from engine.metrics import psnr
    from engine.scene.datasets import load_dataset

    ds = load_dataset(FACE, downscale=4)
    img = torch.tensor(ds.images[int(ds.train_indices[0])]).float() / 255
    editor, plain = OfflineEditor(variation=variation), OfflineEditor()
    edits = [editor.edit(img, img, INSTRUCTION, 1.0, seed) for seed in range(2 * pairs)]
    truth = plain.edit(img, img, INSTRUCTION, 1.0, 0)
    against_truth = [psnr(e, truth) for e in edits]
    return {"median_psnr_between_two_seeds": statistics.median(psnr(edits[2 * i], edits[2 * i + 1])
                                                              for i in range(pairs)),
            "psnr_vs_plain_edit_min": min(against_truth), "psnr_vs_plain_edit_max": max(against_truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="demo,patches,face", help="comma-separated subset of demo,patches,face")
    parser.add_argument("--patches-minutes", type=float, default=2.0, help="time budget of each patches edit")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--edit-minutes", type=float, default=4.0, help="time budget of each face edit")
    args = parser.parse_args()
    which = set(args.only.split(","))
    results: dict = {"machine": machine_info()}
    work = Path(tempfile.mkdtemp(prefix="retouch3d-edit-bench-"))
    if "demo" in which:
        seconds = cli("demo", "--headless", "--out", str(work / "demo"))
        report = json.loads((work / "demo" / "project" / "edits" / "report.json").read_text())
        results["demo"] = {"wall_seconds": seconds, "edit_fidelity_psnr": report["edit_fidelity_psnr"],
                           "views_edited": report["views_edited"], "command": "python main.py demo --headless"}
    if "patches" in which:
        from engine.scene.procedural import DemoSceneConfig, write_demo_dataset

        data = write_demo_dataset(work / "patches-data", DemoSceneConfig())
        trained = work / "patches-trained"
        cli("train", "--data", str(data), "--steps", str(DEMO_TRAIN_STEPS), "--out", str(trained))
        results["patches"] = {"minutes": args.patches_minutes, "command": (
            f"python main.py edit --project P --instruction '{INSTRUCTION}' --minutes {args.patches_minutes} "
            f"--patches-per-step N (P: the demo scene trained {DEMO_TRAIN_STEPS} steps)")}
        for n in (1, 16):
            r = edit(trained, work / f"patches-{n}", args.patches_minutes, "--patches-per-step", str(n))
            results["patches"][str(n)] = {k: r[k] for k in ("edit_fidelity_psnr", "steps", "views_edited",
                                                            "edit_seconds")}
    if "face" in which:
        from engine.editing.offline import SUGGESTED_VARIATION
        from engine.scene.datasets import load_dataset

        trained = work / "face"
        cli("train", "--data", str(FACE), "--downscale", "4", "--minutes", "5", "--out", str(trained))
        minutes = str(args.edit_minutes)
        plain = edit(trained, work / "face-bronze", args.edit_minutes)
        varied = edit(trained, work / "face-bronze-varied", args.edit_minutes, "--variation", str(SUGGESTED_VARIATION))
        ds = load_dataset(FACE, downscale=4)
        view = ds.image_paths[int(ds.train_indices[0])].stem
        h, w = ds.images[int(ds.train_indices[0])].shape[:2]
        radius = 0.35 / ds.scale  # 0.35 normalised scene units: about the size of the nose and cheeks
        local = edit(trained, work / "face-bronze-local", args.edit_minutes, "--point", f"{view}:{w / 2},{h / 2}",
                     "--radius", f"{radius:.6g}")
        results["face"] = {
            "bronze": {k: plain[k] for k in ("edit_fidelity_psnr", "edit_seconds", "wall_seconds", "views_edited")},
            "consolidation": {"variation": SUGGESTED_VARIATION,
                              "single_view_edits": variation_spread(SUGGESTED_VARIATION),
                              "fidelity_with_variation": varied["edit_fidelity_psnr"],
                              "fidelity_without_variation": plain["edit_fidelity_psnr"],
                              "gap_db": plain["edit_fidelity_psnr"] - varied["edit_fidelity_psnr"]},
            "local": {k: local[k] for k in ("outside_region_change", "edit_fidelity_psnr", "wall_seconds")}
                     | {"point": f"{view}:{w / 2},{h / 2}", "radius_capture_units": radius},
            "commands": ["python main.py train --data ../shared/data/in2n-face --downscale 4 --minutes 5 --out P",
                         f"python main.py edit --project P --instruction '{INSTRUCTION}' --minutes {minutes}",
                         f"... --variation {SUGGESTED_VARIATION}",
                         f"... --point {view}:{w / 2},{h / 2} --radius {radius:.6g}"]}
    write_results(args.out, "editing", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
