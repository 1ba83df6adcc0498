"""Training a radiance field on a captured scene, as a resumable job.

The job loads the dataset, trains for a step or time budget while streaming metrics and
previews, checkpoints atomically (a killed run resumes exactly where its last checkpoint
left it), then evaluates on the held-out frames and writes a JSON report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from engine.core.cameras import generate_rays
from engine.core.errors import UserInputError
from engine.core.imaging import to_uint8
from engine.core.jobs import Artifact, CancelToken, Job, JobWarning, Metrics, Preview, Progress
from engine.core.loop import Budget, BudgetedLoop, exponential_decay
from engine.core.machine import machine_info
from engine.core.metrics import psnr, ssim
from engine.core.project import Project, save_torch, write_json
from engine.core.safe_pickle import load_torch
from engine.scene import native
from engine.scene.datasets import FORMATS, SceneDataset, load_dataset
from engine.scene.presets import MODEL_PRESETS, build_model, model_config
from engine.scene.render import PREVIEW_STEP_SCALE, camera_dict, preview_cameras, render_image
from engine.scene.viewer import LiveField


@dataclass
class TrainConfig:
    """One training run. Either ``steps`` or ``minutes`` bounds it (steps wins when both are set)."""

    data: str
    """dataset folder (nerfstudio transforms.json or Blender synthetic)"""
    out: str
    """project folder: checkpoints, renders, report"""
    format: str = field(default="auto", metadata={"choices": ("auto", *FORMATS)})
    """the capture's format: auto (detected) | nerfstudio | blender"""
    downscale: float = 1.0
    """resample images by this factor on load"""
    model: str = field(default="fast", metadata={"choices": MODEL_PRESETS})
    """model preset (engine.scene.presets.MODEL_PRESETS): fast (hash grid, occupancy-guided marching, C kernels)
    | nerfacto (nerfstudio's defaults)"""
    steps: int | None = None
    """number of optimisation steps"""
    minutes: float | None = 5.0
    """training time budget when no step count is given (excludes evaluation, previews and checkpoint writes)"""
    seed: int = 0
    """seeds ray sampling, initialisation and occupancy updates"""
    lr: float = 1e-2
    """Adam learning rate at the start (Instant-NGP / nerfacto: 1e-2)"""
    lr_final: float = 1e-3
    """learning rate at the end; decays exponentially with progress"""
    initial_rays: int = 4096
    """rays in the first step (later steps adapt to the model's sample budget)"""
    max_rays: int = 16384
    """upper bound on rays per step"""
    preview_every_s: float | None = None
    """emit a preview render this often (None: no previews, as on the CLI)"""
    preview_max_side: int = 256
    """preview resolution (longer side)"""
    metrics_every: int = 25
    """steps between metric events"""
    checkpoint_every_s: float = 60.0
    """write a checkpoint this often (and always at the end or on cancel)"""
    save_eval_renders: bool = True
    """write held-out renders next to their ground truth under renders/eval"""

    @property
    def budget(self) -> Budget:
        return Budget(self.steps, self.minutes)

    def validate(self) -> None:
        self.budget.validate("training")
        if self.downscale < 1:
            raise UserInputError(f"--downscale must be at least 1 (got {self.downscale})")


class PixelBank:
    """Every usable training pixel (colour, image, pixel centre, opacity) as flat tensors, for uniform ray batches."""

    def __init__(self, dataset: SceneDataset) -> None:
        rgbs, cams, us, vs, alphas = [], [], [], [], []
        any_alpha = any(dataset.alphas[frame] is not None for frame in dataset.train_indices)
        for row, frame in enumerate(dataset.train_indices):
            img = torch.tensor(dataset.images[frame])
            h, w = img.shape[:2]
            vv, uu = torch.meshgrid(torch.arange(h, dtype=torch.int32), torch.arange(w, dtype=torch.int32),
                                    indexing="ij")
            keep = torch.ones(h, w, dtype=torch.bool)
            if dataset.masks[frame] is not None:
                keep = torch.tensor(dataset.masks[frame])
            rgbs.append(img[keep])
            us.append(uu[keep])
            vs.append(vv[keep])
            cams.append(torch.full((int(keep.sum()),), row, dtype=torch.int32))
            if any_alpha:
                alpha = dataset.alphas[frame]
                alphas.append(torch.tensor(alpha)[keep] if alpha is not None else torch.full_like(us[-1], 255,
                                                                                              dtype=torch.uint8))
        self.rgb = torch.cat(rgbs)
        self.row = torch.cat(cams)
        self.u = torch.cat(us)
        self.v = torch.cat(vs)
        self.alpha = torch.cat(alphas) if any_alpha else None
        """uint8 opacity of every pixel (None: no image had alpha)"""
        self.see_through = torch.tensor([dataset.alphas[f] is not None for f in dataset.train_indices])
        """per training image: it had alpha, so any background may be put behind it"""

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def targets(self, idx: torch.Tensor, row: torch.Tensor, background: torch.Tensor | None,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Colours of pixels ``idx`` (images ``row``) in [0, 1] and the background each ray is rendered on.

        Pixels of transparent images are put on a random colour per ray, as Instant-NGP and nerfacc
        train Blender scenes: against one fixed colour the field can paint the background as a fog of
        that colour and a dark object as a fog of black, and the first steps drive its colour output
        into saturation (the Blender scene became a black silhouette).  A random background can only
        be matched by transparency, so opacity and colour are both learned.
        """
        target = self.rgb[idx].float() / 255
        if self.alpha is None or background is None:
            return target, background
        random = torch.rand(len(idx), 3, generator=generator)
        behind = torch.where(self.see_through[row][:, None], random, background)
        transparency = 1 - self.alpha[idx].float() / 255
        return target + (behind - background) * transparency[:, None], behind


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam as Instant-NGP sets it up; fused: one kernel over all parameters (4x faster than the
    loop on CPU for the hash tables)."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-15, fused=True)


def border_color(dataset: SceneDataset) -> torch.Tensor:
    """Median colour of the training images' outermost pixels: a first guess of the far background."""
    rims = []
    for frame in dataset.train_indices:
        img = dataset.images[frame]
        rims += [img[0], img[-1], img[:, 0], img[:, -1]]
    return torch.from_numpy(np.concatenate(rims)).float().median(0).values / 255


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dataset_signature(cfg: TrainConfig, dataset: SceneDataset) -> dict:
    return {"data": str(Path(cfg.data).resolve()), "format": dataset.format, "downscale": cfg.downscale,
            "frames": len(dataset.images), "model": cfg.model}


def fixed_background(dataset: SceneDataset) -> torch.Tensor | None:
    """The colour synthetic images were composited on (None for captures: the model learns it)."""
    return None if dataset.background is None else torch.tensor(dataset.background, dtype=torch.float32)


def train_job(cfg: TrainConfig, cancel: CancelToken | None = None, live: LiveField | None = None) -> Job:
    """Train (or resume) ``cfg``; yields progress, metrics, previews, warnings and artifacts.

    ``live``: share the model with an interactive viewer, which renders it between steps.
    """
    cfg.validate()
    cancel = cancel or CancelToken()
    mcfg = model_config(cfg.model)
    dataset = load_dataset(cfg.data, cfg.format, cfg.downscale)
    for message in dataset.warnings:
        yield JobWarning(message)
    project = Project(Path(cfg.out))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    train_rows = dataset.train_indices
    train_cams = dataset.cameras.subset(train_rows)
    params = train_cams.torch_params()
    model = build_model(mcfg, len(train_rows), contracted=not dataset.bounded)
    optimizer = make_optimizer(model, cfg.lr)
    bank = PixelBank(dataset)
    background = fixed_background(dataset)
    if background is None:
        model.init_background(border_color(dataset))
    signature = _dataset_signature(cfg, dataset)

    step, train_seconds, rays_seen, n_rays = 0, 0.0, 0, cfg.initial_rays
    ckpt_path = project.latest_checkpoint()
    if ckpt_path is not None:
        state = load_torch(ckpt_path)
        if state["signature"] != signature:
            raise UserInputError(f"{cfg.out} holds a run on other data or settings ({state['signature']}); "
                                 "choose another --out folder")
        model.load_state_dict(state["model"])
        model.load_extra_state(state["extra"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, train_seconds, rays_seen, n_rays = state["step"], state["train_seconds"], state["rays_seen"], state["n_rays"]
        yield JobWarning(f"resuming from {ckpt_path.name} (step {step})")

    project.update_manifest(kind="scene", train_config=dataclasses.asdict(cfg), model_config=dataclasses.asdict(mcfg),
                            dataset=signature, world_from_capture=dataset.world_from_capture.tolist())

    def save_checkpoint() -> Path:
        return write_checkpoint(project, step, {
            "model": model.state_dict(), "extra": model.extra_state(), "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(), "step": step, "train_seconds": train_seconds, "rays_seen": rays_seen,
            "n_rays": n_rays, "signature": signature, "model_config": dataclasses.asdict(mcfg)})

    preview_cams = preview_cameras(dataset.cameras.subset(dataset.eval_indices[:1] if len(dataset.eval_indices)
                                                           else train_rows[:1]), cfg.preview_max_side)
    if live is not None:
        live.publish(model, dataset, background)
    if native.needs_compiling():
        yield Progress(step, cfg.steps, "compiling the CPU kernels (once on this machine, before the clock starts)")
    native.load_kernels()
    loop = BudgetedLoop(cfg.budget, cancel, "training", save=save_checkpoint, optimizer=optimizer,
                        learning_rate=exponential_decay(cfg.lr, cfg.lr_final),
                        checkpoint_every_s=cfg.checkpoint_every_s, metrics_every=cfg.metrics_every,
                        step=step, seconds=train_seconds,
                        extra_metrics=lambda means: {
                            "psnr_train": -10 * math.log10(max(means["loss"], 1e-10)),
                            "rays_per_second": rays_seen / max(loop.seconds, 1e-9), "samples_per_ray": samples_per_ray,
                            **model.stats()})
    last_preview = time.monotonic()
    samples_seen, rays_at_start = 0, rays_seen  # samples are counted by this run only
    samples_per_ray = 0.0
    for step in loop:
        with live.step() if live is not None else contextlib.nullcontext():
            model.before_step(step, gen)
            idx = torch.randint(0, len(bank), (n_rays,), generator=gen)
            row = bank.row[idx].long()
            origins, dirs = generate_rays(params, row, bank.u[idx].float() + 0.5, bank.v[idx].float() + 0.5,
                                          train_cams.model)
            target, behind = bank.targets(idx, row, background, gen)
            out = model.render_rays(origins, dirs, row, behind)
            mse = torch.mean((out["rgb"] - target) ** 2)
            loss = mse + sum(v for k, v in out.items() if k.startswith("loss_"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        samples = max(out["num_samples"], 1)
        samples_seen += samples
        rays_seen += n_rays
        samples_per_ray = samples / n_rays
        target_samples = getattr(model.cfg, "target_samples_per_step", None)
        if target_samples:
            n_rays = int(min(cfg.max_rays, max(256, n_rays * target_samples / samples)))
        loop.done(loss=float(mse.detach()))
        step, train_seconds = loop.step, loop.seconds  # what a checkpoint written now records
        yield from loop.events()
        now = time.monotonic()
        if cfg.preview_every_s is not None and now - last_preview >= cfg.preview_every_s:
            last_preview = now
            pv = render_image(model, preview_cams, 0, background, step_scale=PREVIEW_STEP_SCALE)
            yield Preview(step, to_uint8(pv["rgb"]), camera_dict(preview_cams, 0))
    yield from loop.finish()
    if cancel.cancelled:
        return

    report = {"model": cfg.model, "data": str(Path(cfg.data)), "downscale": cfg.downscale, "steps": step,
              "train_seconds": train_seconds, "rays_per_second": rays_seen / max(train_seconds, 1e-9),
              "samples_per_ray": samples_seen / max(rays_seen - rays_at_start, 1), "seed": cfg.seed, "machine": machine_info()}
    for event in evaluate(model, dataset, project.root / "renders" / "eval" if cfg.save_eval_renders else None,
                          cancel):
        if isinstance(event, dict):
            report.update(event)
        else:
            yield event
    report["peak_rss_mb"] = peak_rss_mb()
    write_json(project.root / "report.json", report)
    yield Metrics(step, {k: v for k, v in report.items() if isinstance(v, float)})
    yield Artifact(project.root / "report.json", "report")


def trained_seconds(project_dir: str | Path) -> float:
    """Training time already spent on a project's field (0 when untrained)."""
    ckpt = Project(Path(project_dir)).latest_checkpoint()
    return 0.0 if ckpt is None else float(load_torch(ckpt).get("train_seconds", 0.0))


def train_more_job(project_dir: str | Path, minutes: float, cancel: CancelToken | None = None,
                   live: LiveField | None = None) -> Job:
    """Job: train a project's field for ``minutes`` more (its first run when untrained), with the settings
    the project was created or last trained with."""
    root = Path(project_dir)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in Project(root).read_manifest()["train_config"].items() if k in known}
    cfg = TrainConfig(**(settings | {"out": str(root), "steps": None, "preview_every_s": None,
                                     "minutes": minutes + trained_seconds(root) / 60}))
    yield from train_job(cfg, cancel, live)


def evaluate(model, dataset: SceneDataset, render_dir: Path | None, cancel: CancelToken):
    """Render every held-out frame; yields progress events, then one dict of PSNR/SSIM figures."""
    background = fixed_background(dataset)
    per_view_psnr, per_view_ssim, names = [], [], []
    t_start = time.perf_counter()
    for k, frame in enumerate(dataset.eval_indices):
        if cancel.cancelled:
            break
        out = render_image(model, dataset.cameras, int(frame), background)
        gt = torch.tensor(dataset.images[frame]).float() / 255
        pred = out["rgb"]
        mask = dataset.masks[frame]
        if mask is not None:  # score only the pixels the capture marks as valid
            m = torch.tensor(mask)[..., None]
            pred, gt = pred * m, gt * m
        per_view_psnr.append(psnr(pred, gt))
        per_view_ssim.append(ssim(pred, gt))
        name = Path(dataset.image_paths[frame]).stem
        names.append(name)
        if render_dir is not None:
            render_dir.mkdir(parents=True, exist_ok=True)
            side = np.concatenate([to_uint8(pred), to_uint8(gt)], axis=1)
            Image.fromarray(side).save(render_dir / f"{name}.png")
        yield Progress(k + 1, len(dataset.eval_indices), "evaluating")
    eval_seconds = time.perf_counter() - t_start
    yield {"psnr_mean": float(np.mean(per_view_psnr)) if per_view_psnr else float("nan"),
           "ssim_mean": float(np.mean(per_view_ssim)) if per_view_ssim else float("nan"),
           "per_view_psnr": dict(zip(names, per_view_psnr)), "per_view_ssim": dict(zip(names, per_view_ssim)),
           "eval_views": len(names), "eval_seconds_per_view": eval_seconds / max(len(names), 1)}
    if render_dir is not None and names:
        yield Artifact(render_dir, "held-out renders")


def write_checkpoint(project: Project, step: int, state: dict) -> Path:
    """Atomically save ``state`` as the project's checkpoint for ``step`` and drop older step checkpoints."""
    path = project.checkpoint_dir / f"step_{step:07d}.pt"
    save_torch(path, state)
    for old in project.checkpoint_dir.glob("step_*.pt"):
        if old != path:
            old.unlink()
    return path


class TrainedField(NamedTuple):
    """A trained project as loaded: its field (in eval mode), the dataset it was trained on, its manifest and
    the raw checkpoint (optimizer, step, ...) a resumed job continues from."""

    model: torch.nn.Module
    dataset: SceneDataset
    manifest: dict
    checkpoint: dict


def load_trained(project_dir: str | Path) -> TrainedField:
    """The trained field of a project (for rendering, exports and edits); a user error when it was never trained."""
    project = Project(Path(project_dir))
    manifest = project.read_manifest()
    ckpt = project.latest_checkpoint()
    if ckpt is None:
        raise UserInputError(f"{project.root}: the field was never trained (no checkpoint); run "
                             f"'python main.py train --data DIR --out {project.root}' first")
    tcfg = manifest["train_config"]
    dataset = load_dataset(tcfg["data"], tcfg["format"], tcfg["downscale"])
    mcfg = model_config(tcfg["model"])
    model = build_model(mcfg, len(dataset.train_indices), contracted=not dataset.bounded)
    state = load_torch(ckpt)
    model.load_state_dict(state["model"])
    model.load_extra_state(state["extra"])
    model.eval()
    return TrainedField(model, dataset, manifest, state)


def report_summary(report_path: Path) -> str:
    """One line a person reads after training."""
    r = json.loads(Path(report_path).read_text())
    return (f"held-out PSNR {r['psnr_mean']:.2f} dB, SSIM {r['ssim_mean']:.3f} over {r['eval_views']} views; "
            f"{r['steps']} steps in {r['train_seconds']:.0f} s ({r['rays_per_second']:.0f} rays/s), "
            f"peak memory {r['peak_rss_mb']:.0f} MB")
