"""Instruct-NeRF2NeRF's Iterative Dataset Update as a resumable job.

The trained field keeps training while, every ``edit_rate`` steps, one training view (in a
fixed random permutation, round-robin) is rendered, edited by a 2D editor conditioned on its
ORIGINAL capture, and the result replaces that view's training target.  Inconsistent 2D
edits consolidate into one 3D edit because every view is pulled toward the field's own
render.  Losses are L1 + LPIPS on random 32x32 patches, 16 a step (16384 rays).  With a region
("point and type"), edits are blended into the original images only inside the region's mask.

Edited images are saved to the project's edit store as they are made (originals are never
written), the field is checkpointed like training, and running the same edit again resumes
the unfinished session from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.core.cameras import generate_rays
from engine.core.devices import check_device
from engine.core.errors import UserInputError
from engine.core.imaging import to_uint8, write_png
from engine.core.jobs import Artifact, Cancelled, CancelToken, Job, JobWarning, Metrics, Preview
from engine.core.loop import Budget, BudgetedLoop
from engine.core.metrics import LPIPS_BACKBONES, load_lpips, psnr
from engine.core.project import Project, check_writable_folder, save_torch, write_json
from engine.core.safe_pickle import load_torch
from engine.editing.regions import Region, check_radius, region_from_pixel, region_from_point
from engine.editing.store import EditStore
from engine.editors import EDITORS, editor_entry
from engine.editors.base import Guidance, ImageEditor, check_instruction
from engine.editors.offline import apply_edit
from engine.editors.sources import MEMORY_PRESETS, PRECISIONS
from engine.scene.datasets import SceneDataset
from engine.scene.render import camera_dict, render_image
from engine.scene.trainer import fixed_background, load_trained, make_optimizer, write_checkpoint
from engine.scene.viewer import LiveField

START_FROM = ("current", "original")
"""what a new edit of an already edited project starts from (EditConfig.start_from)"""
LPIPS_MIN_PATCH = 31
"""smallest patch side AlexNet's LPIPS accepts (its last pooling needs 1 pixel)"""


@dataclass
class EditConfig:
    """One instruction edit of a trained project (Instruct-NeRF2NeRF's defaults)."""

    project: str
    """trained project folder"""
    instruction: str
    """what the edit should do, e.g. 'make it look like a bronze statue'"""
    editor: str = field(default="offline", metadata={"choices": EDITORS})
    """the 2D editor (engine.editors.EDITORS): offline (the embedded vocabulary of global edits) | ip2p
    (InstructPix2Pix through diffusers)"""
    model: str | None = None
    """InstructPix2Pix source: a diffusers folder, a checkpoint file, or a hub id (online only)"""
    model_config: str | None = None
    """InstructPix2Pix given as one checkpoint file: the diffusers folder of the same model, for its configs"""
    start_from: str = field(default="current", metadata={"choices": START_FROM})
    """on a project edited before: current (the editor is conditioned on each view's current edited image and
    training starts from those images, so this instruction applies on top of the earlier ones) | original
    (conditioning and targets from the original captures, the field from before the first edit; earlier edits
    stay in each view's history, unused)"""
    device: str = "cpu"
    """where the 2D editor runs: auto (the GPU when torch sees one) | cpu | cuda | cuda:N"""
    memory: str = field(default="default", metadata={"choices": MEMORY_PRESETS})
    """InstructPix2Pix GPU memory preset"""
    precision: str = field(default="full", metadata={"choices": PRECISIONS})
    """InstructPix2Pix weight precision"""
    variation: float = 0.0
    """offline editor: per-call hue / strength jitter, so single-view edits disagree like diffusion edits"""
    steps: int | None = None
    """optimisation steps of the edit"""
    minutes: float | None = 5.0
    """time budget of the edit when no step count is given (edits and training steps together)"""
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
    """patches per optimisation step, each from a random training view.  IN2N trains on 16384 rays per
    batch in 32x32 patches (16) on a GPU; this engine trains the field on the CPU, where a 16-patch step
    costs about 16 one-patch steps, so in the same time far fewer views are edited and the result is
    worse (``python -m benchmarks.editing --only patches``: both at the same budget)"""
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
    the whole field, and the scene outside the region must stay as it was (demo scene, 100 steps with
    edits that change nothing: 0.8/255 at 1e-3, 14/255 at 1e-2).  New matter in a region's empty space
    appears after some 250 steps at 1e-3"""
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
    checkpoint_every_s: float = 60.0
    """write a checkpoint this often (and always at the end or on cancel)"""

    @property
    def local(self) -> bool:
        return self.point is not None or self.point_3d is not None

    def learning_rate(self, fraction: float) -> float:
        """The rate at ``fraction`` of the budget."""
        start, end = (self.lr_local, self.lr_local_final) if self.local else (self.lr, self.lr_final)
        return start * (end / start) ** min(fraction, 1.0)

    @property
    def budget(self) -> Budget:
        return Budget(self.steps, self.minutes)

    def validate(self) -> None:
        """Every check of the edit's inputs that needs neither a model nor a trained field, each made here once, so
        a bad value is one UserInputError naming it before anything loads, trains or is written.  ``edit_job``
        and ``edit_preview_job`` call it when they are made; the GUI's edit panel calls it for its inline message.
        The editor's own rules (the offline vocabulary, an InstructPix2Pix model) are its registry entry's
        ``check``, part of this.  Normalises as it goes: the instruction stripped, the device resolved.
        ``project`` '' is not checked (not chosen yet); a point's view and pixel are checked against the field
        when the job finds the region (``regions.region_from_pixel``)."""
        self.instruction = check_instruction(self.instruction)
        entry = editor_entry(self.editor)
        if self.start_from not in START_FROM:
            raise UserInputError(f"start_from must be one of {', '.join(START_FROM)}, got {self.start_from!r}")
        self.device = check_device(self.device)
        entry.check(self)
        self.budget.validate("edit")
        if not 0 <= self.t_min <= self.t_max <= 1:
            raise UserInputError(f"the noise range must satisfy 0 <= t_min <= t_max <= 1 (got {self.t_min}, "
                                 f"{self.t_max})")
        if self.point is not None and self.point_3d is not None:
            raise UserInputError("give either --point or --point-3d, not both")
        if self.local and self.radius is None:
            raise UserInputError("a local edit needs --radius R (in the capture's units)")
        if self.point is not None:
            self.parse_point()
        if self.radius is not None:
            check_radius(self.radius)
        if min(self.edit_rate, self.edit_count, self.patch_size, self.patches_per_step, self.metrics_every) < 1:
            raise UserInputError("edit_rate, edit_count, patch_size, patches_per_step and metrics_every must be at "
                                 "least 1")
        if self.lpips_weight > 0 and self.lpips_backbone != "off" and self.patch_size < LPIPS_MIN_PATCH:
            raise UserInputError(f"patch_size {self.patch_size}: LPIPS (AlexNet) needs patches of at least "
                                 f"{LPIPS_MIN_PATCH} pixels; use a larger patch or lpips_weight 0")
        if self.point_3d is not None:
            try:
                self.point_3d = tuple(float(x) for x in self.point_3d)  # plain floats: saved in checkpoints
            except (TypeError, ValueError):
                raise UserInputError(f"point_3d must be three numbers, got {self.point_3d!r}") from None
            if len(self.point_3d) != 3 or not all(math.isfinite(x) for x in self.point_3d):
                raise UserInputError(f"point_3d must be three finite numbers, got {self.point_3d!r}")
        if not (0 <= self.falloff <= 1 and 0 <= self.local_focus <= 1):
            raise UserInputError(f"falloff and local_focus must lie in [0, 1] (got {self.falloff}, {self.local_focus})")
        if min(self.lr, self.lr_final, self.lr_local, self.lr_local_final, self.checkpoint_every_s) <= 0:
            raise UserInputError("learning rates and checkpoint_every_s must be positive")
        if min(self.l1_weight, self.lpips_weight) < 0:
            raise UserInputError("loss weights cannot be negative")
        if self.lpips_backbone not in LPIPS_BACKBONES and not Path(self.lpips_backbone).is_file():
            raise UserInputError(f"LPIPS backbone {self.lpips_backbone!r}: choose one of "
                                 f"{', '.join(LPIPS_BACKBONES)} or the path of an AlexNet weights file")
        if self.project:
            check_writable_folder(self.project, "project folder")

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
        keys = ("instruction", "editor", "model", "start_from", "variation", "seed", "edit_rate", "edit_count",
                "t_min", "t_max", "point", "point_3d", "radius", "falloff", "patch_size", "patches_per_step")
        return {k: getattr(self, k) for k in keys} | {"guidance": dataclasses.asdict(self.guidance)}


def build_editor(cfg: EditConfig) -> ImageEditor:
    """The 2D editor of a validated config; a model that fails to load fails here."""
    return EDITORS[cfg.editor].build(cfg)


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

    The edit's inputs are checked when the job is made (``cfg.validate()``), not when it first runs: a bad one
    raises UserInputError before the job exists, so before anything loads, trains or is written (the command
    line makes the job before it trains a capture for it).

    ``live``: share the model with an interactive viewer, which renders it between steps.
    """
    cfg.validate()
    return _edit_events(cfg, cancel or CancelToken(), live)


def _edit_events(cfg: EditConfig, cancel: CancelToken, live: LiveField | None) -> Job:
    """``edit_job``'s events, for a validated config."""
    project = Project(Path(cfg.project))
    model, dataset, manifest, state = load_trained(project.root)
    background = fixed_background(dataset)
    editor = build_editor(cfg)
    for note in getattr(editor, "notes", ()):
        yield JobWarning(note)
    lpips_model, lpips_warning = load_lpips(cfg.lpips_backbone) if cfg.lpips_weight > 0 else (None, None)
    if lpips_warning:
        yield JobWarning(lpips_warning)
    # Session: resume an unfinished run of this very edit, or start a new one from the current field
    # (starting from the originals: from the field before the first edit).
    session = state.get("edit")
    resuming = session is not None and session["signature"] == cfg.signature() and not session["done"]
    session_dir = project.root / "edits" / "session"
    before = project.checkpoint_dir / "before_edit.pt"
    if not resuming and cfg.start_from == "original" and before.exists():
        state = _unedited(state, before, model)
    region = _region(cfg, model, dataset, background, editor.adds_matter)
    originals_digest = file_digest(dataset.image_paths)
    store = EditStore(project.root)
    names = [dataset.image_paths[f].stem for f in dataset.train_indices]
    if not resuming:
        baseline = _session_baseline(model, dataset, region, background)  # raises before anything is written
        if not before.exists():  # the trained field, so a whole edit can be thrown away (or started again)
            save_torch(before, state | {"model": model.state_dict(), "extra": model.extra_state()})
        for kind, images in baseline.items():
            for name, image in images.items():
                write_png(session_dir / kind / f"{name}.png", image)
        if region is not None and (hidden := _hidden_warning(region, dataset, baseline["masks"])):
            yield JobWarning(hidden)
        gen = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(len(dataset.train_indices), generator=gen).tolist()
        base_versions = {name: store.current_index(name) if cfg.start_from == "current" else -1 for name in names}
        session = {"signature": cfg.signature(), "done": False, "step": 0, "seconds": 0.0, "cursor": 0,
                   "permutation": perm, "edits": 0, "edited_views": [], "start_step": state["step"],
                   "base_versions": base_versions}
    else:
        gen = torch.Generator()
        gen.set_state(session["generator"])
        yield JobWarning(f"resuming the edit '{cfg.instruction}' at step {session['step']}")
    # Each view's base: what the editor is conditioned on and training starts from, the capture (IN2N)
    # or, composing on earlier edits, the version current when the session started.  ``chains``: the
    # offline instructions that make each base from its capture (None when not reproducible).
    bases = [store.image(name, k) if (k := session["base_versions"][name]) >= 0 else dataset.images[frame]
             for name, frame in zip(names, dataset.train_indices)]
    chains = [_chain(store, name, session["base_versions"][name]) for name in names]
    base_chain = chains[0] if all(chain == chains[0] for chain in chains) else None
    if EDITORS[cfg.editor].deterministic and base_chain is None:
        yield JobWarning("edit fidelity will not be measured: the views' earlier edits differ or cannot be "
                         "repeated on held-out views (InstructPix2Pix or local edits)")
    # Training targets: this session's edits, else the bases.  Local edits anchor every pixel
    # outside the region to the field as it was, so the scene there stays exactly as it was rather
    # than drifting on with further reconstruction; the edit store keeps the user-facing images
    # (edits blended into the bases).
    masks, anchors = {}, {}
    if region is not None:
        for name in names:
            masks[name] = _image(_read_png(session_dir / "masks" / f"{name}.png"))[..., None]
            anchors[name] = _image(_read_png(session_dir / "before" / f"{name}.png"))
    targets = []
    for row, name in enumerate(names):
        edited = store.current(name) if name in session["edited_views"] else None
        image = torch.tensor(edited if edited is not None else bases[row])
        if region is not None:
            image = torch.from_numpy(to_uint8(_blend(masks[name], _image(image.numpy()), anchors[name])))
        targets.append(image)
    focus = None  # local edits: (row, y, x) of every region pixel, where patches are centred
    if region is not None:
        focus = torch.cat([torch.cat([torch.full((len(yx), 1), row), yx], 1)
                           for row, name in enumerate(names) for yx in [(masks[name][..., 0] > 0.5).nonzero()]])

    if region is not None and region.empty_space and hasattr(model, "open_region"):  # proposal sampling needs none
        model.open_region(region.centre, region.radius)  # the edit may grow matter in the region's empty space
    model.train()
    optimizer = make_optimizer(model, cfg.lr)
    if resuming or region is not None:
        # the edit's own moments (resuming), or a local edit continuing training's at the rate it ended at
        optimizer.load_state_dict(state["optimizer"])
    # A new global edit starts with fresh Adam moments.  Training's are those of its MSE loss, whose gradients
    # near convergence are far smaller than the edit's L1 gradients: at the global edit's 1e-2 the first steps
    # were then many times the learning rate and turned the field to fog (demo scene, 1,200 steps: 17 dB
    # against the edit's own targets and 17.5 dB edit fidelity; 26 and 20.1 dB with fresh moments; 2,500
    # steps: 19.1 and 27.8 dB).  Local edits' rates (lr_local) were measured with training's moments, which
    # move the region faster (with fresh ones a region's new matter stayed under the growth test's density
    # even at 3e-3).
    train_cams = dataset.cameras.subset(dataset.train_indices)
    params = train_cams.torch_params()
    seed_base = cfg.seed * 1_000_003
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
        base = _image(bases[row])
        t = cfg.t_min + (cfg.t_max - cfg.t_min) * float(torch.rand((), generator=gen))
        edited = editor.edit(render, base, cfg.instruction, t, seed_base + session["edits"], cfg.guidance,
                             cancel).float().clamp(0, 1)
        result = edited
        if region is not None:
            result = _blend(masks[names[row]], edited, base)
            edited = _blend(masks[names[row]], edited, anchors[names[row]])
        targets[row] = torch.from_numpy(to_uint8(edited))
        result = to_uint8(result)
        repeatable = EDITORS[cfg.editor].deterministic and region is None and chains[row] is not None
        store.add(names[row], result, instruction=cfg.instruction, editor=cfg.editor, t=t,
                  step=session["step"], session_start=session["start_step"], start_from=cfg.start_from,
                  chain=[*chains[row], cfg.instruction] if repeatable else None)
        session["edits"] += 1
        if names[row] not in session["edited_views"]:
            session["edited_views"].append(names[row])
        side = np.concatenate([to_uint8(render), result], axis=1)
        return Preview(session["step"], side, camera_dict(dataset.cameras, frame) | {"view": names[row],
                                                                                      "layout": "before|after"})

    if live is not None:
        live.publish(model, dataset, background)
    loop = BudgetedLoop(cfg.budget, cancel, "edit", message=f"editing: {cfg.instruction}",
                        save=lambda: save(loop.complete), optimizer=optimizer, learning_rate=cfg.learning_rate,
                        checkpoint_every_s=cfg.checkpoint_every_s, metrics_every=cfg.metrics_every,
                        step=session["step"], seconds=session["seconds"],
                        extra_metrics=lambda means: {"psnr_train": -10 * math.log10(max(means["mse"], 1e-10)),
                                                     "views_edited": len(session["edited_views"])})
    try:
        for step in loop:
            if step % cfg.edit_rate == 0:
                for _ in range(cfg.edit_count):
                    yield edit_next_view()
                model.train()
            with live.step() if live is not None else contextlib.nullcontext():
                model.before_step(session["start_step"] + step, gen)
                losses = _patch_step(cfg, model, optimizer, targets, dataset, params, train_cams.model, background,
                                     lpips_model, gen, focus)
            loop.done(**losses)
            session["step"], session["seconds"] = loop.step, loop.seconds
            yield from loop.events()
    except Cancelled:
        pass
    yield from loop.finish()
    if cancel.cancelled:
        return

    report = {"instruction": cfg.instruction, "editor": cfg.editor, "edit_seconds": session["seconds"],
              "steps": session["step"], "views_edited": len(session["edited_views"]), "edits_made": session["edits"],
              "seed": cfg.seed, "lpips": lpips_model is not None, "start_from": cfg.start_from,
              "region": None if region is None else region.describe(dataset)}
    report.update(_measure(cfg, model, dataset, region, background, session_dir, base_chain, cancel))
    report["originals_unchanged"] = file_digest(dataset.image_paths) == originals_digest
    path = write_json(project.root / "edits" / "report.json", report)
    yield Metrics(session["step"], {k: v for k, v in report.items() if isinstance(v, float)})
    yield Artifact(path, "report")


def _unedited(state: dict, before: Path, model) -> dict:
    """``state`` with the field (and its optimizer moments) from before the first edit, loaded into ``model``:
    an edit starting again from the originals must not inherit the earlier edits from the field's renders."""
    unedited = load_torch(before)
    model.load_state_dict(unedited["model"])
    model.load_extra_state(unedited["extra"])
    return state | {k: unedited[k] for k in ("model", "extra", "optimizer")}


def _chain(store: EditStore, view: str, k: int) -> list[str] | None:
    """The offline instructions that, applied in order to the capture of ``view``, give its version ``k``
    ([] for the capture itself, k = -1); None when they would not (InstructPix2Pix, local or older edits)."""
    return [] if k < 0 else store.history(view)[k].get("chain")


def _region(cfg: EditConfig, model, dataset: SceneDataset, background, empty_space: bool) -> Region | None:
    if cfg.point is not None:
        view, u, v = cfg.parse_point()
        region = region_from_pixel(model, dataset, view, u, v, cfg.radius, background)
    elif cfg.point_3d is not None:
        region = region_from_point(dataset, cfg.point_3d, cfg.radius)
    else:
        return None
    return dataclasses.replace(region, falloff=cfg.falloff, empty_space=empty_space)


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
            mask = region.mask(dataset.cameras, frame, out["median_depth"])
            covered += float(mask.sum())
            baseline["masks"][name] = to_uint8(mask)
    if region is not None and covered == 0:
        where = region.describe(dataset)
        raise UserInputError(f"the edit region (centre {tuple(round(c, 3) for c in where['centre'])}, radius "
                             f"{where['radius']:.3g} in capture units) is hidden or outside the image in every view")
    return baseline


def _hidden_warning(region: Region, dataset: SceneDataset, masks: dict[str, np.ndarray]) -> str | None:
    """A warning when most training views that frame the region do not see it: a radius below how far the
    field's surface there differs between views leaves the edit almost nothing to train on."""
    framed = seen = 0
    for frame in dataset.train_indices:
        shape = dataset.images[frame].shape[:2]
        if float(region.mask(dataset.cameras, int(frame), torch.full(shape, math.inf)).max()) > 0.5:
            framed += 1
            seen += int(masks[dataset.image_paths[frame].stem].max() > 127)
    if seen >= framed / 2:
        return None
    radius = region.describe(dataset)["radius"]
    return (f"the edit region is seen in only {seen} of the {framed} training views that frame it: in the others "
            f"the surface the field shows misses it (a radius of {radius:.3g} capture units is below how far that "
            "surface differs between views), so the edit will barely show; give a larger --radius")


def _blend(mask: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    return mask * inside + (1 - mask) * outside


def _pick_patch(ph: int, pw: int, targets: list[torch.Tensor], focus: torch.Tensor | None, focus_fraction: float,
                gen: torch.Generator) -> tuple[int, int, int]:
    """A random ph x pw patch (row, top, left); with ``focus`` (rows, y, x of region pixels)
    a ``focus_fraction`` of patches is centred on one of them."""
    centred = focus is not None and len(focus) > 0 and float(torch.rand((), generator=gen)) < focus_fraction
    if centred:
        row, y, x = focus[int(torch.randint(0, len(focus), (1,), generator=gen))].tolist()
    else:
        row = int(torch.randint(0, len(targets), (1,), generator=gen))
    h, w = targets[row].shape[:2]
    if centred:
        return row, min(max(y - ph // 2, 0), h - ph), min(max(x - pw // 2, 0), w - pw)
    return (row, int(torch.randint(0, h - ph + 1, (1,), generator=gen)),
            int(torch.randint(0, w - pw + 1, (1,), generator=gen)))


def _patch_step(cfg: EditConfig, model, optimizer, targets: list[torch.Tensor], dataset: SceneDataset, params,
                camera_model: str, background, lpips_model, gen: torch.Generator,
                focus: torch.Tensor | None) -> dict[str, float]:
    """One optimisation step on ``patches_per_step`` random patches, all rendered as one batch of rays
    (as a training step is): L1 + LPIPS against the current (edited) targets."""
    ph = min(cfg.patch_size, *(t.shape[0] for t in targets))  # one size for all, so LPIPS runs as one batch
    pw = min(cfg.patch_size, *(t.shape[1] for t in targets))
    vv, uu = torch.meshgrid(torch.arange(ph), torch.arange(pw), indexing="ij")
    rows, us, vs, gts, valid = [], [], [], [], []
    for _ in range(cfg.patches_per_step):
        row, y0, x0 = _pick_patch(ph, pw, targets, focus, cfg.local_focus, gen)
        rows.append(row)
        us.append(uu.reshape(-1) + x0)
        vs.append(vv.reshape(-1) + y0)
        gts.append(targets[row][y0:y0 + ph, x0:x0 + pw].reshape(-1, 3))
        mask = dataset.masks[int(dataset.train_indices[row])]
        valid.append(torch.ones(ph * pw, dtype=torch.bool) if mask is None
                     else torch.from_numpy(mask[y0:y0 + ph, x0:x0 + pw]).reshape(-1))
    row_t = torch.tensor(rows).repeat_interleave(ph * pw)
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
        to_nchw = lambda x: x.reshape(-1, ph, pw, 3).permute(0, 3, 1, 2) * 2 - 1  # noqa: E731
        lp = lpips_model(to_nchw(pred), to_nchw(target)).mean()
        loss = loss + cfg.lpips_weight * lp
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "l1": float(l1.detach()), "lpips": float(lp.detach()),
            "mse": float(((pred.detach() - target) ** 2).mean())}


@torch.inference_mode()
def _measure(cfg: EditConfig, model, dataset: SceneDataset, region: Region | None, background, session_dir: Path,
             base_chain: list[str] | None, cancel: CancelToken) -> dict:
    """Edit fidelity against the offline editor's ground truth (the edits of ``base_chain`` then this one,
    applied to the held-out captures; not measured without a chain), and how much changed outside the region."""
    chain = base_chain if EDITORS[cfg.editor].deterministic else None
    fidelity, outside, inside, names = [], [], [], []
    for frame in [int(f) for f in dataset.eval_indices]:
        if cancel.cancelled:
            break
        name = dataset.image_paths[frame].stem
        after = _image(to_uint8(render_image(model, dataset.cameras, frame, background)["rgb"]))
        before = _image(_read_png(session_dir / "before" / f"{name}.png"))
        mask = (_image(_read_png(session_dir / "masks" / f"{name}.png")) if region is not None
                else torch.ones(after.shape[:2]))
        if chain is not None:
            base = _image(dataset.images[frame])
            for instruction in chain:
                base = apply_edit(instruction, base)
            truth = mask[..., None] * apply_edit(cfg.instruction, base) + (1 - mask[..., None]) * base
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
