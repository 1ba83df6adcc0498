"""Instruct-NeRF2NeRF's Iterative Dataset Update as a resumable job.

The trained field keeps training while, every ``edit_rate`` steps, one training view (in a
fixed random permutation, round-robin) is rendered, edited by a 2D editor conditioned on its
ORIGINAL capture, and the result replaces that view's training target.  Inconsistent 2D
edits consolidate into one 3D edit because every view is pulled toward the field's own
render.  Losses are L1 + LPIPS on random 32x32 patches.  With a region ("point and type"),
edits are blended into the original images only inside the region's mask.

Edited images are saved to the project's edit store as they are made (originals are never
written), the field is checkpointed like training, and running the same edit again resumes
the unfinished session from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.cameras import generate_rays
from engine.editing.base import Guidance, ImageEditor, check_instruction
from engine.editing.regions import Region, region_from_pixel, region_from_point
from engine.editing.store import EditStore
from engine.errors import UserInputError
from engine.jobs import (Artifact, CancelToken, Cancelled, Job, JobWarning, Metrics, Preview, Progress)
from engine.metrics import LPIPS_BACKBONES, load_lpips, psnr
from engine.project import Project, atomic_write, save_torch, write_json
from engine.scene.datasets import SceneDataset
from engine.scene.render import camera_dict, render_image, to_uint8
from engine.scene.trainer import check_budget, fixed_background, load_checkpoint, make_optimizer, write_checkpoint
from engine.scene.viewer import LiveField

EDITORS = ("offline", "ip2p")


@dataclass
class EditConfig:
    """One instruction edit of a trained project (Instruct-NeRF2NeRF's defaults)."""

    project: str
    """trained project folder"""
    instruction: str
    """what the edit should do, e.g. 'make it look like a bronze statue'"""
    editor: str = "offline"
    """offline (embedded vocabulary of global edits) | ip2p (InstructPix2Pix through diffusers)"""
    model: str | None = None
    """InstructPix2Pix source: a diffusers folder, a checkpoint file, or a hub id (online only)"""
    model_config: str | None = None
    """InstructPix2Pix given as one checkpoint file: the diffusers folder of the same model, for its configs"""
    device: str = "cpu"
    """where the 2D editor runs (cpu | cuda)"""
    memory: str = "default"
    """InstructPix2Pix memory preset on CUDA: default | low (CPU offload)"""
    variation: float = 0.0
    """offline editor: per-call hue / strength jitter, so single-view edits disagree like diffusion edits"""
    steps: int | None = None
    """optimisation steps of the edit"""
    minutes: float | None = None
    """time budget of the edit (edits and training steps together)"""
    seed: int = 0
    """seeds the view order, noise levels, patches and the editor"""
    edit_rate: int = 10
    """edit one view every this many steps (IN2N: 10)"""
    edit_count: int = 1
    """views edited each time (IN2N: 1)"""
    t_min: float = 0.02
    """lowest noise level of an edit (IN2N: 0.02)"""
    t_max: float = 0.98
    """highest noise level of an edit (IN2N: 0.98)"""
    guidance: Guidance = field(default_factory=Guidance)
    """diffusion guidance (s_T 7.5, s_I 1.5, 20 DDIM steps)"""
    patch_size: int = 32
    """side of the random training patches (IN2N: 32)"""
    patches_per_step: int = 1
    """patches per optimisation step (1024 rays each at the default size)"""
    l1_weight: float = 1.0
    """weight of the L1 loss"""
    lpips_weight: float = 1.0
    """weight of the LPIPS loss"""
    lpips_backbone: str = "auto"
    """auto | imagenet | random | off, or the path of torchvision's AlexNet weights (see metrics.load_lpips)"""
    lr: float = 1e-2
    """Adam learning rate when the edit starts (nerfacto's and IN2N's 1e-2): the colours of a
    global edit must move far"""
    lr_final: float = 1e-3
    """learning rate at the end, decaying exponentially with progress (the rate training ended at)"""
    lr_local: float = 1e-3
    """learning rate when a local edit starts (the rate training ended at): a larger one perturbs
    the whole field, and the scene outside the region must stay as it was"""
    lr_local_final: float = 1e-4
    """learning rate at the end of a local edit: the field settles back outside the region"""
    point: str | None = None
    """local edit around the surface seen at a pixel: 'VIEW:u,v' (VIEW: image name or number)"""
    point_3d: tuple[float, float, float] | None = None
    """local edit around a point in capture coordinates"""
    radius: float | None = None
    """radius of the local edit, in capture units"""
    falloff: float = 0.25
    """fraction of the radius over which the local edit fades out"""
    local_focus: float = 0.5
    """local edits: fraction of patches centred on a pixel of the region (the rest anywhere), so a
    small region gets enough updates"""
    metrics_every: int = 25
    """steps between metric events"""
    checkpoint_every_seconds: float = 60.0
    """write a checkpoint this often (and always at the end or on cancel)"""

    @property
    def local(self) -> bool:
        return self.point is not None or self.point_3d is not None

    def learning_rate(self, fraction: float) -> float:
        """The rate at ``fraction`` of the budget."""
        start, end = (self.lr_local, self.lr_local_final) if self.local else (self.lr, self.lr_final)
        return start * (end / start) ** min(fraction, 1.0)

    def budget_fraction(self, step: int, seconds: float) -> float:
        """How much of the budget is spent (0..1)."""
        if self.steps is not None:
            return step / max(self.steps, 1)
        return seconds / (60 * self.minutes)

    def validate(self) -> None:
        """Every check that needs no model: bad values are user errors raised before anything is written."""
        self.instruction = check_instruction(self.instruction)
        if self.editor not in EDITORS:
            raise UserInputError(f"unknown editor {self.editor!r}; choose one of {', '.join(EDITORS)}")
        check_budget(self.steps, self.minutes, "edit")
        if not 0 <= self.t_min <= self.t_max <= 1:
            raise UserInputError(f"the noise range must satisfy 0 <= t_min <= t_max <= 1 (got {self.t_min}, "
                                 f"{self.t_max})")
        if self.point is not None and self.point_3d is not None:
            raise UserInputError("give either --point or --point-3d, not both")
        if self.local and self.radius is None:
            raise UserInputError("a local edit needs --radius R (in the capture's units)")
        if self.radius is not None and not self.radius > 0:
            raise UserInputError(f"the edit radius must be positive (got {self.radius})")
        if self.edit_rate < 1 or self.edit_count < 1:
            raise UserInputError("edit_rate and edit_count must be at least 1")
        if self.lpips_backbone not in LPIPS_BACKBONES and not Path(self.lpips_backbone).is_file():
            raise UserInputError(f"LPIPS backbone {self.lpips_backbone!r}: choose one of "
                                 f"{', '.join(LPIPS_BACKBONES)} or the path of an AlexNet weights file")

    def parse_point(self) -> tuple[str, float, float]:
        """'VIEW:u,v' → (view, u, v)."""
        view, sep, uv = (self.point or "").rpartition(":")
        try:
            u, v = (float(x) for x in uv.split(","))
        except ValueError:
            u = v = math.nan
        if not sep or not view or math.isnan(u) or math.isnan(v):
            raise UserInputError(f"--point {self.point!r}: expected VIEW:u,v, e.g. frame_00012:240,180")
        return view, u, v

    def signature(self) -> dict:
        """What makes two runs the same edit session (resume only when these match)."""
        keys = ("instruction", "editor", "model", "variation", "seed", "edit_rate", "edit_count", "t_min", "t_max",
                "point", "point_3d", "radius", "falloff", "patch_size", "patches_per_step")
        return {k: getattr(self, k) for k in keys} | {"guidance": dataclasses.asdict(self.guidance)}


def build_editor(cfg: EditConfig) -> ImageEditor:
    """The 2D editor the config names; an unknown offline instruction or a bad model source fails here."""
    if cfg.editor == "offline":
        from engine.editing.offline import OfflineEditor, resolve

        resolve(cfg.instruction)
        return OfflineEditor(variation=cfg.variation)
    from engine.editing.ip2p import load_ip2p

    if not cfg.model:
        raise UserInputError("the ip2p editor needs --model: an InstructPix2Pix diffusers folder, checkpoint "
                             "file or hub id (e.g. timbrooks/instruct-pix2pix)")
    return load_ip2p(cfg.model, device=cfg.device, memory=cfg.memory, config_dir=cfg.model_config)


def file_digest(paths: list[Path]) -> str:
    """SHA-256 over the bytes of ``paths`` (originals must come out of an edit unchanged)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.tensor(array).float() / 255


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


def edit_job(cfg: EditConfig, cancel: CancelToken | None = None, live: LiveField | None = None) -> Job:
    """Edit a trained project by Iterative Dataset Update; yields progress, losses, before/after
    previews of every edited view, checkpoints and finally the report.

    ``live``: share the model with an interactive viewer, which renders it between steps.
    """
    cfg.validate()
    cancel = cancel or CancelToken()
    project = Project(Path(cfg.project))
    model, dataset, manifest, state = load_checkpoint(project.root)
    background = fixed_background(dataset)
    editor = build_editor(cfg)
    for note in getattr(editor, "notes", ()):
        yield JobWarning(note)
    lpips_model, lpips_warning = load_lpips(cfg.lpips_backbone) if cfg.lpips_weight > 0 else (None, None)
    if lpips_warning:
        yield JobWarning(lpips_warning)
    region = _region(cfg, model, dataset, background)
    originals_digest = file_digest(dataset.image_paths)

    # Session: resume an unfinished run of this very edit, or start a new one from the current field.
    session = state.get("edit")
    resuming = session is not None and session["signature"] == cfg.signature() and not session["done"]
    session_dir = project.root / "edits" / "session"
    if not resuming:
        baseline = _session_baseline(model, dataset, region, background)  # raises before anything is written
        before = project.checkpoint_dir / "before_edit.pt"
        if not before.exists():
            save_torch(before, state)  # the trained field, so a whole edit can be thrown away
        for kind, images in baseline.items():
            for name, image in images.items():
                _save_png(session_dir / kind / f"{name}.png", image)
        gen = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(len(dataset.train_indices), generator=gen).tolist()
        session = {"signature": cfg.signature(), "done": False, "step": 0, "seconds": 0.0, "cursor": 0,
                   "permutation": perm, "edits": 0, "edited_views": [], "start_step": state["step"]}
    else:
        gen = torch.Generator()
        gen.set_state(session["generator"])
        yield JobWarning(f"resuming the edit '{cfg.instruction}' at step {session['step']}")
    store = EditStore(project.root)
    names = [dataset.image_paths[f].stem for f in dataset.train_indices]
    # Training targets.  Global edits start from the captures (IN2N).  Local edits anchor every
    # pixel outside the region to the field as it was, so the scene there stays exactly as it
    # was rather than drifting on with further reconstruction; the edit store keeps the
    # user-facing images (edits blended into the captures).
    masks, anchors = {}, {}
    if region is not None:
        for name in names:
            masks[name] = _image(_read_png(session_dir / "masks" / f"{name}.png"))[..., None]
            anchors[name] = _image(_read_png(session_dir / "before" / f"{name}.png"))
    targets = []
    for row, frame in enumerate(dataset.train_indices):
        edited = store.current(names[row])
        image = torch.tensor(edited if edited is not None else dataset.images[frame])
        if region is not None:
            image = torch.from_numpy(to_uint8(_blend(masks[names[row]], _image(image.numpy()), anchors[names[row]])))
        targets.append(image)
    focus = None  # local edits: (row, y, x) of every region pixel, where patches are centred
    if region is not None:
        focus = torch.cat([torch.cat([torch.full((len(yx), 1), row), yx], 1)
                           for row, name in enumerate(names) for yx in [(masks[name][..., 0] > 0.5).nonzero()]])

    model.train()
    optimizer = make_optimizer(model, cfg.lr)
    optimizer.load_state_dict(state["optimizer"])  # warm moments from training; the edit's own rate below
    train_cams = dataset.cameras.subset(dataset.train_indices)
    params = train_cams.torch_params()
    seed_base = cfg.seed * 1_000_003
    last_ckpt = time.monotonic()
    recent: dict[str, list[float]] = {}

    def save(done: bool) -> Path:
        session.update(done=done, generator=gen.get_state())
        total = session["start_step"] + session["step"]
        return write_checkpoint(project, total, {
            **{k: v for k, v in state.items() if k not in ("model", "extra", "optimizer", "edit")},
            "model": model.state_dict(), "extra": model.extra_state(), "optimizer": optimizer.state_dict(),
            "step": total, "edit": session})

    def edit_next_view() -> Preview:
        row = session["permutation"][session["cursor"] % len(names)]
        session["cursor"] += 1
        frame = int(dataset.train_indices[row])
        with live.step() if live is not None else contextlib.nullcontext():  # the 2D edit runs outside it
            render = render_image(model, dataset.cameras, frame, background, appearance=row)["rgb"]
        original = _image(dataset.images[frame])
        t = cfg.t_min + (cfg.t_max - cfg.t_min) * float(torch.rand((), generator=gen))
        edited = editor.edit(render, original, cfg.instruction, t, seed_base + session["edits"], cfg.guidance,
                             cancel).float().clamp(0, 1)
        result = edited
        if region is not None:
            result = _blend(masks[names[row]], edited, original)
            edited = _blend(masks[names[row]], edited, anchors[names[row]])
        targets[row] = torch.from_numpy(to_uint8(edited))
        result = to_uint8(result)
        store.add(names[row], result, instruction=cfg.instruction, editor=cfg.editor, t=t,
                  step=session["step"], session_start=session["start_step"])
        session["edits"] += 1
        if names[row] not in session["edited_views"]:
            session["edited_views"].append(names[row])
        side = np.concatenate([to_uint8(render), result], axis=1)
        return Preview(session["step"], side, camera_dict(dataset.cameras, frame) | {"view": names[row],
                                                                                      "layout": "before|after"})

    if live is not None:
        live.publish(model, dataset, background)
    loop_start = time.perf_counter() - session["seconds"]
    try:
        while cfg.budget_fraction(session["step"], session["seconds"]) < 1 and not cancel.cancelled:
            if session["step"] % cfg.edit_rate == 0:
                for _ in range(cfg.edit_count):
                    yield edit_next_view()
                model.train()
            with live.step() if live is not None else contextlib.nullcontext():
                for group in optimizer.param_groups:
                    group["lr"] = cfg.learning_rate(cfg.budget_fraction(session["step"], session["seconds"]))
                model.before_step(session["start_step"] + session["step"], gen)
                losses = _patch_step(cfg, model, optimizer, targets, dataset, params, train_cams.model, background,
                                     lpips_model, gen, focus)
            session["step"] += 1
            session["seconds"] = time.perf_counter() - loop_start
            for k, v in losses.items():
                recent.setdefault(k, []).append(v)
            if session["step"] % cfg.metrics_every == 0:
                means = {k: float(np.mean(v)) for k, v in recent.items()}
                recent.clear()
                yield Metrics(session["step"], means | {"psnr_train": -10 * math.log10(max(means["mse"], 1e-10)),
                                                        "views_edited": len(session["edited_views"])})
            yield Progress(session["step"], cfg.steps, f"editing: {cfg.instruction}",
                           fraction=min(cfg.budget_fraction(session["step"], session["seconds"]), 1.0))
            if time.monotonic() - last_ckpt >= cfg.checkpoint_every_seconds:
                last_ckpt = time.monotonic()
                yield Artifact(save(False), "checkpoint")
    except Cancelled:
        pass
    if cancel.cancelled:
        yield Artifact(save(False), "checkpoint")
        yield JobWarning(f"edit cancelled at step {session['step']}; run the same command again to resume")
        return
    yield Artifact(save(True), "checkpoint")

    report = {"instruction": cfg.instruction, "editor": cfg.editor, "edit_seconds": session["seconds"],
              "steps": session["step"], "views_edited": len(session["edited_views"]), "edits_made": session["edits"],
              "seed": cfg.seed, "lpips": lpips_model is not None,
              "region": None if region is None else dataclasses.asdict(region)}
    report.update(_measure(cfg, model, dataset, region, background, session_dir, cancel))
    report["originals_unchanged"] = file_digest(dataset.image_paths) == originals_digest
    path = write_json(project.root / "edits" / "report.json", report)
    yield Metrics(session["step"], {k: v for k, v in report.items() if isinstance(v, float)})
    yield Artifact(path, "report")


def _region(cfg: EditConfig, model, dataset: SceneDataset, background) -> Region | None:
    if cfg.point is not None:
        view, u, v = cfg.parse_point()
        region = region_from_pixel(model, dataset, view, u, v, cfg.radius, background)
    elif cfg.point_3d is not None:
        region = region_from_point(dataset, cfg.point_3d, cfg.radius)
    else:
        return None
    return dataclasses.replace(region, falloff=cfg.falloff)


def _session_baseline(model, dataset: SceneDataset, region: Region | None, background) -> dict:
    """What a session keeps from before its first step: renders of the held-out views (to measure
    what changed) and, for local edits, every view's region mask and the training views' renders
    (the anchors outside the region).  A region that no view sees is a user error."""
    views = [(int(f), row) for row, f in enumerate(dataset.train_indices)] if region is not None else []
    baseline: dict[str, dict[str, np.ndarray]] = {"before": {}, "masks": {}}
    covered = 0.0
    for frame, appearance in views + [(int(f), None) for f in dataset.eval_indices]:
        name = dataset.image_paths[frame].stem
        out = render_image(model, dataset.cameras, frame, background, appearance=appearance)
        baseline["before"][name] = to_uint8(out["rgb"])
        if region is not None:
            mask = region.mask(dataset.cameras, frame, out["depth"], out["accumulation"])
            covered += float(mask.sum())
            baseline["masks"][name] = to_uint8(mask)
    if region is not None and covered == 0:
        raise UserInputError(f"the edit region (centre {tuple(round(c, 3) for c in region.centre)} in scene units, "
                             f"radius {region.radius:.3f}) touches no visible surface in any view")
    return baseline


def _blend(mask: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    return mask * inside + (1 - mask) * outside


def _save_png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _pick_patch(size: int, targets: list[torch.Tensor], focus: torch.Tensor | None, focus_fraction: float,
                gen: torch.Generator) -> tuple[int, int, int, int, int]:
    """A random patch (row, top, left, height, width); with ``focus`` (rows, y, x of region pixels)
    a ``focus_fraction`` of patches is centred on one of them."""
    centred = focus is not None and len(focus) > 0 and float(torch.rand((), generator=gen)) < focus_fraction
    if centred:
        row, y, x = focus[int(torch.randint(0, len(focus), (1,), generator=gen))].tolist()
    else:
        row = int(torch.randint(0, len(targets), (1,), generator=gen))
    h, w = targets[row].shape[:2]
    ph, pw = min(size, h), min(size, w)
    if centred:
        return row, min(max(y - ph // 2, 0), h - ph), min(max(x - pw // 2, 0), w - pw), ph, pw
    y0 = int(torch.randint(0, h - ph + 1, (1,), generator=gen))
    x0 = int(torch.randint(0, w - pw + 1, (1,), generator=gen))
    return row, y0, x0, ph, pw


def _patch_step(cfg: EditConfig, model, optimizer, targets: list[torch.Tensor], dataset: SceneDataset, params,
                camera_model: str, background, lpips_model, gen: torch.Generator,
                focus: torch.Tensor | None) -> dict[str, float]:
    """One optimisation step on random patches: L1 + LPIPS against the current (edited) targets."""
    rows, us, vs, gts, valid = [], [], [], [], []
    sizes = []
    for _ in range(cfg.patches_per_step):
        row, y0, x0, ph, pw = _pick_patch(cfg.patch_size, targets, focus, cfg.local_focus, gen)
        vv, uu = torch.meshgrid(torch.arange(y0, y0 + ph), torch.arange(x0, x0 + pw), indexing="ij")
        rows.append(torch.full((ph * pw,), row))
        us.append(uu.reshape(-1))
        vs.append(vv.reshape(-1))
        gts.append(targets[row][y0:y0 + ph, x0:x0 + pw].reshape(-1, 3))
        mask = dataset.masks[int(dataset.train_indices[row])]
        valid.append(torch.ones(ph * pw, dtype=torch.bool) if mask is None
                     else torch.from_numpy(mask[y0:y0 + ph, x0:x0 + pw]).reshape(-1))
        sizes.append((ph, pw))
    row_t = torch.cat(rows)
    origins, dirs = generate_rays(params, row_t, torch.cat(us).float() + 0.5, torch.cat(vs).float() + 0.5,
                                  camera_model)
    out = model.render_rays(origins, dirs, row_t, background)
    pred = out["rgb"]
    target = torch.cat(gts).float() / 255
    target = torch.where(torch.cat(valid)[:, None], target, pred.detach())  # masked-out pixels cost nothing
    l1 = (pred - target).abs().mean()
    loss = cfg.l1_weight * l1 + sum(v for k, v in out.items() if k.startswith("loss_"))
    lp = torch.zeros(())
    if lpips_model is not None:
        start, parts = 0, []
        for ph, pw in sizes:
            n = ph * pw
            to_nchw = lambda x: x[start:start + n].reshape(1, ph, pw, 3).permute(0, 3, 1, 2) * 2 - 1  # noqa: E731
            parts.append(lpips_model(to_nchw(pred), to_nchw(target)).mean())
            start += n
        lp = torch.stack(parts).mean()
        loss = loss + cfg.lpips_weight * lp
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "l1": float(l1.detach()), "lpips": float(lp.detach()),
            "mse": float(((pred.detach() - target) ** 2).mean())}


@torch.inference_mode()
def _measure(cfg: EditConfig, model, dataset: SceneDataset, region: Region | None, background, session_dir: Path,
             cancel: CancelToken) -> dict:
    """Edit fidelity against the offline editor's ground truth, and how much changed outside the region."""
    reference = None
    if cfg.editor == "offline":
        from engine.editing.offline import OfflineEditor

        reference = OfflineEditor(variation=0.0)
    fidelity, outside, inside, names = [], [], [], []
    for frame in [int(f) for f in dataset.eval_indices]:
        if cancel.cancelled:
            break
        name = dataset.image_paths[frame].stem
        after = _image(to_uint8(render_image(model, dataset.cameras, frame, background)["rgb"]))
        before = _image(_read_png(session_dir / "before" / f"{name}.png"))
        mask = (_image(_read_png(session_dir / "masks" / f"{name}.png")) if region is not None
                else torch.ones(after.shape[:2]))
        original = _image(dataset.images[frame])
        if reference is not None:
            truth = reference.edit(original, original, cfg.instruction, 1.0, 0)
            truth = mask[..., None] * truth + (1 - mask[..., None]) * original
            fidelity.append(psnr(after, truth))
        if region is not None:
            change = (after - before).abs().mean(-1) * 255
            if bool((mask == 0).any()):
                outside.append(float(change[mask == 0].mean()))
            if bool((mask > 0.5).any()):
                inside.append(float(change[mask > 0.5].mean()))
        names.append(name)
    result: dict = {"eval_views": len(names)}
    if fidelity:
        result["edit_fidelity_psnr"] = float(np.mean(fidelity))
        result["per_view_fidelity_psnr"] = dict(zip(names, fidelity))
    if outside:
        result["outside_region_change"] = float(np.mean(outside))  # mean |change| in 8-bit levels
    if inside:
        result["inside_region_change"] = float(np.mean(inside))
    return result
