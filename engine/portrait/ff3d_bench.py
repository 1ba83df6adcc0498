"""FF3D's figures on the embedded path (``python main.py portrait style bench``), against synthetic ground truth.

For each style of the offline vocabulary measured: a set (``BENCH_IDENTITIES`` heads × ``BENCH_GRID`` views) is
built with the offline editor (per-view variation on) and I2T fine-tuned on it, timed together; then on held-out
heads (never in a set or in pre-training) seen from 9 views (yaw −30, 0, 30 × pitch −20, 0, 20):
* the style's 3D ground truth: the style applied without variation to the true renders of the head (styles
  applied at 128², compared at 64², the prior's neural rendering resolution);
* FF3D: the fine-tuned I2T given the prior's frontal render of the head, its planes rendered from each view;
* the set's own per-view edits (the baseline without I2T): each view rendered by the prior and stylised
  like a set view, independently;
* the set's consensus: each of those views stylised with ``CONSENSUS_SEEDS`` seeds and the per-pixel median
  taken (what an L1 fit of many disagreeing edits converges to): what fitting such a set reaches in 2D on this
  prior, whose renders lack detail of the truth's, with edits whose clamped colours do not average to the style;
* ablations fine-tuned on the same set for the same time: from random weights (no pre-training), a vector
  w_s, and the frozen backbone with two modulation layers (without I2T);
* mixing the first two styles at α = 0.5.
Multi-view consistency is the spread (standard deviation) of a head's PSNR over its 9 views, averaged.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.core.jobs import CancelToken, run_job
from engine.core.metrics import psnr
from engine.editors.offline import LUMA_WEIGHTS, OfflineEditor, apply_edit, resolve
from engine.portrait.cameras import camera_labels
from engine.portrait.ff3d_style import (BuildSetConfig, StyleModel, StyleTrainConfig, build_set_job, load_style,
                                        prior_views, render_cameras, sampled_head, train_style_job)
from engine.portrait.heads import HeadParams, render_heads
from engine.portrait.prior import HELD_OUT_SEED, load_prior

BENCH_STYLES = ("bronze statue", "pencil sketch", "sepia", "cartoon")
"""the offline vocabulary's styles measured by default (none is seen in pre-training, which sees plain heads)"""
BENCH_IDENTITIES = 8
BENCH_GRID = "7x7"
"""each style's set: the default set's ~400 views (4 heads × (10 × 10 + 1)) spread over twice the heads, which
generalises better in the same minutes (bronze on the held-out heads, one-off runs: 24.59 and 24.04 dB with 8 heads
× (7 × 7 + 1), 23.90 and 23.92 dB with 4 × (10 × 10 + 1), 24.19 dB with 16 × (5 × 5 + 1)) and builds as fast"""
EVAL_YAWS = (-30.0, 0.0, 30.0)
EVAL_PITCHES = (-20.0, 0.0, 20.0)
SET_SEED = 500_000_000
"""the bench's set identities' seeds start here (clear of pre-training's first heads and of held-out seeds)"""
CONSENSUS_SEEDS = 15
"""edits per view whose per-pixel median is the set's consensus (odd: the median is one of them)"""
STYLE_SIZE = 128
"""styles are applied at this side (the prior's output), then compared at the neural rendering resolution"""


@dataclasses.dataclass
class HeldOut:
    """One held-out head: its frontal input, and per view its ground truth in the style and the set-like edit."""

    seed: int
    image: torch.Tensor
    backbone: torch.Tensor
    """the prior's planes of the head (what I2T is pre-trained to give from ``image``)"""
    plain: torch.Tensor
    """(9, 3, R, R): the true renders"""
    truth: dict[str, torch.Tensor]
    """style → (9, 3, R, R)"""
    edits: dict[str, torch.Tensor]
    """style → (9, 3, R, R): the per-view edits"""
    consensus: dict[str, torch.Tensor]
    """style → (9, 3, R, R): the per-pixel median of CONSENSUS_SEEDS per-view edits"""


def eval_cameras() -> torch.Tensor:
    yaw, pitch = np.meshgrid(EVAL_YAWS, EVAL_PITCHES)
    return torch.from_numpy(camera_labels(yaw.ravel(), pitch.ravel())).float()


def _down(images: torch.Tensor, resolution: int) -> torch.Tensor:
    return F.interpolate(images, size=(resolution, resolution), mode="area")


def held_out_heads(prior, styles: tuple[str, ...], heads: int, plane_size: int, variation: float) -> list[HeldOut]:
    """Ground truth, per-view edits and their consensus of ``heads`` held-out heads in every style."""
    c = eval_cameras()
    resolution = prior.neural_rendering_resolution
    editor = OfflineEditor(variation)
    out = []
    for k in range(heads):
        seed = HELD_OUT_SEED + 500 + k
        head = HeadParams.from_seed(seed)
        true_views = torch.from_numpy(render_heads([head] * len(c), c.numpy(), STYLE_SIZE).rgb)  # (V, H, W, 3)
        z = torch.from_numpy(head.standardised()).float()[None]
        sources = list(prior_views(prior, z, c))
        truth, edits, consensus = {}, {}, {}
        for style in styles:
            name = resolve(style)
            truth[style] = _down(torch.stack([apply_edit(name, v).permute(2, 0, 1) for v in true_views]), resolution)
            varied = torch.stack([torch.stack([editor.edit(v, v, name, 1.0, seed * 131 + j + 7919 * k)
                                               for k in range(CONSENSUS_SEEDS)]) for j, v in enumerate(sources)])
            edits[style] = _down(varied[:, 0].permute(0, 3, 1, 2), resolution)
            consensus[style] = _down(varied.median(1).values.permute(0, 3, 1, 2), resolution)
        sampled = sampled_head(prior, seed, plane_size)
        plain = _down(true_views.permute(0, 3, 1, 2), resolution)
        out.append(HeldOut(seed, sampled.image, sampled.backbone, plain, truth, edits, consensus))
    return out


def per_view_psnr(rendered: torch.Tensor, truth: torch.Tensor) -> list[float]:
    return [psnr(rendered[v], truth[v]) for v in range(len(truth))]


def fidelity(model: StyleModel, prior, heads: list[HeldOut], style: str) -> list[list[float]]:
    """Per head, the per-view PSNR of the style's renders against the ground truth."""
    c = eval_cameras()
    resolution = prior.neural_rendering_resolution
    scores = []
    with torch.no_grad():
        for head in heads:
            planes = model.planes(head.image, 0, head.backbone if model.needs_backbone else None)
            scores.append(per_view_psnr(render_cameras(prior, planes, c, resolution), head.truth[style]))
    return scores


def reconstruction_figures(i2t: StyleModel, prior, heads: list[HeldOut]) -> dict:
    """The pre-trained I2T on the held-out heads: its renders against the prior's (from the prior's planes) and
    against the true renders, and the prior's against the true renders (mean PSNR over heads and views)."""
    c = eval_cameras()
    resolution = prior.neural_rendering_resolution
    to_prior, to_truth, prior_to_truth = [], [], []
    with torch.no_grad():
        for head in heads:
            ours = render_cameras(prior, i2t.planes(head.image), c, resolution)
            priors = render_cameras(prior, head.backbone, c, resolution)
            to_prior += per_view_psnr(ours, priors)
            to_truth += per_view_psnr(ours, head.plain)
            prior_to_truth += per_view_psnr(priors, head.plain)
    return {"i2t_psnr_vs_prior": statistics.fmean(to_prior), "i2t_psnr_vs_truth": statistics.fmean(to_truth),
            "prior_psnr_vs_truth": statistics.fmean(prior_to_truth)}


def summary(scores: list[list[float]]) -> tuple[float, float]:
    """(mean PSNR over heads and views, mean over heads of the spread over views)."""
    return (statistics.fmean(v for row in scores for v in row),
            statistics.fmean(statistics.pstdev(row) for row in scores))


def _run(job) -> None:
    run_job(job, lambda event: None)


def mixing_figures(a: StyleModel, b: StyleModel, prior, heads: list[HeldOut], alpha: float = 0.5) -> dict:
    """Mixing two styles at ``alpha``: PSNR of the mix to each endpoint (the lower), between the endpoints, and the
    mix's contrast (standard deviation of luminance) over the endpoints' mean, and over the higher and the lower of
    theirs (a mix between a low- and a high-contrast style may keep the higher one's)."""
    c = eval_cameras()
    resolution = prior.neural_rendering_resolution
    to_a, to_b, between, to_mean, to_higher, to_lower = [], [], [], [], [], []
    contrast = lambda x: float((x * x.new_tensor(LUMA_WEIGHTS)[:, None, None]).sum(-3).std())  # noqa: E731
    with torch.no_grad():
        for head in heads:
            end_a, end_b, mixed = (render_cameras(prior, planes, c, resolution) for planes in (
                a.planes(head.image), b.planes(head.image), a.planes(head.image, mix=(b, 0, alpha))))
            to_a.append(statistics.fmean(per_view_psnr(mixed, end_a)))
            to_b.append(statistics.fmean(per_view_psnr(mixed, end_b)))
            between.append(statistics.fmean(per_view_psnr(end_a, end_b)))
            ends, ours = (contrast(end_a), contrast(end_b)), contrast(mixed)
            to_mean.append(ours / statistics.fmean(ends))
            to_higher.append(ours / max(ends))
            to_lower.append(ours / min(ends))
    return {"mix_to_endpoints_psnr": min(statistics.fmean(to_a), statistics.fmean(to_b)),
            "mix_to_first_psnr": statistics.fmean(to_a), "mix_to_second_psnr": statistics.fmean(to_b),
            "endpoints_psnr": statistics.fmean(between), "mix_contrast_ratio": statistics.fmean(to_mean),
            "mix_contrast_to_higher": statistics.fmean(to_higher), "mix_contrast_to_lower": statistics.fmean(to_lower),
            "mix_alpha": alpha}


def official_step_seconds(steps: int = 3) -> float | None:
    """Seconds per fine-tuning step of I2T at EG3D's full size on this CPU (random weights; EG3D FFHQ 512's
    renderer and 4 views × 1024 rays, 48 + 48 samples), the median of ``steps`` after a warm-up; None without
    the EG3D manifest in ../shared."""
    import ast
    import json

    from engine.portrait.eg3d import build_generator
    from engine.portrait.ff3d import I2T, OFFICIAL_SHAPE
    from engine.portrait.ff3d_style import style_losses

    manifest = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "eg3d_ffhq512-128_manifest.json"
    if not manifest.is_file():
        return None
    kwargs = json.loads(manifest.read_text())["generator_kwargs"]
    kwargs = ast.literal_eval(kwargs) if isinstance(kwargs, str) else kwargs
    generator = build_generator(kwargs).eval().requires_grad_(False)
    generator.neural_rendering_resolution = 128
    i2t = I2T(OFFICIAL_SHAPE)
    optimizer = torch.optim.Adam(i2t.parameters(), lr=0.002, betas=(0.0, 0.99))
    cfg = StyleTrainConfig(set="-", out="-")
    rng = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 512, 512) * 2 - 1
    cameras = eval_cameras()[:cfg.views_per_step]
    targets = torch.rand(cfg.views_per_step, 3, 128, 128)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        losses = style_losses(generator, i2t(image), cameras, targets, cfg, None, rng)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def bench_styles(styles: tuple[str, ...] = BENCH_STYLES, heads: int = 10, train_minutes: float = 2.0,
                 ablation_styles: int | None = None, i2t: str | None = None, official: bool = True,
                 identities: int = BENCH_IDENTITIES, grid: str = BENCH_GRID) -> dict:
    """Every figure of the module docstring (styles must be the offline vocabulary's); the ablations on the first
    ``ablation_styles`` styles (None: all, 0: none)."""
    for style in styles:
        resolve(style)
    prior = load_prior()
    build = BuildSetConfig(style=styles[0], out="-", identities=identities, grid=grid)
    from engine.portrait.ff3d import read_i2t

    pretrained = StyleModel(*read_i2t(i2t))
    held = held_out_heads(prior, styles, heads, pretrained.network.shape.plane_size, build.variation)
    report: dict = {"styles": list(styles), "held_out_heads": heads, "views": len(eval_cameras()),
                    "train_minutes": train_minutes, "identities": identities, "grid": grid,
                    **reconstruction_figures(pretrained, prior, held), "per_style": {}}
    variants = {"no_pretrain": {"pretrained": False}, "vector_ws": {"vector_ws": True}, "no_i2t": {"no_i2t": True}}
    models: list[StyleModel] = []
    with tempfile.TemporaryDirectory(prefix="ff3d-bench-") as tmp:
        for k, style in enumerate(styles):
            folder = Path(tmp) / f"style{k}"
            start = time.perf_counter()
            _run(build_set_job(dataclasses.replace(build, style=style, out=str(folder / "set"),
                                                   seed=SET_SEED + 10 * k), CancelToken()))
            set_seconds = time.perf_counter() - start
            train = StyleTrainConfig(set=str(folder / "set"), out=str(folder / "full"), i2t=i2t,
                                     minutes=train_minutes)
            _run(train_style_job(train, CancelToken()))
            seconds = time.perf_counter() - start
            model = load_style(folder / "full")
            models.append(model)
            full_psnr, full_spread = summary(fidelity(model, prior, held, style))
            set_psnr, set_spread = summary([per_view_psnr(h.edits[style], h.truth[style]) for h in held])
            consensus = summary([per_view_psnr(h.consensus[style], h.truth[style]) for h in held])[0]
            row = {"seconds": seconds, "set_seconds": set_seconds, "fidelity_psnr": full_psnr,
                   "fidelity_spread_db": full_spread, "set_psnr": set_psnr, "set_spread_db": set_spread,
                   "consensus_psnr": consensus, "steps": model.meta.get("steps")}
            if ablation_styles is None or k < ablation_styles:
                for name, change in variants.items():
                    _run(train_style_job(dataclasses.replace(train, out=str(folder / name), **change), CancelToken()))
                    scores = fidelity(load_style(folder / name), prior, held, style)
                    row[f"{name}_psnr"] = summary(scores)[0]
            report["per_style"][style] = row
            print(f"{style}: {seconds:.0f} s (set {set_seconds:.0f} s), fidelity {full_psnr:.2f} dB (spread "
                  f"{full_spread:.2f}), set {set_psnr:.2f} dB (spread {set_spread:.2f}), consensus {consensus:.2f} dB"
                  + "".join(f", {n} {row[f'{n}_psnr']:.2f} dB" for n in variants if f"{n}_psnr" in row), flush=True)
        rows = list(report["per_style"].values())
        mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
        report.update({"seconds_per_style": statistics.median(r["seconds"] for r in rows),
                       "fidelity_psnr": mean("fidelity_psnr"), "set_psnr": mean("set_psnr"),
                       "consensus_psnr": mean("consensus_psnr"),
                       "fidelity_spread_db": mean("fidelity_spread_db"), "set_spread_db": mean("set_spread_db")})
        ablated = [r for r in rows if "no_pretrain_psnr" in r]
        if ablated:
            report.update({f"{name}_psnr": statistics.fmean(r[f"{name}_psnr"] for r in ablated) for name in variants})
            report["ablation_full_psnr"] = statistics.fmean(r["fidelity_psnr"] for r in ablated)
            report["ablation_styles"] = [s for s, r in report["per_style"].items() if "no_pretrain_psnr" in r]
        if len(models) >= 2:
            report.update(mixing_figures(models[0], models[1], prior, held))
    if official:
        seconds = official_step_seconds()
        if seconds is not None:
            report["official_step_seconds_cpu"] = seconds
    return report


def print_report(report: dict) -> None:
    """The figures in a few lines."""
    print(f"pre-trained I2T on the held-out heads: {report['i2t_psnr_vs_prior']:.2f} dB against the prior's renders, "
          f"{report['i2t_psnr_vs_truth']:.2f} dB against the truth (the prior {report['prior_psnr_vs_truth']:.2f} dB)")
    print(f"{len(report['styles'])} styles, {report['held_out_heads']} held-out heads x {report['views']} views: "
          f"{report['seconds_per_style']:.0f} s per style (median, set + fine-tuning); fidelity "
          f"{report['fidelity_psnr']:.2f} dB vs the set's per-view edits {report['set_psnr']:.2f} dB (their consensus "
          f"{report['consensus_psnr']:.2f} dB); spread over views {report['fidelity_spread_db']:.2f} vs "
          f"{report['set_spread_db']:.2f} dB")
    if "no_pretrain_psnr" in report:
        print(f"ablations on {', '.join(report['ablation_styles'])}: full model {report['ablation_full_psnr']:.2f} dB, "
              f"no pre-training {report['no_pretrain_psnr']:.2f} dB, vector w_s {report['vector_ws_psnr']:.2f} dB, "
              f"without I2T {report['no_i2t_psnr']:.2f} dB")
    if "mix_to_endpoints_psnr" in report:
        print(f"mixing at 0.5: {report['mix_to_endpoints_psnr']:.2f} dB to the nearer-scoring endpoint, endpoints "
              f"{report['endpoints_psnr']:.2f} dB apart, contrast {100 * report['mix_contrast_ratio']:.0f} % of their "
              f"mean ({100 * report['mix_contrast_to_higher']:.0f} % of the higher's, "
              f"{100 * report['mix_contrast_to_lower']:.0f} % of the lower's)")
    if "official_step_seconds_cpu" in report:
        print(f"I2T at EG3D's full size: {report['official_step_seconds_cpu']:.2f} s per fine-tuning step on this CPU")
