"""The embedded 3DPE editor and its distillation (Bai et al., section 3): a 2D editor's knowledge, made
view-consistent and instant, in a feed-forward network.

``EmbeddedEditor``: the trained image→triplane encoder (engine.portrait.live3d), frozen, plus the prompt
encoder (engine.portrait.prompts), the prompt branch (the official ``EncoderRef`` attending to prompt
tokens) and a trainable copy of the final stage.  The branch's answer is added to E_high's features
(the official network replaces them): its last projection starts at zero, so before distillation the
editor reproduces the reconstruction, which the CPU budget could not afford to relearn.

Distillation, exactly the paper's objective: L = L2D + L3D with
* L2D = L2 + 2·LPIPS between the editor's render of the input view and the 2D teacher's edit of the input;
* L3D = multi-view L2 + 2·LPIPS between the editor's renders and those of the frozen encoder applied to
  the teacher's edit, + triplane L1 + depth L1 (the same pair);
only the prompt encoder, the prompt branch and the final stage learn.  LPIPS needs torchvision's ImageNet
AlexNet file (never downloaded): without it the LPIPS terms are left out and the job says so.  The teacher
is the portrait vocabulary's (engine.portrait.vocabulary): each call's edit is varied, as diffusion edits
are; prompts are the TRAIN_PHRASINGS of each trained edit, or (IMAGE_PROMPT_FRACTION of steps) a reference
image: the teacher's edit of another head.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.config import INTERNAL, recipe_command
from engine.core.devices import check_device, fast_inference
from engine.core.errors import CheckpointError
from engine.core.imaging import to_uint8
from engine.core.jobs import Artifact, CancelToken, JobWarning, Preview, Progress
from engine.core.loop import Budget, BudgetedLoop
from engine.core.metrics import load_lpips, psnr
from engine.core.prefetch import Prefetcher, Seeds
from engine.core.project import atomic_write, write_json
from engine.portrait.cameras import camera_labels
from engine.portrait.eg3d import TriPlaneGenerator
from engine.portrait.heads import HeadParams, render_heads
from engine.portrait.live3d import (ENCODER_DIR, INPUT_SIZE, PLANE_SCALE, VIEW_SIZE, Distributed, EmbeddedEncoder,
                                    cpu_tensors, input_view, load_encoder, render_planes)
from engine.portrait.prior import (CAMERA_DISTANCE, HELD_OUT_SEED, PITCH_RANGE_DEG, YAW_RANGE_DEG, learning_rate,
                                   load_prior, read_training_state)
from engine.portrait.prompts import PROMPT_DIM, PromptEncoder
from engine.portrait.threedpe import EncoderRef
from engine.portrait.triplane import sample_rays
from engine.portrait.vocabulary import (TEST_PHRASINGS, TRAIN_PHRASINGS, TRAINED_EDITS, PortraitTeacher, group_id,
                                        phrasings)

EDITOR_DIR = Path(__file__).resolve().parents[2] / "resources" / "portrait_editor"
"""where the shipped editor lives (editor.safetensors + editor.json + recipe.json)"""
WEIGHTS_FILE = "editor.safetensors"
USER_EDITOR_DIR = ("Retouch3D", "portrait_editor")
"""under the home folder: where adaptation writes the user's editor, which editing then prefers"""
STYLES_FILE = "editor.json"
IMAGE_PROMPT_FRACTION = 0.3
BENCH_YAWS = (0.0, -15.0, 15.0, -30.0, 30.0)


class EmbeddedEditor(nn.Module):
    """Photo + prompt tokens → edited triplanes; see the module docstring."""

    def __init__(self, encoder: EmbeddedEncoder, styles: tuple[str, ...] = (), clip_text: str | None = None) -> None:
        """``clip_text``: a local CLIP text model folder that reads text prompts instead of the vocabulary."""
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.prompts = PromptEncoder(styles, clip_text=clip_text)
        self.Ref_encoder = EncoderRef(high=64, dim=PROMPT_DIM, pre=48, stride=4, mae_encoder=nn.Identity())
        nn.init.zeros_(self.Ref_encoder.proj_tail.weight)
        self.Final_encoder = copy.deepcopy(encoder.Final_encoder).requires_grad_(True)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Edited triplanes (B, 96, 128, 128) of photos (B, 3, 128, 128) in [−1, 1] under prompt tokens."""
        with torch.no_grad():
            features = self.encoder.features(image)
        return self.edited(*features, tokens)

    def edited(self, high: torch.Tensor, low: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Edited triplanes from the frozen encoder's features of a photo."""
        high = high + self.Ref_encoder.fuse(high, tokens)
        return PLANE_SCALE * self.Final_encoder(torch.cat([high, low], 1))

    @torch.no_grad()
    def edit_and_reconstruct(self, image: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(edited, plain) float32 triplanes of photos, the encoder's features computed once for both; in
        bfloat16 on CPUs that compute it natively (``fast_inference``: renders within 0.2/255 of float32's)."""
        with fast_inference(image.device.type):
            features = self.encoder.features(image)
            return self.edited(*features, tokens).float(), self.encoder.planes(*features).float()

    @torch.no_grad()
    def edit(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Edited float32 triplanes of photos, computed as ``edit_and_reconstruct`` computes them."""
        with fast_inference(image.device.type):
            return self(image, tokens).float()

    @torch.no_grad()
    def reconstruct(self, image: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's float32 triplanes of photos, computed as ``edit_and_reconstruct`` computes them."""
        with fast_inference(image.device.type):
            return self.encoder(image).float()

    def tokens(self, prompt: str | None = None, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (1, L, D) of a text prompt or a reference image (1, 3, H, W) in [0, 1]."""
        if (prompt is None) == (reference is None):
            raise ValueError("give a text prompt or a reference image, not both or neither")
        if prompt is not None:
            return self.prompts.text([prompt])
        return self.prompts.image_tokens(reference)

    def distillable(self) -> list[nn.Parameter]:
        """What distillation trains (the prompt encoder, the prompt branch, the final stage), made trainable."""
        for module in (self.prompts, self.Ref_encoder, self.Final_encoder):
            module.requires_grad_(True)
        return [p for m in (self.prompts, self.Ref_encoder, self.Final_encoder) for p in m.parameters()]

    def learned(self) -> dict[str, torch.Tensor]:
        """The weights distillation and adaptation change (what the editor's file holds)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}


def teacher_render(heads: list[HeadParams], c: np.ndarray, size: int) -> torch.Tensor:
    """Ground-truth views (N, 3, size, size) in [0, 1] of heads[i] from camera c[i]."""
    return torch.from_numpy(render_heads(heads, c, size).rgb).permute(0, 3, 1, 2).contiguous()


@dataclass
class EditExample:
    """One distillation example: a photo, the edit asked for (a phrasing, or a reference image) and the teacher's
    edit of the photo."""

    photo: torch.Tensor
    edited: torch.Tensor
    name: str
    prompt: str
    reference: torch.Tensor | None = None
    """the image prompt: the same edit of another head (see ``with_references``)"""


def make_example(teacher: PortraitTeacher, seed: int, rng: np.random.Generator) -> EditExample:
    """Head ``seed`` with a random trained edit and phrasing, edited by the teacher."""
    name = TRAINED_EDITS[int(rng.integers(len(TRAINED_EDITS)))]
    prompt = phrasings(name, TRAIN_PHRASINGS)[int(rng.integers(len(TRAIN_PHRASINGS)))]
    c = input_view()[None]
    head = HeadParams.from_seed(seed)
    photo = teacher_render([head], c, INPUT_SIZE)[0]
    draw = lambda h: teacher_render([h], c, INPUT_SIZE)[0]  # noqa: E731
    return EditExample(photo, teacher.edit_view(name, head, photo, draw, int(rng.integers(2**31))), name, prompt)


@functools.lru_cache(maxsize=1)
def _teacher() -> PortraitTeacher:
    return PortraitTeacher()


def edit_example(seed: int, base_seed: int) -> EditExample:
    """``make_example`` of head ``seed`` with its own draws (a prefetching worker's job)."""
    return make_example(_teacher(), seed, np.random.default_rng([base_seed, seed]))


def with_references(batch: list[EditExample], pool: list[EditExample], rng: np.random.Generator) -> list[EditExample]:
    """The batch with image prompts: each example's reference is the teacher's edit of another head in ``pool``
    under the same edit (the style, not that person), its own edit when the pool holds no other."""
    chosen = []
    for example in batch:
        others = [other for other in pool if other.name == example.name and other is not example]
        source = others[int(rng.integers(len(others)))] if others else example
        chosen.append(dataclasses.replace(example, reference=source.edited))
    return chosen


@dataclass
class DistillConfig:
    """How the embedded editor is distilled (defaults: the shipped editor's recipe)."""

    out: str
    """folder for the editor (editor.safetensors, editor.json, recipe.json); a stopped run there resumes"""
    encoder: str | None = None
    """the trained image→triplane encoder (default: the shipped one)"""
    prior: str | None = None
    """the prior whose decoder renders the planes (default: the shipped one)"""
    clip_text: str | None = None
    """a CLIP text model folder (transformers, safetensors): text prompts are read by it, in any wording, instead
    of the vocabulary; the editor then needs that folder wherever it is used"""
    init: str | None = None
    """start from this distilled editor's weights (its prompt encoder and styles too; the encoder is still
    ``encoder``) with a fresh optimiser, instead of from the encoder alone (ignored when a stopped run resumes)"""
    seed: int = 0
    """seeds the new weights, the heads, edits, phrasings and the teacher's variations"""
    device: str = "auto"
    """where the networks train: "auto" (CUDA when present), "cpu" or "cuda" (the teacher edits on the CPU)"""
    workers: int = 0
    """processes making the teacher's edits beside the training (0: between steps, the CPU recipe); with workers
    the pool takes every example they finish, however many that is per step"""
    minutes: float = 75.0
    """training time budget"""
    steps: int | None = None
    """stop after this many steps instead"""
    batch: int = 4
    """examples per step (per process under torchrun)"""
    lr: float = 0.0005
    """Adam learning rate"""
    decay_fraction: float = 0.3
    """over this last part of the budget the learning rate falls linearly ..."""
    final_lr_fraction: float = 0.1
    """... to this fraction of ``lr``"""
    pool: int = 72
    """examples kept at any time (each step replaces ``refresh_per_step`` of them)"""
    refresh_per_step: int = 1
    """examples replaced after every step (without workers)"""
    lpips: str = field(default="auto", metadata={"choices": ("auto", "imagenet", "random", "off")})
    """LPIPS backbone: "auto" uses ImageNet AlexNet weights when present, else leaves LPIPS out"""
    plane_weight: float = 1.0
    """weight of the triplane L1 (divided by PLANE_SCALE)"""
    depth_weight: float = 1.0
    """weight of the depth L1 (relative to the camera distance)"""
    pixels_per_view: int = 512
    """without LPIPS (which needs whole images): the image and depth terms compare this many random pixels of each
    64² view per step, an unbiased estimate of the whole images' L2 at a fraction of the rendering"""
    checkpoint_every_s: float = 120.0
    """seconds between checkpoints"""
    preview_every: int = 50
    """steps between metric and preview events"""
    betas: tuple[float, float] = field(default=(0.9, 0.99), metadata=INTERNAL)
    """Adam's"""


def image_loss(rendered: torch.Tensor, target: torch.Tensor, lpips: nn.Module | None) -> torch.Tensor:
    """L2 + 2·LPIPS (images in [0, 1]); L2 alone without an LPIPS network."""
    loss = F.mse_loss(rendered, target)
    if lpips is not None:
        loss = loss + 2 * lpips(rendered * 2 - 1, target * 2 - 1).mean()
    return loss


def distill_losses(editor: nn.Module, model: nn.Module, prior: TriPlaneGenerator, batch: list[EditExample],
                   use_reference: bool, cfg: DistillConfig, lpips: nn.Module | None,
                   rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """L2D, the parts of L3D and their sum ("total") for one batch; ``model`` is ``editor`` (or its DDP wrapper)."""
    device = editor.Ref_encoder.proj_tail.weight.device
    photos = torch.stack([example.photo for example in batch]).to(device)
    edited = torch.stack([example.edited for example in batch]).to(device)
    if use_reference:
        tokens = editor.prompts.image_tokens(torch.stack([example.reference for example in batch]).to(device))
    else:
        tokens = editor.prompts.text([example.prompt for example in batch])
    planes = model(photos * 2 - 1, tokens)
    with torch.no_grad():
        target_planes = editor.encoder(edited * 2 - 1)
    n = len(batch)
    yaw = np.concatenate([np.zeros(n), rng.uniform(-YAW_RANGE_DEG, YAW_RANGE_DEG, n)])
    pitch = np.concatenate([np.zeros(n), rng.uniform(-PITCH_RANGE_DEG, PITCH_RANGE_DEG, n)])
    c = torch.from_numpy(camera_labels(yaw, pitch)).to(device)
    both = lambda p: torch.cat([p, p])  # noqa: E731 - the input view, then a random one, of every example
    pixels = None if lpips is not None or cfg.pixels_per_view >= VIEW_SIZE ** 2 else torch.from_numpy(
        np.stack([rng.choice(VIEW_SIZE ** 2, cfg.pixels_per_view, replace=False) for _ in range(2 * n)])).to(device)
    ours = render_views(prior, both(planes), c, pixels)
    with torch.no_grad():
        target = render_views(prior, both(target_planes), c, pixels)
    teacher_2d = F.interpolate(edited, size=(VIEW_SIZE,) * 2, mode="bilinear", align_corners=False, antialias=True)
    if pixels is not None:
        teacher_2d = torch.gather(teacher_2d.flatten(2), 2, pixels[:n, None].expand(-1, 3, -1))
    losses = {"2d": image_loss(ours["rgb"][:n], teacher_2d, lpips),
              "3d_image": image_loss(ours["rgb"], target["rgb"], lpips),
              "3d_planes": F.l1_loss(planes, target_planes) / PLANE_SCALE,
              "3d_depth": F.l1_loss(ours["depth"], target["depth"]) / CAMERA_DISTANCE}
    losses["total"] = losses["2d"] + losses["3d_image"] + cfg.plane_weight * losses["3d_planes"] + \
        cfg.depth_weight * losses["3d_depth"]
    return losses


def distill_step(editor: EmbeddedEditor, model: nn.Module, prior: TriPlaneGenerator, examples: list[EditExample],
                 optimizer: torch.optim.Optimizer, batch: int, cfg, lpips: nn.Module | None,
                 rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One optimisation step on ``batch`` examples drawn from ``examples``, prompted by text or (a fraction of
    steps) by reference images; the losses it took (distillation and adaptation share it)."""
    chosen = [examples[int(k)] for k in rng.choice(len(examples), min(batch, len(examples)), replace=False)]
    use_reference = bool(rng.random() < IMAGE_PROMPT_FRACTION)
    if use_reference:
        chosen = with_references(chosen, examples, rng)
    losses = distill_losses(editor, model, prior, chosen, use_reference, cfg, lpips, rng)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    return losses


def render_views(prior: TriPlaneGenerator, planes: torch.Tensor, c: torch.Tensor,
                 pixels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Colour in [0, 1] and depth of planes (B, ...) seen from cameras c (B, 25) at VIEW_SIZE², keeping the
    gradient to the planes: whole images (B, 3 | 1, R, R), or the ``pixels`` (B, M) of each (B, 3 | 1, M)."""
    if pixels is None:
        rgb, depth = prior.render_features(planes, c, VIEW_SIZE, deterministic_sampling=True, channels=3)
        return {"rgb": (rgb + 1) / 2, "depth": depth}
    origins, directions = sample_rays(c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3), VIEW_SIZE)
    picked = lambda rays: torch.gather(rays, 1, pixels[..., None].expand(-1, -1, 3))  # noqa: E731
    rgb, depth = prior.render_rays(planes, picked(origins), picked(directions), deterministic_sampling=True,
                                   channels=3)
    return {"rgb": (rgb.transpose(1, 2) + 1) / 2, "depth": depth.transpose(1, 2)}


def distill_job(cfg: DistillConfig, cancel: CancelToken) -> Iterator:
    """Distill the embedded editor (resuming a stopped run in ``cfg.out``), then write its weights."""
    from safetensors.torch import save_file

    from engine.portrait.live3d import WEIGHTS_FILE as ENCODER_FILE

    budget = Budget(cfg.steps, cfg.minutes)
    budget.validate("distillation")
    dist = Distributed()
    device = dist.device(check_device(cfg.device))
    out_dir = Path(cfg.out)
    state_path = out_dir / "training_state.pt"
    prior = load_prior(cfg.prior).requires_grad_(False).to(device)
    torch.manual_seed(cfg.seed)
    step, seconds, next_seed = 0, 0.0, 0
    state = read_training_state(state_path)
    if state is None and cfg.init is not None:
        editor = load_editor(cfg.init, encoder=cfg.encoder or ENCODER_DIR).to(memory_format=torch.contiguous_format)
        editor.train()
    else:
        editor = EmbeddedEditor(load_encoder(cfg.encoder), clip_text=cfg.clip_text).train()
    editor.encoder.eval()
    if state is not None:
        editor.load_state_dict(state["editor"], strict=False)
        step, seconds, next_seed = state["step"], state["seconds"], state["next_seed"]
    editor = editor.to(device)
    optimizer = torch.optim.Adam(editor.distillable(), lr=cfg.lr, betas=cfg.betas)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    lpips, why = load_lpips(cfg.lpips, without="distilling without the LPIPS terms")
    if lpips is not None:
        lpips = lpips.to(device)
    if why and dist.main:
        yield JobWarning(why)
    model = dist.wrap(editor)
    rng = np.random.default_rng([cfg.seed, step, dist.rank])

    seeds = Seeds(next_seed, dist.rank, dist.world)
    examples = Prefetcher(functools.partial(edit_example, base_seed=cfg.seed), seeds, cfg.workers)
    try:
        yield Progress(0, cfg.pool, "making the teacher's edits")
        pool = examples.take(cfg.pool)
        shown: torch.Tensor | None = None

        def save() -> Path:
            return dist.checkpoint(state_path, optimizer, cfg, editor=cpu_tensors(editor.learned()), step=step,
                                   seconds=seconds, next_seed=seeds.next)

        def measured(means: dict[str, float]) -> dict[str, float]:
            nonlocal shown
            example = pool[0]
            with torch.no_grad():
                planes = editor(example.photo[None].to(device) * 2 - 1, editor.prompts.text([example.prompt]))
                shown = render_planes(prior, planes, torch.from_numpy(input_view()[None]).to(device))["rgb"][0].cpu()
            target = F.interpolate(example.edited[None], size=(VIEW_SIZE,) * 2, mode="bilinear", antialias=True)[0]
            return {"psnr_to_teacher": psnr(shown, target)}

        loop = BudgetedLoop(budget, cancel, "distillation", message="distilling the portrait editor", save=save,
                            optimizer=optimizer, learning_rate=lambda fraction: learning_rate(cfg, fraction),
                            checkpoint_every_s=cfg.checkpoint_every_s, metrics_every=cfg.preview_every, step=step,
                            seconds=seconds, extra_metrics=measured)
        for step in loop:
            losses = distill_step(editor, model, prior, pool, optimizer, cfg.batch, cfg, lpips, rng)
            arrived = examples.ready(cfg.refresh_per_step)[:cfg.pool]
            for k, example in zip(rng.choice(cfg.pool, len(arrived), replace=False), arrived):
                pool[int(k)] = example
            loop.done(**{f"loss_{key}": float(value.detach()) for key, value in losses.items()})
            yield from dist.events(loop, cancel)
            step, seconds = loop.step, loop.seconds
            if dist.main and step % cfg.preview_every == 0 and shown is not None:
                target = F.interpolate(pool[0].edited[None], size=(VIEW_SIZE,) * 2, mode="bilinear",
                                       antialias=True)[0]
                yield Preview(step, to_uint8(torch.cat([target, shown], dim=2).permute(1, 2, 0)),
                              {"layout": "teacher|editor"})
        yield from dist.finish(loop)
    finally:
        examples.close()
    if cancel.cancelled or not dist.main:
        return
    if cfg.encoder is not None:  # the folder then holds what it needs
        atomic_write(out_dir / ENCODER_FILE, lambda tmp: save_file(cpu_tensors(editor.encoder.state_dict()), str(tmp)))
    yield from write_editor(editor, out_dir, {"command": recipe_command(cfg, "portrait distill"),
                                              "processes": dist.world, "device": device, "steps": step,
                                              "seconds": seconds, "examples_seen": seeds.next,
                                              "lpips": lpips is not None, "config": dataclasses.asdict(cfg)})


def write_editor(editor: EmbeddedEditor, out_dir: Path, recipe: dict) -> Iterator:
    """Write the editor's learned weights, its styles and recipe; yields the Artifacts."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    atomic_write(weights, lambda tmp: save_file(cpu_tensors(editor.learned()), str(tmp)))
    clip = {"clip_text": editor.prompts.clip_folder} if editor.prompts.clip_folder else {}
    write_json(out_dir / STYLES_FILE, {"styles": list(editor.prompts.styles), **clip})
    yield Artifact(write_json(out_dir / "recipe.json", recipe), "recipe")
    yield Artifact(weights, "weights")


def user_editor_dir() -> Path:
    """The user's own editor folder (adapted styles): ~/Retouch3D/portrait_editor."""
    return Path.home().joinpath(*USER_EDITOR_DIR)


def default_editor_dir() -> Path:
    """The editor used when none is named: the user's adapted one if it exists, else the shipped one."""
    user = user_editor_dir()
    return user if (user / WEIGHTS_FILE).is_file() else EDITOR_DIR


def load_editor(path: str | Path | None = None, encoder: str | Path | None = None) -> EmbeddedEditor:
    """The shipped embedded editor (or the one in ``path``) on its encoder, in eval mode: ``encoder``, else an
    encoder.safetensors in the editor's folder (one distilled on another encoder carries it), else the shipped one."""
    import json

    from safetensors.torch import load_file

    from engine.portrait.live3d import WEIGHTS_FILE as ENCODER_FILE

    folder = Path(path) if path is not None else default_editor_dir()
    if encoder is None and (folder / ENCODER_FILE).is_file():
        encoder = folder
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder} holds no distilled editor ({WEIGHTS_FILE}); make one with "
                              f"python main.py portrait distill --out {folder}")
    try:
        described = json.loads((folder / STYLES_FILE).read_text())
        editor = EmbeddedEditor(load_encoder(encoder), tuple(described["styles"]), described.get("clip_text"))
        missing, unexpected = editor.load_state_dict(load_file(str(weights)), strict=False)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{folder} does not hold a readable editor: {str(exc).splitlines()[0]}") from None
    missing = [k for k in missing if not k.startswith("encoder.")]
    if missing or unexpected:
        raise CheckpointError(f"{weights} is not an embedded editor: {len(missing)} weights missing, "
                              f"{len(unexpected)} unexpected")
    return editor.eval().requires_grad_(False).to(memory_format=torch.channels_last)  # as load_encoder


def bench_editing(editor: EmbeddedEditor, prior: TriPlaneGenerator, heads: int = 16,
                  edits: tuple[str, ...] = TRAINED_EDITS, lpips: nn.Module | None = None) -> dict:
    """Multi-view edit fidelity on held-out heads (PSNR against the variation-free edit at yaw 0, ±15, ±30),
    the "2D edit then reconstruct" baseline (one varied teacher edit of the input view, encoded), the gap
    between held-out and trained phrasings, and the change outside the edited group for regional edits; with an
    LPIPS network, the fidelity's LPIPS too."""
    teacher, exact = PortraitTeacher(), PortraitTeacher(variation=False)
    c = camera_labels(np.array(BENCH_YAWS), np.zeros(len(BENCH_YAWS)))
    views = torch.from_numpy(c)
    per_edit: dict[str, dict[str, list[float]]] = {}
    with torch.no_grad():
        for k in range(heads):
            head = HeadParams.from_seed(HELD_OUT_SEED + k)
            photo = teacher_render([head], input_view()[None], INPUT_SIZE)
            plain = teacher_render([head] * len(c), c, VIEW_SIZE)
            labels = torch.from_numpy(render_heads([head] * len(c), c, VIEW_SIZE).labels_group)
            draw_views = lambda h: teacher_render([h] * len(c), c, VIEW_SIZE)  # noqa: E731
            draw_input = lambda h: teacher_render([h], input_view()[None], INPUT_SIZE)[0]  # noqa: E731
            recon = _views(prior, editor.reconstruct(photo * 2 - 1), views)
            for name in edits:
                scores = per_edit.setdefault(name, {"fidelity": [], "baseline": [], "heldout": [], "outside": [],
                                                    "lpips": []})
                truth = exact.truth(name, head, plain, draw_views)
                trained = phrasings(name, TRAIN_PHRASINGS)[k % len(TRAIN_PHRASINGS)]
                held_out = phrasings(name, TEST_PHRASINGS)[k % len(TEST_PHRASINGS)]
                ours = _views(prior, editor.edit(photo * 2 - 1, editor.tokens(trained)), views)
                scores["fidelity"].append(statistics.fmean(psnr(ours[v], truth[v]) for v in range(len(c))))
                if lpips is not None:
                    scores["lpips"].append(float(lpips(ours * 2 - 1, truth * 2 - 1).mean()))
                theirs = _views(prior, editor.edit(photo * 2 - 1, editor.tokens(held_out)), views)
                scores["heldout"].append(statistics.fmean(psnr(theirs[v], truth[v]) for v in range(len(c))))
                varied = teacher.edit_view(name, head, photo[0], draw_input, seed=k)
                baseline = _views(prior, editor.reconstruct(varied[None] * 2 - 1), views)
                scores["baseline"].append(statistics.fmean(psnr(baseline[v], truth[v]) for v in range(len(c))))
                group = group_id(name)
                if group is not None:
                    outside = (labels != group)[:, None].expand(-1, 3, -1, -1)
                    scores["outside"].append(float((ours - recon).abs()[outside].mean()))
    mean = lambda key: statistics.fmean([v for s in per_edit.values() for v in s[key]] or [float("nan")])  # noqa: E731
    figures = {"fidelity_lpips": mean("lpips")} if lpips is not None else {}
    return {**figures, "fidelity_psnr": mean("fidelity"), "baseline_psnr": mean("baseline"),
            "heldout_phrasing_gap_db": mean("fidelity") - mean("heldout"), "outside_change": mean("outside"),
            "per_edit": {name: {key: statistics.fmean(values) for key, values in s.items() if values}
                         for name, s in per_edit.items()},
            "edit_heads": heads, "edit_yaws": list(BENCH_YAWS)}


def _views(prior: TriPlaneGenerator, planes: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return render_planes(prior, planes.expand(len(c), -1, -1, -1), c)["rgb"]


def bench_edit_speed(editor: EmbeddedEditor, repeats: int = 20) -> float:
    """Milliseconds for one edit of a 128² photo: prompt tokens, features and the edited triplanes (median)."""
    import time

    photo = teacher_render([HeadParams.from_seed(HELD_OUT_SEED)], input_view()[None], INPUT_SIZE) * 2 - 1
    times = []
    with torch.no_grad():
        for k in range(repeats + 2):
            start = time.perf_counter()
            editor.edit(photo, editor.tokens(TRAINED_EDITS[k % len(TRAINED_EDITS)]))
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[2:])
