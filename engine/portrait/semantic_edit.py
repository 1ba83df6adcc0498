"""Editing with SemFaceEdit (engine.portrait.semantic) on the embedded generator: sampled faces, appearance swaps of
one semantic group, and the figures measured against synthetic heads' ground truth (``bench_semantic``).

Faces on the embedded path are synthetic heads: face ``seed`` is the head ``HeadParams.from_seed(seed)``, its
latents that head's standardised parameters, so every render has an exact ground truth to score against.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from engine.core.errors import UserInputError
from engine.core.metrics import psnr
from engine.portrait.cameras import camera_labels
from engine.portrait.heads import PARAM_NAMES, HeadParams, render_heads
from engine.portrait.prior import HELD_OUT_SEED
from engine.portrait.semantic import APPEARANCE_PARAMS, GROUPS, SemanticGenerator
from engine.portrait.semantic_training import VIEW_SIZE, latents_of

GROUP_COLOURS = np.array([[30, 30, 30], [225, 160, 45], [235, 195, 165], [60, 110, 200]], dtype=np.uint8)
"""how a semantic map shows each group (GROUPS order): background, hair, face, garment"""
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


def render_face(generator: SemanticGenerator, z: torch.Tensor, yaw: float, pitch: float,
                size: int = VIEW_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, coloured semantic map), uint8 (size, size, 3) each, of latent vector z (1, 36) from (yaw, pitch)."""
    from engine.core.imaging import to_uint8

    with torch.no_grad():
        out = generator.render(generator.styles(latents_of(z)), torch.from_numpy(camera_labels(yaw, pitch)).float(),
                               size)
    return to_uint8(out["rgb"][0].permute(1, 2, 0)), colour_labels(out["semantic"][0].argmax(0))


def write_views(generator: SemanticGenerator, z: torch.Tensor, out: Path, yaws: list[float], prefix: str,
                size: int) -> list[Path]:
    """Write ``prefix``_yawY.png and ``prefix``_yawY_semantic.png for each yaw; returns the files."""
    from engine.core.imaging import write_png

    written = []
    for yaw in yaws:
        rgb, labels = render_face(generator, z, yaw, 0.0, size)
        written.append(write_png(out / f"{prefix}_yaw{yaw:+.0f}.png", rgb))
        written.append(write_png(out / f"{prefix}_yaw{yaw:+.0f}_semantic.png", labels))
    return written


__all__ = ["GROUP_COLOURS", "bench_semantic", "colour_labels", "face_z", "group_index", "mean_iou", "render_face",
           "swapped_z", "with_donor_group", "write_views"]
