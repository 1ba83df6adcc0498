"""EG3D's triplane generator, loadable from users' official checkpoints.

    from engine.portrait.eg3d import load_generator
    G = load_generator(path)                      # .pkl (official), .pth (Live3D / 3DPE), .safetensors
    ws = G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=14)
    out = G.synthesis(ws, c, noise_mode="const", neural_rendering_resolution=128, deterministic_sampling=True)
    out["image"], out["image_raw"], out["image_depth"], out["planes"]

Parameter names and shapes equal the official generator's state dict, so its weights load by
name.  Camera labels c are 25 numbers: the flattened 4 x 4 camera-to-world matrix (OpenCV axes)
and the flattened 3 x 3 intrinsics normalised by the image size (see engine.portrait.cameras).
"""

from __future__ import annotations

import contextlib
import reprlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.core.errors import CheckpointError
from engine.portrait.checkpoints import GeneratorCheckpoint, read_generator_checkpoint
from engine.portrait.stylegan import NOISE_MODES, StyleGAN2Backbone
from engine.portrait.superresolution import SuperResolution
from engine.portrait.triplane import (PLANE_FEATURES, ImportanceRenderer, OSGDecoder, occupancy_grid, sample_rays,
                                      texel_major)

TRIPLANE_RESOLUTION = 256
"""the backbone always synthesises its three planes at 256 x 256"""
DEFAULT_NEURAL_RENDERING_RESOLUTION = 64
"""what a freshly built official generator renders at before training raises it"""
FFHQ_512_NEURAL_RENDERING_RESOLUTION = 128
"""what the official 512² FFHQ / AFHQ generators render at, for a 512² checkpoint that does not say"""
CAMERA_LABEL_SIZE = 25
MAX_GENERATOR_BYTES = 2**30
"""parameters and buffers one generator may hold (the official FFHQ 512 generator holds 120 MiB)"""

Rule = tuple[Callable[[Any], bool], str]
"""whether a constructor argument is acceptable, and what it must be"""


def _whole(low: int, high: int) -> Rule:
    return (lambda v: type(v) is int and low <= v <= high), f"a whole number from {low} to {high}"


def _real(low: float, high: float) -> Rule:
    return (lambda v: type(v) in (int, float) and low <= v <= high), f"a number from {low:g} to {high:g}"


def _either(*rules: Rule) -> Rule:
    return (lambda v: any(ok(v) for ok, _ in rules)), " or ".join(wanted for _, wanted in rules)


_FLAG: Rule = (lambda v: isinstance(v, bool), "true or false")
_TEXT: Rule = (lambda v: isinstance(v, str), "text")
_TABLE: Rule = (lambda v: v is None or isinstance(v, dict), "a dict or null")
_NOTHING: Rule = (lambda v: v is None, "null")
_RAY_LIMIT = _either((lambda v: v == "auto", '"auto"'), _real(0, 1e3))
KWARG_RULES: dict[str, Rule] = {
    "z_dim": _whole(0, 2048), "c_dim": _whole(0, 2048), "w_dim": _whole(1, 2048), "img_resolution": _whole(1, 4096),
    "img_channels": _whole(1, 16), "sr_num_fp16_res": _whole(0, 32), "channel_base": _whole(1, 2**20),
    "channel_max": _whole(1, 2048), "num_fp16_res": _whole(0, 32), "conv_clamp": _either(_NOTHING, _real(0, 1e6)),
    "fused_modconv_default": _either(_FLAG, _TEXT),
    "mapping_kwargs": _TABLE, "rendering_kwargs": _TABLE, "sr_kwargs": _TABLE,
    "mapping_kwargs.num_layers": _whole(0, 32), "mapping_kwargs.lr_multiplier": _real(1e-6, 1e6),
    "mapping_kwargs.w_avg_beta": _real(0, 1),
    "rendering_kwargs.superresolution_module": _TEXT, "rendering_kwargs.superresolution_noise_mode": _TEXT,
    "rendering_kwargs.sr_antialias": _FLAG, "rendering_kwargs.c_gen_conditioning_zero": _FLAG,
    "rendering_kwargs.disparity_space_sampling": _FLAG, "rendering_kwargs.white_back": _FLAG,
    "rendering_kwargs.depth_resolution": _whole(2, 1024),
    "rendering_kwargs.depth_resolution_importance": _whole(0, 1024),
    "rendering_kwargs.ray_start": _RAY_LIMIT, "rendering_kwargs.ray_end": _RAY_LIMIT,
    "rendering_kwargs.box_warp": _real(1e-6, 1e6), "rendering_kwargs.c_scale": _real(-1e6, 1e6),
    "rendering_kwargs.decoder_lr_mul": _real(1e-6, 1e6), "rendering_kwargs.avg_camera_radius": _real(0, 1e3),
    "rendering_kwargs.avg_camera_pivot": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3
                                          and all(_real(-1e3, 1e3)[0](x) for x in v), "three numbers"),
}
"""every constructor argument the engine reads (dotted: inside the nested dicts), with the types and ranges
an EG3D generator can have: arguments read from a file decide what is allocated and computed"""


def check_camera_labels(c: torch.Tensor, batch: int | None = None) -> None:
    """A clear error for camera labels of the wrong shape or with non-finite values."""
    if c.ndim != 2 or c.shape[1] != CAMERA_LABEL_SIZE:
        raise ValueError(f"camera labels must be N x {CAMERA_LABEL_SIZE} (cam2world 16 + intrinsics 9), "
                         f"got shape {tuple(c.shape)}")
    if batch is not None and c.shape[0] != batch:
        raise ValueError(f"{c.shape[0]} camera labels for a batch of {batch}")
    if not torch.isfinite(c).all():
        rows = torch.nonzero(~torch.isfinite(c).all(dim=1)).flatten().tolist()
        raise ValueError(f"camera labels hold non-finite values (NaN or infinity) in row(s) {rows}")


def ray_image(values: torch.Tensor, resolution: int) -> torch.Tensor:
    """Per-ray values (N, R*R, C) of an image's pixels in row-major order as an image (N, C, R, R)."""
    return values.transpose(1, 2).unflatten(2, (resolution, resolution))


class TriPlaneGenerator(nn.Module):
    """z + camera → triplanes → volume-rendered feature image → super-resolved image."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 sr_num_fp16_res: int = 0, mapping_kwargs: dict | None = None, rendering_kwargs: dict | None = None,
                 sr_kwargs: dict | None = None, **synthesis_kwargs) -> None:
        """The official constructor arguments (``generator_kwargs`` of a checkpoint)."""
        super().__init__()
        if img_channels != 3:
            raise ValueError(f"EG3D generators output 3 colour channels, got img_channels={img_channels}")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.rendering_kwargs = rendering_kwargs = dict(rendering_kwargs or {})
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=TRIPLANE_RESOLUTION,
                                          img_channels=3 * PLANE_FEATURES, mapping_kwargs=mapping_kwargs,
                                          **synthesis_kwargs)
        self.renderer = ImportanceRenderer()
        self.superresolution = SuperResolution(rendering_kwargs["superresolution_module"], channels=PLANE_FEATURES,
                                               img_resolution=img_resolution, sr_num_fp16_res=sr_num_fp16_res,
                                               sr_antialias=rendering_kwargs.get("sr_antialias", True),
                                               **(sr_kwargs or {}))
        self.decoder = OSGDecoder(PLANE_FEATURES, rendering_kwargs.get("decoder_lr_mul", 1.0), PLANE_FEATURES)
        self.neural_rendering_resolution = DEFAULT_NEURAL_RENDERING_RESOLUTION

    @property
    def num_ws(self) -> int:
        """How many w vectors the synthesis takes (14 for the 256² triplane backbone)."""
        return self.backbone.num_ws

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """ws (N, num_ws, w_dim) for latents z (N, z_dim) seen from cameras c (N, 25)."""
        check_camera_labels(c, z.shape[0])
        options = self.rendering_kwargs
        scale = 0.0 if options.get("c_gen_conditioning_zero", False) else options.get("c_scale", 0)
        return self.backbone.mapping(z, c * scale, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                     update_emas=update_emas)

    def planes(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """The triplanes (N, 96, 256, 256): three 32-channel planes, in the official channel order
        (stored channels-last, the layout rendering reads them in)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        return texel_major(self.backbone.synthesis(ws, noise_mode))

    def occupancy(self, planes: torch.Tensor) -> torch.Tensor:
        """An occupancy grid of cached planes: pass it with them to render them faster, skipping
        empty space (see engine.portrait.triplane.ImportanceRenderer)."""
        return occupancy_grid(texel_major(planes), self.decoder, self.rendering_kwargs["box_warp"])

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None,
                  noise_mode: str = "random", deterministic_sampling: bool = False,
                  planes: torch.Tensor | None = None, occupancy: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Render ws from cameras c: {"image" (N, 3, R, R) in [-1, 1], "image_raw" (N, 3, r, r),
        "image_depth" (N, 1, r, r) ray depth, "planes"}.  ``planes`` from an earlier call skips the
        backbone (fast re-rendering from new cameras), and their ``occupancy`` grid skips empty
        space; ``deterministic_sampling`` fixes the ray samples (see engine.portrait.triplane)."""
        check_camera_labels(c, ws.shape[0])
        resolution = neural_rendering_resolution or self.neural_rendering_resolution
        if resolution < 1:
            raise ValueError(f"neural_rendering_resolution must be positive, got {resolution}")
        if planes is None:
            planes = self.planes(ws, noise_mode)
        features, depth = self.render_features(planes, c, resolution, deterministic_sampling, occupancy)
        image = self.superresolution(features[:, :3], features, ws,
                                     noise_mode=self.rendering_kwargs.get("superresolution_noise_mode", "none"))
        return {"image": image, "image_raw": features[:, :3], "image_depth": depth, "planes": planes}

    def render_features(self, planes: torch.Tensor, c: torch.Tensor, resolution: int,
                        deterministic_sampling: bool = False, occupancy: torch.Tensor | None = None,
                        channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Volume-render triplanes from cameras c: the 32-channel feature image (N, 32, r, r), its
        first three channels the raw colour in [-1, 1] (``channels=3``: those alone, faster), and the
        depth image (N, 1, r, r)."""
        origins, directions = sample_rays(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), resolution)
        features, depth = self.render_rays(planes, origins, directions, deterministic_sampling, occupancy, channels)
        return ray_image(features, resolution).contiguous(), ray_image(depth, resolution)

    def render_rays(self, planes: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
                    deterministic_sampling: bool = False, occupancy: torch.Tensor | None = None,
                    channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, M, 32, or ``channels``) and depths (N, M, 1) along any rays (N, M, 3) through
        triplanes (N, 96, H, W): e.g. a random subset of an image's pixels when training."""
        features, depth, _ = self.renderer(texel_major(planes), self.decoder, origins, directions, self.rendering_kwargs,
                                           deterministic=deterministic_sampling, occupancy=occupancy,
                                           channels=channels)
        return features, depth

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """Mapping then synthesis, with the same camera for both."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, **synthesis_kwargs)


def check_generator_kwargs(generator_kwargs: Mapping) -> None:
    """A CheckpointError naming the first constructor argument whose type or range breaks KWARG_RULES."""
    for name, (ok, wanted) in KWARG_RULES.items():
        parent, _, key = name.rpartition(".")
        table = generator_kwargs.get(parent) if parent else generator_kwargs
        if isinstance(table, Mapping) and key in table and not ok(table[key]):
            raise CheckpointError(f"the generator argument {name} is {reprlib.repr(table[key])}: it must be {wanted}")


def _construct(generator_kwargs: dict, device: str | None = None) -> TriPlaneGenerator:
    """``TriPlaneGenerator(**generator_kwargs)`` (on ``device``); a CheckpointError when the arguments do not fit."""
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return TriPlaneGenerator(**generator_kwargs)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"cannot build an EG3D generator from these arguments: {exc}") from None


def generator_layout(generator_kwargs: dict) -> dict[str, torch.Size]:
    """Names and shapes of the parameters and buffers of the generator these arguments describe, found
    without allocating them (on the meta device); a CheckpointError when the arguments are not an EG3D
    generator's or describe one holding more than MAX_GENERATOR_BYTES."""
    rendering = generator_kwargs.get("rendering_kwargs") or {}
    missing = [k for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels") if k not in generator_kwargs]
    if missing or "superresolution_module" not in rendering:
        raise CheckpointError(f"these are not EG3D generator arguments: missing {', '.join(missing) or 'rendering_kwargs.superresolution_module'}")
    check_generator_kwargs(generator_kwargs)
    tensors = _construct(dict(generator_kwargs), "meta").state_dict()
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    if nbytes > MAX_GENERATOR_BYTES:
        raise CheckpointError(f"these arguments describe a generator of {nbytes / 2**30:.1f} GiB, more than the "
                              f"{MAX_GENERATOR_BYTES / 2**30:.0f} GiB an EG3D generator can hold (the official FFHQ "
                              "one holds 0.12 GiB)")
    return {name: t.shape for name, t in tensors.items()}


def build_generator(generator_kwargs: dict) -> TriPlaneGenerator:
    """A generator with random weights from official constructor arguments; a clear error, before
    anything is allocated, when they are not an EG3D generator's."""
    generator_layout(generator_kwargs)
    return _construct(dict(generator_kwargs))


def load_generator(path: str | Path, generator_kwargs: dict | None = None,
                   device: str | torch.device = "cpu") -> TriPlaneGenerator:
    """An EG3D generator in eval mode with the weights of ``path``: an official ``.pkl`` (read
    safely, no code in it runs), a Live3D / 3DPE style ``.pth`` or a ``.safetensors`` file (its
    arguments given here or in meta.json / config.json beside it)."""
    return generator_from_checkpoint(read_generator_checkpoint(path, generator_kwargs), path).to(device)


def generator_from_checkpoint(checkpoint: GeneratorCheckpoint, source: str | Path) -> TriPlaneGenerator:
    """The generator a checkpoint describes, with its weights, in eval mode on CPU; missing,
    unexpected or misshapen parameters are reported by name (``source`` names the file in errors).

    Its neural rendering resolution is the checkpoint's, else 128 for 512² models (what the official
    FFHQ / AFHQ ones were trained at) and the constructor's 64 otherwise.  Nothing is allocated before
    the arguments and the parameters' names and shapes are checked."""
    try:
        expected = generator_layout(checkpoint.kwargs)
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    state = checkpoint.state_dict
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    wrong = [f"{name} {tuple(state[name].shape)} (expected {tuple(expected[name])})"
             for name in expected if name in state and state[name].shape != expected[name]]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if names:
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: its parameters do not fit the generator its arguments describe ("
                              + "; ".join(problems) + ")")
    generator = _construct(dict(checkpoint.kwargs))
    generator.load_state_dict({name: value.float() for name, value in state.items()})
    if checkpoint.neural_rendering_resolution:
        generator.neural_rendering_resolution = checkpoint.neural_rendering_resolution
    elif generator.img_resolution >= 512:
        generator.neural_rendering_resolution = FFHQ_512_NEURAL_RENDERING_RESOLUTION
    return generator.eval().requires_grad_(False)
