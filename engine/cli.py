"""Command-line interface: the same engine jobs the GUI runs, driven from a terminal.

Bad input ends with a one-line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import UserInputError
from engine.jobs import CancelToken, run_in_terminal


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a radiance field on a capture and evaluate it on held-out frames")
    p.add_argument("--data", required=True, help="dataset folder (nerfstudio transforms.json or Blender synthetic)")
    p.add_argument("--format", default="auto", choices=["auto", "nerfstudio", "blender"])
    p.add_argument("--downscale", type=float, default=1.0, help="resample images by this factor on load")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="training time budget")
    budget.add_argument("--steps", type=int, help="number of training steps")
    p.add_argument("--model", default="fast", help="model preset: fast (default) or nerfacto")
    p.add_argument("--out", default=None, help="project folder (default: projects/<dataset name>)")
    p.add_argument("--report", default=None, help="also write the evaluation report JSON here")
    p.add_argument("--seed", type=int, default=0)


def _add_render(sub) -> None:
    p = sub.add_parser("render", help="render a trained project along a camera path or an orbit")
    p.add_argument("--project", required=True, help="project folder written by 'train'")
    path = p.add_mutually_exclusive_group(required=True)
    path.add_argument("--camera-path", help="nerfstudio camera_path.json")
    path.add_argument("--orbit", type=int, help="render N frames on a turntable orbit")
    p.add_argument("--out", required=True, help="FILE.mp4 for a video, or a folder for PNG frames")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: the path's, or 30)")
    p.add_argument("--size", type=int, default=None, help="longer side of orbit frames (default: training size)")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="build the procedural demo scene, train on it, render a turntable")
    p.add_argument("--headless", action="store_true", help="run without the GUI")
    p.add_argument("--out", default="demo_output", help="folder for the dataset, project and renders")
    p.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    p.add_argument("--steps", type=int, default=None, help="train this many steps instead of minutes")
    p.add_argument("--orbit", type=int, default=60, help="frames in the turntable video")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Retouch3D: instruction-driven 3D scene and "
                                     "portrait editing. Without a command it opens the editor.")
    sub = parser.add_subparsers(dest="command")
    _add_train(sub)
    _add_render(sub)
    _add_demo(sub)
    return parser


def cmd_train(args) -> int:
    import shutil

    from engine.scene.trainer import TrainConfig, report_summary, train_job

    out = args.out or str(Path("projects") / Path(args.data).resolve().name)
    cfg = TrainConfig(data=args.data, out=out, format=args.format, downscale=args.downscale, model=args.model,
                      steps=args.steps, minutes=args.minutes, seed=args.seed)
    if cfg.steps is None and cfg.minutes is None:
        cfg.minutes = 5.0
    artifacts = run_in_terminal(train_job(cfg, CancelToken()))
    report = next((a.path for a in artifacts if a.kind == "report"), None)
    if report is None:
        return 1
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report, args.report)
    print(report_summary(report))
    return 0


def cmd_render(args) -> int:
    from engine.scene.paths import camera_path_cameras, orbit_cameras
    from engine.scene.render import render_video_job
    from engine.scene.trainer import fixed_background, load_trained

    model, dataset, _ = load_trained(args.project)
    if args.camera_path:
        cameras, fps = camera_path_cameras(args.camera_path, dataset)
    else:
        cameras, fps = orbit_cameras(dataset, args.orbit, args.size), 30.0
    run_in_terminal(render_video_job(model, cameras, args.out, args.fps or fps, fixed_background(dataset)))
    print(f"wrote {args.out}")
    return 0


def cmd_demo(args) -> int:
    from engine.scene.procedural import DemoSceneConfig, write_demo_dataset
    from engine.scene.trainer import TrainConfig, report_summary, train_job

    if not args.headless:
        print("The editor window is not part of this build yet; running the demo headless.", file=sys.stderr)
    out = Path(args.out)
    data = write_demo_dataset(out / "data", DemoSceneConfig())
    cfg = TrainConfig(data=str(data), out=str(out / "project"), steps=args.steps,
                      minutes=None if args.steps else args.minutes)
    artifacts = run_in_terminal(train_job(cfg, CancelToken()))
    report = next((a.path for a in artifacts if a.kind == "report"), None)
    if report is None:
        return 1
    render_args = argparse.Namespace(project=cfg.out, camera_path=None, orbit=args.orbit,
                                     out=str(out / "turntable.mp4"), fps=None, size=None)
    cmd_render(render_args)
    print(report_summary(report))
    print(f"held-out renders (left: render, right: ground truth): {Path(cfg.out) / 'renders' / 'eval'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print("\nThe editor window is not part of this build yet; use a command above.", file=sys.stderr)
        return 0
    handler = {"train": cmd_train, "render": cmd_render, "demo": cmd_demo}[args.command]
    try:
        return handler(args)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; a run resumes from its last checkpoint when started again", file=sys.stderr)
        return 130
