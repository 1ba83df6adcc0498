"""``python main.py portrait ...``: importing EG3D checkpoints and training / measuring the
embedded portrait prior.

Each subcommand is one ``_add_*`` function, listed in ``SUBCOMMANDS``, that declares its arguments
and names its ``cmd_*`` function with ``set_defaults(handler=...)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.core.errors import UserInputError
from engine.core.jobs import CancelToken, run_in_terminal


def _add_import(sub) -> None:
    p = sub.add_parser("import-eg3d", help="convert an EG3D checkpoint (.pkl, .pth, .safetensors) once to "
                       "safetensors + JSON for fast, safe loading")
    p.add_argument("--from", dest="source", required=True, help="the checkpoint file")
    p.add_argument("--to", required=True, help="folder for generator.safetensors and meta.json")
    p.add_argument("--generator-kwargs", default=None,
                   help="JSON file with the constructor arguments (for a .safetensors file without meta.json)")
    p.set_defaults(handler=cmd_import)


def _add_train_prior(sub) -> None:
    p = sub.add_parser("train-prior", help="train the embedded portrait prior on synthetic heads (resumes a "
                       "stopped run in the same folder)")
    p.add_argument("--out", required=True, help="folder for the prior (generator.safetensors, meta.json, recipe.json)")
    p.add_argument("--minutes", type=float, default=None, help="training time budget (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_train_prior)


def _add_bench_prior(sub) -> None:
    p = sub.add_parser("bench-prior", help="quality of the portrait prior on held-out heads and views at 64², "
                       "and its frame rate from cached triplanes")
    p.add_argument("--prior", default=None, help="a trained prior folder (default: the embedded one)")
    p.add_argument("--heads", type=int, default=16, help="held-out heads")
    p.add_argument("--views", type=int, default=4, help="views of each")
    p.add_argument("--report", default=None, help="also write the figures to this JSON file")
    p.set_defaults(handler=cmd_bench_prior)


SUBCOMMANDS = (_add_import, _add_train_prior, _add_bench_prior)
"""the ``portrait`` subcommands, in the order ``--help`` lists them"""


def add_portrait_parser(sub) -> None:
    """The ``portrait`` command and its subcommands."""
    portrait = sub.add_parser("portrait", help="3D portraits: EG3D checkpoints and the embedded prior")
    commands = portrait.add_subparsers(dest="portrait_command", required=True)
    for add in SUBCOMMANDS:
        add(commands)


def _read_generator_kwargs(path: str) -> dict:
    """The constructor arguments in the JSON file ``--generator-kwargs`` names."""
    try:
        given = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the generator arguments ({exc})") from None
    if not isinstance(given, dict):
        raise UserInputError(f"{path}: the generator arguments must be a JSON object, not a {type(given).__name__}")
    return given


def cmd_import(args: argparse.Namespace) -> int:
    """Convert a checkpoint once to generator.safetensors + meta.json, pinning the neural rendering
    resolution it loads with; one that does not build its generator is refused before anything is written."""
    from engine.portrait.checkpoints import META_FILE, read_generator_checkpoint, write_converted
    from engine.portrait.eg3d import generator_from_checkpoint
    from engine.portrait.superresolution import module_name

    given = _read_generator_kwargs(args.generator_kwargs) if args.generator_kwargs else None
    checkpoint = read_generator_checkpoint(args.source, given)
    generator = generator_from_checkpoint(checkpoint, args.source)
    weights = write_converted(args.to, checkpoint.kwargs, checkpoint.state_dict,
                              neural_rendering_resolution=generator.neural_rendering_resolution)
    count = sum(p.numel() for p in generator.parameters())
    module = module_name(checkpoint.kwargs["rendering_kwargs"]["superresolution_module"])
    print(f"wrote {weights} and {weights.with_name(META_FILE)}: {count:,} parameters, {generator.img_resolution}² "
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
        from engine.core.machine import machine_info

        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps({**report, "machine": machine_info()}, indent=2) + "\n")
    return 0
