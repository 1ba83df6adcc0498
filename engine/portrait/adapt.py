"""Adaptation of the embedded 3DPE editor to a new style from about ten example pairs (3DPE, section 3.4):
only the prompt encoder and the final stage's normalisation layers are tuned, with the distillation
objective (engine.portrait.distill) where the pairs' edited images are the teacher; the style is then
available by name (its words join the prompt vocabulary) and by image prompt.

Pairs: ``DIR/input/NAME.png`` and ``DIR/edited/NAME.png`` (or .jpg), aligned square portraits (EG3D
crops at any size) framed alike; each is resized to the editor's 128² input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.core.config import INTERNAL, recipe_command
from engine.core.errors import UserInputError
from engine.core.jobs import CancelToken, JobWarning, Metrics, Progress
from engine.core.loop import Budget, BudgetedLoop
from engine.core.metrics import load_lpips, psnr
from engine.portrait.distill import (EditExample, EmbeddedEditor, default_editor_dir, distill_step, load_editor,
                                     user_editor_dir, write_editor)
from engine.portrait.live3d import INPUT_SIZE, VIEW_SIZE, input_view, render_planes
from engine.portrait.prior import learning_rate, load_prior

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_PAIRS = 2
CURVE_MINUTES = (0.1, 1.0, 2.0, 5.0)
"""when the fidelity curve is measured (3DPE's Table 3)"""


@dataclass
class AdaptConfig:
    """Teaching the embedded editor a new style (defaults: the paper's few-minute adaptation)."""

    pairs: str
    """folder with input/ and edited/ images of the same names (about ten pairs)"""
    name: str
    """the new style's name: its words become prompt words ("marble statue", "ice sculpture")"""
    out: str | None = None
    """editor folder to write (default: ~/Retouch3D/portrait_editor, which portrait edit then uses)"""
    editor: str | None = None
    """the editor to start from (default: the one in ~/Retouch3D/portrait_editor if any, else the shipped one)"""
    minutes: float = 5.0
    """time budget"""
    steps: int | None = None
    """stop after this many steps instead"""
    batch: int = 4
    """pairs per step"""
    lr: float = 0.003
    """Adam learning rate"""
    holdout: int = 2
    """pairs kept out of training to choose the weights: the editor written is the one that edited them best
    (ten pairs over-fit after a few minutes); 0 trains on every pair and keeps the last weights"""
    seed: int = 0
    """seeds the held-out pairs, the pairs drawn, views and prompt kinds"""
    lpips: str = field(default="auto", metadata={"choices": ("auto", "imagenet", "random", "off")})
    """LPIPS backbone (see distill)"""
    decay_fraction: float = field(default=0.3, metadata=INTERNAL)
    """over this last part of the budget the learning rate falls linearly ..."""
    final_lr_fraction: float = field(default=0.1, metadata=INTERNAL)
    """... to this fraction of ``lr``"""
    plane_weight: float = field(default=1.0, metadata=INTERNAL)
    """weight of the triplane L1 (as in distillation)"""
    depth_weight: float = field(default=1.0, metadata=INTERNAL)
    """weight of the depth L1 (as in distillation)"""
    pixels_per_view: int = field(default=512, metadata=INTERNAL)
    """without LPIPS: pixels of each view compared per step (as in distillation)"""
    metrics_every: int = field(default=10, metadata=INTERNAL)
    """steps between metric events"""
    validate_every_s: float = field(default=10.0, metadata=INTERNAL)
    """seconds of training between edits of the held-out pairs"""


def _image(path: Path) -> torch.Tensor:
    from engine.portrait.alignment import read_photo

    photo = read_photo(path)
    height, width = photo.image.shape[:2]
    if height != width:
        raise UserInputError(f"{path}: pairs are aligned square portraits; this one is {width} x {height}")
    x = torch.from_numpy(np.array(photo.image)).permute(2, 0, 1).float().div(255)[None]
    return F.interpolate(x, size=(INPUT_SIZE,) * 2, mode="bilinear", align_corners=False, antialias=True)[0]


def read_pairs(folder: str | Path) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, input, edited) of every pair in ``folder`` (see the module docstring), inputs in [0, 1] at 128²."""
    folder = Path(folder)
    inputs, edited = folder / "input", folder / "edited"
    if not inputs.is_dir() or not edited.is_dir():
        raise UserInputError(f"{folder}: expected input/ and edited/ folders holding the pairs under the same names")
    pairs = []
    for path in sorted(p for p in inputs.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        match = next((edited / (path.stem + s) for s in IMAGE_SUFFIXES if (edited / (path.stem + s)).is_file()), None)
        if match is None:
            raise UserInputError(f"{path}: no edited image {path.stem}.png or .jpg in {edited}")
        pairs.append((path.stem, _image(path), _image(match)))
    if len(pairs) < MIN_PAIRS:
        raise UserInputError(f"{folder}: {len(pairs)} pair(s) found; adaptation needs at least {MIN_PAIRS} "
                             f"(about ten work well)")
    return pairs


def adaptable(editor: EmbeddedEditor) -> list[torch.nn.Parameter]:
    """What adaptation tunes: the prompt encoder and the final stage's LayerNorms; nothing else learns."""
    editor.requires_grad_(False)
    norms = [m for m in editor.Final_encoder.modules() if isinstance(m, torch.nn.LayerNorm)]
    params = list(editor.prompts.parameters()) + [p for m in norms for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def adapt_job(cfg: AdaptConfig, cancel: CancelToken,
              evaluate: Callable[[EmbeddedEditor], dict[str, float]] | None = None) -> Iterator:
    """Teach the editor ``cfg.name`` from the pairs and write the adapted editor.  ``evaluate`` (the benchmark's)
    is called at CURVE_MINUTES of training time; its figures join the Metrics events."""
    pairs = read_pairs(cfg.pairs)
    budget = Budget(cfg.steps, cfg.minutes)
    budget.validate("adaptation")
    source = Path(cfg.editor) if cfg.editor else default_editor_dir()
    editor = load_editor(source)
    editor.prompts.add_style(cfg.name)
    editor.prompts.resolve(cfg.name)  # the name must read as a prompt (new words are fine, filler alone is not)
    params = adaptable(editor)
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    lpips, why = load_lpips(cfg.lpips, without="adapting without the LPIPS terms")
    if why:
        yield JobWarning(why)
    prior = load_prior()
    rng = np.random.default_rng(cfg.seed)
    held_count = cfg.holdout if len(pairs) >= cfg.holdout + MIN_PAIRS else 0
    if held_count < cfg.holdout:
        yield JobWarning(f"{len(pairs)} pairs are too few to hold {cfg.holdout} out: training on all of them and "
                         "keeping the last weights")
    order = rng.permutation(len(pairs))
    held_names = sorted(pairs[int(k)][0] for k in order[:held_count])
    examples = [EditExample(x, y, cfg.name, cfg.name) for name, x, y in pairs if name not in held_names]
    held = [EditExample(x, y, cfg.name, cfg.name) for name, x, y in pairs if name in held_names]
    chosen = ChosenWeights(params)
    yield Progress(0, budget.steps, f"adapting to {cfg.name!r} from {len(examples)} pairs"
                   + (f", {len(held)} held out to choose the weights" if held else ""))
    curve = list(CURVE_MINUTES) if evaluate is not None else []
    loop = BudgetedLoop(budget, cancel, "adaptation", message=f"adapting to {cfg.name!r}", save=lambda: Path(),
                        optimizer=optimizer, learning_rate=lambda fraction: learning_rate(cfg, fraction),
                        checkpoint_every_s=float("inf"), metrics_every=cfg.metrics_every,
                        extra_metrics=lambda values: {} if chosen.latest is None else {"held_out_psnr": chosen.latest})
    validated_at = -float("inf")
    for _ in loop:
        losses = distill_step(editor, editor, prior, examples, optimizer, cfg.batch, cfg, lpips, rng)
        loop.done(**{f"loss_{key}": float(value.detach()) for key, value in losses.items()})
        due = bool(curve) and loop.seconds >= 60 * curve[0]  # the curve scores what stopping now would write
        if held and (loop.seconds - validated_at >= cfg.validate_every_s or loop.fraction >= 1 or due):
            editor.eval()
            chosen.offer(pair_psnr(editor, prior, held), loop.step)
            editor.train()
            validated_at = loop.seconds
        yield from loop.events()
        while curve and loop.seconds >= 60 * curve[0]:
            editor.eval()
            with chosen.applied():
                figures = evaluate(editor)
            editor.train()
            yield Metrics(loop.step, {"minutes": curve.pop(0), **figures})
    if cancel.cancelled:
        return
    editor.eval()
    chosen.apply()
    out = Path(cfg.out) if cfg.out else user_editor_dir()
    recipe = {"command": recipe_command(cfg, "portrait adapt"),
              "adapted_from": str(source), "pairs": [name for name, _, _ in pairs], "held_out_pairs": held_names,
              "steps": loop.step, "chosen_step": chosen.step if held else loop.step, "seconds": loop.seconds,
              "config": dataclasses.asdict(cfg), "train_pair_psnr": pair_psnr(editor, prior, examples),
              "held_out_pair_psnr": chosen.score if held else None}
    yield from write_editor(editor, out, recipe)


class ChosenWeights:
    """The weights adaptation keeps: those whose edits of the held-out pairs scored best so far (``offer``);
    until a score is offered, the current ones."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params, self.values = params, None
        self.score, self.step, self.latest = -float("inf"), 0, None

    def offer(self, score: float, step: int) -> None:
        """The held-out pairs' PSNR under the current weights (after ``step`` steps): kept when the best yet."""
        self.latest = score
        if score > self.score:
            self.score, self.step, self.values = score, step, [p.detach().clone() for p in self.params]

    def apply(self) -> None:
        """Put the chosen weights in place."""
        if self.values is not None:
            self._put(self.values)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The chosen weights in place for a while (an evaluation of what stopping now would write)."""
        current = [p.detach().clone() for p in self.params]
        self.apply()
        try:
            yield
        finally:
            self._put(current)

    @torch.no_grad()
    def _put(self, values: list[torch.Tensor]) -> None:
        for param, value in zip(self.params, values):
            param.copy_(value)


def pair_psnr(editor: EmbeddedEditor, prior, examples: list[EditExample]) -> float:
    """Mean PSNR of the adapted editor's input-view render against the pairs' edits (64²)."""
    scores = []
    with torch.no_grad():
        for e in examples:
            planes = editor(e.photo[None] * 2 - 1, editor.prompts.text([e.name]))
            ours = render_planes(prior, planes, torch.from_numpy(input_view()[None]))["rgb"]
            target = F.interpolate(e.edited[None], size=(VIEW_SIZE,) * 2, mode="bilinear", antialias=True)
            scores.append(psnr(ours, target))
    return statistics.fmean(scores)


def write_synthetic_pairs(folder: str | Path, name: str, count: int = 10, first_seed: int = 0) -> Path:
    """Example pairs of the vocabulary edit ``name`` on synthetic heads (the teacher's varied 2D edits), written
    as a pairs folder: what the benchmark adapts from, and an example of the layout."""
    from PIL import Image

    from engine.core.imaging import to_uint8
    from engine.portrait.distill import teacher_render
    from engine.portrait.heads import HeadParams
    from engine.portrait.vocabulary import PortraitTeacher

    folder = Path(folder)
    (folder / "input").mkdir(parents=True, exist_ok=True)
    (folder / "edited").mkdir(parents=True, exist_ok=True)
    teacher, c = PortraitTeacher(), input_view()[None]
    draw = lambda head: teacher_render([head], c, INPUT_SIZE)[0]  # noqa: E731
    for k in range(count):
        head = HeadParams.from_seed(first_seed + k)
        photo = draw(head)
        edited = teacher.edit_view(name, head, photo, draw, seed=first_seed + k)
        for sub, image in (("input", photo), ("edited", edited)):
            Image.fromarray(to_uint8(image.permute(1, 2, 0))).save(folder / sub / f"{k:03d}.png")
    return folder


def bench_adaptation(style: str = "marble statue", pairs: int = 10, minutes: float = 5.0, heads: int = 8,
                     editor: str | None = None) -> dict:
    """Adaptation to a style held out of distillation from ``pairs`` synthetic pairs: fidelity (PSNR against the
    style's 3D ground truth on held-out heads, yaw 0, ±15, ±30) at CURVE_MINUTES of training (3DPE's Table 3)."""
    import tempfile

    from engine.portrait.distill import bench_editing
    from engine.portrait.prior import HELD_OUT_SEED

    prior = load_prior()
    lpips, why = load_lpips("auto", without="the curve has PSNR only")
    curve: list[dict[str, float]] = []

    def evaluate(adapted: EmbeddedEditor) -> dict[str, float]:
        figures = bench_editing(adapted, prior, heads=heads, edits=(style,), lpips=lpips)
        return {key: figures[key] for key in ("fidelity_psnr", "fidelity_lpips") if key in figures}

    with tempfile.TemporaryDirectory() as scratch:
        folder = write_synthetic_pairs(Path(scratch) / "pairs", style, pairs, first_seed=HELD_OUT_SEED // 4)
        cfg = AdaptConfig(pairs=str(folder), name=style, editor=editor, out=str(Path(scratch) / "editor"),
                          minutes=minutes)
        for event in adapt_job(cfg, CancelToken(), evaluate):
            if isinstance(event, Metrics) and "minutes" in event.values:
                curve.append(dict(event.values))
    return {"adapt_style": style, "adapt_pairs": pairs, "adapt_curve": curve,
            "adapt_psnr_5min": next((p["fidelity_psnr"] for p in curve if p["minutes"] == 5.0), None),
            "adapt_lpips_note": why}
