"""FF3D's Image-to-Triplane network (I2T, Ma et al., "Free-style and Fast 3D Portrait Synthesis") and its
pre-training, written from the paper (there is no public code).

I2T replaces EG3D's triplane generator; everything else of EG3D (the triplane decoder, the renderer, the
super-resolution) stays frozen and renders I2T's planes.
* The style encoder E takes the frontal view (image_size², in [−1, 1]) through strided convolutions to a
  trunk at 32², and one 1×1 head per style to the spatial style latent w_s (c × 32 × 32); several styles
  share the trunk and the synthesis, each with its own w_s path (the paper's multi-style model).
* The synthesis starts from a learned constant at 32² and upsamples to the plane size; after every
  convolution a modulation layer (``Modulation``) normalises each pixel's feature vector across channels
  and applies spatially varying γ, β predicted from w_s (StyleGAN-like modulation made spatial); a 1×1
  convolution gives the 96 plane channels (three 32-channel planes, EG3D's order).
* Ablations (the paper's Table 2): ``vector_ws`` pools w_s to c × 1 × 1 (no spatial dimension);
  ``NoI2T`` keeps the frozen EG3D backbone and adds two modulation layers on its planes.

Pre-training (``python main.py portrait train-i2t --out DIR``): L1 between I2T(the prior's frontal render of a
random head) and the prior's triplanes of that head (average-pooled to the plane size); we add an L1 between
the colours the frozen decoder renders from both planes on random rays (``render_weight``; 0 is the paper's
recipe): at the embedded scale it makes the same minutes render better.  Resumable; the recipe is written
beside the weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
from engine.core.loop import Budget, BudgetedLoop, WeightAverage
from engine.core.metrics import psnr
from engine.core.project import atomic_write, save_torch, write_json
from engine.portrait.cameras import camera_labels
from engine.portrait.eg3d import TriPlaneGenerator
from engine.portrait.heads import PARAM_COUNT, HeadParams
from engine.portrait.live3d import cpu_tensors
from engine.portrait.prior import Rows, load_prior, read_training_state
from engine.portrait.triplane import sample_rays

I2T_DIR = Path(__file__).resolve().parents[2] / "resources" / "portrait_i2t"
"""where the shipped pre-trained I2T lives (i2t.safetensors, i2t.json, recipe.json)"""
WEIGHTS_FILE = "i2t.safetensors"
META_FILE = "i2t.json"
PLANE_SCALE = 16.0
"""the last layer's output is scaled by this: the prior's plane values spread about ±14"""
WS_SIZE = 32
"""the spatial style latent's side (the paper's c × 32 × 32)"""


@dataclass
class I2TShape:
    """The size of an I2T network (kept in i2t.json beside its weights)."""

    image_size: int = 128
    """side of the frontal input view (embedded prior: its 128² output; EG3D FFHQ: 512)"""
    plane_size: int = 128
    """side of the triplanes it outputs (EG3D: 256; the embedded path pools the prior's 256² planes to 128²)"""
    ws_channels: int = 32
    """c of w_s (c × 32 × 32)"""
    trunk: tuple[int, ...] = (32, 64, 96)
    """the style encoder's widths: one stride-2 convolution per halving to 32², then a residual block"""
    widths: tuple[int, ...] = (128, 64, 32)
    """the synthesis' widths at 32², then after each doubling up to the plane size"""
    vector_ws: bool = False
    """ablation: w_s pooled to c × 1 × 1 (no spatial dimension)"""
    styles: int = 1
    """w_s paths (one per learned style; the pre-trained network's one path reconstructs the input)"""

    def check(self) -> None:
        """A clear error for sizes the design cannot build."""
        for name, side in (("image_size", self.image_size), ("plane_size", self.plane_size)):
            if side < WS_SIZE or side & (side - 1):
                raise CheckpointError(f"I2T's {name} must be a power of two of at least {WS_SIZE}, got {side}")
        doublings = lambda side: int(np.log2(side // WS_SIZE))  # noqa: E731
        if len(self.widths) != doublings(self.plane_size) + 1:
            raise CheckpointError(f"I2T with {self.plane_size}² planes needs {doublings(self.plane_size) + 1} "
                                  f"synthesis widths (32² and each doubling), got {len(self.widths)}")
        if len(self.trunk) != doublings(self.image_size) + 1:
            raise CheckpointError(f"I2T taking {self.image_size}² images needs {doublings(self.image_size) + 1} "
                                  f"trunk widths, got {len(self.trunk)}")
        if not 1 <= self.styles <= 256 or not 1 <= self.ws_channels <= 1024:
            raise CheckpointError(f"I2T's styles ({self.styles}) and w_s channels ({self.ws_channels}) are out of "
                                  "range")

    @classmethod
    def from_json(cls, data: dict, source: str) -> I2TShape:
        try:
            shape = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        except TypeError as exc:
            raise CheckpointError(f"{source}: not an I2T description ({exc})") from None
        shape.check()
        return shape


OFFICIAL_SHAPE = I2TShape(image_size=512, plane_size=256, ws_channels=64, trunk=(32, 64, 128, 256, 256),
                          widths=(256, 128, 64, 32))
"""I2T at EG3D's full size (FFHQ 512²: 512² input, 256² planes)"""


class Modulation(nn.Module):
    """Normalise each pixel's features across channels, then scale and shift them by γ, β predicted from
    w_s at its own resolution and resized to the features' (spatially varying; constant for a vector w_s)."""

    EPS = 1e-5

    def __init__(self, channels: int, ws_channels: int) -> None:
        super().__init__()
        self.affine = nn.Conv2d(ws_channels, 2 * channels, 3, padding=1, padding_mode="replicate")
        nn.init.zeros_(self.affine.bias)
        self.affine.weight.data.mul_(0.25)

    def forward(self, x: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = x.var(1, unbiased=False, keepdim=True)
        gamma, beta = self.affine(ws).chunk(2, 1)
        if gamma.shape[-2:] != x.shape[-2:]:
            gamma = F.interpolate(gamma, size=x.shape[-2:], mode="bilinear", align_corners=False)
            beta = F.interpolate(beta, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (x - mean) * torch.rsqrt(var + self.EPS) * (1 + gamma) + beta


class GlobalBlock(nn.Module):
    """A transformer block over the 32² trunk features: a triplane's texel (x, z) or (z, x) depends on image
    pixels far from its own place in the image, which convolutions alone do not reach."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))
        self.position = nn.Parameter(torch.zeros(1, WS_SIZE * WS_SIZE, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.position
        normed = self.norm1(tokens)
        tokens = tokens + self.attention(normed, normed, normed, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(n, c, h, w)


class StyleEncoder(nn.Module):
    """Frontal view → w_s for each style path."""

    def __init__(self, shape: I2TShape) -> None:
        super().__init__()
        layers, width = [], 3
        for out in shape.trunk[:-1]:
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width = out
        layers += [nn.Conv2d(width, shape.trunk[-1], 3, padding=1), nn.LeakyReLU(0.2)]
        self.trunk = nn.Sequential(*layers)
        last = shape.trunk[-1]
        self.residual = nn.Sequential(nn.Conv2d(last, last, 3, padding=1), nn.LeakyReLU(0.2),
                                      nn.Conv2d(last, last, 3, padding=1))
        self.attention = GlobalBlock(last)
        self.heads = nn.ModuleList(nn.Conv2d(last, shape.ws_channels, 1) for _ in range(shape.styles))
        self.vector = shape.vector_ws
        self.image_size = shape.image_size

    def features(self, image: torch.Tensor) -> torch.Tensor:
        x = self.trunk(image)
        return self.attention(F.leaky_relu(x + self.residual(x), 0.2))

    def forward(self, image: torch.Tensor, style: int = 0) -> torch.Tensor:
        if image.shape[-1] != self.image_size:  # any frontal view: the trunk ends at 32² from its own input size
            image = F.interpolate(image, size=(self.image_size, self.image_size), mode="area")
        ws = self.heads[style](self.features(image))
        return ws.mean((2, 3), keepdim=True) if self.vector else ws


class I2T(nn.Module):
    """Image-to-Triplane: the frontal view (N, 3, S, S) in [−1, 1] → triplanes (N, 96, P, P); see the module
    docstring."""

    def __init__(self, shape: I2TShape | None = None) -> None:
        super().__init__()
        self.shape = shape = shape or I2TShape()
        shape.check()
        self.encoder = StyleEncoder(shape)
        self.const = nn.Parameter(torch.randn(1, shape.widths[0], WS_SIZE, WS_SIZE))
        self.convs = nn.ModuleList()
        self.mods = nn.ModuleList()
        width = shape.widths[0]
        for k, out in enumerate(shape.widths):
            for _ in range(2 if k == 0 else 1):
                self.convs.append(nn.Conv2d(width, out, 3, padding=1))
                self.mods.append(Modulation(out, shape.ws_channels))
                width = out
        self.to_planes = nn.Conv2d(width, 96, 1)

    def ws(self, image: torch.Tensor, style: int = 0) -> torch.Tensor:
        """w_s (N, c, 32, 32) of style path ``style`` (c × 1 × 1 for the vector ablation)."""
        if not 0 <= style < self.shape.styles:
            raise UserInputError(f"this I2T has {self.shape.styles} style(s); style {style} does not exist")
        return self.encoder(image, style)

    def synthesise(self, ws: torch.Tensor) -> torch.Tensor:
        """Triplanes from w_s."""
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        first_block = 2
        for k, (conv, mod) in enumerate(zip(self.convs, self.mods)):
            if k >= first_block:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = F.leaky_relu(mod(conv(x), ws), 0.2)
        return PLANE_SCALE * self.to_planes(x)

    def forward(self, image: torch.Tensor, style: int = 0) -> torch.Tensor:
        return self.synthesise(self.ws(image, style))


class NoI2T(nn.Module):
    """The "without I2T" ablation: the frozen EG3D backbone's planes (pooled to the plane size) with two
    modulation layers on top, γ, β from the style encoder's w_s of the frontal view; a residual whose last
    convolution starts at zero, so training starts from the prior's planes."""

    def __init__(self, shape: I2TShape) -> None:
        super().__init__()
        self.shape = shape
        self.encoder = StyleEncoder(shape)
        self.mod1, self.mod2 = Modulation(96, shape.ws_channels), Modulation(96, shape.ws_channels)
        self.conv = nn.Conv2d(96, 96, 3, padding=1)
        self.out = nn.Conv2d(96, 96, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, image: torch.Tensor, backbone_planes: torch.Tensor, style: int = 0) -> torch.Tensor:
        return self.from_ws(self.encoder(image, style), backbone_planes)

    def from_ws(self, ws: torch.Tensor, backbone_planes: torch.Tensor) -> torch.Tensor:
        """The backbone's planes modulated by w_s."""
        x = F.leaky_relu(self.mod1(backbone_planes, ws), 0.2)
        x = F.leaky_relu(self.mod2(self.conv(x), ws), 0.2)
        return backbone_planes + PLANE_SCALE * self.out(x)


# --- the prior's heads ---

def is_embedded_prior(prior: TriPlaneGenerator) -> bool:
    """Whether latents of ``prior`` are synthetic heads' standardised parameters (the embedded prior) rather
    than Gaussian (EG3D's)."""
    return prior.z_dim == PARAM_COUNT


def prior_latents(prior: TriPlaneGenerator, seeds: list[int]) -> torch.Tensor:
    """The latent of each seed's head: the synthetic head of that seed for the embedded prior, a Gaussian
    draw seeded by it for EG3D."""
    if is_embedded_prior(prior):
        return torch.from_numpy(np.stack([HeadParams.from_seed(s).standardised() for s in seeds])).float()
    return torch.stack([torch.randn(prior.z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def frontal_camera(count: int = 1) -> torch.Tensor:
    """Camera labels (count, 25) of the frontal view I2T takes."""
    return torch.from_numpy(camera_labels(np.zeros(count), np.zeros(count))).float()


def prior_heads(prior: TriPlaneGenerator, z: torch.Tensor, plane_size: int,
                truncation_psi: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(frontal image (N, 3, R, R) in [0, 1] at the prior's output size, its triplanes average-pooled to
    ``plane_size``) of latents z."""
    device = next(prior.parameters()).device
    z = z.to(device)
    c = frontal_camera(z.shape[0]).to(device)
    with torch.no_grad():
        ws = prior.mapping(z, c, truncation_psi=truncation_psi)
        out = prior.synthesis(ws, c, noise_mode="const", deterministic_sampling=True)
    planes = out["planes"]
    if planes.shape[-1] > plane_size:
        planes = F.avg_pool2d(planes, planes.shape[-1] // plane_size)
    return ((out["image"] + 1) / 2).clamp(0, 1), planes.contiguous()


def prior_fingerprint(prior: TriPlaneGenerator) -> str:
    """A short hash of what renders I2T's planes (the decoder and the super-resolution): a style trained for one
    prior is refused by another."""
    digest = hashlib.sha256()
    for module in (prior.decoder, prior.superresolution):
        for name, value in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def render_colour(prior: TriPlaneGenerator, planes: torch.Tensor, c: torch.Tensor, pixels: torch.Tensor,
                  resolution: int) -> torch.Tensor:
    """Raw colour in [0, 1] (N, V, M, 3) the frozen decoder renders from planes (N, ...) at pixel indices
    ``pixels`` (N, V, M) of views c (N, V, 25) at ``resolution``²."""
    n, views, m = pixels.shape
    flat = c.reshape(n * views, 25)
    origins, directions = sample_rays(flat[:, :16].view(-1, 4, 4), flat[:, 16:25].view(-1, 3, 3), resolution)
    index = pixels.reshape(n * views, m, 1).expand(-1, -1, 3)
    origins = torch.gather(origins, 1, index).reshape(n, views * m, 3)
    directions = torch.gather(directions, 1, index).reshape(n, views * m, 3)
    rgb, _ = prior.render_rays(planes, origins, directions, deterministic_sampling=True, channels=3)
    return ((rgb + 1) / 2).reshape(n, views, m, 3)


# --- pre-training ---

@dataclass
class PretrainConfig:
    """How I2T is pre-trained to reproduce the prior (defaults: the shipped network's recipe)."""

    out: str
    """folder for the network (i2t.safetensors, i2t.json, recipe.json); a stopped run there resumes"""
    prior: str | None = None
    """the prior whose planes it learns (default: the embedded one)"""
    seed: int = 0
    """seeds the initial weights and the heads drawn"""
    device: str = "auto"
    """where it trains: "auto" (CUDA when present), "cpu" or "cuda\""""
    minutes: float = 60.0
    """training time budget"""
    steps: int | None = None
    """stop after this many steps instead (a fixed amount of work, e.g. in tests)"""
    batch: int = 4
    """heads per step"""
    lr: float = 0.001
    """Adam learning rate (FF3D's fine-tuning rate 0.002 with its betas (0, 0.99) learns slower from scratch: 15.7
    against 16.9 dB after 200 steps, measured)"""
    pool_heads: int = 64
    """distinct heads in the training pool"""
    refresh_per_step: int = 1
    """pool heads replaced by new ones after every step"""
    render_weight: float = 1.0
    """weight of the rendered-colour L1 on random rays (ours; 0: the paper's plane L1 alone)"""
    rays: int = 512
    """rays per head for the rendered-colour term"""
    vector_ws: bool = False
    """pre-train the vector-w_s ablation instead"""
    truncation_psi: float = 0.7
    """EG3D priors: the truncation of the heads drawn (the embedded prior's heads are never truncated)"""
    ema_half_life: float = 200.0
    """steps over which the saved weights' moving average (StyleGAN's G_ema) halves; 0 saves the last step's"""
    checkpoint_every_s: float = 120.0
    """seconds between checkpoints"""
    preview_every: int = 50
    """steps between metric and preview events"""
    betas: tuple[float, float] = field(default=(0.9, 0.99), metadata=INTERNAL)
    """Adam's"""
    shape: dict | None = field(default=None, metadata=INTERNAL)
    """the network's size (I2TShape fields; default: the embedded size, or EG3D's full size for an EG3D prior)"""


@dataclass
class PriorHeads(Rows):
    """Pre-training examples: frontal views and the prior's planes."""

    image: torch.Tensor
    planes: torch.Tensor


def shape_for(prior: TriPlaneGenerator, given: dict | None = None, **changes) -> I2TShape:
    """The I2T size for a prior: given, else the embedded size or EG3D's full size."""
    base = I2TShape(**given) if given else (I2TShape() if is_embedded_prior(prior) else OFFICIAL_SHAPE)
    if not given:
        base = dataclasses.replace(base, image_size=prior.img_resolution)
    return dataclasses.replace(base, **changes)


def pretrain_losses(i2t: I2T, prior: TriPlaneGenerator, batch: PriorHeads, cfg: PretrainConfig,
                    rng: torch.Generator) -> dict[str, torch.Tensor]:
    """Plane L1 (/ PLANE_SCALE) and, with ``render_weight``, the rendered-colour L1 against the target planes'."""
    planes = i2t(batch.image * 2 - 1)
    losses = {"planes": F.l1_loss(planes, batch.planes) / PLANE_SCALE}
    total = losses["planes"]
    if cfg.render_weight > 0:
        n, resolution = planes.shape[0], prior.neural_rendering_resolution
        c = camera_labels(rng_uniform(rng, n, 30.0), rng_uniform(rng, n, 20.0))
        c = torch.from_numpy(c).float().to(planes.device)[:, None]
        pixels = torch.randint(0, resolution * resolution, (n, 1, cfg.rays), generator=rng).to(planes.device)
        with torch.no_grad():
            target = render_colour(prior, batch.planes, c, pixels, resolution)
        losses["render"] = F.l1_loss(render_colour(prior, planes, c, pixels, resolution), target)
        total = total + cfg.render_weight * losses["render"]
    losses["total"] = total
    return losses


def rng_uniform(rng: torch.Generator, count: int, limit: float) -> np.ndarray:
    """``count`` angles uniform in ±limit degrees from a torch generator."""
    return ((torch.rand(count, generator=rng, dtype=torch.float64) * 2 - 1) * limit).numpy()


def pretrain_i2t_job(cfg: PretrainConfig, cancel: CancelToken) -> Iterator:
    """Pre-train I2T (resuming a stopped run in ``cfg.out``), then write its weights, size and recipe there."""
    budget = Budget(cfg.steps, cfg.minutes)
    budget.validate("I2T pre-training")
    if cfg.batch > cfg.pool_heads:
        raise UserInputError(f"a batch of {cfg.batch} heads cannot be drawn from a pool of {cfg.pool_heads}")
    device = check_device(cfg.device)
    out_dir = Path(cfg.out)
    state_path = out_dir / "training_state.pt"
    prior = load_prior(cfg.prior).requires_grad_(False).to(device)
    shape = shape_for(prior, cfg.shape, vector_ws=cfg.vector_ws)
    torch.manual_seed(cfg.seed)
    i2t = I2T(shape)
    step, seconds, next_seed = 0, 0.0, 0
    state = read_training_state(state_path)
    if state is not None:
        i2t.load_state_dict(state["i2t"])
        step, seconds, next_seed = state["step"], state["seconds"], state["next_seed"]
    i2t = i2t.to(device).train()
    average = WeightAverage(i2t, cfg.ema_half_life)
    optimizer = torch.optim.Adam(i2t.parameters(), lr=cfg.lr, betas=cfg.betas)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        average.network.load_state_dict(state.get("average", state["i2t"]))  # runs from before the average
    rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    truncation = 1.0 if is_embedded_prior(prior) else cfg.truncation_psi

    def heads(count: int) -> PriorHeads:
        nonlocal next_seed
        seeds = list(range(next_seed, next_seed + count))
        next_seed += count
        return PriorHeads(*prior_heads(prior, prior_latents(prior, seeds), shape.plane_size, truncation))

    yield Progress(0, cfg.pool_heads, "rendering the prior's heads")
    pool = heads(cfg.pool_heads)
    shown: dict[str, float] = {}

    def save() -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        return save_torch(state_path, {"i2t": cpu_tensors(i2t.state_dict()), "optimizer": optimizer.state_dict(),
                                       "average": cpu_tensors(average.network.state_dict()),
                                       "step": step, "seconds": seconds, "next_seed": next_seed,
                                       "config": dataclasses.asdict(cfg)})

    def measured(_: dict[str, float]) -> dict[str, float]:
        return dict(shown)

    loop = BudgetedLoop(budget, cancel, "I2T pre-training", message="pre-training I2T on the prior's heads",
                        save=save, optimizer=optimizer, learning_rate=lambda _: cfg.lr,
                        checkpoint_every_s=cfg.checkpoint_every_s, metrics_every=cfg.preview_every, step=step,
                        seconds=seconds, extra_metrics=measured)
    for step in loop:
        batch = pool.take(torch.randperm(cfg.pool_heads, generator=rng)[:cfg.batch])
        losses = pretrain_losses(i2t, prior, batch, cfg, rng)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        average.update(i2t, loop.step + 1)
        if cfg.refresh_per_step:
            pool.put(torch.randperm(cfg.pool_heads, generator=rng)[:cfg.refresh_per_step], heads(cfg.refresh_per_step))
        loop.done(**{f"loss_{k}": float(v.detach()) for k, v in losses.items()})
        step, seconds = loop.step, loop.seconds
        if step % cfg.preview_every == 0:
            truth, rendered = preview_pair(average.network, prior, batch.image[:1], batch.planes[:1])
            shown = {"psnr_vs_prior": psnr(rendered, truth)}
            yield Preview(step, to_uint8(torch.cat([truth, rendered], 2).permute(1, 2, 0)), {"layout": "prior|i2t"})
        yield from loop.events()
    yield from loop.finish()
    if cancel.cancelled:
        return
    recipe = {"command": recipe_command(cfg, "portrait train-i2t"), "device": device, "steps": step,
              "seconds": seconds, "heads_seen": next_seed, "config": dataclasses.asdict(cfg)}
    weights = save_i2t(out_dir, average.network, {"prior": prior_fingerprint(prior), "styles": ["reconstruction"]})
    yield Artifact(write_json(out_dir / "recipe.json", recipe), "recipe")
    yield Artifact(weights, "weights")


def preview_pair(i2t: I2T, prior: TriPlaneGenerator, image: torch.Tensor,
                 planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the prior's frontal render, I2T's) of one head at the neural rendering resolution, in [0, 1]."""
    c = frontal_camera().to(image.device)
    was = i2t.training
    i2t.eval()
    with torch.no_grad():
        truth, _ = prior.render_features(planes, c, prior.neural_rendering_resolution, True, channels=3)
        rendered, _ = prior.render_features(i2t(image * 2 - 1), c, prior.neural_rendering_resolution, True, channels=3)
    i2t.train(was)
    return ((truth[0] + 1) / 2).clamp(0, 1), ((rendered[0] + 1) / 2).clamp(0, 1)


# --- files ---

def save_i2t(folder: Path, i2t: I2T | NoI2T, meta: dict) -> Path:
    """Write i2t.safetensors and i2t.json (its size and ``meta``) atomically; returns the weights' path."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    atomic_write(weights, lambda tmp: save_file(cpu_tensors(i2t.state_dict()), str(tmp)))
    write_json(folder / META_FILE, {**meta, "shape": dataclasses.asdict(i2t.shape)})
    return weights


MAX_I2T_BYTES = 2**30
"""the most an I2T file may ask to allocate (EG3D's full size with a few styles is about 60 MB)"""


def read_i2t(folder: str | Path | None = None) -> tuple[I2T | NoI2T, dict]:
    """An I2T (or the without-I2T ablation's network, i2t.json's "variant" "no_i2t") and its i2t.json from a
    folder (default: the shipped pre-trained one), in eval mode; a clear error naming the file for anything
    missing, misshapen or too large."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else I2T_DIR
    meta_path, weights = folder / META_FILE, folder / WEIGHTS_FILE
    if not meta_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{folder} holds no I2T network ({META_FILE} and {WEIGHTS_FILE}); pre-train one with "
                              f"python main.py portrait train-i2t --out {folder}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("shape"), dict):
        raise CheckpointError(f"{meta_path}: no network size ('shape') in it")
    shape = I2TShape.from_json(meta["shape"], str(meta_path))
    kind = NoI2T if meta.get("variant") == "no_i2t" else I2T
    with torch.device("meta"):
        expected = {k: v.shape for k, v in kind(shape).state_dict().items()}
    if sum(int(np.prod(s)) * 4 for s in expected.values()) > MAX_I2T_BYTES:
        raise CheckpointError(f"{meta_path}: describes a network larger than {MAX_I2T_BYTES >> 20} MiB")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{weights}: not a safetensors file ({exc})") from None
    problems = sorted(set(expected) ^ set(state)) + [k for k in expected if k in state and
                                                       state[k].shape != expected[k]]
    if problems:
        raise CheckpointError(f"{weights}: its tensors do not fit the size {META_FILE} gives (e.g. "
                              f"{', '.join(problems[:4])})")
    network = kind(shape)
    network.load_state_dict({k: v.float() for k, v in state.items()})
    return network.eval(), meta
