"""``python main.py portrait ...``: the portrait tools, importing EG3D checkpoints and measuring the embedded
portrait prior.  The portrait's methods (training the prior: ``train-prior``) are registered in
``engine.methods`` with workspace "portrait"; engine.cli lists them first among ``portrait``'s subcommands.

Each tool is an entry of ``TOOLS``: its summary, the ``_add_*`` function declaring its arguments and the
``cmd_*`` function running it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.core.errors import UserInputError

SUMMARY = "3D portraits: photo alignment, EG3D checkpoints and the embedded prior"
"""the ``portrait`` command's line in ``--help``"""


def _add_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", required=True, help="the checkpoint file")
    p.add_argument("--to", required=True, help="folder for generator.safetensors and meta.json")
    p.add_argument("--generator-kwargs", default=None,
                   help="JSON file with the constructor arguments (for a .safetensors file without meta.json)")


def _add_bench_prior(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prior", default=None, help="a trained prior folder (default: the embedded one)")
    p.add_argument("--heads", type=int, default=16, help="held-out heads")
    p.add_argument("--views", type=int, default=4, help="views of each")
    p.add_argument("--report", default=None, help="also write the figures to this JSON file")


def _add_align(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="the photo (any size; an EG3D-aligned 512² crop is used as is)")
    p.add_argument("--landmarks", default=None, help="its five landmarks, one \"x y\" line each (left eye, right "
                   "eye, nose tip, left and right mouth corner; default: detections/NAME.txt beside the photo, "
                   "else the built-in face detector)")
    p.add_argument("--out", required=True, help="the aligned crop (.png); the landmarks it used are written beside "
                   "it as a .txt in the crop's pixels")


def cmd_align(args: argparse.Namespace) -> int:
    """Write the 512² EG3D crop of a photo and its landmarks in the crop."""
    from PIL import Image

    from engine.core.project import atomic_write
    from engine.portrait.alignment import portrait_input

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserInputError(f"{out}: the aligned crop is written as a PNG (give a .png name)")
    aligned = portrait_input(args.image, args.landmarks)
    for note in aligned.notes:
        print(f"warning: {note}")
    atomic_write(out, lambda tmp: Image.fromarray(aligned.image).save(tmp, format="PNG"))
    if aligned.landmarks is None:
        print(f"wrote {out}: {args.image} is a 512² crop already (no landmarks given), used as is")
        return 0
    text = "".join(f"{x:.2f} {y:.2f}\n" for x, y in aligned.landmarks)
    atomic_write(out.with_suffix(".txt"), lambda tmp: tmp.write_text(text))
    print(f"wrote {out} and {out.with_suffix('.txt')}")
    return 0


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


TOOLS = {
    "align": ("crop a portrait photo the way EG3D's in-the-wild preprocessing does (512², from five landmarks)",
              _add_align, cmd_align),
    "import-eg3d": ("convert an EG3D checkpoint (.pkl, .pth, .safetensors) once to safetensors + JSON for fast, "
                    "safe loading", _add_import, cmd_import),
    "bench-prior": ("quality of the portrait prior on held-out heads and views at 64², and its frame rate from "
                    "cached triplanes", _add_bench_prior, cmd_bench_prior),
}
"""the ``portrait`` subcommands that are not methods: each one's summary, the function adding its flags and the
one running it"""
