"""Training the embedded SemFaceEdit generator (engine.portrait.semantic) on synthetic heads, whose geometry and
per-group appearance parameters are known: the generator is given a head's standardised parameters as its
latents and learns to render its colour, semantic map and depth from any view (supervised multi-view
reconstruction; the paper's adversarial terms need real photos and run on the GPU path).

Recipe (``python main.py portrait semantic train --out DIR --minutes M``): the manifold sampler first fitted to
concentric spheres around the head (``init_manifolds``), then Adam on random pixels of random views of a pool of
heads refreshed every step: colour L2 + semantic cross-entropy (the rendered map Σ w s against the head's four
group labels) + depth L1 on the head (relative to the camera distance); the learning rate falls over the last
30 %; resumable from ``training_state.pt``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.core.config import INTERNAL, recipe_command
from engine.core.errors import CheckpointError, UserInputError
from engine.core.imaging import to_uint8
from engine.core.jobs import Artifact, CancelToken, Preview, Progress
from engine.core.loop import Budget, BudgetedLoop
from engine.core.metrics import psnr
from engine.core.prefetch import Prefetcher, Seeds
from engine.core.project import atomic_write, save_torch, write_json
from engine.portrait.cameras import camera_labels, rays
from engine.portrait.heads import GROUP_LABELS, PARAM_NAMES, HeadParams, render_heads
from engine.portrait.prior import (CAMERA_DISTANCE, PITCH_RANGE_DEG, YAW_RANGE_DEG, Rows, learning_rate,
                                   read_training_state)
from engine.portrait.semantic import (APPEARANCE_PARAMS, GEOMETRY_PARAMS, GROUPS, Latents, SemanticConfig,
                                      SemanticGenerator)

SEMANTIC_DIR = Path(__file__).resolve().parents[2] / "resources" / "portrait_semantic"
"""where the shipped embedded generator lives (semantic.safetensors, config.json, recipe.json)"""
WEIGHTS_FILE, CONFIG_FILE = "semantic.safetensors", "config.json"
VIEW_SIZE = 64
GEOMETRY_COLUMNS = [PARAM_NAMES.index(name) for name in GEOMETRY_PARAMS]
APPEARANCE_COLUMNS = [[PARAM_NAMES.index(name) for name in APPEARANCE_PARAMS[group]] for group in GROUPS]


def latents_of(z: torch.Tensor) -> Latents:
    """The generator's latents for synthetic heads' standardised parameters z (B, 36)."""
    return Latents(z[:, GEOMETRY_COLUMNS], [z[:, columns] for columns in APPEARANCE_COLUMNS])


@dataclass
class SemanticViews(Rows):
    """Ground truth of heads seen from several views: standardised parameters, cameras, colour, depth, groups."""

    z: torch.Tensor
    """(N, 36)"""
    c: torch.Tensor
    """(N, V, 25)"""
    rgb: torch.Tensor
    """(N, V, 3, 64, 64) in [0, 1]"""
    depth: torch.Tensor
    """(N, V, 1, 64, 64) distance along each ray"""
    labels: torch.Tensor
    """(N, V, 64, 64) group ids (GROUP_LABELS)"""

    @classmethod
    def render(cls, heads: list[HeadParams], c: np.ndarray, size: int = VIEW_SIZE) -> SemanticViews:
        """Heads (N) from cameras c (N, V, 25)."""
        n, v = c.shape[:2]
        truth = render_heads([h for h in heads for _ in range(v)], c.reshape(n * v, -1), size)
        per_view = lambda a: torch.from_numpy(np.ascontiguousarray(a)).unflatten(0, (n, v))  # noqa: E731
        return cls(z=torch.from_numpy(np.stack([h.standardised() for h in heads])).float(),
                   c=torch.from_numpy(c).float(), rgb=per_view(truth.rgb.transpose(0, 3, 1, 2)),
                   depth=per_view(truth.depth[:, None]), labels=per_view(truth.labels_group.astype(np.int64)))


def head_views(seed: int, views: int, base_seed: int) -> SemanticViews:
    """Head ``seed`` from ``views`` random cameras in the prior's range (a prefetching worker's job)."""
    rng = np.random.default_rng([base_seed, seed])
    yaw = rng.uniform(-YAW_RANGE_DEG, YAW_RANGE_DEG, views)
    pitch = rng.uniform(-PITCH_RANGE_DEG, PITCH_RANGE_DEG, views)
    return SemanticViews.render([HeadParams.from_seed(seed)], camera_labels(yaw, pitch)[None])


@dataclass
class SemanticTrainConfig:
    """How the embedded SemFaceEdit generator is trained (defaults: the shipped generator's recipe)."""

    out: str
    """folder for the generator (semantic.safetensors, config.json, recipe.json); a stopped run there resumes"""
    seed: int = 0
    """seeds the initial weights, the heads drawn and their views"""
    minutes: float = 120.0
    """training time budget"""
    steps: int | None = None
    """stop after this many steps instead"""
    batch: int = 4
    """heads per step"""
    views: int = 2
    """views of each head per step"""
    rays_per_view: int = 768
    """pixels of each 64² view rendered and compared per step"""
    lr: float = 0.0003
    """Adam learning rate"""
    decay_fraction: float = 0.3
    """over this last part of the budget the learning rate falls linearly ..."""
    final_lr_fraction: float = 0.1
    """... to this fraction of ``lr``"""
    pool_heads: int = 96
    """distinct heads in the training pool at any time"""
    refresh_per_step: int = 1
    """pool heads replaced by new ones after every step"""
    sampler_lr_fraction: float = 0.02
    """the manifold sampler learns at this fraction of ``lr``: the sine layers' steep gradients reach it through
    the crossings' interpolation and, at the full rate, drag its surfaces off the head within a few hundred steps"""
    grad_clip: float = 1.0
    """the gradients' norm is clipped to this (GRAM's setting)"""
    semantic_weight: float = 0.05
    """weight of the semantic map's cross-entropy"""
    depth_weight: float = 1.0
    """weight of the depth L1 on the head (relative to the camera distance)"""
    manifold_steps: int = field(default=400, metadata=INTERNAL)
    """steps fitting the manifold sampler to the starting spheres before training"""
    checkpoint_every_s: float = 120.0
    """seconds between checkpoints"""
    preview_every: int = 50
    """steps between metric and preview events"""
    betas: tuple[float, float] = field(default=(0.9, 0.99), metadata=INTERNAL)
    """Adam's"""


def init_manifolds(generator: SemanticGenerator, steps: int, seed: int = 0) -> float:
    """Fit the manifold sampler to ``shell_scalar`` (concentric spheres around the head) on random points of the
    box; returns the final mean absolute error in level units."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(generator.sampler.parameters(), lr=0.003)
    half = generator.cfg.box / 2
    error = float("nan")
    for _ in range(steps):
        points = (torch.rand(4096, 3, generator=g) * 2 - 1) * half
        loss = (generator.sampler(points) - generator.shell_scalar(points)).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        error = float(loss.detach())
    return error


def semantic_losses(generator: SemanticGenerator, batch: SemanticViews, cfg: SemanticTrainConfig,
                    g: torch.Generator) -> dict[str, torch.Tensor]:
    """Colour L2, semantic cross-entropy and depth L1 on ``rays_per_view`` random pixels of every view."""
    n, v = batch.c.shape[:2]
    origins, directions = rays(batch.c.reshape(n * v, -1).numpy(), VIEW_SIZE)
    pick = torch.stack([torch.randperm(VIEW_SIZE ** 2, generator=g)[:cfg.rays_per_view] for _ in range(n * v)])
    gather = lambda values: torch.gather(values.flatten(2), 2, pick[:, None].expand(-1, values.shape[1], -1))  # noqa
    truth_rgb = gather(batch.rgb.flatten(0, 1))
    truth_depth = gather(batch.depth.flatten(0, 1))
    truth_labels = gather(batch.labels.flatten(0, 1)[:, None])[:, 0]
    z = batch.z.repeat_interleave(v, 0)
    out = generator.render_rays(generator.styles(latents_of(z)), origins[:, 0],
                                torch.gather(directions, 1, pick[..., None].expand(-1, -1, 3)))
    head = truth_labels != GROUP_LABELS.index("background")
    losses = {"rgb": F.mse_loss(out["rgb"], truth_rgb.transpose(1, 2)),
              "semantic": F.nll_loss(out["semantic"].clamp_min(1e-6).log().transpose(1, 2), truth_labels),
              "depth": ((out["depth"][..., 0] - truth_depth[:, 0]).abs() * head).sum() / head.sum().clamp_min(1)
              / CAMERA_DISTANCE}
    losses["total"] = losses["rgb"] + cfg.semantic_weight * losses["semantic"] + cfg.depth_weight * losses["depth"]
    return losses


def train_semantic_job(cfg: SemanticTrainConfig, cancel: CancelToken) -> Iterator:
    """Train the embedded SemFaceEdit generator (resuming a stopped run in ``cfg.out``), then write it there."""
    budget = Budget(cfg.steps, cfg.minutes)
    budget.validate("SemFaceEdit training")
    if cfg.batch > cfg.pool_heads:
        raise UserInputError(f"a batch of {cfg.batch} heads cannot be drawn from a pool of {cfg.pool_heads}: "
                             "give --pool-heads at least --batch")
    out_dir = Path(cfg.out)
    state_path = out_dir / "training_state.pt"
    torch.manual_seed(cfg.seed)
    generator = SemanticGenerator()
    step, seconds, next_seed = 0, 0.0, 0
    state = read_training_state(state_path)
    if state is not None:
        generator.load_state_dict(state["generator"])
        step, seconds, next_seed = state["step"], state["seconds"], state["next_seed"]
    else:
        yield Progress(0, 1, "fitting the manifolds to spheres around the head")
        init_manifolds(generator, cfg.manifold_steps, cfg.seed)
    generator.train()
    sampler = list(generator.sampler.parameters())
    others = [p for name, p in generator.named_parameters() if not name.startswith("sampler.")]
    optimizer = torch.optim.Adam([{"params": others}, {"params": sampler, "lr_scale": cfg.sampler_lr_fraction}],
                                 lr=cfg.lr, betas=cfg.betas)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    rng = np.random.default_rng([cfg.seed, step])
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    seeds = Seeds(next_seed, 0, 1)
    heads = Prefetcher(functools.partial(head_views, views=cfg.views, base_seed=cfg.seed), seeds, 0)
    try:
        yield Progress(0, cfg.pool_heads, "rendering the training heads")
        pool = SemanticViews.cat(heads.take(cfg.pool_heads))
        shown: torch.Tensor | None = None

        def save() -> Path:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_torch(state_path, {"generator": _cpu(generator.state_dict()), "optimizer": optimizer.state_dict(),
                                    "step": step, "seconds": seconds, "next_seed": seeds.next,
                                    "config": dataclasses.asdict(cfg)})
            return state_path

        def measured(means: dict[str, float]) -> dict[str, float]:
            nonlocal shown
            with torch.no_grad():
                rendered = generator.render(generator.styles(latents_of(batch.z[:1])), batch.c[:1, 0], VIEW_SIZE)
            shown = rendered["rgb"][0]
            labels = rendered["semantic"][0].argmax(0)
            return {"psnr_view": psnr(shown, batch.rgb[0, 0]),
                    "label_accuracy": float((labels == batch.labels[0, 0]).float().mean())}

        loop = BudgetedLoop(budget, cancel, "SemFaceEdit training", message="training the SemFaceEdit generator",
                            save=save, optimizer=optimizer, learning_rate=lambda fraction: learning_rate(cfg, fraction),
                            checkpoint_every_s=cfg.checkpoint_every_s, metrics_every=cfg.preview_every, step=step,
                            seconds=seconds, extra_metrics=measured)
        for step in loop:
            batch = pool.take(torch.from_numpy(rng.choice(cfg.pool_heads, cfg.batch, replace=False)))
            losses = semantic_losses(generator, batch, cfg, g)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(generator.parameters(), cfg.grad_clip)
            optimizer.step()
            arrived = heads.ready(cfg.refresh_per_step)[:cfg.pool_heads]
            if arrived:
                pool.put(torch.from_numpy(rng.choice(cfg.pool_heads, len(arrived), replace=False)),
                         SemanticViews.cat(arrived))
            loop.done(**{f"loss_{key}": float(value.detach()) for key, value in losses.items()})
            yield from loop.events()
            step, seconds = loop.step, loop.seconds
            if step % cfg.preview_every == 0 and shown is not None:
                yield Preview(step, to_uint8(torch.cat([batch.rgb[0, 0], shown], dim=2).permute(1, 2, 0)),
                              {"layout": "truth|generator"})
        yield from loop.finish()
    finally:
        heads.close()
    if cancel.cancelled:
        return
    yield from write_semantic(generator, out_dir, {"command": recipe_command(cfg, "portrait semantic train"),
                                                   "steps": step, "seconds": seconds, "heads_seen": seeds.next,
                                                   "config": dataclasses.asdict(cfg)})


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def write_semantic(generator: SemanticGenerator, out_dir: Path, recipe: dict) -> Iterator:
    """Write the generator's weights (float32), its config and recipe; yields the Artifacts."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    atomic_write(weights, lambda tmp: save_file(_cpu(generator.state_dict()), str(tmp)))
    write_json(out_dir / CONFIG_FILE, dataclasses.asdict(generator.cfg))
    yield Artifact(write_json(out_dir / "recipe.json", recipe), "recipe")
    yield Artifact(weights, "weights")


def load_semantic(path: str | Path | None = None) -> SemanticGenerator:
    """The shipped embedded SemFaceEdit generator (or the one in ``path``), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(path) if path is not None else SEMANTIC_DIR
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder} holds no SemFaceEdit generator ({WEIGHTS_FILE}); train one with "
                              f"python main.py portrait semantic train --out {folder}")
    try:
        described = json.loads((folder / CONFIG_FILE).read_text())
        known = {f.name for f in dataclasses.fields(SemanticConfig)}
        cfg = SemanticConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in described.items()
                                if k in known})
        generator = SemanticGenerator(cfg)
        generator.load_state_dict(load_file(str(weights)))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{folder} does not hold a readable SemFaceEdit generator: "
                              f"{str(exc).splitlines()[0]}") from None
    return generator.eval().requires_grad_(False)


__all__ = ["SEMANTIC_DIR", "SemanticTrainConfig", "SemanticViews", "head_views", "init_manifolds", "latents_of",
           "load_semantic", "train_semantic_job", "write_semantic"]
