"""The embedded image→triplane encoder: 3DPE's encoder design ("Live3D") at the embedded prior's scale,
so a photo becomes an editable 3D head offline on a CPU.

Network (``EmbeddedEncoder``): the official modules of engine.portrait.threedpe, smaller — a 128²
portrait with two coordinate channels (normalised to [−1, 1] here: the official raw 0…511 indices
suit a network distilled from a pretrained one, not one trained from scratch) → E_low (a ResNet
trunk and a DeepLabV3 head at 32²) → EncoderF (one Mix-Transformer block) and E_high (convolutions
at 64²) → the final stage (a Mix-Transformer block with spatial reduction, then convolutions and a
pixel shuffle) → triplanes (96 × 128²) that the prior's own decoder and renderer render (planes of
any resolution render; 128² keeps an edit fast).  ``Ref_encoder`` (the prompt branch) is added
by the editing student (engine.portrait.prompts).

Training data (``HeadSamples``, reusable: FF3D's image→triplane network starts from the same): for
each synthetic head (engine.portrait.heads), its frontal 128² photo (the input; 3DPE uses the frontal
camera), the prior's triplanes for its latent (average-pooled to the encoder's plane resolution) and
ground-truth views (the input view and random ones in the prior's range) at 64²: colour, depth, mask.

Recipe (``python main.py portrait train-encoder --out DIR --minutes M``): L1 to the prior's planes
(scaled by PLANE_SCALE) + the prior's multi-view ray losses (colour L1 and depth on random pixels of
every view, rendered through the frozen prior decoder) against the ground truth; Adam, the learning
rate falling over the last 30 %; a pool of heads refreshed every step; resumable; runs under
``torchrun --nproc_per_node N`` with DistributedDataParallel (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.config import INTERNAL, recipe_command
from engine.core.devices import check_device
from engine.core.errors import CheckpointError, UserInputError
from engine.core.imaging import to_uint8
from engine.core.jobs import Artifact, CancelToken, Preview, Progress
from engine.core.loop import Budget, BudgetedLoop
from engine.core.metrics import psnr
from engine.core.prefetch import Prefetcher, Seeds
from engine.core.project import atomic_write, save_torch, write_json
from engine.portrait.cameras import camera_labels
from engine.portrait.eg3d import TriPlaneGenerator
from engine.portrait.heads import HeadParams, render_heads
from engine.portrait.prior import (HELD_OUT_SEED, PITCH_RANGE_DEG, YAW_RANGE_DEG, Rows, learning_rate, load_prior,
                                   ray_losses, read_training_state)
from engine.portrait.threedpe import DeepLabHead, EncoderF, EncoderFinal, EncoderHigh, ResNetTrunk, conv

ENCODER_DIR = Path(__file__).resolve().parents[2] / "resources" / "portrait_encoder"
"""where the shipped encoder lives (encoder.safetensors + recipe.json)"""
WEIGHTS_FILE = "encoder.safetensors"
INPUT_SIZE = 128
PLANE_SIZE = 128
VIEW_SIZE = 64
PLANE_SCALE = 16.0
"""the encoder's last layer is scaled by this: the prior's plane values spread about ±14"""


class EmbeddedEncoder(nn.Module):
    """128² portrait in [−1, 1] → the prior's triplanes (96 × 128²); see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = ResNetTrunk(5, widths=(32, 32, 64), depths=(1, 1), max_pool=False)
        self.decoder = DeepLabHead(64, 96, rates=(2, 4, 6))
        self.F_encoder = EncoderF(96, dim=192, heads=2, blocks=1, out=64, kernel=3)
        self.EHigh_encoder = EncoderHigh(5, stem=32, width=64, middle=1, second_stride=1)
        self.Final_encoder = EncoderFinal(128, dim=256, heads=2, kernel=3, output_net=nn.Sequential(
            conv(64, 96, 3), nn.LeakyReLU(), conv(96, 96, 3), nn.LeakyReLU(), conv(96, 4 * 96, 1), nn.PixelShuffle(2)))

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_high's features, EncoderF's) of images (B, 3, 128, 128) in [−1, 1]."""
        x = with_unit_coordinates(image)
        if self.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # see load_encoder
        return self.EHigh_encoder(x), self.F_encoder(self.decoder(self.encoder(x)))

    def planes(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """The final stage: triplanes (B, 96, 128, 128) from both features."""
        return PLANE_SCALE * self.Final_encoder(torch.cat([high, low], 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.planes(*self.features(image))


def with_unit_coordinates(image: torch.Tensor) -> torch.Tensor:
    """Append the pixel row and column as two channels in [−1, 1]."""
    b, _, h, w = image.shape
    rows = torch.linspace(-1, 1, h, dtype=image.dtype, device=image.device).view(1, 1, h, 1).expand(b, 1, h, w)
    cols = torch.linspace(-1, 1, w, dtype=image.dtype, device=image.device).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([image, rows, cols], 1)


def input_view() -> np.ndarray:
    """The camera label (25,) of the encoder's input photo: frontal, as 3DPE takes portraits."""
    return camera_labels(0.0, 0.0)[0]


@dataclass
class HeadSamples(Rows):
    """Training examples for an image→triplane network: per head its latent, frontal photo, the
    prior's planes and ground-truth views."""

    z: torch.Tensor
    """(N, 36) standardised head parameters"""
    photo: torch.Tensor
    """(N, 3, 128, 128) in [0, 1]: the frontal view"""
    planes: torch.Tensor
    """(N, 96, P, P) the prior's triplanes, average-pooled to P"""
    c: torch.Tensor
    """(N, V, 25) cameras of the views; view 0 is the input view"""
    rgb: torch.Tensor
    """(N, V, 3, 64, 64) in [0, 1]"""
    depth: torch.Tensor
    """(N, V, 1, 64, 64)"""
    mask: torch.Tensor
    """(N, V, 1, 64, 64) bool"""

    @classmethod
    def render(cls, seeds: list[int], prior: TriPlaneGenerator, rng: np.random.Generator, views: int = 2,
               plane_size: int = PLANE_SIZE) -> HeadSamples:
        """Examples of heads ``seeds``: the input view plus ``views`` − 1 random views in the prior's range."""
        return cls.truth(seeds, rng, views).with_planes(prior, plane_size)

    @classmethod
    def truth(cls, seeds: list[int], rng: np.random.Generator, views: int = 2) -> HeadSamples:
        """The ground-truth part of ``render``'s examples (the CPU's work), with no planes yet."""
        heads = [HeadParams.from_seed(seed) for seed in seeds]
        n = len(heads)
        photo = render_heads(heads, np.repeat(input_view()[None], n, 0), INPUT_SIZE).rgb
        yaw = np.concatenate([np.zeros((n, 1)), rng.uniform(-YAW_RANGE_DEG, YAW_RANGE_DEG, (n, views - 1))], 1)
        pitch = np.concatenate([np.zeros((n, 1)), rng.uniform(-PITCH_RANGE_DEG, PITCH_RANGE_DEG, (n, views - 1))], 1)
        c = camera_labels(yaw.ravel(), pitch.ravel())
        truth = render_heads([h for h in heads for _ in range(views)], c, VIEW_SIZE)
        z = torch.from_numpy(np.stack([h.standardised() for h in heads])).float()
        per_view = lambda a: torch.from_numpy(np.ascontiguousarray(a)).unflatten(0, (n, views))  # noqa: E731
        return cls(z=z, photo=torch.from_numpy(photo).permute(0, 3, 1, 2).contiguous(), planes=torch.empty(n, 0),
                   c=per_view(c), rgb=per_view(truth.rgb.transpose(0, 3, 1, 2)),
                   depth=per_view(truth.depth[:, None]), mask=per_view(truth.mask[:, None]))

    def with_planes(self, prior: TriPlaneGenerator, plane_size: int = PLANE_SIZE) -> HeadSamples:
        """These examples with the prior's planes for their heads, all on the prior's device."""
        device = next(prior.parameters()).device
        moved = self.to(device)
        with torch.no_grad():
            planes = prior.planes(prior.mapping(moved.z, moved.c[:, 0]), noise_mode="const")
        scale = planes.shape[-1] // plane_size
        moved.planes = F.avg_pool2d(planes, scale).contiguous() if scale > 1 else planes.contiguous()
        return moved


def head_truth(seed: int, views: int, base_seed: int) -> HeadSamples:
    """``HeadSamples.truth`` of one head, its views drawn from its own seed (a prefetching worker's job)."""
    return HeadSamples.truth([seed], np.random.default_rng([base_seed, seed]), views)


@dataclass
class EncoderConfig:
    """How the embedded encoder is trained (defaults: the shipped encoder's recipe)."""

    out: str
    """folder for the encoder (encoder.safetensors, recipe.json); a stopped run there resumes"""
    prior: str | None = None
    """the prior whose planes it predicts and whose decoder renders them (default: the shipped one)"""
    init: str | None = None
    """start from this trained encoder (a folder or its encoder.safetensors) with a fresh optimiser, instead of
    from random weights (ignored when a stopped run in ``out`` resumes)"""
    seed: int = 0
    """seeds the initial weights, the heads drawn and their views"""
    device: str = "auto"
    """where the networks train: "auto" (CUDA when present), "cpu" or "cuda" (the heads are rendered on the CPU)"""
    workers: int = 0
    """processes rendering new heads beside the training (0: between steps, the CPU recipe); with workers the
    pool takes every head they finish, however many that is per step (for a GPU, which outruns one CPU)"""
    minutes: float = 60.0
    """training time budget"""
    steps: int | None = None
    """stop after this many steps instead (a fixed amount of work, e.g. in tests)"""
    batch: int = 4
    """heads per step (per process under torchrun)"""
    views: int = 2
    """views per head compared each step: the input view and random ones"""
    lr: float = 0.001
    """Adam learning rate"""
    decay_fraction: float = 0.3
    """over this last part of the budget the learning rate falls linearly ..."""
    final_lr_fraction: float = 0.1
    """... to this fraction of ``lr``"""
    pool_heads: int = 64
    """distinct heads in the training pool at any time"""
    refresh_per_step: int = 1
    """pool heads replaced by new ones after every step (without workers)"""
    rays_per_view: int = 512
    """pixels of each 64² view rendered and compared per step"""
    plane_weight: float = 1.0
    """weight of L1 to the prior's planes (divided by PLANE_SCALE)"""
    depth_weight: float = 1.0
    """weight of the depth L1 (relative to the camera distance)"""
    checkpoint_every_s: float = 120.0
    """seconds between checkpoints (a stopped run resumes from the last)"""
    preview_every: int = 50
    """steps between metric and preview events"""
    betas: tuple[float, float] = field(default=(0.9, 0.99), metadata=INTERNAL)
    """Adam's"""


class Distributed:
    """This process's place under ``torchrun`` (one process without it): rank, world size, and the
    collectives training needs."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def device(self, device: str) -> str:
        """This process's device for a resolved choice: under torchrun each process takes its own GPU."""
        if device == "cuda" and self.world > 1:
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        return device

    def checkpoint(self, path: Path, optimizer: torch.optim.Optimizer, config, **state) -> Path:
        """Write a training state atomically: ``state`` (weights, counters), the optimiser's state and the config
        (the main process does; every process gets the path)."""
        if self.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_torch(path, {**state, "optimizer": optimizer.state_dict(), "config": dataclasses.asdict(config)})
        return path

    @property
    def main(self) -> bool:
        """Whether this process writes files and reports."""
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DistributedDataParallel when there are several processes."""
        if self.world == 1:
            return module
        return nn.parallel.DistributedDataParallel(module)

    def agree(self, loop: BudgetedLoop, cancel: CancelToken) -> None:
        """Every process takes the slowest one's time and anyone's cancel, so all stop at the same step."""
        if self.world == 1:
            return
        shared = torch.tensor([loop.seconds, float(cancel.cancelled)], dtype=torch.float64)
        torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
        loop.seconds = float(shared[0])
        if shared[1] > 0:
            cancel.cancel()

    def events(self, loop: BudgetedLoop, cancel: CancelToken) -> Iterator:
        """After a step: the processes agree on time and cancel; the main one reports, the others drain the events
        (checkpoints and metrics are the main process's)."""
        self.agree(loop, cancel)
        events = loop.events()
        if self.main:
            yield from events
        else:
            for _ in events:
                pass

    def finish(self, loop: BudgetedLoop) -> Iterator:
        """The run's last checkpoint (main process), then the process group closes."""
        if self.main:
            yield from loop.finish()
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()  # nobody tears the group down while another still finishes (gloo aborted)
            torch.distributed.destroy_process_group()


def encoder_losses(encoder: nn.Module, prior: TriPlaneGenerator, batch: HeadSamples, cfg: EncoderConfig,
                   rng: torch.Generator) -> dict[str, torch.Tensor]:
    """One step's losses and their weighted sum ("total"): planes L1 and multi-view ray losses."""
    planes = encoder(batch.photo * 2 - 1)
    losses = ray_losses(prior, planes, batch.c, batch.rgb, batch.depth, batch.mask, cfg.rays_per_view, rng)
    losses["planes"] = F.l1_loss(planes, batch.planes) / PLANE_SCALE
    losses["total"] = losses["rgb"] + cfg.depth_weight * losses["depth"] + cfg.plane_weight * losses["planes"]
    return losses


def render_planes(prior: TriPlaneGenerator, planes: torch.Tensor, c: torch.Tensor,
                  resolution: int = VIEW_SIZE, occupancy: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Raw colour in [0, 1] and depth of triplanes seen from cameras c, through the prior's renderer."""
    rgb, depth = prior.render_features(planes, c, resolution, deterministic_sampling=True, occupancy=occupancy,
                                       channels=3)
    return {"rgb": ((rgb + 1) / 2).clamp(0, 1), "depth": depth}


def train_encoder_job(cfg: EncoderConfig, cancel: CancelToken) -> Iterator:
    """Train the embedded encoder (resuming a stopped run in ``cfg.out``), then write its weights and
    recipe there.  Under torchrun every process trains its own heads and gradients are averaged."""
    from safetensors.torch import save_file

    budget = Budget(cfg.steps, cfg.minutes)
    budget.validate("encoder training")
    if cfg.batch > cfg.pool_heads:
        raise UserInputError(f"a batch of {cfg.batch} heads cannot be drawn from a pool of {cfg.pool_heads}: "
                             "give --pool-heads at least --batch")
    dist = Distributed()
    device = dist.device(check_device(cfg.device))
    out_dir = Path(cfg.out)
    state_path = out_dir / "training_state.pt"
    prior = load_prior(cfg.prior).requires_grad_(False).to(device)
    torch.manual_seed(cfg.seed)
    encoder = EmbeddedEncoder()
    step, seconds, next_seed = 0, 0.0, 0
    state = read_training_state(state_path)
    if state is not None:
        encoder.load_state_dict(state["encoder"])
        step, seconds, next_seed = state["step"], state["seconds"], state["next_seed"]
    elif cfg.init is not None:
        encoder.load_state_dict(load_encoder(cfg.init).state_dict())
    encoder = encoder.to(device).train()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=cfg.lr, betas=cfg.betas)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    model = dist.wrap(encoder)
    # each process draws its own heads: seeds interleave by rank, streams are keyed by (seed, step, rank)
    rng = np.random.default_rng([cfg.seed, step, dist.rank])
    torch_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + dist.rank)

    seeds = Seeds(next_seed, dist.rank, dist.world)
    heads = Prefetcher(functools.partial(head_truth, views=cfg.views, base_seed=cfg.seed), seeds, cfg.workers)
    try:
        yield Progress(0, cfg.pool_heads, "rendering the training heads")
        pool = HeadSamples.cat(heads.take(cfg.pool_heads)).with_planes(prior)
        shown: torch.Tensor | None = None

        def save() -> Path:
            return dist.checkpoint(state_path, optimizer, cfg, encoder=cpu_tensors(encoder.state_dict()), step=step,
                                   seconds=seconds, next_seed=seeds.next)

        def measured(means: dict[str, float]) -> dict[str, float]:
            nonlocal shown
            encoder.eval()
            with torch.no_grad():
                shown = render_planes(prior, encoder(batch.photo[:1] * 2 - 1), batch.c[:1, 0])["rgb"][0]
            encoder.train()
            return {"psnr_input_view": psnr(shown, batch.rgb[0, 0])}

        loop = BudgetedLoop(budget, cancel, "encoder training", message="training the portrait encoder", save=save,
                            optimizer=optimizer, learning_rate=lambda fraction: learning_rate(cfg, fraction),
                            checkpoint_every_s=cfg.checkpoint_every_s, metrics_every=cfg.preview_every, step=step,
                            seconds=seconds, extra_metrics=measured)
        for step in loop:
            batch = pool.take(torch.from_numpy(rng.choice(cfg.pool_heads, cfg.batch, replace=False)))
            losses = encoder_losses(model, prior, batch, cfg, torch_rng)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            arrived = heads.ready(cfg.refresh_per_step)[:cfg.pool_heads]
            if arrived:
                replace = torch.from_numpy(rng.choice(cfg.pool_heads, len(arrived), replace=False))
                pool.put(replace, HeadSamples.cat(arrived).with_planes(prior))
            loop.done(**{f"loss_{key}": float(value.detach()) for key, value in losses.items()})
            yield from dist.events(loop, cancel)
            step, seconds = loop.step, loop.seconds
            if dist.main and step % cfg.preview_every == 0 and shown is not None:
                yield Preview(step, to_uint8(torch.cat([batch.rgb[0, 0], shown], dim=2).permute(1, 2, 0)),
                              {"layout": "truth|encoder"})
        yield from dist.finish(loop)
    finally:
        heads.close()
    if cancel.cancelled or not dist.main:
        return
    weights = out_dir / WEIGHTS_FILE
    atomic_write(weights, lambda tmp: save_file(cpu_tensors(encoder.state_dict()), str(tmp)))
    recipe = {"command": recipe_command(cfg, "portrait train-encoder"),
              "processes": dist.world, "device": device, "steps": step, "seconds": seconds,
              "heads_seen": seeds.next, "config": dataclasses.asdict(cfg)}
    yield Artifact(write_json(out_dir / "recipe.json", recipe), "recipe")
    yield Artifact(weights, "weights")


def cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights as contiguous CPU tensors (what safetensors files and checkpoints store)."""
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def load_encoder(path: str | Path | None = None) -> EmbeddedEncoder:
    """The shipped embedded encoder (or the one trained into ``path``), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(path) if path is not None else ENCODER_DIR
    weights = folder / WEIGHTS_FILE if folder.is_dir() or not folder.suffix else folder
    if not weights.is_file():
        raise CheckpointError(f"{folder} holds no trained encoder ({WEIGHTS_FILE}); train one with "
                              f"python main.py portrait train-encoder --out {folder}")
    encoder = EmbeddedEncoder()
    try:
        state = load_file(str(weights))
        encoder.load_state_dict(state)
    except (RuntimeError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not an embedded encoder: {str(exc).splitlines()[0]}") from None
    # channels-last convolutions: an edit about 15 % faster on this CPU (benchmarks: portrait bench-3dpe)
    return encoder.eval().requires_grad_(False).to(memory_format=torch.channels_last)


def bench_reconstruction(encoder: EmbeddedEncoder, prior: TriPlaneGenerator, heads: int = 16,
                         yaws: tuple[float, ...] = (0.0, -15.0, 15.0, -30.0, 30.0)) -> dict:
    """PSNR of held-out heads re-rendered from the encoder's planes at the input view and novel yaws,
    against the ground truth at 64², over the whole image and over the face (eyes, nose, mouth, skin)."""
    from engine.portrait.heads import FINE_LABELS

    face_labels = [FINE_LABELS.index(name) for name in ("skin", "nose", "eyes", "mouth")]
    seeds = [HELD_OUT_SEED + k for k in range(heads)]
    whole, face = [], []
    with torch.no_grad():
        for seed in seeds:
            head = HeadParams.from_seed(seed)
            photo = torch.from_numpy(render_heads([head], input_view()[None], INPUT_SIZE).rgb).permute(0, 3, 1, 2)
            planes = encoder(photo * 2 - 1)
            c = camera_labels(np.array(yaws), np.zeros(len(yaws)))
            truth = render_heads([head] * len(yaws), c, VIEW_SIZE)
            rendered = render_planes(prior, planes.expand(len(yaws), -1, -1, -1), torch.from_numpy(c))["rgb"]
            target = torch.from_numpy(truth.rgb).permute(0, 3, 1, 2)
            in_face = torch.from_numpy(np.isin(truth.labels_fine, face_labels))[:, None].expand(-1, 3, -1, -1)
            for k in range(len(yaws)):
                whole.append(psnr(rendered[k], target[k]))
                face.append(psnr(rendered[k][in_face[k]], target[k][in_face[k]]))
    return {"reconstruction_psnr": statistics.fmean(whole), "reconstruction_psnr_input_view":
            statistics.fmean(whole[::len(yaws)]), "reconstruction_face_psnr": statistics.fmean(face),
            "held_out_heads": heads, "yaws": list(yaws)}


def bench_speed(encoder: EmbeddedEncoder, prior: TriPlaneGenerator, frames: int = 20) -> dict:
    """Milliseconds to encode one 128² photo (median of ``frames``) and frames/s rendering its cached planes at
    64² (with their occupancy grid, as the workspace renders)."""
    import time

    photo = torch.from_numpy(render_heads([HeadParams.from_seed(HELD_OUT_SEED)], input_view()[None],
                                          INPUT_SIZE).rgb).permute(0, 3, 1, 2) * 2 - 1
    cameras = torch.from_numpy(camera_labels(np.linspace(-30, 30, frames), np.zeros(frames)))
    encode_times, render_times = [], []
    with torch.no_grad():
        for _ in range(frames + 2):
            start = time.perf_counter()
            planes = encoder(photo)
            encode_times.append(time.perf_counter() - start)
        occupancy = prior.occupancy(planes)
        for k in range(frames + 2):
            start = time.perf_counter()
            render_planes(prior, planes, cameras[k % frames][None], occupancy=occupancy)
            render_times.append(time.perf_counter() - start)
    return {"encode_ms": 1000 * statistics.median(encode_times[2:]),
            "fps_cached_64": 1.0 / statistics.median(render_times[2:])}
