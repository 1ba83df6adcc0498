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
from engine.portrait import semantic_cli, style_cli

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
    from engine.core.machine import write_report

    write_report(args.report, report)
    return 0


def _add_bench_3dpe(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default=None, help="a trained embedded encoder folder (default: the shipped one)")
    p.add_argument("--prior", default=None, help="the prior it renders through (default: the embedded one)")
    p.add_argument("--heads", type=int, default=16, help="held-out heads (each seen at yaw 0, ±15, ±30)")
    p.add_argument("--photos", default=None, help="folder of in-the-wild photos with detections/NAME.txt: the "
                   "built-in detector's landmark error against them (e.g. ../shared/data/portraits/in-the-wild)")
    p.add_argument("--editor", default=None, help="the distilled editor folder (default: the shipped one)")
    p.add_argument("--edit-heads", type=int, default=16, help="held-out heads for the edit figures")
    p.add_argument("--adapt-minutes", type=float, default=5.0, help="adaptation budget (0 leaves adaptation out)")
    p.add_argument("--skip-official", action="store_true", help="leave out the official network's CPU timing")
    p.add_argument("--report", default=None, help="also write the figures to this JSON file")


def _add_edit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="the photo (an EG3D-aligned 512² crop is used as is)")
    p.add_argument("--landmarks", default=None, help="its five landmarks (default: detections/NAME.txt beside it, "
                   "else the built-in face detector)")
    _add_edit_settings(p)
    p.add_argument("--out", required=True, help="folder for aligned.png, edited.png, view_*.png, orbit.mp4, mesh.*")
    p.add_argument("--views", type=int, default=4, help="novel views over yaw ±30° (default 4)")
    p.add_argument("--video", action="store_true", help="also write an orbit video (orbit.mp4)")
    p.add_argument("--orbit-frames", type=int, default=48, help="frames of the orbit video, 24 a second (default 48)")
    p.add_argument("--mesh", action="store_true", help="also write a mesh with vertex colours (mesh.ply, mesh.glb)")


def _add_edit_settings(p: argparse.ArgumentParser) -> None:
    """The flags a photo's and a video's edit share: the prompt, the network and the strength."""
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the edit in words (embedded: the portrait vocabulary, e.g. 'blond hair', "
                        "'make it a bronze statue'; official: any instruction, turned into a reference by "
                        "InstructPix2Pix)")
    prompt.add_argument("--reference", help="or an image of the edit (another face in the wanted style)")
    p.add_argument("--model", default="embedded", help="'embedded' (offline, CPU) or the path of the official 3dpe.pt")
    p.add_argument("--editor", default=None, help="embedded: the editor folder (default: yours from adaptation if "
                   "any, else the shipped one)")
    p.add_argument("--strength", type=float, default=1.0, help="0 = the plain reconstruction, 1 = the edit "
                   "(default 1)")
    p.add_argument("--ip2p-model", default="timbrooks/instruct-pix2pix", help="official path with a text prompt: "
                   "the InstructPix2Pix weights (local folder or downloaded hub id)")
    p.add_argument("--device", default="auto", help="official path: auto, cpu or cuda")


def cmd_edit(args: argparse.Namespace) -> int:
    """Edit one photo with 3DPE and write the results."""
    from engine.core.jobs import CancelToken, run_and_list
    from engine.portrait.editing import PortraitEditRequest, portrait_edit_job

    request = PortraitEditRequest(image=args.image, out=args.out, prompt=args.prompt, reference=args.reference,
                                  landmarks=args.landmarks, model=args.model, editor=args.editor,
                                  strength=args.strength, views=args.views, video=args.video,
                                  orbit_frames=args.orbit_frames, mesh=args.mesh,
                                  ip2p_model=args.ip2p_model, device=args.device)
    return run_and_list(portrait_edit_job(request, CancelToken()))


def _add_edit_video(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", required=True, help="the talking-head video (any format ffmpeg reads)")
    _add_edit_settings(p)
    p.add_argument("--out", required=True, help="folder for aligned.mp4, input_view.mp4, novel_view.mp4 and frames/ "
                   "(a stopped run there resumes)")
    p.add_argument("--smoothing", type=float, default=0.6, help="how much of the previous frame's landmarks each "
                   "frame keeps, in [0, 1): steadier crops, slower to follow (default 0.6)")
    p.add_argument("--sweep-seconds", type=float, default=4.0, help="seconds of video for the novel view to sweep "
                   "yaw ±30° and back (default 4)")
    p.add_argument("--max-frames", type=int, default=None, help="edit only the first frames")


def cmd_edit_video(args: argparse.Namespace) -> int:
    """Edit a talking-head video frame by frame with 3DPE and write it from the input view and a moving view."""
    from engine.core.jobs import CancelToken, run_and_list
    from engine.portrait.video_edit import PortraitVideoRequest, portrait_video_job

    request = PortraitVideoRequest(video=args.video, out=args.out, prompt=args.prompt, reference=args.reference,
                                   model=args.model, editor=args.editor, strength=args.strength,
                                   smoothing=args.smoothing, sweep_seconds=args.sweep_seconds,
                                   max_frames=args.max_frames, ip2p_model=args.ip2p_model, device=args.device)
    return run_and_list(portrait_video_job(request, CancelToken()))


def official_edit_seconds(device: str = "cpu", repeats: int = 3) -> float:
    """Seconds for one edit (encode + render) of the official network at 512² on ``device``, the fastest of
    ``repeats`` after a warm-up; its weights do not change the time, so fresh ones are used."""
    import time

    import torch

    from engine.portrait.cameras import camera_labels
    from engine.portrait.threedpe import ThreeDPE

    net = ThreeDPE().to(device)
    image, reference = torch.zeros(1, 3, 512, 512, device=device), torch.zeros(1, 3, 224, 224, device=device)
    c = torch.from_numpy(camera_labels(0.0, 0.0)).to(device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            net.render(net.encode(image, reference), c)["image"].cpu()
            times.append(time.perf_counter() - start)
    return min(times[1:])


def _landmark_error_median(folder: Path) -> float:
    """Median error of the built-in detector's landmarks on the photos of ``folder`` (fraction of the IOD)."""
    import statistics

    import numpy as np

    from engine.portrait.alignment import read_photo
    from engine.portrait.mtcnn import landmark_error, load_mtcnn

    detector = load_mtcnn()
    errors = []
    for photo in sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        faces = detector.detect(read_photo(photo).image)
        reference = np.loadtxt(folder / "detections" / f"{photo.stem}.txt").reshape(5, 2)
        errors.append(landmark_error(faces[0].landmarks, reference) if faces else float("inf"))
    if not errors:
        raise UserInputError(f"{folder}: no photos (.jpg, .png) to measure the landmarks on")
    return statistics.median(errors)


def cmd_bench_3dpe(args) -> int:
    """3DPE's embedded path measured on held-out synthetic heads (see engine.portrait.live3d)."""
    from engine.portrait.live3d import bench_reconstruction, bench_speed, load_encoder
    from engine.portrait.prior import load_prior

    encoder, prior = load_encoder(args.encoder), load_prior(args.prior)
    report = {**bench_reconstruction(encoder, prior, heads=args.heads), **bench_speed(encoder, prior)}
    print(f"reconstruction of {args.heads} held-out heads at yaw 0, ±15, ±30 (64²): PSNR "
          f"{report['reconstruction_psnr']:.2f} dB (input view {report['reconstruction_psnr_input_view']:.2f}, "
          f"face region {report['reconstruction_face_psnr']:.2f}); encoding {report['encode_ms']:.1f} ms, "
          f"{report['fps_cached_64']:.1f} frames/s from cached planes")
    from engine.portrait.distill import EDITOR_DIR, bench_edit_speed, bench_editing, load_editor

    editor = load_editor(args.editor or EDITOR_DIR, encoder=args.encoder)
    report["edit_ms"] = bench_edit_speed(editor)
    editing = bench_editing(editor, prior, heads=args.edit_heads)
    report.update(editing)
    print(f"edits of {args.edit_heads} held-out heads x {len(editing['per_edit'])} edits: fidelity "
          f"{editing['fidelity_psnr']:.2f} dB against the 3D ground truth, '2D edit then reconstruct' "
          f"{editing['baseline_psnr']:.2f} dB; held-out phrasings {editing['heldout_phrasing_gap_db']:+.2f} dB from "
          f"trained ones; change outside the edited group {255 * editing['outside_change']:.2f}/255; one edit "
          f"{report['edit_ms']:.1f} ms")
    if args.adapt_minutes > 0:
        from engine.portrait.adapt import bench_adaptation

        report.update(bench_adaptation(minutes=args.adapt_minutes, editor=args.editor or str(EDITOR_DIR)))
        curve = ", ".join(f"{p['minutes']:g} min {p['fidelity_psnr']:.2f} dB" for p in report["adapt_curve"])
        print(f"adaptation to {report['adapt_style']!r} from {report['adapt_pairs']} pairs: {curve}")
    if not args.skip_official:
        report["official_cpu_seconds_512"] = official_edit_seconds()
        print(f"official network, one edit at 512² on this CPU: {report['official_cpu_seconds_512']:.1f} s")
        import torch

        if torch.cuda.is_available():
            report["official_cuda_ms_512"] = 1000 * official_edit_seconds("cuda", repeats=20)
            print(f"official network, one edit at 512² on {torch.cuda.get_device_name()}: "
                  f"{report['official_cuda_ms_512']:.0f} ms")
    if args.photos:
        report["landmark_error_median"] = _landmark_error_median(Path(args.photos))
        print(f"built-in detector: median landmark error {report['landmark_error_median']:.4f} of the inter-ocular "
              f"distance")
    from engine.core.machine import write_report

    write_report(args.report, report)
    return 0


TOOLS = {
    "semantic": (semantic_cli.SUMMARY, semantic_cli.add_semantic, semantic_cli.cmd_semantic),
    "style": (style_cli.SUMMARY, style_cli.add_style, style_cli.cmd_style),
    "edit": ("edit a portrait photo in 3D from a text prompt or a reference image (3DPE): edited image, novel views, "
             "orbit video, mesh", _add_edit, cmd_edit),
    "edit-video": ("edit a talking-head video frame by frame (3DPE): the edit from the input view and from a moving "
                   "novel view", _add_edit_video, cmd_edit_video),
    "align": ("crop a portrait photo the way EG3D's in-the-wild preprocessing does (512², from five landmarks)",
              _add_align, cmd_align),
    "import-eg3d": ("convert an EG3D checkpoint (.pkl, .pth, .safetensors) once to safetensors + JSON for fast, "
                    "safe loading", _add_import, cmd_import),
    "bench-prior": ("quality of the portrait prior on held-out heads and views at 64², and its frame rate from "
                    "cached triplanes", _add_bench_prior, cmd_bench_prior),
    "bench-3dpe": ("3DPE's figures: reconstruction of held-out heads by the embedded encoder, its speed, the official "
                   "network's CPU time per edit, the detector's landmark agreement", _add_bench_3dpe, cmd_bench_3dpe),
}
"""the ``portrait`` subcommands that are not methods: each one's summary, the function adding its flags and the
one running it"""
