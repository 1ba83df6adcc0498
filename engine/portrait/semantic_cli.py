"""``python main.py portrait semantic ...``: SemFaceEdit on the command line (engine.portrait.semantic).

* ``train --out DIR [--minutes M]``: train the embedded generator on synthetic heads (every setting of
  ``SemanticTrainConfig`` a flag; a stopped run resumes);
* ``sample --seed S --out DIR``: a face's views and semantic maps;
* ``swap --face S --donor T --group NAME --out DIR``: the face before and after taking the donor's look for one
  group;
* ``bench [--report FILE.json]``: the embedded path's figures against synthetic ground truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.core.config import add_config_arguments, config_from_args
from engine.core.errors import UserInputError

SUMMARY = ("semantic 3D face editing (SemFaceEdit on GRAM's radiance manifolds): train, sample, swap a group's "
           "appearance, benchmark")


def _add_generator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", default=None, help="a trained SemFaceEdit generator folder (default: the "
                   "embedded one in resources/portrait_semantic)")


def _add_views(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the images")
    p.add_argument("--views", type=int, default=3, help="views written, spread over yaw ±30°")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")


def _yaws(count: int) -> list[float]:
    if not 1 <= count <= 64:
        raise UserInputError(f"--views must be between 1 and 64 (got {count})")
    return [0.0] if count == 1 else [-30 + 60 * k / (count - 1) for k in range(count)]


def cmd_train(args: argparse.Namespace) -> int:
    from engine.core.jobs import CancelToken, run_and_list
    from engine.portrait.semantic_training import SemanticTrainConfig, train_semantic_job

    return run_and_list(train_semantic_job(config_from_args(SemanticTrainConfig, args), CancelToken()))


def cmd_sample(args: argparse.Namespace) -> int:
    from engine.portrait.semantic_edit import face_z, write_views
    from engine.portrait.semantic_training import load_semantic

    yaws = _yaws(args.views)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = write_views(load_semantic(args.generator), face_z(args.seed), out, yaws, f"face{args.seed}", args.size)
    print(f"wrote {len(written)} images of face {args.seed} (colour and semantic map) to {out}")
    return 0


def cmd_swap(args: argparse.Namespace) -> int:
    from engine.portrait.semantic_edit import face_z, group_index, swapped_z, write_views
    from engine.portrait.semantic_training import load_semantic

    group_index(args.group)
    yaws = _yaws(args.views)
    generator = load_semantic(args.generator)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    z = face_z(args.face)
    written = write_views(generator, z, out, yaws, "before", args.size)
    written += write_views(generator, swapped_z(z, face_z(args.donor), args.group), out, yaws, "after", args.size)
    print(f"wrote {len(written)} images to {out}: face {args.face} before and after taking face {args.donor}'s "
          f"{args.group}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.portrait.semantic_edit import bench_semantic
    from engine.portrait.semantic_training import load_semantic

    report = bench_semantic(load_semantic(args.generator), heads=args.heads)
    print(f"{args.heads} held-out heads at 64²: reconstruction PSNR {report['reconstruction_psnr']:.2f} dB, mIoU "
          f"{report['reconstruction_miou']:.3f}; swaps: worst change outside the group "
          f"{255 * report['swap_outside_change']:.2f}/255 ({report['swap_outside_worst_group']}), inside PSNR "
          f"{report['swap_inside_psnr']:.2f} dB, {1000 * report['swap_seconds_64']:.1f} ms per swap at 64²")
    from engine.core.machine import write_report

    write_report(args.report, report)
    return 0


def _add_train(p: argparse.ArgumentParser) -> None:
    from engine.portrait.semantic_training import SemanticTrainConfig

    add_config_arguments(p, SemanticTrainConfig)


def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, required=True, help="the face (a synthetic head's seed)")
    _add_views(p)
    _add_generator(p)


def _add_swap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face", type=int, required=True, help="the face edited (a synthetic head's seed)")
    p.add_argument("--donor", type=int, required=True, help="the face whose look the group takes")
    p.add_argument("--group", required=True, help="background, hair, face or garment")
    _add_views(p)
    _add_generator(p)


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heads", type=int, default=16, help="held-out heads (each seen from four views)")
    p.add_argument("--report", default=None, help="also write the figures to this JSON file")
    _add_generator(p)


COMMANDS = {
    "train": ("train the embedded SemFaceEdit generator on synthetic heads (resumes a stopped run in --out)",
              _add_train, cmd_train),
    "sample": ("render a face's views and semantic maps", _add_sample, cmd_sample),
    "swap": ("give one semantic group of a face another face's look; the rest stays as it was", _add_swap, cmd_swap),
    "bench": ("the embedded generator's figures against synthetic ground truth: reconstruction, appearance swaps",
              _add_bench, cmd_bench),
}
"""``portrait semantic``'s subcommands: summary, the function adding its flags, the one running it"""


def add_semantic(p: argparse.ArgumentParser) -> None:
    """``portrait semantic``'s subcommands and their flags."""
    sub = p.add_subparsers(dest="semantic_command", required=True)
    for name, (summary, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=summary))


def cmd_semantic(args: argparse.Namespace) -> int:
    """Run the ``portrait semantic`` subcommand given."""
    return COMMANDS[args.semantic_command][2](args)


__all__ = ["COMMANDS", "SUMMARY", "add_semantic", "cmd_semantic"]
