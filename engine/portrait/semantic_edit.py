"""Editing with SemFaceEdit (engine.portrait.semantic): appearance swaps of one group, mask painting (the geometry's
W+ styles optimised to a painted map) and shape transfer, inversion of a photo (its label map, one painted over
it, or a face-parsing model's), faces saved as folders, views, orbit videos and meshes with each vertex's group,
the Semantic page's session (``SemanticSession``), and the figures measured against synthetic heads' ground
truth (``bench_semantic``, ``bench_paint``, ``bench_invert``).

Faces on the embedded path are synthetic heads: face ``seed`` is the head ``HeadParams.from_seed(seed)``, its
latents that head's standardised parameters, so every render has an exact ground truth to score against.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.core.errors import UserInputError
from engine.core.imaging import to_uint8
from engine.core.jobs import CancelToken
from engine.core.meshes import Mesh, write_mesh
from engine.core.metrics import psnr
from engine.portrait.cameras import camera_labels
from engine.portrait.heads import PARAM_COUNT, PARAM_NAMES, HeadParams, render_heads
from engine.portrait.prior import HELD_OUT_SEED
from engine.portrait.semantic import (APPEARANCE_PARAMS, GROUP_COLOURS, GROUPS, LABEL_ORDERS, SemanticGenerator, Styles,
                                      group_table)
from engine.portrait.semantic_training import VIEW_SIZE, latents_of

FACE_FILE = "face.safetensors"
"""a face found by inversion (or edited): its styles, one tensor each"""
BENCH_YAWS, BENCH_PITCHES = (-30.0, -10.0, 10.0, 30.0), (0.0, 5.0, -5.0, 0.0)
"""the views every face of the benchmark is seen from"""


def group_index(name: str) -> int:
    """The id of a semantic group by name; a UserInputError listing the groups otherwise."""
    if name not in GROUPS:
        raise UserInputError(f"unknown semantic group {name!r}: the groups are {', '.join(GROUPS)}")
    return GROUPS.index(name)


def colour_labels(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """A label map (H, W) of group ids as an RGB image (H, W, 3) uint8."""
    return GROUP_COLOURS[np.asarray(labels, dtype=np.int64)]


def face_z(seed: int) -> torch.Tensor:
    """The latent vector (1, 36) of face ``seed``: synthetic head ``seed``'s standardised parameters."""
    return torch.from_numpy(HeadParams.from_seed(seed).standardised()).float()[None]


def with_donor_group(head: HeadParams, donor: HeadParams, group: str) -> HeadParams:
    """``head`` with ``donor``'s appearance parameters for ``group``: the ground truth of a swap."""
    values = head.to_vector()
    for name in APPEARANCE_PARAMS[group]:
        values[PARAM_NAMES.index(name)] = donor.to_vector()[PARAM_NAMES.index(name)]
    return HeadParams.from_vector(values)


def swapped_z(z: torch.Tensor, donor: torch.Tensor, group: str) -> torch.Tensor:
    """Latent vectors (B, 36) with ``donor``'s appearance latent for ``group``."""
    out = z.clone()
    columns = [PARAM_NAMES.index(name) for name in APPEARANCE_PARAMS[group]]
    out[:, columns] = donor[:, columns]
    return out


def mean_iou(predicted: torch.Tensor, truth: torch.Tensor, classes: int = len(GROUPS)) -> float:
    """Mean over classes of the intersection over union of two label maps (pooled over all their pixels);
    classes absent from both are left out."""
    scores = []
    for k in range(classes):
        union = ((predicted == k) | (truth == k)).sum()
        if union > 0:
            scores.append(float(((predicted == k) & (truth == k)).sum() / union))
    return statistics.fmean(scores)


@torch.no_grad()
def bench_semantic(generator: SemanticGenerator, heads: int = 16) -> dict:
    """The embedded path's figures on held-out heads at 64²: reconstruction (PSNR, mIoU over the groups) from four
    views, and appearance swaps of each group (a head gets the next head's latent for it): the worst group's mean
    change outside the group, the PSNR inside it against the head re-rendered with the donor's parameters, and
    the seconds one swap takes to render at 64² (the geometry pass reused, as the editor reuses it)."""
    c = torch.from_numpy(camera_labels(np.array(BENCH_YAWS), np.array(BENCH_PITCHES))).float()
    views = len(c)
    faces = [HeadParams.from_seed(HELD_OUT_SEED + k) for k in range(heads + 1)]
    scores: dict[str, list[float]] = {"psnr": []}
    labels_pred, labels_true = [], []
    outside: dict[str, list[float]] = {g: [] for g in GROUPS}
    inside: dict[str, list[float]] = {g: [] for g in GROUPS}
    seconds = []
    for k in range(heads):
        truth = render_heads([faces[k]] * views, c.numpy(), VIEW_SIZE)
        z = face_z(HELD_OUT_SEED + k).expand(views, -1)
        plain = generator.render(generator.styles(latents_of(z)), c, VIEW_SIZE)
        truth_rgb = torch.from_numpy(truth.rgb).permute(0, 3, 1, 2)
        scores["psnr"] += [psnr(plain["rgb"][v], truth_rgb[v]) for v in range(views)]
        predicted = plain["semantic"].argmax(1)
        labels_pred.append(predicted)
        labels_true.append(torch.from_numpy(truth.labels_group.astype(np.int64)))
        donor_z = face_z(HELD_OUT_SEED + k + 1).expand(views, -1)
        for group in GROUPS:
            start = time.perf_counter()
            swapped = generator.render(generator.styles(latents_of(swapped_z(z, donor_z, group))), c, VIEW_SIZE,
                                       geometry=plain["rays"])
            seconds.append((time.perf_counter() - start) / views)
            change = (swapped["rgb"] - plain["rgb"]).abs()
            away = (predicted != GROUPS.index(group))[:, None].expand_as(change)
            outside[group].append(float(change[away].mean()) if away.any() else 0.0)
            target = render_heads([with_donor_group(faces[k], faces[k + 1], group)] * views, c.numpy(), VIEW_SIZE)
            region = torch.from_numpy(target.labels_group == GROUPS.index(group))
            if region.any():
                wanted = torch.from_numpy(target.rgb).permute(0, 3, 1, 2)
                within = region[:, None].expand_as(wanted)
                inside[group].append(psnr(swapped["rgb"][within], wanted[within]))
    miou = mean_iou(torch.cat(labels_pred), torch.cat(labels_true))
    worst = max(GROUPS, key=lambda g: statistics.fmean(outside[g]))
    return {"reconstruction_psnr": statistics.fmean(scores["psnr"]), "reconstruction_miou": miou,
            "swap_outside_change": statistics.fmean(outside[worst]), "swap_outside_worst_group": worst,
            "swap_inside_psnr": statistics.fmean([v for g in GROUPS for v in inside[g]]),
            "swap_per_group": {g: {"outside_change": statistics.fmean(outside[g]),
                                   "inside_psnr": statistics.fmean(inside[g]) if inside[g] else None} for g in GROUPS},
            "swap_seconds_64": statistics.median(seconds), "bench_heads": heads,
            "bench_views": [list(v) for v in zip(BENCH_YAWS, BENCH_PITCHES)]}


def shifted(styles: tuple[torch.Tensor, torch.Tensor], offset: tuple[torch.Tensor, torch.Tensor]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """W+ styles moved by an offset (each (B, layers, width))."""
    return styles[0] + offset[0], styles[1] + offset[1]


@dataclass
class PaintSettings:
    """How a painted semantic map becomes a 3D geometry edit (an offset of the geometry latent in W+)."""

    steps: int = 50
    """optimisation steps"""
    lr: float = 0.02
    """Adam's learning rate on the offset"""
    keep_weight: float = 1.0
    """weight of keeping the unpainted pixels as they were (their groups and colours)"""
    keep_fraction: float = 0.25
    """share of the unpainted pixels compared at each step (a new random draw each time)"""
    size: int = VIEW_SIZE
    """resolution the painted view is compared at"""


def paint_geometry(generator: SemanticGenerator, styles: Styles, c: torch.Tensor, painted: torch.Tensor,
                   settings: PaintSettings | None = None, cancel: CancelToken | None = None) -> Iterator:
    """Optimise an offset of the geometry's W+ styles (appearance fixed) so the semantic maps rendered from cameras
    c (V, 25) match ``painted`` ((V,) size, size group ids) where they differ from the face's own maps, and stay
    as they were elsewhere (groups and colours).  Each step renders every repainted pixel and ``keep_fraction`` of
    the others.  Yields (step, loss, styles) after each step; the last styles are the edit, seen from every view."""
    from engine.portrait.cameras import rays

    settings = settings or PaintSettings()
    painted = painted.reshape(len(c), -1)
    origins, directions = rays(c.numpy(), settings.size)
    views = []
    for v in range(len(c)):
        with torch.no_grad():
            before = generator.render_rays(styles, origins[v:v + 1, 0], directions[v:v + 1])
        original = before["semantic"][0].argmax(-1)
        changed, kept = (torch.nonzero(test).squeeze(1) for test in (painted[v] != original, painted[v] == original))
        views.append((origins[v:v + 1, 0], directions[v:v + 1], before["rgb"][0], original, painted[v], changed, kept))
    g = torch.Generator().manual_seed(0)
    offset = tuple(torch.zeros_like(s, requires_grad=True) for s in styles.geometry)
    optimizer = torch.optim.Adam(offset, lr=settings.lr)
    for step in range(settings.steps):
        if cancel is not None and cancel.cancelled:
            return
        edited = Styles(shifted(styles.geometry, offset), styles.appearance)
        loss = 0
        for origin, direction, colour, original, wanted, changed, kept in views:
            keep = kept[torch.randperm(len(kept), generator=g)[:max(1, int(settings.keep_fraction * len(kept)))]]
            out = generator.render_rays(edited, origin, direction[:, torch.cat([changed, keep])])
            log_semantic = out["semantic"][0].clamp_min(1e-6).log()
            loss = loss + settings.keep_weight * (F.nll_loss(log_semantic[len(changed):], original[keep])
                                                  + F.mse_loss(out["rgb"][0, len(changed):], colour[keep]))
            if len(changed):
                loss = loss + F.nll_loss(log_semantic[:len(changed)], wanted[changed])
        loss = loss / len(views)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield step + 1, float(loss.detach()), Styles(tuple(s.detach() for s in shifted(styles.geometry, offset)),
                                                     styles.appearance)


TRANSFER_YAWS = (-25.0, 0.0, 25.0)
"""the views a geometry transfer compares"""


def transfer_geometry(generator: SemanticGenerator, styles: Styles, donor: Styles, group: int,
                      settings: PaintSettings | None = None, cancel: CancelToken | None = None) -> Iterator:
    """Give a face another face's shape for one group (e.g. its hair): in each of TRANSFER_YAWS the donor's map is
    painted wherever either face shows the group, the face's own map elsewhere; ``paint_geometry`` then finds the
    geometry that matches all views at once.  Yields what it yields."""
    settings = settings or PaintSettings()
    c = torch.from_numpy(camera_labels(np.array(TRANSFER_YAWS), np.zeros(len(TRANSFER_YAWS)))).float()
    with torch.no_grad():
        own = generator.render(repeated(styles, len(c)), c, settings.size)["semantic"].argmax(1)
        theirs = generator.render(repeated(donor, len(c)), c, settings.size)["semantic"].argmax(1)
    painted = torch.where((own == group) | (theirs == group), theirs, own)
    yield from paint_geometry(generator, styles, c, painted, settings, cancel)


@dataclass
class InvertSettings:
    """How a portrait is inverted into the generator's W / W+ space, then the generator tuned around it."""

    steps: int = 50
    """optimisation steps: the latents for the first half, then the styles themselves (W+)"""
    tune_steps: int = 0
    """pivotal tuning: steps that then fine-tune the generator's weights around the found latents"""
    lr: float = 0.05
    """Adam's learning rate on the latents and styles"""
    tune_lr: float = 0.0003
    """Adam's learning rate when tuning the weights"""
    semantic_weight: float = 0.1
    """weight of the label map's cross-entropy beside the colour L2"""
    size: int = VIEW_SIZE
    """resolution the photo is compared at"""


def _style_list(styles: Styles) -> list[torch.Tensor]:
    return [part for pair in [styles.geometry, *styles.appearance] for part in pair]


def _styles_from(parts: list[torch.Tensor]) -> Styles:
    return Styles((parts[0], parts[1]), [(parts[k], parts[k + 1]) for k in range(2, len(parts), 2)])


def invert(generator: SemanticGenerator, image: torch.Tensor, labels: torch.Tensor, c: torch.Tensor,
           settings: InvertSettings | None = None, cancel: CancelToken | None = None) -> Iterator:
    """Invert a portrait ``image`` (3, size, size) in [0, 1] with its group ``labels`` (size, size) seen from
    camera c (1, 25): first its latents (through the mapping networks, from the average face) for half of the
    steps, then its styles freely, every layer its own (W+); then, with ``tune_steps``, the generator's weights
    tuned around them (pivotal tuning; the generator is changed in place).  Yields (step, loss, styles)."""
    settings = settings or InvertSettings()
    z = torch.zeros(1, PARAM_COUNT, requires_grad=True)
    optimizer = torch.optim.Adam([z], lr=settings.lr)
    target, truth = image.flatten(1).t(), labels.flatten()
    free: list[torch.Tensor] | None = None
    for step in range(settings.steps + settings.tune_steps):
        if cancel is not None and cancel.cancelled:
            return
        if step == settings.steps // 2:  # W+: the styles themselves
            with torch.no_grad():
                free = [part.clone().requires_grad_(True) for part in _style_list(generator.styles(latents_of(z)))]
            optimizer = torch.optim.Adam(free, lr=settings.lr)
        if step == settings.steps and settings.tune_steps:  # pivotal tuning around the found styles
            free = [part.detach() for part in free]
            generator.requires_grad_(True)
            optimizer = torch.optim.Adam(generator.parameters(), lr=settings.tune_lr)
        styles = generator.styles(latents_of(z)) if free is None else _styles_from(free)
        out = generator.render(styles, c, settings.size)
        loss = F.mse_loss(out["rgb"].flatten(2)[0].t(), target) + settings.semantic_weight * F.nll_loss(
            out["semantic"].flatten(2)[0].t().clamp_min(1e-6).log(), truth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield step + 1, float(loss.detach()), _styles_from([part.detach() for part in _style_list(styles)])
    generator.requires_grad_(False)


PAINT_EDITS: dict[str, dict[str, float]] = {
    "longer hair": {"hair_length": 1.2}, "shorter hair": {"hair_length": -1.0}, "fuller hair": {"hair_volume": 0.02},
    "thinner hair": {"hair_volume": -0.015}}
"""the benchmark's painted edits: shape parameters of a head changed, their new maps painted (a mouth's width does
not show in four groups: the mouth is part of the face)"""
SWEEP_YAWS = (-30.0, -15.0, 0.0, 15.0, 30.0)


def repeated(styles: Styles, count: int) -> Styles:
    """One face's styles (batch 1) for ``count`` views at once."""
    grow = lambda pair: tuple(part.expand(count, *part.shape[1:]) for part in pair)  # noqa: E731
    return Styles(grow(styles.geometry), [grow(pair) for pair in styles.appearance])


def changed_head(head: HeadParams, changes: dict[str, float]) -> HeadParams:
    """``head`` with parameters moved by ``changes`` (clipped to their ranges)."""
    from engine.portrait.heads import PARAM_HIGH, PARAM_LOW

    values = head.to_vector()
    for name, delta in changes.items():
        k = PARAM_NAMES.index(name)
        values[k] = np.clip(values[k] + delta, PARAM_LOW[k], PARAM_HIGH[k])
    return HeadParams.from_vector(values)


def bench_paint(generator: SemanticGenerator, heads: int = 4, settings: PaintSettings | None = None) -> dict:
    """Mask painting on held-out heads: the frontal map of the head with a shape parameter changed
    (``PAINT_EDITS``) is painted, the geometry optimised; mIoU of the edited head's maps against the changed head's
    in every view of a yaw sweep ±30° (the mean, the worst view's, and before the edit), the share of the pixels
    the edit changes in those views that the edited head gets right, seconds per edit."""
    settings = settings or PaintSettings()
    front = torch.from_numpy(camera_labels(0.0, 0.0)).float()
    sweep = camera_labels(np.array(SWEEP_YAWS), np.zeros(len(SWEEP_YAWS)))
    after, before, reached, reached_before, seconds = [], [], [], [], []
    for k in range(heads):
        head = HeadParams.from_seed(HELD_OUT_SEED + k)
        styles = generator.styles(latents_of(face_z(HELD_OUT_SEED + k)))
        for changes in PAINT_EDITS.values():
            target = changed_head(head, changes)
            painted = torch.from_numpy(render_heads(target, front.numpy(), settings.size).labels_group[0]).long()
            start = time.perf_counter()
            *_, (_, _, edited) = paint_geometry(generator, styles, front, painted, settings)
            seconds.append(time.perf_counter() - start)
            truth = torch.from_numpy(render_heads([target] * len(sweep), sweep, settings.size).labels_group).long()
            original = torch.from_numpy(render_heads([head] * len(sweep), sweep, settings.size).labels_group).long()
            moved = truth != original  # where the edit changes the map
            with torch.no_grad():
                for found, scores in ((edited, after), (styles, before)):
                    maps = generator.render(repeated(found, len(sweep)), torch.from_numpy(sweep).float(),
                                            settings.size)["semantic"].argmax(1)
                    scores.append([mean_iou(maps[v], truth[v]) for v in range(len(sweep))])
                    if moved.any():
                        (reached if found is edited else reached_before).append(
                            float((maps[moved] == truth[moved]).float().mean()))
    per_view = np.array(after)  # (edits, views)
    return {"paint_miou": float(per_view.mean()), "paint_miou_worst_view": float(per_view.mean(0).min()),
            "paint_miou_before": float(np.mean(before)), "paint_changed_pixels_right": statistics.fmean(reached),
            "paint_changed_pixels_right_before": statistics.fmean(reached_before),
            "paint_seconds": statistics.median(seconds), "paint_steps": settings.steps, "paint_heads": heads,
            "paint_edits": list(PAINT_EDITS), "paint_yaws": list(SWEEP_YAWS)}


def bench_invert(generator: SemanticGenerator, heads: int = 4, settings: InvertSettings | None = None) -> dict:
    """Inversion of held-out heads from their frontal view: mIoU and PSNR there, PSNR at yaw ±30°, seconds."""
    settings = settings or InvertSettings()
    front = torch.from_numpy(camera_labels(0.0, 0.0)).float()
    sides = camera_labels(np.array([-30.0, 30.0]), np.zeros(2))
    miou, psnr_front, psnr_sides, seconds = [], [], [], []
    for k in range(heads):
        head = HeadParams.from_seed(HELD_OUT_SEED + k)
        truth = render_heads(head, front.numpy(), settings.size)
        image = torch.from_numpy(truth.rgb[0]).permute(2, 0, 1)
        labels = torch.from_numpy(truth.labels_group[0]).long()
        start = time.perf_counter()
        *_, (_, _, styles) = invert(generator, image, labels, front, settings)
        seconds.append(time.perf_counter() - start)
        with torch.no_grad():
            out = generator.render(styles, front, settings.size)
            miou.append(mean_iou(out["semantic"].argmax(1)[0], labels))
            psnr_front.append(psnr(out["rgb"][0], image))
            side_truth = torch.from_numpy(render_heads([head] * 2, sides, settings.size).rgb).permute(0, 3, 1, 2)
            side = generator.render(repeated(styles, 2), torch.from_numpy(sides).float(), settings.size)["rgb"]
            psnr_sides += [psnr(side[v], side_truth[v]) for v in range(2)]
    return {"invert_miou_50": statistics.fmean(miou), "invert_psnr_input_view": statistics.fmean(psnr_front),
            "invert_psnr_side_views": statistics.fmean(psnr_sides), "invert_seconds": statistics.median(seconds),
            "invert_steps": settings.steps + settings.tune_steps, "invert_heads": heads}


def read_label_map(path: str | Path, order: str, size: tuple[int, int]) -> np.ndarray:
    """A label PNG of a photo of ``size`` (width, height) as group ids (H, W) uint8: face-parsing labels (19 in
    ``order``, one id per pixel), or a map painted over the photo in the groups' colours (GROUP_COLOURS); a
    UserInputError naming the file and the problem otherwise."""
    from PIL import Image

    if order not in LABEL_ORDERS:
        raise UserInputError(f"unknown label order {order!r}: use {' or '.join(LABEL_ORDERS)}")
    try:
        with Image.open(path) as opened:
            rgb = np.asarray(opened.convert("RGB")) if opened.mode in ("RGB", "RGBA") else None
            colour = rgb is not None and not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all()
            pixels = rgb if colour else np.asarray(opened.convert("L") if opened.mode in ("L", "P", "RGB", "RGBA")
                                                    else opened.convert("I")).astype(np.int64)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: not a readable label image ({exc})") from None
    if (pixels.shape[1], pixels.shape[0]) != tuple(size):
        raise UserInputError(f"{path}: the label map is {pixels.shape[1]}x{pixels.shape[0]}, the photo "
                             f"{size[0]}x{size[1]}; give the photo's own label map")
    if colour:
        return painted_groups(pixels, path)  # a map painted over the photo in the groups' colours
    if pixels.min() < 0 or pixels.max() >= len(LABEL_ORDERS[order]):
        raise UserInputError(f"{path}: label {pixels.max()} is not one of the {len(LABEL_ORDERS[order])} {order} "
                             f"labels (is it a label map, in that order?)")
    return group_table(order).numpy().astype(np.uint8)[pixels]


def painted_groups(pixels: np.ndarray, path: str | Path) -> np.ndarray:
    """Group ids (H, W) uint8 of an image (H, W, 3) painted in the groups' colours; a UserInputError naming the
    first colours that are not a group's."""
    matches = (pixels[:, :, None, :] == GROUP_COLOURS[None, None]).all(-1)
    if not matches.any(-1).all():
        unknown = [tuple(int(v) for v in c) for c in np.unique(pixels[~matches.any(-1)], axis=0)[:3]]
        colours = ", ".join(f"{g} {tuple(c)}" for g, c in zip(GROUPS, GROUP_COLOURS.tolist()))
        raise UserInputError(f"{path}: unknown labels {unknown}: paint with the groups' ids 0-{len(GROUPS) - 1} or "
                             f"colours ({colours})")
    return matches.argmax(-1).astype(np.uint8)


def label_order_hint(path: str | Path, order: str) -> str | None:
    """A warning when a label map looks like the other order: hair is 13 in CelebAMask-HQ's and 17 in BiSeNet's,
    so a map with only the other one's hair id most likely uses the other order."""
    from PIL import Image

    with Image.open(path) as opened:
        ids = set(np.unique(np.asarray(opened.convert("L"))).tolist())
    hair = {name: LABEL_ORDERS[name].index("hair") for name in LABEL_ORDERS}
    other = next(name for name in LABEL_ORDERS if name != order)
    if hair[other] in ids and hair[order] not in ids:
        return (f"{Path(path).name} has label {hair[other]} (hair in the {other} order) but no {hair[order]} (hair "
                f"in the {order} order it was read in): is it a {other} map? (--label-order {other})")
    return None


@dataclass
class PhotoFace:
    """A photo made ready for inversion: its 512² aligned crop, the crop and its group labels at the inversion's
    resolution, and the camera estimated from its landmarks."""

    aligned: np.ndarray
    image: torch.Tensor
    """(3, size, size) in [0, 1]"""
    labels: torch.Tensor
    """(size, size) group ids"""
    camera: torch.Tensor
    """(1, 25) EG3D camera label"""
    pose: tuple[float, float]
    """(yaw, pitch) in degrees"""
    notes: tuple[str, ...]


def photo_face(image: str | Path, labels: str | Path | None, order: str = "celebamask",
               landmarks: str | Path | None = None, size: int = VIEW_SIZE,
               face_parser: str | Path | None = None, painted: np.ndarray | None = None) -> PhotoFace:
    """Align a photo and its label map as every portrait engine aligns photos (a 512² crop with no landmarks is
    taken as aligned, seen frontally), and estimate the camera from the landmarks.  Instead of ``labels``: the
    ``face_parser`` (BiSeNet's weights, engine.portrait.face_parsing) labels the aligned crop, or ``painted``
    holds group ids painted over the aligned crop (any square size)."""
    from PIL import Image

    from engine.portrait.alignment import (OUTPUT, align_face, detections_file, estimate_pose, locate_landmarks,
                                           read_photo)

    if sum(given is not None for given in (labels, face_parser, painted)) != 1:
        raise UserInputError("give the photo's label map (--labels), or a face-parsing model to make one "
                             "(--face-parser, BiSeNet's 79999_iter.pth)")
    photo = read_photo(image)
    height, width = photo.image.shape[:2]
    groups = None if labels is None else read_label_map(labels, order, (width, height))
    hint = None if labels is None else label_order_hint(labels, order)
    notes = photo.notes + ((hint,) if hint else ())
    if (height, width) == (OUTPUT, OUTPUT) and landmarks is None and not detections_file(photo.path).is_file():
        aligned, aligned_labels, pose = photo.image, groups, (0.0, 0.0)
        notes += ("the photo is taken as an aligned crop, seen from the front",)
    else:
        found = locate_landmarks(photo, landmarks)
        aligned = align_face(photo.image, found.points).image
        aligned_labels = None if groups is None else align_face(groups, found.points, labels=True).image
        pose, notes = estimate_pose(found.points, height), notes + found.notes
    if painted is not None:
        aligned_labels = np.asarray(Image.fromarray(np.asarray(painted, dtype=np.uint8)).resize(
            aligned.shape[1::-1], Image.Resampling.NEAREST))
    elif aligned_labels is None:
        from engine.portrait.face_parsing import load_face_parser, parse_face

        parsed = parse_face(load_face_parser(face_parser), aligned)
        aligned_labels = group_table("bisenet").numpy().astype(np.uint8)[parsed]
        notes += (f"the label map was made by the face-parsing model {Path(face_parser).name}",)
    small = torch.from_numpy(np.array(Image.fromarray(aligned).resize((size, size), Image.Resampling.LANCZOS)))
    small_labels = np.asarray(Image.fromarray(aligned_labels).resize((size, size), Image.Resampling.NEAREST))
    return PhotoFace(aligned, small.permute(2, 0, 1).float() / 255, torch.from_numpy(small_labels.astype(np.int64)),
                     torch.from_numpy(camera_labels(*pose)).float(), pose, notes)


def save_face(folder: Path, styles: Styles, about: dict) -> Path:
    """Write a face's styles (face.safetensors) and what made it (face.json) into ``folder``."""
    from safetensors.torch import save_file

    from engine.core.project import atomic_write, write_json

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"style_{k}": part.detach().contiguous() for k, part in enumerate(_style_list(styles))}
    path = atomic_write(folder / FACE_FILE, lambda tmp: save_file(tensors, str(tmp)))
    write_json(folder / "face.json", about)
    return path


def load_face(folder: str | Path, generator: SemanticGenerator) -> Styles:
    """The styles a ``save_face`` folder holds, checked against ``generator``'s sizes."""
    from safetensors.torch import load_file

    from engine.core.errors import CheckpointError

    path = Path(folder) / FACE_FILE
    try:
        tensors = load_file(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserInputError(f"{folder}: not a face folder from portrait semantic invert ({exc})") from None
    expected = _style_list(generator.styles(latents_of(torch.zeros(1, PARAM_COUNT))))
    parts = [tensors.get(f"style_{k}") for k in range(len(expected))]
    if any(p is None or p.shape != e.shape for p, e in zip(parts, expected)) or len(tensors) != len(expected):
        raise CheckpointError(f"{path} holds a face of another generator (its styles do not fit this one)")
    return _styles_from(parts)


def render_styles(generator: SemanticGenerator, styles: Styles, yaw: float, pitch: float,
                  size: int = VIEW_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, coloured semantic map), uint8 (size, size, 3) each, of a face from (yaw, pitch) degrees."""
    with torch.no_grad():
        out = generator.render(styles, torch.from_numpy(camera_labels(yaw, pitch)).float(), size)
    return to_uint8(out["rgb"][0].permute(1, 2, 0)), colour_labels(out["semantic"][0].argmax(0))


def write_views(generator: SemanticGenerator, styles: Styles, out: Path, yaws: list[float], prefix: str,
                size: int) -> list[Path]:
    """Write ``prefix``_yawY.png and ``prefix``_yawY_semantic.png for each yaw; returns the files."""
    from engine.core.imaging import write_png

    written = []
    for yaw in yaws:
        rgb, labels = render_styles(generator, styles, yaw, 0.0, size)
        written.append(write_png(out / f"{prefix}_yaw{yaw:+.0f}.png", rgb))
        written.append(write_png(out / f"{prefix}_yaw{yaw:+.0f}_semantic.png", labels))
    return written


MESH_YAWS = (-30.0, -15.0, 0.0, 15.0, 30.0)
MESH_PITCHES = (-10.0, 0.0, 10.0)
"""the views whose depth maps a face's mesh is fused from (within the range the generator was trained on)"""
MESH_RESOLUTION = 96
MESH_TRUNCATION = 0.04
"""world units: how far behind a depth map's surface a view still speaks for the space"""


@torch.no_grad()
def semantic_mesh(generator: SemanticGenerator, styles: Styles, resolution: int = MESH_RESOLUTION,
                  size: int = 96) -> tuple[Mesh, np.ndarray]:
    """A face's surface as a mesh with vertex colours, and each vertex's group: the depth maps of a sweep of views
    (MESH_YAWS × MESH_PITCHES, background pixels as free space) fused into a truncated signed distance over the
    box (space behind every view's surface is solid), then marching cubes, keeping the surface some view saw; a
    vertex takes the colour and group of the views that see it."""
    from skimage.measure import marching_cubes

    from engine.portrait.cameras import split_label

    yaws, pitches = np.meshgrid(np.array(MESH_YAWS, float), np.array(MESH_PITCHES))
    labels = camera_labels(yaws.ravel(), pitches.ravel())
    out = generator.render(repeated(styles, len(labels)), torch.from_numpy(labels).float(), size)
    c2w, k = (torch.from_numpy(a).float() for a in split_label(labels))
    groups = out["semantic"].argmax(1)
    half = generator.cfg.box / 2
    axis = torch.linspace(-half, half, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)

    def look(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For points (P, 3) in every view: (signed distance to the view's surface along the ray (V, P),
        whether they project into the image (V, P), their pixel index (V, P))."""
        local = torch.einsum("vji,vpj->vpi", c2w[:, :3, :3], points[None] - c2w[:, None, :3, 3])
        u = (k[:, None, 0, 0] * local[..., 0] / local[..., 2] + k[:, None, 0, 2]) * size
        v = (k[:, None, 1, 1] * local[..., 1] / local[..., 2] + k[:, None, 1, 2]) * size
        inside = (u >= 0) & (u < size) & (v >= 0) & (v < size) & (local[..., 2] > 0)
        pixel = v.long().clamp(0, size - 1) * size + u.long().clamp(0, size - 1)
        surface = torch.gather(out["depth"].flatten(1), 1, pixel)
        empty = torch.gather(groups.flatten(1), 1, pixel) == GROUPS.index("background")
        distance = torch.where(empty, torch.full_like(surface, 10.0), surface) - local.norm(dim=-1)
        return distance, inside, pixel

    distance, inside, _ = look(grid)
    speaks = inside & (distance > -MESH_TRUNCATION)
    tsdf = (distance.clamp(max=MESH_TRUNCATION) * speaks).sum(0) / speaks.sum(0).clamp_min(1)
    hidden = torch.where(inside.any(0), -MESH_TRUNCATION, MESH_TRUNCATION)  # behind every surface: solid
    tsdf = torch.where(speaks.any(0), tsdf, hidden)
    volume = tsdf.reshape(resolution, resolution, resolution).numpy()
    if not volume.min() < 0 < volume.max():
        raise UserInputError("the face has no surface inside the box to mesh")
    spacing = generator.cfg.box / (resolution - 1)
    vertices, faces, _, _ = marching_cubes(volume, 0.0, spacing=(spacing,) * 3)
    distance, inside, _ = look(torch.from_numpy(vertices - half).float())
    observed = ((distance.abs() < 2 * spacing) & inside).any(0).numpy()
    faces = faces[observed[faces].all(1)]  # surfaces no view saw (the solid's back and sides) are left out
    if not len(faces):
        raise UserInputError("no view of the face sees a surface to mesh")
    kept = np.unique(faces)
    faces = np.searchsorted(kept, faces)
    vertices = torch.from_numpy(vertices[kept] - half).float()
    distance, inside, pixel = look(vertices)
    seen = (inside & (distance.abs() < 2 * spacing)).float()
    weight = seen / seen.sum(0, keepdim=True).clamp_min(1)
    rgb = torch.einsum("vp,vcp->pc", weight, torch.gather(out["rgb"].flatten(2), 2, pixel[:, None].expand(-1, 3, -1)))
    votes = torch.zeros(len(vertices), len(GROUPS)).index_add_(
        0, torch.arange(len(vertices)).repeat(len(labels)), torch.nn.functional.one_hot(
            torch.gather(groups.flatten(1), 1, pixel).flatten(), len(GROUPS)).float() * weight.flatten()[:, None])
    mesh = Mesh(vertices.double().numpy(), np.ascontiguousarray(faces[:, ::-1], dtype=np.int64), to_uint8(rgb))
    return mesh, votes.argmax(1).numpy().astype(np.uint8)


def write_outputs(generator: SemanticGenerator, styles: Styles, out: Path, prefix: str, video: bool, mesh: bool,
                  frames: int = 48, size: int = 128) -> list[Path]:
    """On request, ``prefix``_orbit.mp4 (the face swinging over yaw ±30°, colour beside its semantic map) and
    ``prefix``_mesh.ply (vertex colours and each vertex's group as a ``label`` property) + ``prefix``_mesh.glb."""
    from engine.core.imaging import write_frames
    from engine.core.meshes import write_ply

    written = []
    if video:
        yaws = 30 * np.sin(np.linspace(0, 2 * np.pi, frames, endpoint=False))
        pictures = (np.concatenate(render_styles(generator, styles, float(y), 0.0, size), 1) for y in yaws)
        written.append(write_frames(pictures, out / f"{prefix}_orbit.mp4", fps=24))
    if mesh:
        surface, groups = semantic_mesh(generator, styles)
        written.append(write_ply(out / f"{prefix}_mesh.ply", surface.vertices, surface.colours, surface.faces,
                                 {"label": groups}))
        written.append(write_mesh(surface, out / f"{prefix}_mesh.glb"))
    return written


class SemanticSession:
    """One face being edited, as the Semantic panel holds it: the generator and the face's styles, replaced as a
    whole by every edit (so an undo step is a styles object)."""

    def __init__(self, generator: SemanticGenerator) -> None:
        self.generator = generator
        self.styles: Styles | None = None

    def seed_styles(self, seed: int) -> Styles:
        """Face ``seed``'s styles (a synthetic head's standardised parameters through the mapping networks)."""
        with torch.no_grad():
            return self.generator.styles(latents_of(face_z(seed)))

    def taking(self, group: int, donor: Styles, shape: bool = False, settings: PaintSettings | None = None,
               cancel: CancelToken | None = None, look: bool = True) -> Iterator:
        """The current face with ``donor``'s look for ``group`` (its appearance styles; unless not ``look``); with
        ``shape``, its shape too (``transfer_geometry``).  Yields (step, loss, styles); the last are the result."""
        looked = self.styles.with_look(group, donor) if look else self.styles
        yield 0, 0.0, looked
        if shape:
            yield from transfer_geometry(self.generator, looked, donor, group, settings, cancel)

    def render(self, yaw: float, pitch: float, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 (size, size, 3), group ids (size, size) uint8) of the face from (yaw, pitch)."""
        with torch.no_grad():
            out = self.generator.render(self.styles, torch.from_numpy(camera_labels(yaw, pitch)).float(), size)
        return to_uint8(out["rgb"][0].permute(1, 2, 0)), out["semantic"][0].argmax(0).byte().numpy()

    def painting(self, painted: np.ndarray, yaw: float, pitch: float, settings: PaintSettings | None = None,
                 cancel: CancelToken | None = None) -> Iterator:
        """``paint_geometry`` of the face for a map painted (any square size) in view (yaw, pitch)."""
        from PIL import Image

        settings = settings or PaintSettings()
        small = Image.fromarray(np.asarray(painted, dtype=np.uint8)).resize((settings.size,) * 2,
                                                                            Image.Resampling.NEAREST)
        wanted = torch.from_numpy(np.asarray(small).astype(np.int64))
        c = torch.from_numpy(camera_labels(yaw, pitch)).float()
        yield from paint_geometry(self.generator, self.styles, c, wanted, settings, cancel)


def read_painted_mask(path: str | Path, size: int) -> torch.Tensor:
    """A painted semantic map (a square PNG in the groups' colours, as ``portrait semantic sample`` writes maps, or
    of group ids 0-3) as group ids (size, size), resized by nearest neighbour; a UserInputError naming the file and
    the problem otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            grey = opened.mode in ("L", "P", "I", "I;16")
            pixels = np.asarray(opened.convert("L" if grey else "RGB"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: not a readable image ({exc})") from None
    if pixels.shape[0] != pixels.shape[1]:
        raise UserInputError(f"{path}: the painted mask is {pixels.shape[1]}x{pixels.shape[0]}; paint over a square "
                             "semantic map, as portrait semantic sample writes them")
    if grey:
        labels = pixels.astype(np.int64)
        unknown = sorted(set(np.unique(labels).tolist()) - set(range(len(GROUPS))))
        if unknown:
            raise UserInputError(f"{path}: unknown labels {unknown}: paint with the groups' ids 0-{len(GROUPS) - 1} "
                                 "or their colours")
    else:
        labels = painted_groups(pixels, path)
    resized = Image.fromarray(labels.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(resized).astype(np.int64))


__all__ = ["InvertSettings", "PaintSettings", "PhotoFace", "SemanticSession", "bench_invert", "bench_paint",
           "bench_semantic", "colour_labels", "face_z", "group_index", "invert", "load_face", "mean_iou",
           "paint_geometry", "photo_face", "read_label_map", "read_painted_mask", "render_styles", "save_face",
           "semantic_mesh", "swapped_z", "transfer_geometry", "with_donor_group", "write_outputs", "write_views"]
