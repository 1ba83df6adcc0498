"""SemFaceEdit's adversarial training on real portraits (the paper's GPU path): ``portrait semantic train --data
DIR`` trains the generator (engine.portrait.semantic) from aligned photos with their face-parsing label maps and
camera poses, in the paper's two stages: first everything, then with the geometry (manifold sampler and
geometry module) frozen while the appearance is refined.

Losses, as the paper (on GRAM's): the non-saturating GAN loss with an R1 penalty on real images, from two
discriminators, one on colour and one on colour with the semantic map (so maps and colours must agree); the
colour discriminator also regresses the camera (yaw, pitch) of every image, real or generated, and the latents of
generated ones (latent regression: each latent must leave a trace in its image).  Adam with betas (0, 0.9);
gradients clipped at 1.  Mixed precision on CUDA, as the paper trained; data-parallel under ``torchrun`` (NCCL on
GPUs, gloo on CPUs), as the 3DPE trainings: every process its own images and latents, gradients averaged.

The data folder (``SemanticFolder``): the photos, EG3D's ``dataset.json`` (``{"labels": [[file, [25 floats]],
...]}``: each photo's camera label), and ``labels/`` holding a label PNG of the same name per photo; the order of
its labels is named in ``labels/labels.json`` (``{"order": "bisenet"}``), CelebAMask-HQ's by default.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.config import INTERNAL, recipe_command
from engine.core.devices import check_device
from engine.core.errors import UserInputError
from engine.core.jobs import CancelToken, Progress
from engine.core.loop import Budget, BudgetedLoop
from engine.core.project import save_torch
from engine.portrait.cameras import rays
from engine.portrait.heads import PARAM_COUNT
from engine.portrait.live3d import Distributed
from engine.portrait.prior import read_training_state
from engine.portrait.semantic import GROUPS, LABEL_ORDERS, SemanticGenerator, group_table
from engine.portrait.semantic_training import latents_of, load_semantic, write_semantic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class SemanticGanConfig:
    """How SemFaceEdit is trained on real portraits (defaults: the paper's, on GRAM's settings)."""

    data: str
    """the data folder: photos, dataset.json (their EG3D camera labels) and labels/ (their label maps)"""
    out: str
    """folder for the generator; a stopped run there resumes"""
    init: str | None = None
    """start the generator from this trained one (e.g. the embedded generator) instead of random weights"""
    minutes: float = 600.0
    """training time budget"""
    steps: int | None = None
    """stop after this many steps instead"""
    resolution: int = 64
    """side of the images compared"""
    batch: int = 8
    """images per step (per process under torchrun)"""
    g_lr: float = 2e-5
    """the generator's Adam learning rate (GRAM's)"""
    d_lr: float = 2e-4
    """the discriminators' (GRAM's)"""
    r1_gamma: float = 1.0
    """weight of the R1 penalty on real images"""
    pose_weight: float = 15.0
    """weight of the camera regression"""
    latent_weight: float = 1.0
    """weight of the latent regression"""
    appearance_stage: float = 0.5
    """from this fraction of the budget on, the geometry is frozen and the appearance refined (stage 2)"""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu" or "cuda"; mixed precision on CUDA"""
    seed: int = 0
    """seeds the weights, the latents and the data order"""
    checkpoint_every_s: float = 300.0
    """seconds between checkpoints"""
    betas: tuple[float, float] = field(default=(0.0, 0.9), metadata=INTERNAL)
    """Adam's (GRAM's)"""


class SemanticFolder:
    """Aligned photos with label maps and camera labels (see the module notes), read at ``resolution``."""

    def __init__(self, folder: str | Path, resolution: int) -> None:
        from PIL import Image

        self.folder, self.resolution = Path(folder), resolution
        described = self.folder / "dataset.json"
        if not described.is_file():
            raise UserInputError(f"{self.folder}: no dataset.json with the photos' camera labels (EG3D's "
                                 '{"labels": [[file, [25 floats]], ...]})')
        try:
            cameras = dict(json.loads(described.read_text())["labels"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UserInputError(f"{described}: not EG3D's dataset.json ({exc})") from None
        photos = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise UserInputError(f"{self.folder}: no photos ({', '.join(IMAGE_SUFFIXES)})")
        labels_dir = self.folder / "labels"
        missing = [p.name for p in photos if not (labels_dir / p.with_suffix(".png").name).is_file()]
        if missing:
            raise UserInputError(f"{self.folder}: {len(missing)} photos have no label map in labels/ (e.g. "
                                 f"{missing[0]}: labels/{Path(missing[0]).with_suffix('.png').name})")
        unposed = [p.name for p in photos if p.name not in cameras]
        if unposed:
            raise UserInputError(f"{self.folder}: {len(unposed)} photos have no camera in dataset.json (e.g. "
                                 f"{unposed[0]})")
        order_file = labels_dir / "labels.json"
        self.order = json.loads(order_file.read_text()).get("order", "celebamask") if order_file.is_file() \
            else "celebamask"
        if self.order not in LABEL_ORDERS:
            raise UserInputError(f"{order_file}: unknown label order {self.order!r} (use {' or '.join(LABEL_ORDERS)})")
        table = group_table(self.order).numpy().astype(np.uint8)
        images, maps, labels = [], [], []
        for photo in photos:
            with Image.open(photo) as opened:
                images.append(np.asarray(opened.convert("RGB").resize((resolution,) * 2, Image.Resampling.LANCZOS)))
            with Image.open(labels_dir / photo.with_suffix(".png").name) as opened:
                ids = np.asarray(opened.convert("L").resize((resolution,) * 2, Image.Resampling.NEAREST))
            if ids.max() >= len(table):
                raise UserInputError(f"{labels_dir / photo.with_suffix('.png').name}: label {ids.max()} is not one "
                                     f"of the {len(table)} {self.order} labels")
            maps.append(table[ids])
            labels.append(cameras[photo.name])
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        self.maps = torch.from_numpy(np.stack(maps).astype(np.int64))
        self.cameras = torch.tensor(labels, dtype=torch.float32)
        if self.cameras.shape[1:] != (25,):
            raise UserInputError(f"{described}: camera labels must hold 25 numbers")

    def __len__(self) -> int:
        return len(self.images)


def camera_angles(c: torch.Tensor) -> torch.Tensor:
    """(yaw, pitch) in radians (B, 2) of EG3D camera labels: from the camera's position around the head."""
    position = c[:, :16].reshape(-1, 4, 4)[:, :3, 3]
    return torch.stack([torch.atan2(position[:, 0], position[:, 2]),
                        torch.atan2(position[:, 1], position[:, [0, 2]].norm(dim=1))], 1)


class Discriminator(nn.Module):
    """A small convolutional discriminator: images (B, C, R, R) → realness logit (B,) and ``extra`` regressed
    values (B, extra)."""

    def __init__(self, channels: int, resolution: int, extra: int = 0, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        size, inputs = resolution, width
        while size > 4:
            outputs = min(2 * inputs, 256)
            layers += [nn.Conv2d(inputs, outputs, 4, 2, 1), nn.LeakyReLU(0.2)]
            size, inputs = size // 2, outputs
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(inputs * size * size, 1 + extra)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.features(images * 2 - 1))
        return out[:, 0], out[:, 1:]


class Discriminators(nn.Module):
    """The colour discriminator (also regressing camera angles and latents) and the semantic one (colour with
    the soft group map)."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.colour = Discriminator(3, resolution, extra=2 + PARAM_COUNT)
        self.semantic = Discriminator(3 + len(GROUPS), resolution)

    def forward(self, rgb: torch.Tensor, semantic: torch.Tensor) -> dict[str, torch.Tensor]:
        realness, regressed = self.colour(rgb)
        return {"colour": realness, "semantic": self.semantic(torch.cat([rgb, semantic], 1))[0],
                "angles": regressed[:, :2], "latents": regressed[:, 2:]}


def generate(generator: SemanticGenerator, z: torch.Tensor, c: torch.Tensor, resolution: int) -> dict:
    """Images of latents z (B, 36) from cameras c (B, 25): rgb (B, 3, R, R) and the soft group map."""
    origins, directions = rays(c.detach().cpu().numpy(), resolution)
    out = generator.render_rays(generator.styles(latents_of(z)), origins[:, 0].to(z.device), directions.to(z.device))
    image = lambda values: values.transpose(1, 2).unflatten(2, (resolution, resolution))  # noqa: E731
    return {"rgb": image(out["rgb"]), "semantic": image(out["semantic"])}


def semantic_gan_job(cfg: SemanticGanConfig, cancel: CancelToken) -> Iterator:
    """Train SemFaceEdit on real portraits (resuming a stopped run in ``cfg.out``), then write the generator."""
    budget = Budget(cfg.steps, cfg.minutes)
    budget.validate("SemFaceEdit training")
    data = SemanticFolder(cfg.data, cfg.resolution)
    dist = Distributed()
    device = dist.device(check_device(cfg.device))
    mixed = torch.device(device).type == "cuda"
    out_dir = Path(cfg.out)
    state_path = out_dir / "training_state.pt"
    torch.manual_seed(cfg.seed)
    generator = load_semantic(cfg.init).train() if cfg.init else SemanticGenerator()
    critics = Discriminators(cfg.resolution)
    step, seconds = 0, 0.0
    state = read_training_state(state_path)
    if state is not None:
        generator.load_state_dict(state["generator"])
        critics.load_state_dict(state["discriminators"])
        step, seconds = state["step"], state["seconds"]
    generator, critics = generator.to(device), critics.to(device)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.g_lr, betas=cfg.betas)
    d_optimizer = torch.optim.Adam(critics.parameters(), lr=cfg.d_lr, betas=cfg.betas)
    if state is not None:
        g_optimizer.load_state_dict(state["g_optimizer"])
        d_optimizer.load_state_dict(state["d_optimizer"])
    scaler = torch.amp.GradScaler("cuda", enabled=mixed)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + dist.rank)
    frozen = False

    def save() -> Path:
        if dist.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_torch(state_path, {"generator": _cpu(generator), "discriminators": _cpu(critics),
                                    "g_optimizer": g_optimizer.state_dict(), "d_optimizer": d_optimizer.state_dict(),
                                    "step": step, "seconds": seconds, "config": dataclasses.asdict(cfg)})
        return state_path

    loop = BudgetedLoop(budget, cancel, "SemFaceEdit training", message="training SemFaceEdit on real portraits",
                        save=save, checkpoint_every_s=cfg.checkpoint_every_s, step=step, seconds=seconds)
    yield Progress(step, cfg.steps, f"{len(data)} portraits from {data.folder}, labels in the {data.order} order")
    for step in loop:
        if not frozen and loop.fraction >= cfg.appearance_stage:  # stage 2: the geometry stays as it is
            frozen = True
            for module in (generator.sampler, generator.geometry):
                module.requires_grad_(False)
        pick = torch.randint(len(data), (cfg.batch,), generator=g)
        real_rgb, real_map = data.images[pick].to(device), data.maps[pick].to(device)
        real_semantic = F.one_hot(real_map, len(GROUPS)).permute(0, 3, 1, 2).float()
        c = data.cameras[torch.randint(len(data), (cfg.batch,), generator=g)].to(device)
        z = torch.randn(cfg.batch, PARAM_COUNT, generator=g).to(device)
        with torch.autocast("cuda", enabled=mixed):
            fake = generate(generator, z, c, cfg.resolution)
        # the discriminators: non-saturating loss, R1 on real images, camera regression on both
        real_rgb.requires_grad_(True)
        with torch.autocast("cuda", enabled=mixed):
            real = critics(real_rgb, real_semantic)
            faked = critics(fake["rgb"].detach(), fake["semantic"].detach())
            d_loss = (F.softplus(faked["colour"]) + F.softplus(-real["colour"]) + F.softplus(faked["semantic"])
                      + F.softplus(-real["semantic"])).mean() \
                + cfg.pose_weight * F.mse_loss(real["angles"], camera_angles(data.cameras[pick].to(device)))
        (gradient,) = torch.autograd.grad(scaler.scale(real["colour"].sum() + real["semantic"].sum()), real_rgb,
                                          create_graph=True)
        gradient = gradient / scaler.get_scale() if mixed else gradient
        d_loss = d_loss + cfg.r1_gamma / 2 * gradient.square().sum((1, 2, 3)).mean()
        update(d_loss, critics, d_optimizer, scaler, dist)
        # the generator: fool both, and let the camera and the latents be read back from its images
        with torch.autocast("cuda", enabled=mixed):
            judged = critics(fake["rgb"], fake["semantic"])
            g_loss = (F.softplus(-judged["colour"]) + F.softplus(-judged["semantic"])).mean() \
                + cfg.pose_weight * F.mse_loss(judged["angles"], camera_angles(c)) \
                + cfg.latent_weight * F.mse_loss(judged["latents"], z)
        update(g_loss, generator, g_optimizer, scaler, dist)
        scaler.update()
        if not all(math.isfinite(float(v.detach())) for v in (d_loss, g_loss)):
            raise RuntimeError(f"the losses left the finite numbers at step {step} (discriminators {float(d_loss)}, "
                               f"generator {float(g_loss)}): lower --g-lr / --d-lr")
        loop.done(loss_d=float(d_loss.detach()), loss_g=float(g_loss.detach()))
        yield from dist.events(loop, cancel)
        step, seconds = loop.step, loop.seconds
    yield from dist.finish(loop)
    if cancel.cancelled or not dist.main:
        return
    yield from write_semantic(generator.cpu().eval(), out_dir, {
        "command": recipe_command(cfg, "portrait semantic train"), "processes": dist.world, "device": device,
        "steps": step, "seconds": seconds, "portraits": len(data), "config": dataclasses.asdict(cfg)})


def update(loss: torch.Tensor, module: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
           dist: Distributed) -> None:
    """One step of ``module`` on ``loss``: its gradients averaged over the torchrun processes (by hand, as
    DistributedDataParallel would: the generator renders outside a forward call and R1 differentiates the
    discriminators twice), clipped at 1, then applied through the mixed-precision scaler."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if dist.world > 1:
        for p in module.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    scaler.step(optimizer)


def _cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


__all__ = ["Discriminators", "SemanticFolder", "SemanticGanConfig", "camera_angles", "semantic_gan_job"]
