"""``python main.py portrait ...``: importing EG3D checkpoints and training / measuring the
embedded portrait prior.  Each subcommand is one ``_add_*`` parser and one ``cmd_*`` function."""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import UserInputError
from engine.jobs import CancelToken, run_in_terminal


def _add_import(sub) -> None:
    p = sub.add_parser("import-eg3d", help="convert an EG3D checkpoint (.pkl, .pth, .safetensors) once to "
                       "safetensors + JSON for fast, safe loading")
    p.add_argument("--from", dest="source", required=True, help="the checkpoint file")
    p.add_argument("--to", required=True, help="folder for generator.safetensors and meta.json")
    p.add_argument("--generator-kwargs", default=None,
                   help="JSON file with the constructor arguments (for a .safetensors file without meta.json)")


def _add_train_prior(sub) -> None:
    p = sub.add_parser("train-prior", help="train the embedded portrait prior on synthetic heads (resumes a "
                       "stopped run in the same folder)")
    p.add_argument("--out", required=True, help="folder for the prior (generator.safetensors, meta.json, recipe.json)")
    p.add_argument("--minutes", type=float, default=None, help="training time budget (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)


def _add_bench_prior(sub) -> None:
    p = sub.add_parser("bench-prior", help="quality of the portrait prior on held-out heads and views at 64², "
                       "and its frame rate from cached triplanes")
    p.add_argument("--prior", default=None, help="a trained prior folder (default: the embedded one)")
    p.add_argument("--heads", type=int, default=16, help="held-out heads")
    p.add_argument("--views", type=int, default=4, help="views of each")
    p.add_argument("--report", default=None, help="also write the figures to this JSON file")


def add_portrait_parser(sub) -> None:
    """The ``portrait`` command and its subcommands."""
    portrait = sub.add_parser("portrait", help="3D portraits: EG3D checkpoints and the embedded prior")
    commands = portrait.add_subparsers(dest="portrait_command", required=True)
    _add_import(commands)
    _add_train_prior(commands)
    _add_bench_prior(commands)


def cmd_import(args) -> int:
    from engine.portrait.checkpoints import read_generator_checkpoint, write_converted
    from engine.portrait.eg3d import load_generator

    given = None
    if args.generator_kwargs:
        try:
            given = json.loads(Path(args.generator_kwargs).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserInputError(f"{args.generator_kwargs}: cannot read the generator arguments ({exc})") from None
    generator = load_generator(args.source, given)  # refuses a checkpoint that does not fit before writing
    kwargs, state, resolution = read_generator_checkpoint(args.source, given)
    weights = write_converted(args.to, kwargs, state, neural_rendering_resolution=generator.neural_rendering_resolution)
    module = kwargs["rendering_kwargs"]["superresolution_module"].rsplit(".", 1)[-1]
    count = sum(t.numel() for t in state.values())
    print(f"wrote {weights} and {Path(args.to) / 'meta.json'}: {count:,} numbers, {generator.img_resolution}² "
          f"images via {module}, neural rendering at {generator.neural_rendering_resolution}²")
    return 0


def cmd_train_prior(args) -> int:
    from engine.portrait.prior import PriorConfig, train_prior_job

    cfg = PriorConfig(seed=args.seed)
    if args.minutes is not None:
        cfg.minutes = args.minutes
    artifacts = run_in_terminal(train_prior_job(cfg, args.out, CancelToken()))
    weights = next((a.path for a in artifacts if a.kind == "weights"), None)
    if weights is None:
        return 1
    print(f"wrote the prior to {Path(args.out)}")
    return 0


def cmd_bench_prior(args) -> int:
    from engine.portrait.prior import bench_prior, load_prior

    report = bench_prior(load_prior(args.prior), heads=args.heads, views=args.views)
    print(f"held-out heads at 64²: PSNR {report['psnr']:.2f} dB (worst {report['psnr_min']:.2f}), foreground IoU "
          f"{report['mask_iou']:.3f}, depth error {100 * report['depth_error_rel']:.2f}% of the camera distance; "
          f"{report['fps_cached_64']:.1f} frames/s from cached triplanes")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def cmd_portrait(args) -> int:
    """Run the chosen ``portrait`` subcommand."""
    return {"import-eg3d": cmd_import, "train-prior": cmd_train_prior,
            "bench-prior": cmd_bench_prior}[args.portrait_command](args)
