"""Command-line interface: the same engine jobs the GUI runs, driven from a terminal.

Bad input ends with a one-line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from engine.core.config import add_config_arguments, config_from_args
from engine.core.errors import UserInputError
from engine.core.jobs import CancelToken, run_and_list, run_in_terminal
from engine.portrait import cli as portrait_cli

DEMO_TRAIN_STEPS = 1000
"""the demo's training steps: 28.9 dB held-out; 2.7-4 minutes on this 2-core CPU (2026-12-03)"""
DEMO_EDIT_STEPS = 2500
"""the demo's edit steps: 250 view edits (one every 10 steps), each of the 52 views about 5 times, for
28.6 dB edit fidelity (about 20 dB at 1,200 steps); about 3 minutes on this CPU on the same day"""


def _add_train(p: argparse.ArgumentParser) -> None:
    from engine.scene.trainer import TrainConfig

    add_config_arguments(p, TrainConfig, skip=("out", "preview_every_s"))
    p.add_argument("--out", default=None, help="project folder (default: projects/<dataset name>)")
    p.add_argument("--report", default=None, help="also write the evaluation report JSON here")


def _add_render(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", required=True, help="project folder written by 'train'")
    path = p.add_mutually_exclusive_group(required=True)
    path.add_argument("--camera-path", help="nerfstudio camera_path.json")
    path.add_argument("--orbit", type=int, help="render N frames on a turntable orbit")
    p.add_argument("--out", required=True, help="FILE.mp4 for a video, or a folder for PNG frames")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: the path's, or 30)")
    p.add_argument("--size", type=int, default=None, help="longer side of orbit frames (default: training size)")


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--headless", action="store_true", help="run without the GUI")
    p.add_argument("--out", default="demo_output", help="folder for the dataset, project and renders")
    train = p.add_mutually_exclusive_group()
    train.add_argument("--steps", type=int, default=DEMO_TRAIN_STEPS,
                       help=f"training steps (default {DEMO_TRAIN_STEPS}: a fixed count, so the result is the same "
                       "on a slower machine; it takes longer there)")
    train.add_argument("--minutes", type=float, help="train for this long instead of a step count")
    p.add_argument("--instruction", default="make it look like a bronze statue",
                   help="offline edit applied after training ('' skips editing)")
    edit = p.add_mutually_exclusive_group()
    edit.add_argument("--edit-steps", type=int, default=DEMO_EDIT_STEPS,
                      help=f"edit optimisation steps (default {DEMO_EDIT_STEPS})")
    edit.add_argument("--edit-minutes", type=float, help="edit for this long instead of a step count")
    p.add_argument("--orbit", type=int, default=60, help="frames in each turntable video")


def _add_edit(p: argparse.ArgumentParser) -> None:
    from engine.editing.idu import EditConfig

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--project", help="trained project folder")
    src.add_argument("--data", help="capture folder: train a field first (as 'train' does), then edit it")
    add_config_arguments(p, EditConfig, skip=("project",))
    p.add_argument("--point-3d", help="local edit around a point in capture coordinates: x,y,z")
    p.add_argument("--train-minutes", type=float, default=3.0, help="with --data: training time budget")
    p.add_argument("--downscale", type=float, default=1.0, help="with --data: resample images by this factor")
    p.add_argument("--out", help="project folder (with --data; default projects/<capture name>)")
    p.add_argument("--report", help="also copy the edit report JSON here")


def _add_export(p: argparse.ArgumentParser) -> None:
    from engine.export import EXPORTS

    p.add_argument("--project", required=True, help="project folder written by 'train'")
    p.add_argument("--what", required=True, help=" | ".join(EXPORTS))
    p.add_argument("--out", required=True, help="; ".join(f"{k.name}: {k.out_help}" for k in EXPORTS.values()))
    for kind in EXPORTS.values():
        if kind.options is not None:
            add_config_arguments(p.add_argument_group(f"{kind.name} settings"), kind.options)


def _run_for_report(job, copy_to: str | None = None) -> Path | None:
    """Run a job with a progress bar; the report it wrote (also copied to ``copy_to``), or None
    when it stopped early (cancelled)."""
    artifacts = run_in_terminal(job)
    report = next((a.path for a in artifacts if a.kind == "report"), None)
    if report is not None and copy_to:
        Path(copy_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report, copy_to)
    return report


def cmd_train(args) -> int:
    from engine.scene.trainer import TrainConfig, report_summary, train_job

    cfg = config_from_args(TrainConfig, args, out=args.out or str(Path("projects") / Path(args.data).resolve().name))
    report = _run_for_report(train_job(cfg, CancelToken()), args.report)
    if report is None:
        return 1
    print(report_summary(report))
    return 0


def cmd_render(args) -> int:
    from engine.export.video import VideoConfig, video_job
    from engine.scene.trainer import load_trained

    model, dataset, _, _ = load_trained(args.project)
    video = VideoConfig(orbit=args.orbit, camera_path=args.camera_path, fps=args.fps, size=args.size)
    run_in_terminal(video_job(model, dataset, args.out, video, CancelToken()))
    print(f"wrote {args.out}")
    return 0


def cmd_demo(args) -> int:
    from engine.editing.idu import EditConfig, edit_job
    from engine.scene.procedural import DemoSceneConfig, write_demo_dataset
    from engine.scene.trainer import TrainConfig, report_summary, train_job

    if not args.headless:
        print("The engine's command line has no window (python main.py demo opens one); running the demo "
              "headless.", file=sys.stderr)
    out = Path(args.out)
    edit = EditConfig(project=str(out / "project"), instruction=args.instruction,
                      steps=None if args.edit_minutes else args.edit_steps,
                      minutes=args.edit_minutes) if args.instruction.strip() else None
    editing = edit_job(edit, CancelToken()) if edit is not None else None  # its inputs checked now, before training
    data = write_demo_dataset(out / "data", DemoSceneConfig())
    cfg = TrainConfig(data=str(data), out=str(out / "project"), steps=None if args.minutes else args.steps,
                      minutes=args.minutes)
    started = time.monotonic()
    report = _run_for_report(train_job(cfg, CancelToken()))
    if report is None:
        return 1
    turntable = argparse.Namespace(project=cfg.out, camera_path=None, orbit=args.orbit,
                                   out=str(out / "turntable.mp4"), fps=None, size=None)
    cmd_render(turntable)
    print(report_summary(report))
    print(f"held-out renders (left: render, right: ground truth): {Path(cfg.out) / 'renders' / 'eval'}")
    if editing is None:
        print(f"the demo took {(time.monotonic() - started) / 60:.1f} minutes")
        return 0
    edit_report = _run_for_report(editing)
    if edit_report is None:
        return 1
    cmd_render(argparse.Namespace(**(vars(turntable) | {"out": str(out / "turntable_edited.mp4")})))
    print(edit_summary(edit_report))
    print(f"edited training views: {Path(cfg.out) / 'edits' / 'views'}")
    print(f"the demo took {(time.monotonic() - started) / 60:.1f} minutes")
    return 0


def _floats(text: str, n: int, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise UserInputError(f"{flag} {text!r}: expected {n} comma-separated numbers")
    return values


def cmd_edit(args) -> int:
    from engine.editing.idu import EditConfig, edit_job

    project = args.project or args.out or str(Path("projects") / Path(args.data).resolve().name)
    cfg = config_from_args(EditConfig, args, project=project,
                           point_3d=_floats(args.point_3d, 3, "--point-3d") if args.point_3d else None)
    job = edit_job(cfg, CancelToken())  # checks the edit now, before any training, so a typo costs nothing
    if args.data:
        from engine.scene.trainer import TrainConfig, report_summary, train_job

        if cfg.point:  # the point's view and pixel, in the capture about to be trained
            from engine.editing.regions import pixel_view
            from engine.scene.datasets import load_dataset

            pixel_view(load_dataset(args.data, downscale=args.downscale), *cfg.parse_point())
        tcfg = TrainConfig(data=args.data, out=project, downscale=args.downscale, minutes=args.train_minutes,
                           seed=args.seed)
        trained = _run_for_report(train_job(tcfg, CancelToken()))
        if trained is None:
            return 1
        print(report_summary(trained))
    report = _run_for_report(job, args.report)
    if report is None:
        return 1
    print(edit_summary(report))
    return 0


def cmd_export(args) -> int:
    from engine.export import EXPORTS, ExportConfig, export_job

    kind = EXPORTS.get(args.what)
    options = config_from_args(kind.options, args) if kind is not None and kind.options is not None else None
    cfg = ExportConfig(project=args.project, what=args.what, out=args.out, options=options)
    return run_and_list(export_job(cfg, CancelToken()))


def cmd_method(name: str, args) -> int:
    """Registered method ``name`` without a command of its own: its config from the flags, its job in the
    terminal."""
    from engine.methods import METHODS

    method = METHODS[name]
    cfg = config_from_args(method.config_class(), args)
    return run_and_list(method.job_function()(cfg, CancelToken()))


def edit_summary(report_path: Path) -> str:
    """One line a person reads after an edit."""
    r = json.loads(Path(report_path).read_text())
    parts = [f"edited '{r['instruction']}' with {r['editor']}: {r['views_edited']} views, {r['steps']} steps in "
             f"{r['edit_seconds']:.0f} s"]
    if "edit_fidelity_psnr" in r:
        parts.append(f"fidelity {r['edit_fidelity_psnr']:.2f} dB")
    if "outside_region_change" in r:
        parts.append(f"outside the region {r['outside_region_change']:.2f}/255")
    parts.append("originals unchanged" if r["originals_unchanged"] else "ORIGINALS CHANGED")
    return "; ".join(parts)


TOOLS = {
    "render": ("render a trained project along a camera path or an orbit", _add_render, cmd_render),
    "demo": ("build the procedural demo scene, train on it, edit it, render turntables", _add_demo, cmd_demo),
    "export": ("export a project: edited dataset, point cloud, mesh, video or cameras (in the capture's frame)",
               _add_export, cmd_export),
}
"""the commands that are not methods: each one's summary, the function adding its flags and the one running it"""
METHOD_COMMANDS = {"train": (_add_train, cmd_train), "edit": (_add_edit, cmd_edit)}
"""methods whose command takes flags beyond their config's (train: --out's default and --report; edit: --data
trains a field first); every other method's flags are its config's fields and ``cmd_method`` runs it"""


def commands(workspace: str = "scene") -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                                                             Callable[..., int]]]:
    """Every command of ``workspace``: its registered methods, then its tools; each one's summary, the function
    adding its flags and the one running it.  The scene's are the top-level commands (beside ``portrait``), the
    portrait's are ``portrait``'s subcommands."""
    from engine.methods import METHODS

    def config_flags(method):
        return lambda p: add_config_arguments(p, method.config_class())

    found = {name: (m.summary, *METHOD_COMMANDS.get(name, (config_flags(m), functools.partial(cmd_method, name))))
             for name, m in METHODS.items() if m.workspace == workspace}
    return found | {"scene": TOOLS, "portrait": portrait_cli.TOOLS}[workspace]


def _add_commands(sub, found: dict, command: str | None) -> None:
    """A parser for each of ``found`` (as ``commands`` gives them) naming the function that runs it
    (``handler``); flags only for ``command``, for all when it is None."""
    for name, (summary, add, run) in found.items():
        p = sub.add_parser(name, help=summary)
        p.set_defaults(handler=run)
        if command in (None, name):
            add(p)


def build_parser(command: str | None = None, subcommand: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``command`` given, "" for none; for ``portrait``, ``subcommand`` too) one whose
    other commands carry only their summary: flags that come from the engine's registries import the engine,
    and ``--help`` must stay fast.  Each command's parser names the function that runs it (``handler``)."""
    parser = argparse.ArgumentParser(prog="main.py", description="Retouch3D: instruction-driven 3D scene and "
                                     "portrait editing. Without a command it opens the editor.")
    sub = parser.add_subparsers(dest="command")
    _add_commands(sub, commands(), command)
    portrait = sub.add_parser("portrait", help=portrait_cli.SUMMARY)
    _add_commands(portrait.add_subparsers(dest="portrait_command", required=True), commands("portrait"),
                  None if command is None else subcommand if command == "portrait" else "")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    words = [a for a in argv if not a.startswith("-")]  # the command, and portrait's subcommand
    parser = build_parser(*(words + ["", ""])[:2])  # "": summaries only
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print("\nRun 'python main.py' without a command to open the editor window.", file=sys.stderr)
        return 0
    try:
        return args.handler(args)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; a run resumes from its last checkpoint when started again", file=sys.stderr)
        return 130
