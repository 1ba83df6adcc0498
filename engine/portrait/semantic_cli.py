"""``python main.py portrait semantic ...``: SemFaceEdit on the command line (engine.portrait.semantic).

* ``train --out DIR [--minutes M]``: train the embedded generator on synthetic heads (every setting of
  ``SemanticTrainConfig`` a flag; a stopped run resumes); with ``--data DIR``, adversarially on real portraits
  (engine.portrait.semantic_gan, ``SemanticGanConfig``);
* ``sample --seed S``: a face's views and semantic maps;
* ``swap --face S --donor T --group NAME [--take look|shape|both]``: a group's look or shape from another face;
* ``paint (--seed S | --face DIR) --mask PNG``: the geometry repainted to a semantic map;
* ``invert --image FILE (--labels PNG | --face-parser FILE)``: a photo found in the generator, as a face folder;
* ``bench [--report FILE.json]``: the embedded path's figures against synthetic ground truth.
Each editing command writes views (``--views``, ``--size``) into ``--out`` and, on request, an orbit video
(``--video``) and a mesh (``--mesh``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.core.config import add_config_arguments, config_from_args, subcommands
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
    p.add_argument("--video", action="store_true", help="also write an orbit video (colour beside the semantic map)")
    p.add_argument("--orbit-frames", type=int, default=48, help="frames of the orbit video (24 a second)")
    p.add_argument("--mesh", action="store_true", help="also write the face as a mesh: PLY with vertex colours and "
                   "each vertex's group (a 'label' property), and GLB")


def _finish(generator, styles, args: argparse.Namespace, prefix: str) -> list[Path]:
    """The views of the result, and its video and mesh when asked for."""
    from engine.portrait.semantic_edit import write_outputs, write_views

    out = Path(args.out)
    return write_views(generator, styles, out, _yaws(args.views), prefix, args.size) + write_outputs(
        generator, styles, out, prefix, args.video, args.mesh, args.orbit_frames, args.size)


def _yaws(count: int) -> list[float]:
    if not 1 <= count <= 64:
        raise UserInputError(f"--views must be between 1 and 64 (got {count})")
    return [0.0] if count == 1 else [-30 + 60 * k / (count - 1) for k in range(count)]


def cmd_train(args: argparse.Namespace) -> int:
    from engine.core.config import settable_fields
    from engine.core.jobs import CancelToken, run_and_list
    from engine.portrait.semantic_gan import SemanticGanConfig, semantic_gan_job
    from engine.portrait.semantic_training import SemanticTrainConfig, train_semantic_job

    if getattr(args, "data", None) is None:
        return run_and_list(train_semantic_job(config_from_args(SemanticTrainConfig, args), CancelToken()))
    real = {f.name for f, _ in settable_fields(SemanticGanConfig)}
    synthetic_only = sorted(f.name for f, _ in settable_fields(SemanticTrainConfig) if f.name not in real
                            and hasattr(args, f.name))
    if synthetic_only:
        raise UserInputError(f"--{synthetic_only[0].replace('_', '-')} belongs to the synthetic recipe; with --data "
                             "the adversarial training's settings apply (see --help)")
    return run_and_list(semantic_gan_job(config_from_args(SemanticGanConfig, args), CancelToken()))


def _seed_styles(generator, seed: int):
    from engine.portrait.semantic_edit import face_z
    from engine.portrait.semantic_training import latents_of

    return generator.styles(latents_of(face_z(seed)))


def cmd_sample(args: argparse.Namespace) -> int:
    from engine.portrait.semantic_training import load_semantic

    _yaws(args.views)  # a bad --views is refused before any work
    generator = load_semantic(args.generator)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = _finish(generator, _seed_styles(generator, args.seed), args, f"face{args.seed}")
    print(f"wrote {len(written)} images of face {args.seed} (colour and semantic map) to {out}")
    return 0


def _face_styles(generator, face: str):
    """A face's styles: a synthetic head's seed, or a face folder from invert / paint."""
    from engine.portrait.semantic_edit import load_face

    return _seed_styles(generator, int(face)) if face.isdigit() else load_face(face, generator)


def cmd_swap(args: argparse.Namespace) -> int:
    from engine.portrait.semantic_edit import PaintSettings, SemanticSession, group_index, write_views
    from engine.portrait.semantic_training import load_semantic

    group = group_index(args.group)
    yaws = _yaws(args.views)
    session = SemanticSession(load_semantic(args.generator))
    session.styles = _face_styles(session.generator, args.face)
    donor = _face_styles(session.generator, args.donor)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = write_views(session.generator, session.styles, out, yaws, "before", args.size)
    after = session.styles
    for step, loss, after in session.taking(group, donor, args.take != "look", PaintSettings(steps=args.steps),
                                            look=args.take != "shape"):
        if step:
            print(f"shape: step {step}: loss {loss:.4f}", flush=True)
    written += _finish(session.generator, after, args, "after")
    print(f"wrote {len(written)} files to {out}: face {args.face} before and after taking {args.donor}'s "
          f"{args.group} ({args.take})")
    return 0


def cmd_paint(args: argparse.Namespace) -> int:
    import time

    import torch

    from engine.core.project import write_json
    from engine.portrait.cameras import camera_labels
    from engine.portrait.semantic_edit import (PaintSettings, mean_iou, paint_geometry, read_painted_mask, save_face,
                                               write_views)
    from engine.portrait.semantic_training import load_semantic

    if (args.seed is None) == (args.face is None):
        raise UserInputError("give the face to paint: --seed S (a sampled face) or --face DIR (from invert or paint)")
    settings = PaintSettings(steps=args.steps)
    painted = read_painted_mask(args.mask, settings.size)
    yaws = _yaws(args.views)
    generator = load_semantic(args.generator)
    styles = _face_styles(generator, str(args.seed) if args.face is None else args.face)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    camera = torch.from_numpy(camera_labels(args.yaw, args.pitch)).float()
    start, edited, loss = time.perf_counter(), styles, float("nan")
    for step, loss, edited in paint_geometry(generator, styles, camera, painted, settings):
        print(f"step {step}/{settings.steps}: loss {loss:.4f}", flush=True)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        miou = mean_iou(generator.render(edited, camera, settings.size)["semantic"].argmax(1)[0], painted)
    written = write_views(generator, styles, out, yaws, "before", args.size)
    written += _finish(generator, edited, args, "after")
    save_face(out, edited, {"painted": str(args.mask), "from": args.face or f"seed {args.seed}",
                            "camera": [args.yaw, args.pitch], "generator": args.generator or "embedded"})
    write_json(out / "report.json", {"miou_painted_view": miou, "loss": loss, "steps": settings.steps,
                                     "seconds": seconds})
    print(f"painted in {seconds:.1f} s: the painted view's map now matches the mask at mIoU {miou:.3f}; wrote "
          f"{len(written)} images, face.safetensors and report.json to {out}")
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    import time

    import torch

    from engine.core.imaging import write_png
    from engine.core.metrics import psnr
    from engine.core.project import write_json
    from engine.portrait.semantic_edit import InvertSettings, invert, mean_iou, photo_face, save_face
    from engine.portrait.semantic_training import load_semantic

    settings = InvertSettings(steps=args.steps, tune_steps=args.tune_steps)
    face = photo_face(args.image, args.labels, args.label_order, args.landmarks, settings.size, args.face_parser)
    for note in face.notes:
        print(f"warning: {note}")
    _yaws(args.views)
    generator = load_semantic(args.generator)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_png(out / "aligned.png", face.aligned)
    start, styles = time.perf_counter(), None
    for step, loss, styles in invert(generator, face.image, face.labels, face.camera, settings):
        print(f"step {step}/{settings.steps + settings.tune_steps}: loss {loss:.4f}", flush=True)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        seen = generator.render(styles, face.camera, settings.size)
    report = {"miou": mean_iou(seen["semantic"].argmax(1)[0], face.labels),
              "psnr_input_view": psnr(seen["rgb"][0], face.image), "pose_yaw_pitch": list(face.pose),
              "steps": settings.steps, "tune_steps": settings.tune_steps, "seconds": seconds}
    written = _finish(generator, styles, args, "inverted")
    save_face(out, styles, {"image": str(args.image), "labels": args.labels or f"made by {args.face_parser}",
                            "label_order": args.label_order if args.labels else "bisenet",
                            "pose_yaw_pitch": list(face.pose), "generator": args.generator or "embedded"})
    write_json(out / "report.json", report)
    print(f"inverted in {seconds:.1f} s: mIoU {report['miou']:.3f}, PSNR {report['psnr_input_view']:.2f} dB at the "
          f"input view; wrote {len(written)} views, face.safetensors and report.json to {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.portrait.semantic_edit import bench_invert, bench_paint, bench_semantic
    from engine.portrait.semantic_training import load_semantic

    generator = load_semantic(args.generator)
    report = bench_semantic(generator, heads=args.heads)
    print(f"{args.heads} held-out heads at 64²: reconstruction PSNR {report['reconstruction_psnr']:.2f} dB, mIoU "
          f"{report['reconstruction_miou']:.3f}; swaps: worst change outside the group "
          f"{255 * report['swap_outside_change']:.2f}/255 ({report['swap_outside_worst_group']}), inside PSNR "
          f"{report['swap_inside_psnr']:.2f} dB, {1000 * report['swap_seconds_64']:.1f} ms per swap at 64²",
          flush=True)
    if args.edit_heads > 0:
        report.update(bench_paint(generator, heads=args.edit_heads))
        print(f"mask painting ({', '.join(report['paint_edits'])}) on {args.edit_heads} heads: mIoU "
              f"{report['paint_miou']:.3f} over yaw ±30° (worst view {report['paint_miou_worst_view']:.3f}; before "
              f"{report['paint_miou_before']:.3f}; {100 * report['paint_changed_pixels_right']:.0f} % of the changed "
              f"pixels right, {100 * report['paint_changed_pixels_right_before']:.0f} % before) after "
              f"{report['paint_steps']} steps, {report['paint_seconds']:.1f} s each", flush=True)
        report.update(bench_invert(generator, heads=args.edit_heads))
        print(f"inversion of {args.edit_heads} heads from the front in {report['invert_steps']} steps: mIoU "
              f"{report['invert_miou_50']:.3f}, PSNR {report['invert_psnr_input_view']:.2f} dB there and "
              f"{report['invert_psnr_side_views']:.2f} dB at yaw ±30°, {report['invert_seconds']:.1f} s each")
    golden = Path(args.gram_golden)
    if golden.is_dir():
        report.update(gram_golden_errors(golden))
        print(f"GRAM against the official outputs: image {report['gram_image_error']:.1e}, points / outputs "
              f"{report['gram_point_error']:.1e}")
    from engine.core.machine import write_report

    write_report(args.report, report)
    return 0


def gram_golden_errors(folder: Path) -> dict:
    """The largest differences between GRAM here and the official outputs of a golden fixture folder."""
    import torch
    from safetensors.torch import load_file

    from engine.portrait.gram import load_gram

    expected = load_file(str(folder / "expected.safetensors"))
    with torch.no_grad():
        out = load_gram(folder).render(expected["z"], expected["camera_pos"], img_size=expected["image"].shape[-1])
    error = lambda key: float((out[key] - expected[key]).abs().max())  # noqa: E731
    return {"gram_image_error": error("image"),
            "gram_point_error": max(error(k) for k in ("points", "outputs", "z_vals", "weights"))}


def _add_train(p: argparse.ArgumentParser) -> None:
    from engine.core.config import settable_fields
    from engine.portrait.semantic_gan import SemanticGanConfig
    from engine.portrait.semantic_training import SemanticTrainConfig

    add_config_arguments(p, SemanticTrainConfig, help_prefix="synthetic heads: ")
    p.add_argument("--data", default=argparse.SUPPRESS, help="train adversarially on the real portraits in this "
                   "folder (photos, dataset.json with their EG3D camera labels, labels/ with their label maps) "
                   "instead of on synthetic heads")
    shared = tuple(f.name for f, _ in settable_fields(SemanticTrainConfig))
    add_config_arguments(p, SemanticGanConfig, skip=(*shared, "data"), help_prefix="real portraits (--data): ")


def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, required=True, help="the face (a synthetic head's seed)")
    _add_views(p)
    _add_generator(p)


def _add_swap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face", required=True, help="the face edited: a synthetic head's seed, or a face folder from "
                   "invert / paint")
    p.add_argument("--donor", required=True, help="the face whose look (or shape) the group takes: a seed or a face "
                   "folder")
    p.add_argument("--group", required=True, help="background, hair, face or garment")
    p.add_argument("--take", default="look", choices=("look", "shape", "both"),
                   help="what the group takes from the donor: its look (appearance latent), its shape (the geometry "
                   "repainted to the donor's maps from three views) or both")
    p.add_argument("--steps", type=int, default=50, help="optimisation steps of a shape transfer")
    _add_views(p)
    _add_generator(p)


def _add_paint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=None, help="the face to paint (a synthetic head's seed) ...")
    p.add_argument("--face", default=None, help="... or a face folder from portrait semantic invert / paint")
    p.add_argument("--mask", required=True, help="the painted semantic map: a square PNG in the groups' colours "
                   "(as sample writes maps) or of group ids 0-3 (background, hair, face, garment)")
    p.add_argument("--yaw", type=float, default=0.0, help="the view the mask was painted in (degrees)")
    p.add_argument("--pitch", type=float, default=0.0, help="(degrees)")
    p.add_argument("--steps", type=int, default=50, help="optimisation steps")
    _add_views(p)
    _add_generator(p)


def _add_invert(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="the portrait photo (aligned as every portrait engine aligns "
                   "photos; a 512² crop without landmarks is taken as aligned)")
    p.add_argument("--labels", default=None, help="its face-parsing label map (a PNG of 19-class ids, the "
                   "photo's size) ...")
    p.add_argument("--face-parser", default=None, help="... or a face-parsing model that makes one: BiSeNet's "
                   "weights file (face-parsing.PyTorch's 79999_iter.pth, a local file)")
    p.add_argument("--label-order", default="celebamask", choices=("celebamask", "bisenet"),
                   help="the label map's order: CelebAMask-HQ's (2 = nose, 13 = hair) or BiSeNet face-parsing's "
                   "(2 = left brow, 17 = hair)")
    p.add_argument("--landmarks", default=None, help="its five landmarks (default: detections/NAME.txt beside the "
                   "photo, else the built-in detector)")
    p.add_argument("--steps", type=int, default=50, help="optimisation steps (latents, then styles)")
    p.add_argument("--tune-steps", type=int, default=0, help="then steps tuning the generator around them (pivotal "
                   "tuning)")
    _add_views(p)
    _add_generator(p)


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heads", type=int, default=16, help="held-out heads (each seen from four views)")
    p.add_argument("--edit-heads", type=int, default=4, help="held-out heads painted and inverted (0 leaves "
                   "painting and inversion out)")
    p.add_argument("--gram-golden", default=str(Path(__file__).resolve().parents[3] / "shared" / "fixtures" /
                                               "gram-golden"),
                   help="GRAM's golden fixture, to report its errors (left out when absent)")
    p.add_argument("--report", default=None, help="also write the figures to this JSON file")
    _add_generator(p)


COMMANDS = {
    "train": ("train the SemFaceEdit generator: on synthetic heads (the embedded recipe), or adversarially on real "
              "portraits with --data DIR (the paper's GPU path); a stopped run in --out resumes", _add_train,
              cmd_train),
    "sample": ("render a face's views and semantic maps", _add_sample, cmd_sample),
    "swap": ("give one semantic group of a face another face's look or shape; the rest stays as it was", _add_swap,
             cmd_swap),
    "paint": ("edit a face's shape by painting its semantic map: the geometry follows in 3D, the rest stays",
              _add_paint, cmd_paint),
    "invert": ("find a portrait photo (with its label map) in the generator, so every edit applies to it",
               _add_invert, cmd_invert),
    "bench": ("the embedded generator's figures against synthetic ground truth: reconstruction, appearance swaps",
              _add_bench, cmd_bench),
}
"""``portrait semantic``'s subcommands: summary, the function adding its flags, the one running it"""


add_semantic, cmd_semantic = subcommands(COMMANDS, "semantic_command")
"""``portrait semantic``'s flags, and running the subcommand given"""


__all__ = ["COMMANDS", "SUMMARY", "add_semantic", "cmd_semantic"]
