"""The embedded portrait prior: a small EG3D generator (the same code as official checkpoints,
a small configuration) trained on synthetic heads, so every portrait feature runs offline.

Recipe (``python main.py portrait train-prior --out DIR --minutes M``):
- latent z = the standardised head-parameter vector (engine.portrait.heads), so each latent is a
  known head with known ground truth; the mapping ignores the camera (``c_gen_conditioning_zero``)
  and the 3D head does not change with the view;
- supervised multi-view reconstruction: a pool of rendered ground-truth views (random heads,
  yaw and pitch uniform in ±YAW_RANGE_DEG / ±PITCH_RANGE_DEG about frontal) is refreshed with
  new heads every step; each step renders a random quarter of the pixels of a batch of pool
  views through the generator (stratified + importance sampling) and minimises L1 of their raw
  colour and of their depth / camera distance on the head, and pushes the background's depth
  beyond BACKDROP_DEPTH, where the generator learns to paint a backdrop in the background's colour
  (as EG3D's FFHQ models do); every few steps
  one view is rendered whole and the super-resolution module learns the 128² image from it;
- Adam (lr PriorConfig.lr, betas PriorConfig.betas; the rate falls linearly to a tenth over the
  last 30 % of the budget), fixed seed; checkpoints every
  ``checkpoint_every_s`` so a stopped run resumes;
- held-out evaluation uses seeds from HELD_OUT_SEED on, never drawn in training.
The foreground of a prior render is where its depth is nearer than MASK_DEPTH.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.core.config import INTERNAL, recipe_command
from engine.core.errors import CheckpointError
from engine.core.imaging import to_uint8
from engine.core.jobs import Artifact, CancelToken, Preview, Progress
from engine.core.loop import Budget, BudgetedLoop
from engine.core.metrics import psnr
from engine.core.project import save_torch, write_json
from engine.core.safe_pickle import load_torch
from engine.portrait.cameras import RAY_END, camera_labels
from engine.portrait.eg3d import TriPlaneGenerator, build_generator, load_generator
from engine.portrait.heads import PARAM_COUNT, HeadParams, render_heads
from engine.portrait.triplane import sample_rays

PRIOR_DIR = Path(__file__).resolve().parents[2] / "resources" / "portrait_prior"
"""where the shipped prior lives (generator.safetensors + meta.json + recipe.json)"""
HELD_OUT_SEED = 1_000_000_000
"""training draws head seeds below this; evaluation uses seeds from here on"""
YAW_RANGE_DEG = 35.0
PITCH_RANGE_DEG = 20.0
MASK_DEPTH = 2.9
"""a prior render's pixel is foreground when its depth is nearer than this: heads' surfaces in the
training views lie nearer (99.9 % of them before 2.87), the learned backdrop at 3.1 and beyond;
at silhouettes the rendered depth blends the two, and on training heads (seeds 100000-100023, two
views each) 2.9 gives the best mask IoU (0.950; 3.0 gives 0.920)"""
BACKDROP_DEPTH = 3.1
"""training pushes background pixels' depth to at least this: a backdrop the generator paints in
the background's colour inside the box (the ground truth's RAY_END lies behind the box, where the
planes give every head the same features and so cannot hold a head's own backdrop)"""
CAMERA_DISTANCE = 2.7


@dataclass
class PriorConfig:
    """How the embedded prior is built and trained (defaults: the shipped prior's recipe)."""

    out: str
    """folder for the prior (generator.safetensors, meta.json, recipe.json); a stopped run there resumes"""
    seed: int = 0
    """seeds the initial weights, the heads drawn and their views"""
    minutes: float = 60.0
    """training time budget"""
    steps: int | None = None
    """stop after this many steps instead (a fixed amount of work, e.g. in tests)"""
    batch: int = 4
    """views per step (each of a different head)"""
    lr: float = 0.002
    """Adam learning rate (StyleGAN2's generator rate)"""
    betas: tuple[float, float] = field(default=(0.9, 0.99), metadata=INTERNAL)
    """Adam's; momentum helps this regression (StyleGAN2's GAN training uses (0, 0.99))"""
    decay_fraction: float = 0.3
    """over this last part of the budget the learning rate falls linearly ..."""
    final_lr_fraction: float = 0.1
    """... to this fraction of ``lr``"""
    pool_heads: int = 512
    """distinct heads in the ground-truth pool at any time (two views each)"""
    refresh_per_step: int = 2
    """pool views replaced by views of new heads after every step"""
    neural_resolution: int = 64
    """side of the volume-rendered image before super-resolution"""
    rays_per_view: int = 1024
    """pixels of each 64² view rendered and compared per step (a random quarter of the image)"""
    sr_every: int = 4
    """every this many steps one view is rendered whole and the super-resolution is trained on it"""
    image_weight: float = 1.0
    """L1 weight of the 128² super-resolved image (the raw 64² pixels have weight 1)"""
    depth_weight: float = 1.0
    """L1 weight of depth / camera distance"""
    checkpoint_every_s: float = 120.0
    """seconds between checkpoints (a stopped run resumes from the last)"""
    preview_every: int = 50
    """steps between metric and preview events"""
    generator_kwargs: dict = field(metadata=INTERNAL, default_factory=lambda: {
        "z_dim": PARAM_COUNT, "c_dim": 25, "w_dim": 512, "img_resolution": 128, "img_channels": 3,
        "channel_base": 2048, "channel_max": 64, "num_fp16_res": 0, "conv_clamp": None,
        "mapping_kwargs": {"num_layers": 2, "lr_multiplier": 1.0},
        "sr_num_fp16_res": 0, "sr_kwargs": {},
        "rendering_kwargs": {
            "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
            "depth_resolution": 16, "depth_resolution_importance": 16, "ray_start": 2.25, "ray_end": RAY_END,
            "box_warp": 1, "clamp_mode": "softplus", "c_scale": 1.0, "c_gen_conditioning_zero": True,
            "sr_antialias": True, "superresolution_noise_mode": "none", "disparity_space_sampling": False,
            "avg_camera_radius": CAMERA_DISTANCE, "avg_camera_pivot": [0, 0, 0.2]}})
    """the generator's official constructor arguments (2X super-resolution: 64² rendered, 128² out)"""


def random_views(rng: np.random.Generator, count: int) -> np.ndarray:
    """Camera labels (count, 25) with yaw and pitch uniform in the training range."""
    return camera_labels(rng.uniform(-YAW_RANGE_DEG, YAW_RANGE_DEG, count),
                         rng.uniform(-PITCH_RANGE_DEG, PITCH_RANGE_DEG, count)).astype(np.float32)


class Rows:
    """A dataclass of tensors that share their first dimension: rows are taken and replaced together
    (pools of training examples)."""

    def take(self, index: torch.Tensor):
        """The rows at ``index``, as the same kind of batch."""
        index = index.to(getattr(self, dataclasses.fields(self)[0].name).device)
        return type(self)(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    def put(self, index: torch.Tensor, other) -> None:
        """Overwrite the rows at ``index`` with ``other``'s."""
        index = index.to(getattr(self, dataclasses.fields(self)[0].name).device)
        for f in dataclasses.fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)

    def to(self, device: torch.device | str):
        """The same rows on ``device``."""
        return type(self)(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    @classmethod
    def cat(cls, parts: list):
        """The rows of ``parts`` one after another."""
        return cls(*(torch.cat([getattr(part, f.name) for part in parts]) for f in dataclasses.fields(cls)))


@dataclass
class ViewBatch(Rows):
    """Ground truth of several views: latents, cameras, 64² colour and depth, 128² colour."""

    z: torch.Tensor
    c: torch.Tensor
    rgb: torch.Tensor
    """(N, 3, 64, 64) in [0, 1]"""
    depth: torch.Tensor
    """(N, 1, 64, 64)"""
    mask: torch.Tensor
    """(N, 1, 64, 64) bool"""
    rgb_hr: torch.Tensor
    """(N, 3, R, R) in [0, 1] at the generator's output resolution R (empty when not asked for)"""

    @classmethod
    def render(cls, seeds: list[int], c: np.ndarray, resolution: int, image_resolution: int | None = None) -> ViewBatch:
        """Ground truth of head ``seeds[i]`` seen by camera ``c[i]``, at ``resolution`` and (for the
        super-resolution) at ``image_resolution``."""
        heads = [HeadParams.from_seed(seed) for seed in seeds]
        low = render_heads(heads, c, resolution)
        high = render_heads(heads, c, image_resolution).rgb if image_resolution else np.zeros((len(seeds), 0, 0, 3))
        return cls(z=torch.from_numpy(np.stack([h.standardised() for h in heads])).float(),
                   c=torch.from_numpy(np.asarray(c, np.float32)),
                   rgb=torch.from_numpy(low.rgb).permute(0, 3, 1, 2).contiguous(),
                   depth=torch.from_numpy(low.depth)[:, None],
                   mask=torch.from_numpy(low.mask)[:, None],
                   rgb_hr=torch.from_numpy(high).float().permute(0, 3, 1, 2).contiguous())


def render_prior(generator: TriPlaneGenerator, z: torch.Tensor, c: torch.Tensor, resolution: int,
                 deterministic: bool = True, planes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The generator's output for standardised head latents z seen from cameras c: ``rgb`` (raw,
    ``resolution``²) and ``image`` (super-resolved) in [0, 1], ``depth``, the foreground ``mask``
    (depth < MASK_DEPTH) and the ``planes`` (pass them back to re-render the heads from new cameras)."""
    ws = generator.mapping(z, c)
    out = generator.synthesis(ws, c, neural_rendering_resolution=resolution, noise_mode="const",
                              deterministic_sampling=deterministic, planes=planes)
    return {"rgb": (out["image_raw"] + 1) / 2, "image": (out["image"] + 1) / 2, "depth": out["image_depth"],
            "mask": out["image_depth"] < MASK_DEPTH, "planes": out["planes"]}


def ray_losses(generator: TriPlaneGenerator, planes: torch.Tensor, c: torch.Tensor, rgb: torch.Tensor,
               depth: torch.Tensor, mask: torch.Tensor, rays_per_view: int,
               generator_rng: torch.Generator) -> dict[str, torch.Tensor]:
    """Colour L1 and depth loss on ``rays_per_view`` random pixels of each of V views of every planes
    entry: planes (N, 96, H, W), cameras c (N, V, 25), ground truth rgb (N, V, 3, R, R) in [0, 1],
    depth and mask (N, V, 1, R, R).  Background pixels push the depth beyond BACKDROP_DEPTH."""
    n, views, resolution = c.shape[0], c.shape[1], rgb.shape[-1]
    flat = c.reshape(n * views, 25)
    origins, directions = sample_rays(flat[:, :16].view(-1, 4, 4), flat[:, 16:25].view(-1, 3, 3), resolution)
    pick = torch.stack([torch.randperm(resolution * resolution, generator=generator_rng)[:rays_per_view]
                        for _ in range(n * views)]).to(c.device)

    def gather(values: torch.Tensor) -> torch.Tensor:  # (N·V, R², C) → the picked pixels, (N, V·M, C)
        return torch.gather(values, 1, pick[..., None].expand(-1, -1, values.shape[-1])).reshape(n, -1, values.shape[-1])

    rgb_rendered, rendered_depth = generator.render_rays(planes, gather(origins), gather(directions), channels=3)
    per_pixel = lambda image: gather(image.flatten(0, 1).flatten(2).transpose(1, 2))  # noqa: E731
    true_depth, foreground = per_pixel(depth), per_pixel(mask.float())
    depth_error = foreground * (rendered_depth - true_depth).abs() + (1 - foreground) * F.relu(BACKDROP_DEPTH -
                                                                                               rendered_depth)
    return {"rgb": F.l1_loss((rgb_rendered + 1) / 2, per_pixel(rgb)), "depth": depth_error.mean() / CAMERA_DISTANCE}


def training_losses(generator: TriPlaneGenerator, truth: ViewBatch, cfg: PriorConfig, train_sr: bool,
                    generator_rng: torch.Generator) -> dict[str, torch.Tensor]:
    """One step's losses (and their weighted sum under "total"): L1 of colour and depth on a random
    subset of each view's pixels, plus, when ``train_sr``, L1 of the super-resolved first view."""
    resolution = truth.rgb.shape[-1]
    ws = generator.mapping(truth.z, truth.c)
    planes = generator.planes(ws, noise_mode="const")
    losses = ray_losses(generator, planes, truth.c[:, None], truth.rgb[:, None], truth.depth[:, None],
                        truth.mask[:, None], cfg.rays_per_view, generator_rng)
    losses["total"] = losses["rgb"] + cfg.depth_weight * losses["depth"]
    if train_sr:
        with torch.no_grad():
            whole, _ = generator.render_features(planes[:1], truth.c[:1], resolution)
        image = generator.superresolution(whole[:, :3], whole, ws[:1])
        losses["image"] = F.l1_loss((image + 1) / 2, truth.rgb_hr[:1])
        losses["total"] = losses["total"] + cfg.image_weight * losses["image"]
    return losses


def learning_rate(cfg: PriorConfig, progress: float) -> float:
    """The learning rate at ``progress`` (0 → 1) through the budget: ``lr``, then the final decay."""
    start = 1 - cfg.decay_fraction
    if progress <= start or cfg.decay_fraction <= 0:
        return cfg.lr
    fraction = min((progress - start) / cfg.decay_fraction, 1.0)
    return cfg.lr * (1 - (1 - cfg.final_lr_fraction) * fraction)


def read_training_state(path: Path) -> dict | None:
    """A resumable training state, None when there is none."""
    if not path.is_file():
        return None
    try:
        return load_torch(path)
    except CheckpointError as exc:  # any damage: say so rather than start over silently
        raise CheckpointError(f"{exc}; delete it to start over") from None


def train_prior_job(cfg: PriorConfig, cancel: CancelToken) -> Iterator:
    """Train the prior for ``cfg.minutes`` (resuming a stopped run in ``cfg.out``), then write
    generator.safetensors + meta.json + recipe.json there.  Yields job events."""
    from engine.portrait.checkpoints import write_converted

    budget = Budget(cfg.steps, cfg.minutes)
    budget.validate("prior training")
    out_dir = Path(cfg.out)
    state_path = out_dir / "training_state.pt"
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    generator = build_generator(cfg.generator_kwargs).train()
    generator.neural_rendering_resolution = cfg.neural_resolution
    optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
    state = read_training_state(state_path)
    step, seconds, next_seed = 0, 0.0, 0
    if state is not None:
        generator.load_state_dict(state["generator"])
        optimizer.load_state_dict(state["optimizer"])
        step, seconds, next_seed = state["step"], state["seconds"], state["next_seed"]
        rng = np.random.default_rng([cfg.seed, step])
        torch.manual_seed(cfg.seed + step)
    views = 2 * cfg.pool_heads
    yield Progress(0, views, "rendering the ground-truth pool")
    seeds = [next_seed + k // 2 for k in range(views)]
    pool = ViewBatch.render(seeds, random_views(rng, views), cfg.neural_resolution, generator.img_resolution)
    next_seed += cfg.pool_heads
    shown = None  # the latest render of a training view, for metrics and the preview

    def save() -> Path:
        return save_torch(state_path, {"generator": generator.state_dict(), "optimizer": optimizer.state_dict(),
                                       "step": step, "seconds": seconds, "next_seed": next_seed,
                                       "config": dataclasses.asdict(cfg)})

    def measured(means: dict[str, float]) -> dict[str, float]:
        nonlocal shown
        generator.eval()
        with torch.no_grad():
            shown = render_prior(generator, truth.z[:1], truth.c[:1], cfg.neural_resolution)["rgb"][0].clamp(0, 1)
        generator.train()
        return {"psnr_train": psnr(shown, truth.rgb[0])}

    loop = BudgetedLoop(budget, cancel, "prior training", message="training the portrait prior", save=save,
                        optimizer=optimizer, learning_rate=lambda fraction: learning_rate(cfg, fraction),
                        checkpoint_every_s=cfg.checkpoint_every_s, metrics_every=cfg.preview_every, step=step,
                        seconds=seconds, extra_metrics=measured)
    generator_rng = torch.Generator().manual_seed(cfg.seed + step)
    for step in loop:
        index = torch.from_numpy(rng.choice(views, cfg.batch, replace=False))
        truth = pool.take(index)
        losses = training_losses(generator, truth, cfg, step % cfg.sr_every == 0, generator_rng)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        fresh = [next_seed + k for k in range(cfg.refresh_per_step)]
        next_seed += cfg.refresh_per_step
        replace = torch.from_numpy(rng.choice(views, cfg.refresh_per_step, replace=False))
        pool.put(replace, ViewBatch.render(fresh, random_views(rng, cfg.refresh_per_step), cfg.neural_resolution,
                                           generator.img_resolution))
        loop.done(**{f"loss_{key}": float(value.detach()) for key, value in losses.items()})
        step, seconds = loop.step, loop.seconds  # what a checkpoint written now records
        yield from loop.events()
        if step % cfg.preview_every == 0:
            yield Preview(step, to_uint8(torch.cat([truth.rgb[0], shown], dim=2).permute(1, 2, 0)),
                          {"layout": "truth|prior"})
    yield from loop.finish()
    if cancel.cancelled:
        return
    weights = write_converted(out_dir, cfg.generator_kwargs, generator.state_dict(),
                              neural_rendering_resolution=cfg.neural_resolution)
    recipe = {"command": recipe_command(cfg, "portrait train-prior"), "seed": cfg.seed, "steps": step,
              "seconds": seconds, "heads_seen": next_seed, "config": dataclasses.asdict(cfg)}
    yield Artifact(write_json(out_dir / "recipe.json", recipe), "recipe")
    yield Artifact(weights, "weights")


def load_prior(path: str | Path | None = None) -> TriPlaneGenerator:
    """The embedded prior (or the one trained into ``path``), ready to render."""
    folder = Path(path) if path is not None else PRIOR_DIR
    if not (folder / "generator.safetensors").is_file():
        raise CheckpointError(f"{folder} holds no trained prior (generator.safetensors); train one with "
                              f"python main.py portrait train-prior --out {folder}")
    return load_generator(folder)


def bench_prior(generator: TriPlaneGenerator, heads: int = 16, views: int = 4, fps_frames: int = 20) -> dict:
    """Quality on held-out heads and views at 64² (PSNR, foreground IoU, depth error relative to the
    camera distance on ground-truth foreground), the frame rate of re-rendering cached triplanes (with
    their occupancy grid, as the workspace does) and how close those renders are to full ones."""
    rng = np.random.default_rng(HELD_OUT_SEED)
    seeds = [HELD_OUT_SEED + k for k in range(heads) for _ in range(views)]
    truth = ViewBatch.render(seeds, random_views(rng, len(seeds)), 64)
    psnrs, ious, depth_errors = [], [], []
    with torch.no_grad():
        for k in range(len(seeds)):
            out = render_prior(generator, truth.z[k:k + 1], truth.c[k:k + 1], 64)
            psnrs.append(psnr(out["rgb"].clamp(0, 1), truth.rgb[k:k + 1]))
            mask, true_mask = out["mask"][0], truth.mask[k]
            ious.append(float((mask & true_mask).sum() / (mask | true_mask).sum().clamp_min(1)))
            error = (out["depth"][0] - truth.depth[k]).abs()[true_mask]
            depth_errors.append(float(error.mean() / CAMERA_DISTANCE))
        planes = generator.planes(generator.mapping(truth.z[:1], truth.c[:1]), noise_mode="const")
        occupancy = generator.occupancy(planes)
        times, full_times, fast_psnrs = [], [], []
        for k in range(fps_frames + 2):
            c = truth.c[k % len(seeds)][None]
            start = time.perf_counter()
            fast, _ = generator.render_features(planes, c, 64, deterministic_sampling=True, occupancy=occupancy,
                                                channels=3)
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            full, _ = generator.render_features(planes, c, 64, deterministic_sampling=True, channels=3)
            full_times.append(time.perf_counter() - start)
            fast_psnrs.append(psnr((fast + 1) / 2, (full + 1) / 2))
    return {"psnr": statistics.fmean(psnrs), "psnr_min": min(psnrs), "mask_iou": statistics.fmean(ious),
            "mask_iou_min": min(ious), "depth_error_rel": statistics.fmean(depth_errors),
            "fps_cached_64": 1.0 / statistics.median(times[2:]), "cached_vs_full_psnr_min": min(fast_psnrs),
            "fps_cached_64_without_skipping": 1.0 / statistics.median(full_times[2:]),
            "held_out_heads": heads, "views_per_head": views,
            "resolution": 64}
