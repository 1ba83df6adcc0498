"""Editing benchmark: the demo end to end, and instruction edits of the demo scene and the face capture.

    python -m benchmarks.editing [--only demo,patches,local,face] [--out benchmarks/results]

Every run is the real CLI in a fresh process, with step counts (the figures hold on any machine; the
times say how fast this one is).  Face: a field trained as the reconstruction benchmark trains it, then
on copies of it a bronze-statue edit (fidelity against the offline editor's ground truth), the same edit
with per-edit variation (consolidation: how far the 3D result lands from the variation-free one) and a
local edit (mean change inside and outside the region).  Demo scene: a local edit around the box, and
the bronze edit at one time budget with 1 patch a step (the default) and with IN2N's 16, on copies of
one trained field: what the default is chosen by (a comparison at equal time, both sides in one run).
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
from benchmarks.reconstruction import FACE_STEPS
from engine.cli import DEMO_EDIT_STEPS, DEMO_TRAIN_STEPS
from engine.core.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
FACE = REPO.parent / "shared" / "data" / "in2n-face"
INSTRUCTION = "make it look like a bronze statue"
DEMO_BOX_RADIUS = 0.45
"""radius of the demo scene's local edit around the box's centre: the box and a margin, not the sphere"""


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


def edit(project: Path, copy_to: Path, budget: list[str], *extra: str) -> dict:
    """Edit a copy of a trained project for ``budget`` (["--steps", N] or ["--minutes", M]); the report
    plus the command's wall time."""
    shutil.copytree(project, copy_to)
    report = copy_to / "report_edit.json"
    seconds = cli("edit", "--project", str(copy_to), "--instruction", INSTRUCTION, *budget,
                  "--report", str(report), *extra)
    return json.loads(report.read_text()) | {"wall_seconds": seconds}


def local_figures(report: dict) -> dict:
    """What a local edit is judged by: the mean change inside and outside its region (8-bit levels)."""
    return {k: report[k] for k in ("inside_region_change", "outside_region_change", "edit_fidelity_psnr",
                                   "steps", "wall_seconds")}


def variation_spread(variation: float, pairs: int = 10) -> dict:
    """How much single-view edits of one face view disagree under ``variation``: the median PSNR
    between the edits of two seeds, and the spread of the edits' PSNR against the variation-free edit."""
    import statistics

    from engine.core.metrics import psnr
    from engine.editors.offline import OfflineEditor
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
    parser.add_argument("--only", default="demo,patches,local,face",
                        help="comma-separated subset of demo,patches,local,face")
    parser.add_argument("--patches-minutes", type=float, default=2.0,
                        help="time budget of each patches edit (1 and 16 patches compared at equal time)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--edit-steps", type=int, default=DEMO_EDIT_STEPS, help="steps of each local and face edit")
    parser.add_argument("--face-project", help="a face field trained by the reconstruction benchmark's command "
                        f"(--downscale 4 --steps {FACE_STEPS}) to edit, instead of training one here")
    args = parser.parse_args()
    which = set(args.only.split(","))
    steps = ["--steps", str(args.edit_steps)]
    results: dict = {"machine": machine_info()}
    work = Path(tempfile.mkdtemp(prefix="retouch3d-edit-bench-"))
    if "demo" in which:
        seconds = cli("demo", "--headless", "--out", str(work / "demo"))
        report = json.loads((work / "demo" / "project" / "edits" / "report.json").read_text())
        results["demo"] = {"wall_seconds": seconds, "edit_fidelity_psnr": report["edit_fidelity_psnr"],
                           "views_edited": report["views_edited"], "command": "python main.py demo --headless"}
    if which & {"patches", "local"}:
        from engine.scene.procedural import BOX_CENTER, DemoSceneConfig, write_demo_dataset

        data = write_demo_dataset(work / "demo-data", DemoSceneConfig())
        trained = work / "demo-trained"
        cli("train", "--data", str(data), "--steps", str(DEMO_TRAIN_STEPS), "--out", str(trained))
        trained_as = f"P: the demo scene trained {DEMO_TRAIN_STEPS} steps"
        if "patches" in which:
            results["patches"] = {"minutes": args.patches_minutes, "command": (
                f"python main.py edit --project P --instruction '{INSTRUCTION}' --minutes {args.patches_minutes} "
                f"--patches-per-step N ({trained_as})")}
            for n in (1, 16):
                r = edit(trained, work / f"patches-{n}", ["--minutes", str(args.patches_minutes)],
                         "--patches-per-step", str(n))
                results["patches"][str(n)] = {k: r[k] for k in ("edit_fidelity_psnr", "steps", "views_edited",
                                                                "edit_seconds")}
        if "local" in which:
            point = ",".join(f"{v:g}" for v in BOX_CENTER)
            local = edit(trained, work / "demo-local", steps, "--point-3d", point, "--radius", str(DEMO_BOX_RADIUS))
            results["demo_local"] = local_figures(local) | {"command": (
                f"python main.py edit --project P --instruction '{INSTRUCTION}' --steps {args.edit_steps} "
                f"--point-3d {point} --radius {DEMO_BOX_RADIUS} ({trained_as}; the region holds the box)")}
    if "face" in which:
        from engine.editors.offline import SUGGESTED_VARIATION
        from engine.scene.datasets import load_dataset

        trained = Path(args.face_project) if args.face_project else work / "face"
        if not args.face_project:
            cli("train", "--data", str(FACE), "--downscale", "4", "--steps", str(FACE_STEPS), "--out", str(trained))
        plain = edit(trained, work / "face-bronze", steps)
        varied = edit(trained, work / "face-bronze-varied", steps, "--variation", str(SUGGESTED_VARIATION))
        ds = load_dataset(FACE, downscale=4)
        view = ds.image_paths[int(ds.train_indices[0])].stem
        h, w = ds.images[int(ds.train_indices[0])].shape[:2]
        radius = 0.35 / ds.scale  # 0.35 normalised scene units: about the size of the nose and cheeks
        local = edit(trained, work / "face-bronze-local", steps, "--point", f"{view}:{w / 2},{h / 2}",
                     "--radius", f"{radius:.6g}")
        results["face"] = {
            "bronze": {k: plain[k] for k in ("edit_fidelity_psnr", "steps", "edit_seconds", "wall_seconds",
                                             "views_edited")},
            "consolidation": {"variation": SUGGESTED_VARIATION,
                              "single_view_edits": variation_spread(SUGGESTED_VARIATION),
                              "fidelity_with_variation": varied["edit_fidelity_psnr"],
                              "fidelity_without_variation": plain["edit_fidelity_psnr"],
                              "gap_db": plain["edit_fidelity_psnr"] - varied["edit_fidelity_psnr"]},
            "local": local_figures(local) | {"point": f"{view}:{w / 2},{h / 2}", "radius_capture_units": radius},
            "commands": [f"python main.py train --data ../shared/data/in2n-face --downscale 4 --steps {FACE_STEPS} "
                         "--out P",
                         f"python main.py edit --project P --instruction '{INSTRUCTION}' --steps {args.edit_steps}",
                         f"... --variation {SUGGESTED_VARIATION}",
                         f"... --point {view}:{w / 2},{h / 2} --radius {radius:.6g}"]}
    write_results(args.out, "editing", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
