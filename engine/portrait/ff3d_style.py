"""FF3D's styles: the few-shot stylised set, fine-tuning I2T on it, and applying (and mixing) learned styles.

* The set (``build_set_job``, ``python main.py portrait style build-set``): the prior renders one or more
  identities on a pitch × yaw grid within ±30° (10 × 10 by default) plus the frontal view; a 2D editor
  stylises each view: InstructPix2Pix with FF3D's stabilised inference (``InstructPix2PixEditor.stylise``:
  one fixed noise for every view, the start the view's latent noised to τ = 0.9, 20 DDIM steps, s_I = 1.5,
  s_T = 20, the enhanced positive and the negative prompt), or the embedded offline editor's style with its
  per-view variation (seeded per view), so views disagree the way diffusion edits do.  The set is a folder
  (views/, sources/, set.json with the cameras, prompt, seed and which views are kept) a user inspects and
  prunes before training.
* Fine-tuning (``train_style_job``, ``portrait style train``): I2T (pre-trained, engine.portrait.ff3d) renders
  every kept view of an identity from its frontal source through the frozen decoder; λ_rec = 10 × (L1 +
  LPIPS) against the set's view, λ_dr = 0.2 × the density difference at small random offsets; Adam lr 0.002,
  betas (0, 0.99).  Several sets train one multi-style model, each style with its own w_s path.
* Applying (``StyleModel``, ``portrait style apply``): a sampled head's frontal render or an aligned photo →
  the style's triplanes → views, orbit video, mesh; two styles mix by interpolating w_s (and, for styles
  fine-tuned apart, the rest of their networks, which share the pre-trained start).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.core.config import INTERNAL, recipe_command
from engine.core.devices import check_device
from engine.core.errors import UserInputError
from engine.core.imaging import to_uint8, write_png
from engine.core.jobs import Artifact, CancelToken, JobWarning, Preview, Progress
from engine.core.loop import Budget, BudgetedLoop, WeightAverage
from engine.core.metrics import load_lpips
from engine.core.project import save_torch, write_json
from engine.portrait.cameras import camera_labels
from engine.portrait.eg3d import TriPlaneGenerator
from engine.portrait.ff3d import (I2T, NoI2T, frontal_camera, is_embedded_prior, prior_fingerprint, prior_heads,
                                  prior_latents, read_i2t, render_colour, save_i2t)
from engine.portrait.live3d import cpu_tensors, render_planes
from engine.portrait.prior import PITCH_RANGE_DEG, load_prior, read_training_state
from engine.portrait.triplane import sample_planes

POSITIVE_TEMPLATE = "turn the head into {}, realistic, detail, 8k, photorealistic"
"""FF3D's enhanced positive prompt"""
NEGATIVE_PROMPT = "unclear facial features, non-face objects, ugly, bad"
"""FF3D's negative prompt (it takes InstructPix2Pix's unconditional text branch)"""
SET_FILE = "set.json"
STYLE_FILE = "style.json"
EDITORS = ("offline", "ip2p")


def positive_prompt(style: str) -> str:
    """The enhanced prompt for a style; an empty style is a UserInputError."""
    text = " ".join((style or "").split())
    if not text:
        raise UserInputError("the style is empty: type a style, e.g. 'a bronze statue' or 'pencil sketch'")
    return POSITIVE_TEMPLATE.format(text)


def parse_grid(text: str) -> tuple[int, int]:
    """"ROWSxCOLS" (pitch × yaw) → (rows, cols)."""
    try:
        rows, cols = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UserInputError(f"--grid must be ROWSxCOLS (pitch x yaw), e.g. 10x10; got {text!r}") from None
    if not (1 <= rows <= 32 and 1 <= cols <= 32):
        raise UserInputError(f"--grid rows and columns must lie in 1-32, got {text!r}")
    return rows, cols


def grid_angles(rows: int, cols: int, yaw_range: float, pitch_range: float) -> list[tuple[float, float]]:
    """(yaw, pitch) of the set's views: the frontal view first, then the grid's (pitch × yaw within the ranges,
    the frontal view not repeated)."""
    def span(n: int, limit: float) -> list[float]:
        return [0.0] if n == 1 else [float(a) for a in np.linspace(-limit, limit, n)]

    angles = [(0.0, 0.0)] + [(yaw, pitch) for pitch in span(rows, pitch_range) for yaw in span(cols, yaw_range)]
    return list(dict.fromkeys(angles))


# --- the few-shot stylised set ---

@dataclass
class BuildSetConfig:
    """How a few-shot stylised set is built (FF3D's defaults)."""

    style: str
    """the style in words ("a bronze statue"); the offline editor knows its vocabulary only"""
    out: str
    """folder for the set (views/, sources/, set.json)"""
    editor: str = field(default="offline", metadata={"choices": EDITORS})
    """the 2D editor: "offline" (embedded vocabulary, CPU) or "ip2p" (InstructPix2Pix, --model)"""
    model: str = "timbrooks/instruct-pix2pix"
    """ip2p: the InstructPix2Pix weights (a local diffusers folder, or a hub id already downloaded)"""
    prior: str | None = None
    """the 3D prior rendering the identities (default: the embedded one; an EG3D folder from import-eg3d)"""
    grid: str = "10x10"
    """pitch × yaw views within ±range_deg (the frontal view is always added)"""
    range_deg: float = 30.0
    """the grid spans ±this many degrees of yaw (FF3D: 30)"""
    pitch_range_deg: float | None = None
    """... and of pitch (default: FF3D's 30 for an EG3D prior; the ±20 the embedded prior was trained on for it,
    whose views beyond that are not heads)"""
    identities: int = 4
    """heads rendered (FF3D: one or more): fine-tuned on one head's views, I2T learns that head rather than the
    style (bronze on held-out heads, embedded path, 500 steps: 18.4 dB from one head, 23.6 dB from four)"""
    seed: int = 0
    """the first identity's seed (the others follow), and the seed of the fixed noise / per-view variation"""
    tau: float = 0.9
    """ip2p: the noise level n* starts from"""
    text_guidance: float = 20.0
    """ip2p: s_T"""
    image_guidance: float = 1.5
    """ip2p: s_I"""
    denoising_steps: int = 20
    """ip2p: DDIM steps"""
    variation: float = 0.8
    """offline: how much the per-view edits disagree (the offline editor's suggested variation)"""
    device: str = "auto"
    """ip2p and the prior: "auto" (CUDA when present), "cpu" or "cuda\""""

    def validate(self) -> None:
        positive_prompt(self.style)
        parse_grid(self.grid)
        if self.editor not in EDITORS:
            raise UserInputError(f"--editor must be one of {', '.join(EDITORS)}, got {self.editor!r}")
        if not 1 <= self.identities <= 64:
            raise UserInputError(f"--identities must lie in 1-64, got {self.identities}")
        for name, value in (("range-deg", self.range_deg), ("pitch-range-deg", self.pitch_range_deg)):
            if value is not None and not 0 < value <= 60:
                raise UserInputError(f"--{name} must lie in (0, 60], got {value}")
        if not 0 < self.tau <= 1:
            raise UserInputError(f"--tau must lie in (0, 1], got {self.tau}")


class _OfflineStyler:
    """The embedded 2D editor: the offline editor's style, varied per view."""

    def __init__(self, style: str, variation: float) -> None:
        from engine.editors.offline import OfflineEditor, resolve

        self.instruction = resolve(style)  # a style outside the vocabulary: the error lists it
        self.editor = OfflineEditor(variation)

    def __call__(self, view: torch.Tensor, seed: int, cancel: CancelToken) -> torch.Tensor:
        return self.editor.edit(view, view, self.instruction, 1.0, seed)


class _Ip2pStyler:
    """InstructPix2Pix with FF3D's stabilised inference; one fixed noise for every view."""

    def __init__(self, cfg: BuildSetConfig, size: int) -> None:
        from engine.editors.base import Guidance
        from engine.editors.ip2p import load_ip2p

        self.editor = load_ip2p(cfg.model, check_device(cfg.device))
        self.prompt = positive_prompt(cfg.style)
        self.guidance = Guidance(text=cfg.text_guidance, image=cfg.image_guidance, steps=cfg.denoising_steps)
        self.tau = cfg.tau
        self.noise = torch.randn(self.editor.noise_shape(size, size), generator=torch.Generator().manual_seed(cfg.seed))

    def __call__(self, view: torch.Tensor, seed: int, cancel: CancelToken) -> torch.Tensor:
        return self.editor.stylise(view, self.prompt, NEGATIVE_PROMPT, self.noise, self.tau, self.guidance, cancel)


def prior_views(prior: TriPlaneGenerator, z: torch.Tensor, c: torch.Tensor,
                truncation_psi: float = 1.0) -> Iterator[torch.Tensor]:
    """The prior's images (H, W, 3) in [0, 1] of latent z (1, z_dim) from each camera of c (V, 25), one by one
    (the head's triplanes synthesised once)."""
    device = next(prior.parameters()).device
    z, c = z.to(device), c.to(device)
    with torch.no_grad():
        ws = prior.mapping(z, frontal_camera().to(device), truncation_psi=truncation_psi)  # conditioned as EG3D samples
        planes = prior.planes(ws, noise_mode="const")
        for k in range(len(c)):
            image = prior.synthesis(ws, c[k:k + 1], deterministic_sampling=True, planes=planes)["image"]
            yield ((image[0] + 1) / 2).clamp(0, 1).permute(1, 2, 0).cpu()


def truncation_of(prior: TriPlaneGenerator) -> float:
    """The truncation heads are drawn with: none for the embedded prior, EG3D's usual 0.7 otherwise."""
    return 1.0 if is_embedded_prior(prior) else 0.7


def build_set_job(cfg: BuildSetConfig, cancel: CancelToken) -> Iterator:
    """Render and stylise the set's views into ``cfg.out``; each view is shown (Preview, meta "view": its index)
    as it is made; set.json is written last, so a folder with one is complete."""
    cfg.validate()
    rows, cols = parse_grid(cfg.grid)
    styler = _OfflineStyler(cfg.style, cfg.variation) if cfg.editor == "offline" else None
    yield Progress(0, None, "loading the prior")
    prior = load_prior(cfg.prior).to(check_device(cfg.device) if cfg.editor == "ip2p" else "cpu")
    size = prior.img_resolution
    pitch_range = cfg.pitch_range_deg or (PITCH_RANGE_DEG if is_embedded_prior(prior) else cfg.range_deg)
    angles = grid_angles(rows, cols, cfg.range_deg, pitch_range)
    if styler is None:
        yield Progress(0, None, "loading InstructPix2Pix")
        styler = _Ip2pStyler(cfg, size)
    out = Path(cfg.out)
    for sub in ("views", "sources"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    seeds = [cfg.seed + k for k in range(cfg.identities)]
    latents = prior_latents(prior, seeds)
    truncation = truncation_of(prior)
    total = len(seeds) * len(angles)
    views, identities = [], []
    cameras = torch.from_numpy(camera_labels([a[0] for a in angles], [a[1] for a in angles])).float()
    for i, seed in enumerate(seeds):
        sources = prior_views(prior, latents[i:i + 1], cameras, truncation)
        for j, ((yaw, pitch), source) in enumerate(zip(angles, sources)):
            cancel.raise_if_cancelled()
            styled = styler(source, seed * 100_003 + j * 7 + cfg.seed, cancel)
            name = f"id{i:02d}_v{j:03d}.png"
            write_png(out / "sources" / name, to_uint8(source))
            write_png(out / "views" / name, to_uint8(styled))
            views.append({"file": f"views/{name}", "source": f"sources/{name}", "identity": i, "yaw": yaw,
                          "pitch": pitch, "camera": [float(v) for v in cameras[j]], "kept": True})
            index = len(views) - 1
            yield Preview(index, to_uint8(styled), {"view": index, "identity": i, "yaw": yaw, "pitch": pitch})
            yield Progress(index + 1, total, f"stylising the views ({cfg.editor})")
        identities.append({"seed": seed, "input": f"sources/id{i:02d}_v000.png"})
    meta = {"kind": "ff3d-set", "style": " ".join(cfg.style.split()), "prompt": positive_prompt(cfg.style),
            "negative_prompt": NEGATIVE_PROMPT, "editor": cfg.editor,
            "model": cfg.model if cfg.editor == "ip2p" else "offline vocabulary", "seed": cfg.seed,
            "grid": [rows, cols], "range_deg": cfg.range_deg, "pitch_range_deg": pitch_range, "tau": cfg.tau,
            "text_guidance": cfg.text_guidance,
            "image_guidance": cfg.image_guidance, "denoising_steps": cfg.denoising_steps, "variation": cfg.variation,
            "prior": cfg.prior, "prior_fingerprint": prior_fingerprint(prior), "size": size,
            "identities": identities, "views": views}
    yield Artifact(write_json(out / SET_FILE, meta), "set")


@dataclass
class StyleSet:
    """A set folder read back: its kept views, their cameras and identities, and the identities' frontal inputs."""

    folder: Path
    meta: dict
    inputs: torch.Tensor
    """(I, 3, S, S) in [0, 1]: each identity's frontal source (I2T's input)"""
    targets: torch.Tensor
    """(V, 3, S, S) in [0, 1]: the kept stylised views"""
    cameras: torch.Tensor
    """(V, 25)"""
    identity: torch.Tensor
    """(V,) the identity of each kept view"""

    @property
    def style(self) -> str:
        return self.meta["style"]


def _read_image(path: Path, folder: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserInputError(f"{folder}: the view {path.relative_to(folder)} is missing")
    try:
        with Image.open(path) as image:
            if image.width * image.height > 4096 * 4096:
                raise UserInputError(f"{path}: {image.width}x{image.height} is larger than a set view can be")
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    except (UnidentifiedImageError, OSError) as exc:
        raise UserInputError(f"{path}: not a readable image ({exc})") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def read_set_meta(folder: str | Path) -> dict:
    """set.json of a set folder, checked: every view with a file, a 25-number camera and an identity."""
    folder = Path(folder)
    path = folder / SET_FILE
    if not path.is_file():
        raise UserInputError(f"{folder} is not a style set: it has no {SET_FILE} (build one with python main.py "
                             "portrait style build-set)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("kind") != "ff3d-set" or not isinstance(meta.get("views"), list) \
            or not isinstance(meta.get("identities"), list) or not meta["identities"]:
        raise UserInputError(f"{path}: not an FF3D set description (kind ff3d-set with views and identities)")
    count = len(meta["identities"])
    for k, view in enumerate(meta["views"]):
        camera = view.get("camera") if isinstance(view, dict) else None
        if not isinstance(camera, list) or len(camera) != 25 or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in camera):
            raise UserInputError(f"{path}: view {k} has no camera (25 finite numbers)")
        if not isinstance(view.get("file"), str) or view.get("identity") not in range(count):
            raise UserInputError(f"{path}: view {k} lacks its file or a valid identity")
    return meta


def set_kept(folder: str | Path, kept: dict[int, bool]) -> None:
    """Keep or reject views of a set (by index), rewriting set.json atomically."""
    folder = Path(folder)
    meta = read_set_meta(folder)
    for index, keep in kept.items():
        meta["views"][index]["kept"] = bool(keep)
    write_json(folder / SET_FILE, meta)


def read_set(folder: str | Path) -> StyleSet:
    """A set folder's kept views; a clear error when views are missing or every one was rejected."""
    folder = Path(folder)
    meta = read_set_meta(folder)
    kept = [v for v in meta["views"] if v.get("kept", True)]
    if not kept:
        raise UserInputError(f"{folder}: every view of the set was rejected; keep some before training")
    inputs = []
    for k, identity in enumerate(meta["identities"]):
        if not isinstance(identity, dict) or not isinstance(identity.get("input"), str):
            raise UserInputError(f"{folder / SET_FILE}: identity {k} has no frontal input")
        inputs.append(_read_image(folder / identity["input"], folder))
    targets = [_read_image(folder / v["file"], folder) for v in kept]
    sizes = {tuple(t.shape) for t in targets + inputs}
    if len(sizes) != 1:
        raise UserInputError(f"{folder}: the views are not all one size ({', '.join(map(str, sorted(sizes)))})")
    return StyleSet(folder, meta, torch.stack(inputs), torch.stack(targets),
                    torch.tensor([v["camera"] for v in kept], dtype=torch.float32),
                    torch.tensor([v["identity"] for v in kept]))


# --- fine-tuning ---

@dataclass
class StyleTrainConfig:
    """How I2T is fine-tuned on one or more sets (FF3D's defaults)."""

    set: str
    """a set folder; several, comma-separated, train one multi-style model (one w_s path each)"""
    out: str
    """folder for the style (i2t.safetensors, i2t.json, thumbnail.png, recipe.json); a stopped run resumes"""
    i2t: str | None = None
    """the pre-trained I2T (default: the shipped one)"""
    prior: str | None = None
    """the prior whose decoder renders (default: the one the set was built with)"""
    minutes: float = 2.0
    """fine-tuning time budget (FF3D: about 3 minutes a style, set included, on one A100; the embedded path makes
    its set of four heads in about 30 s on a 2-core CPU)"""
    steps: int | None = None
    """stop after this many steps instead"""
    lr: float = 0.002
    """Adam learning rate"""
    rec_weight: float = 10.0
    """λ_rec: weight of L1 + LPIPS against the set's views"""
    density_weight: float = 0.2
    """λ_dr: weight of the density regularisation"""
    density_offset: float = 0.004
    """the random offsets' standard deviation (box units; EG3D's density regularisation's)"""
    density_points: int = 2048
    """points of the density regularisation per step"""
    views_per_step: int = 4
    """views of one identity compared per step"""
    rays: int = 1024
    """pixels of each view rendered and compared per step (LPIPS, when present, takes one whole view)"""
    lpips: str = field(default="auto", metadata={"choices": ("auto", "imagenet", "random", "off")})
    """LPIPS backbone: "auto" uses ImageNet AlexNet weights when present, else L1 alone (and says so)"""
    pretrained: bool = True
    """start from the pre-trained I2T (--no-pretrained: the ablation from random weights)"""
    vector_ws: bool = False
    """ablation: w_s without its spatial dimension"""
    no_i2t: bool = False
    """ablation: the frozen EG3D backbone with two modulation layers instead of I2T"""
    ema_half_life: float = 50.0
    """steps over which the saved weights' moving average (StyleGAN's G_ema) halves; 0 saves the last step's"""
    seed: int = 0
    """seeds the views and rays drawn (and the ablations' random weights)"""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu" or "cuda\""""
    preview_every: int = 25
    """steps between metrics and live orbit frames"""
    checkpoint_every_s: float = 30.0
    """seconds between checkpoints"""
    betas: tuple[float, float] = field(default=(0.0, 0.99), metadata=INTERNAL)
    """Adam's (FF3D's)"""

    def set_folders(self) -> list[Path]:
        folders = [Path(p.strip()) for p in self.set.split(",") if p.strip()]
        if not folders:
            raise UserInputError("--set names no set folder")
        return folders


def equalised_groups(network: torch.nn.Module) -> list[dict]:
    """Adam parameter groups that learn as StyleGAN's equalised-learning-rate layers do: each weight of fan-in f at
    lr / √f (``lr_scale``), biases, norms and the constant at lr.  StyleGAN stores weights ~N(0, 1) and scales them
    by 1/√f when used; Adam's update does not depend on the gradient's scale, so this is the same training, and the
    paper's lr 0.002 means what it means in StyleGAN2 (on plain weights it moves them ~√f times too far)."""
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, parameter in network.named_parameters():
        fan_in = parameter[0].numel() if parameter.ndim >= 2 and name != "const" and "position" not in name else 1
        groups.setdefault(1 / math.sqrt(fan_in), []).append(parameter)
    return [{"params": params, "lr_scale": scale} for scale, params in groups.items()]


def density_regularisation(density, points: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
    """Mean |σ(x) − σ(x + δ)| over ``points`` (N, M, 3), δ ~ N(0, offset²) per coordinate: smooth density
    without holes.  ``density(points)`` → (N, M, 1)."""
    delta = torch.randn(points.shape, generator=generator).to(points) * offset
    return (density(points) - density(points + delta)).abs().mean()


def plane_density(prior: TriPlaneGenerator, planes: torch.Tensor):
    """σ (the decoder's raw density) of triplanes at points (N, M, 3)."""
    box = float(prior.rendering_kwargs["box_warp"])
    return lambda points: prior.decoder(sample_planes(planes, points, box))["sigma"]


class StyleModel:
    """A learned style (or several): its network, i2t.json, and the prior it renders through."""

    def __init__(self, network: I2T | NoI2T, meta: dict, folder: Path | None = None) -> None:
        self.network, self.meta, self.folder = network, meta, folder

    @property
    def names(self) -> list[str]:
        return [s["style"] if isinstance(s, dict) else str(s) for s in self.meta.get("styles", [])]

    @property
    def needs_backbone(self) -> bool:
        return isinstance(self.network, NoI2T)

    def style_index(self, name: str | None) -> int:
        """The w_s path of a style by name (None: the first)."""
        if name is None:
            return 0
        if name not in self.names:
            raise UserInputError(f"{self.folder} has no style {name!r}; it has: {', '.join(self.names)}")
        return self.names.index(name)

    def check_prior(self, prior: TriPlaneGenerator) -> None:
        """A style is refused by a prior other than the one it was trained for."""
        if self.meta.get("prior") != prior_fingerprint(prior):
            raise UserInputError(f"{self.folder} was trained for another prior (decoder {self.meta.get('prior')}, "
                                 f"this prior's {prior_fingerprint(prior)}): give --prior the prior it was trained "
                                 "with, or train the style again on a set built with this prior")

    def planes(self, image: torch.Tensor, style: int = 0, backbone: torch.Tensor | None = None,
               mix: tuple[StyleModel, int, float] | None = None) -> torch.Tensor:
        """Triplanes of the frontal view ``image`` (N, 3, S, S) in [0, 1] in this style, or mixed with ``mix``
        (other model, its style, α: 0 is this style, 1 the other's)."""
        x = image * 2 - 1
        network, ws = self.network, self.network.encoder(x, style)
        if mix is not None:
            other, other_style, alpha = mix
            check_mixable(self, other)
            ws = torch.lerp(ws, other.network.encoder(x, other_style), alpha)
            if other is not self:  # two styles of one model share everything but w_s
                theirs = other.network.state_dict()
                network = copy.deepcopy(self.network)
                network.load_state_dict({k: v if k.startswith("encoder.") else torch.lerp(v, theirs[k], alpha)
                                         for k, v in self.network.state_dict().items()}, strict=False)
        if isinstance(network, NoI2T):
            if backbone is None:
                raise UserInputError("the without-I2T ablation needs a sampled head (--seed): it works on the prior's "
                                     "own planes")
            return network.from_ws(ws, backbone)
        return network.synthesise(ws)


def check_mixable(a: StyleModel, b: StyleModel) -> None:
    """Two styles mix when their networks have the same kind and size (not counting their style paths)."""
    shape_a = dataclasses.replace(a.network.shape, styles=1)
    shape_b = dataclasses.replace(b.network.shape, styles=1)
    if type(a.network) is not type(b.network) or shape_a != shape_b:
        raise UserInputError(f"{a.folder} and {b.folder} cannot be mixed: their networks differ in size or kind "
                             f"({type(a.network).__name__} {dataclasses.asdict(shape_a)} vs "
                             f"{type(b.network).__name__} {dataclasses.asdict(shape_b)})")
    if a.meta.get("prior") != b.meta.get("prior"):
        raise UserInputError(f"{a.folder} and {b.folder} were trained for different priors and cannot be mixed")


def load_style(folder: str | Path) -> StyleModel:
    """A style folder from ``portrait style train``."""
    folder = Path(folder)
    network, meta = read_i2t(folder)
    if meta.get("kind") != "ff3d-style":
        raise UserInputError(f"{folder} holds a pre-trained I2T, not a learned style (train one with python main.py "
                             "portrait style train)")
    return StyleModel(network, meta, folder)


def _start_network(cfg: StyleTrainConfig, styles: int) -> I2T | NoI2T:
    """The network fine-tuning starts from: the pre-trained I2T with one w_s path per style (each a copy of the
    pre-trained path), or an ablation's."""
    pretrained, _ = read_i2t(cfg.i2t)
    shape = dataclasses.replace(pretrained.shape, styles=styles, vector_ws=cfg.vector_ws or
                                pretrained.shape.vector_ws)
    torch.manual_seed(cfg.seed)
    network = NoI2T(shape) if cfg.no_i2t else I2T(shape)
    if cfg.pretrained:
        state = pretrained.state_dict()
        head = {k.split(".", 3)[3]: v for k, v in state.items() if k.startswith("encoder.heads.0.")}
        own = network.state_dict()
        start = {k: v for k, v in state.items() if k in own and not k.startswith("encoder.heads.")}
        for s in range(styles):
            start.update({f"encoder.heads.{s}.{name}": v for name, v in head.items()})
        network.load_state_dict(start, strict=False)
    return network


def train_style_job(cfg: StyleTrainConfig, cancel: CancelToken) -> Iterator:
    """Fine-tune I2T on the sets (resuming a stopped run in ``cfg.out``), then write the style there."""
    budget = Budget(cfg.steps, cfg.minutes)
    budget.validate("style fine-tuning")
    if sum((cfg.no_i2t, cfg.vector_ws)) > 1:
        raise UserInputError("choose one ablation at a time (--no-i2t or --vector-ws)")
    sets = [read_set(folder) for folder in cfg.set_folders()]
    device = check_device(cfg.device)
    prior = load_prior(cfg.prior if cfg.prior is not None else sets[0].meta.get("prior")).requires_grad_(False)
    fingerprint = prior_fingerprint(prior)
    for s in sets:
        if s.meta.get("prior_fingerprint") != fingerprint:
            raise UserInputError(f"{s.folder} was built with another prior than the one training renders through; "
                                 "give --prior the prior the set was built with")
    prior = prior.to(device)
    network = _start_network(cfg, len(sets)).to(device).train()
    average = WeightAverage(network, cfg.ema_half_life)
    out = Path(cfg.out)
    state_path = out / "training_state.pt"
    step, seconds = 0, 0.0
    state = read_training_state(state_path)
    optimizer = torch.optim.Adam(equalised_groups(network), lr=cfg.lr, betas=cfg.betas)
    if state is not None:
        network.load_state_dict(state["network"])
        average.network.load_state_dict(state.get("average", state["network"]))
        optimizer.load_state_dict(state["optimizer"])
        step, seconds = state["step"], state["seconds"]
    lpips, why = load_lpips(cfg.lpips, without="fine-tuning with L1 alone")
    if why:
        yield JobWarning(why)
    if lpips is not None:
        lpips = lpips.to(device)
    resolution = prior.neural_rendering_resolution
    size = network.shape.image_size
    data = []
    for s in sets:
        backbone = None
        if cfg.no_i2t:
            seeds = [identity["seed"] for identity in s.meta["identities"]]
            backbone = prior_heads(prior, prior_latents(prior, seeds), network.shape.plane_size,
                                   truncation_of(prior))[1]
        data.append({"inputs": F.interpolate(s.inputs, size=(size, size), mode="area").to(device) * 2 - 1,
                     "targets": F.interpolate(s.targets, size=(resolution, resolution), mode="area").to(device),
                     "cameras": s.cameras.to(device), "identity": s.identity, "backbone": backbone})
    rng = torch.Generator().manual_seed(cfg.seed * 7919 + step)

    def planes_of(k: int, identity: int, net: I2T | NoI2T = network) -> torch.Tensor:
        d = data[k]
        if cfg.no_i2t:
            return net(d["inputs"][identity:identity + 1], d["backbone"][identity:identity + 1], k)
        return net(d["inputs"][identity:identity + 1], k)

    def save() -> Path:
        out.mkdir(parents=True, exist_ok=True)
        return save_torch(state_path, {"network": cpu_tensors(network.state_dict()),
                                       "average": cpu_tensors(average.network.state_dict()),
                                       "optimizer": optimizer.state_dict(), "step": step, "seconds": seconds,
                                       "config": dataclasses.asdict(cfg)})

    loop = BudgetedLoop(budget, cancel, "style fine-tuning", message="fine-tuning I2T on the stylised set",
                        save=save, optimizer=optimizer, learning_rate=lambda _: cfg.lr,
                        checkpoint_every_s=cfg.checkpoint_every_s, metrics_every=cfg.preview_every, step=step,
                        seconds=seconds)
    for step in loop:
        k = step % len(sets)
        d = data[k]
        identity = int(d["identity"][torch.randint(len(d["identity"]), (1,), generator=rng)])
        choices = torch.nonzero(d["identity"] == identity).flatten()
        picked = choices[torch.randperm(len(choices), generator=rng)[:cfg.views_per_step]]
        planes = planes_of(k, identity)
        losses = style_losses(prior, planes, d["cameras"][picked], d["targets"][picked], cfg, lpips, rng)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        average.update(network, loop.step + 1)
        loop.done(**{f"loss_{name}": float(v.detach()) for name, v in losses.items()})
        step, seconds = loop.step, loop.seconds
        if step % cfg.preview_every == 0:
            yaw = 30.0 * math.sin(0.5 * step / cfg.preview_every)  # the live orbit swings on
            with torch.no_grad():
                frame = render_view(prior, planes_of(0, 0, average.network), yaw, 0.0, resolution)
            yield Preview(step, to_uint8(frame), {"layout": "orbit", "yaw": yaw})
        yield from loop.events()
    yield from loop.finish()
    if cancel.cancelled:
        return
    with torch.no_grad():
        thumbnail = render_view(prior, planes_of(0, 0, average.network), 0.0, 0.0, prior.img_resolution)
    styles = [{"style": s.style, "prompt": s.meta.get("prompt"), "set": str(s.folder), "views": len(s.targets),
               "identities": len(s.inputs)} for s in sets]
    meta = {"kind": "ff3d-style", "variant": "no_i2t" if cfg.no_i2t else "i2t", "prior": fingerprint,
            "prior_path": cfg.prior if cfg.prior is not None else sets[0].meta.get("prior"), "styles": styles,
            "pretrained": cfg.pretrained, "steps": step, "seconds": seconds}
    weights = save_i2t(out, average.network.cpu(), meta)
    yield Artifact(write_png(out / "thumbnail.png", to_uint8(thumbnail)), "thumbnail")
    recipe = {"command": recipe_command(cfg, "portrait style train"),
              "device": device, "steps": step, "seconds": seconds, "config": dataclasses.asdict(cfg)}
    yield Artifact(write_json(out / "recipe.json", recipe), "recipe")
    yield Artifact(weights, "weights")


def style_losses(prior: TriPlaneGenerator, planes: torch.Tensor, cameras: torch.Tensor, targets: torch.Tensor,
                 cfg: StyleTrainConfig, lpips, rng: torch.Generator) -> dict[str, torch.Tensor]:
    """λ_rec (L1 on random rays of each view, + LPIPS of one whole view) and λ_dr (density regularisation)."""
    views, resolution = cameras.shape[0], targets.shape[-1]
    pixels = torch.randint(0, resolution * resolution, (1, views, cfg.rays), generator=rng).to(planes.device)
    rendered = render_colour(prior, planes, cameras[None], pixels, resolution)[0]  # (V, M, 3)
    wanted = torch.gather(targets.flatten(2), 2, pixels[0][:, None].expand(-1, 3, -1)).transpose(1, 2)
    losses = {"l1": F.l1_loss(rendered, wanted)}
    reconstruction = losses["l1"]
    if lpips is not None:
        whole = render_cameras(prior, planes, cameras[:1], resolution)
        losses["lpips"] = lpips(whole * 2 - 1, targets[:1] * 2 - 1).mean()
        reconstruction = reconstruction + losses["lpips"]
    box = float(prior.rendering_kwargs["box_warp"])
    points = (torch.rand(1, cfg.density_points, 3, generator=rng) - 0.5).to(planes.device) * box
    losses["density"] = density_regularisation(plane_density(prior, planes), points, cfg.density_offset * box, rng)
    losses["total"] = cfg.rec_weight * reconstruction + cfg.density_weight * losses["density"]
    return losses


def render_cameras(prior: TriPlaneGenerator, planes: torch.Tensor, c: torch.Tensor, size: int) -> torch.Tensor:
    """Triplanes (1, ...) seen from cameras c (V, 25) through the frozen decoder at ``size``²: raw colour
    (V, 3, size, size) in [0, 1].  The embedded prior's views are volume-rendered whole at any size (as 3DPE's
    are); an EG3D prior's at its output size go through its super-resolution, conditioned on the mapping's
    average w (I2T's planes have no w of their own)."""
    c = c.to(planes.device)
    planes = planes.expand(len(c), -1, -1, -1)
    if is_embedded_prior(prior) or size != prior.img_resolution:
        return render_planes(prior, planes, c, size)["rgb"]
    features, _ = prior.render_features(planes, c, prior.neural_rendering_resolution, True)
    ws = prior.backbone.mapping.w_avg.expand(len(c), prior.num_ws, -1)
    image = prior.superresolution(features[:, :3], features, ws,
                                  noise_mode=prior.rendering_kwargs.get("superresolution_noise_mode", "none"))
    return ((image + 1) / 2).clamp(0, 1)


def render_view(prior: TriPlaneGenerator, planes: torch.Tensor, yaw: float, pitch: float, size: int) -> torch.Tensor:
    """One view (size, size, 3) in [0, 1] at (yaw, pitch) degrees."""
    c = torch.from_numpy(camera_labels(yaw, pitch)).float()
    return render_cameras(prior, planes, c, size)[0].permute(1, 2, 0)


# --- applying ---

@dataclass
class HeadInput:
    """What a style is applied to: a frontal view, and for a sampled head the prior's own planes (which only the
    without-I2T ablation uses)."""

    image: torch.Tensor
    """(1, 3, S, S) in [0, 1] at the prior's output size"""
    backbone: torch.Tensor | None
    notes: list[str]
    label: str


def sampled_head(prior: TriPlaneGenerator, seed: int, plane_size: int) -> HeadInput:
    """A head of the prior: its frontal render (and planes)."""
    image, planes = prior_heads(prior, prior_latents(prior, [seed]), plane_size, truncation_of(prior))
    return HeadInput(image.cpu(), planes.cpu(), [], f"head {seed}")


def photo_head(path: str, landmarks: str | None = None) -> HeadInput:
    """A portrait photo aligned as every portrait engine aligns it."""
    from engine.portrait.alignment import portrait_input

    aligned = portrait_input(path, landmarks)
    image = torch.from_numpy(np.ascontiguousarray(aligned.image)).float().permute(2, 0, 1)[None] / 255
    return HeadInput(image, None, list(aligned.notes), Path(path).name)


@dataclass
class StyleRequest:
    """Applying a learned style to a head or a photo (``portrait style apply``)."""

    style: str
    """the style folder (from portrait style train)"""
    out: str
    """folder for input.png, view_*.png and, on request, orbit.mp4 and mesh.ply / mesh.glb"""
    seed: int | None = None
    """a sampled head of the prior ..."""
    image: str | None = None
    """... or a portrait photo (aligned like every portrait engine's input)"""
    landmarks: str | None = None
    """the photo's five landmarks (default: detections/NAME.txt beside it, else the built-in detector)"""
    name: str | None = None
    """the style within a multi-style model (default: its first)"""
    mix: str | None = None
    """another style folder to mix with"""
    mix_name: str | None = None
    """the style within the mixed model (default: its first)"""
    alpha: float = 0.5
    """how far towards the mixed style (0: this style, 1: the other)"""
    prior: str | None = None
    """the prior (default: the one the style was trained for)"""
    views: int = 4
    """views written, over yaw ±30°"""
    size: int | None = None
    """image side (default: the prior's output size)"""
    video: bool = False
    """also write an orbit video (orbit.mp4)"""
    orbit_frames: int = 48
    """frames of the orbit video (24 a second)"""
    mesh: bool = False
    """also write a mesh with vertex colours (mesh.ply, mesh.glb)"""

    def validate(self) -> None:
        if (self.seed is None) == (self.image is None):
            raise UserInputError("give what the style applies to: --seed K (a sampled head) or --image FILE")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserInputError(f"--alpha must lie in [0, 1], got {self.alpha}")
        if not 1 <= self.views <= 64:
            raise UserInputError(f"--views must lie in 1-64, got {self.views}")
        if self.size is not None and not 16 <= self.size <= 1024:
            raise UserInputError(f"--size must lie in 16-1024, got {self.size}")


class StyledHead:
    """One head in a style (or a mix of two), its triplanes computed once and rendered from any view (the CLI's
    apply and the Styles panel)."""

    def __init__(self, prior: TriPlaneGenerator, style: StyleModel, head: HeadInput, name: str | None = None,
                 mix: StyleModel | None = None, mix_name: str | None = None, alpha: float = 0.5) -> None:
        style.check_prior(prior)
        self.prior, self.style, self.head = prior, style, head
        mixing = None
        if mix is not None:
            mix.check_prior(prior)
            mixing = (mix, mix.style_index(mix_name), alpha)
        with torch.no_grad():
            self.planes = style.planes(head.image, style.style_index(name), head.backbone, mixing)

    def render(self, yaw: float = 0.0, pitch: float = 0.0, size: int | None = None) -> torch.Tensor:
        """A view (H, W, 3) in [0, 1]."""
        with torch.no_grad():
            return render_view(self.prior, self.planes, yaw, pitch, size or self.prior.img_resolution)


def load_style_prior(style: StyleModel, prior: str | None) -> TriPlaneGenerator:
    """The prior a style renders through: the one given, else the one it was trained with."""
    return load_prior(prior if prior is not None else style.meta.get("prior_path"))


def apply_style_job(request: StyleRequest, cancel: CancelToken) -> Iterator:
    """Apply a style and write the results into ``request.out``."""
    from engine.core.imaging import write_frames
    from engine.core.meshes import write_mesh
    from engine.portrait.editing import ORBIT_YAW, novel_yaws, triplane_mesh

    request.validate()
    style = load_style(request.style)
    mix = load_style(request.mix) if request.mix else None
    if mix is not None:
        check_mixable(style, mix)
    prior = load_style_prior(style, request.prior)
    head = sampled_head(prior, request.seed, style.network.shape.plane_size) if request.seed is not None \
        else photo_head(request.image, request.landmarks)
    for note in head.notes:
        yield JobWarning(note)
    styled = StyledHead(prior, style, head, request.name, mix, request.mix_name, request.alpha)
    out = Path(request.out)
    out.mkdir(parents=True, exist_ok=True)
    size = request.size or prior.img_resolution
    yield Artifact(write_png(out / "input.png", head.image[0]), "input")
    front = to_uint8(styled.render(0.0, 0.0, size))
    yield Preview(0, front, {"layout": "styled"})
    yield Artifact(write_png(out / "styled.png", front), "view")
    for k, yaw in enumerate(novel_yaws(request.views)):
        if cancel.cancelled:
            return
        view = to_uint8(styled.render(yaw, 0.0, size))
        yield Artifact(write_png(out / f"view_{k:02d}_yaw{yaw:+.0f}.png", view), "view")
    if request.video and not cancel.cancelled:
        yaws = ORBIT_YAW * np.sin(np.linspace(0, 2 * math.pi, request.orbit_frames, endpoint=False))
        frames = (to_uint8(styled.render(float(y), 0.0, size)) for y in yaws)
        yield Artifact(write_frames(frames, out / "orbit.mp4", fps=24), "video")
    if request.mesh and not cancel.cancelled:
        mesh = triplane_mesh(styled.planes.cpu(), prior.decoder.cpu(), float(prior.rendering_kwargs["box_warp"]))
        for name in ("mesh.ply", "mesh.glb"):
            yield Artifact(write_mesh(mesh, out / name), "mesh")
