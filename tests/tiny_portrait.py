"""Tiny random EG3D generators of the official layout for the portrait tests (never the shipped weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.portrait.cameras import camera_label
from engine.portrait.checkpoints import write_converted
from engine.portrait.eg3d import build_generator
from engine.portrait.heads import PARAM_COUNT


def tiny_kwargs(superresolution: str = "SuperresolutionHybrid2X", img_resolution: int = 128) -> dict:
    """A small generator of the official layout (narrow channels, few samples per ray)."""
    return {"z_dim": 16, "c_dim": 25, "w_dim": 512, "img_resolution": img_resolution, "img_channels": 3,
            "mapping_kwargs": {"num_layers": 1}, "channel_base": 256, "channel_max": 16,
            "rendering_kwargs": {"superresolution_module": f"training.superresolution.{superresolution}",
                                 "depth_resolution": 6, "depth_resolution_importance": 6, "ray_start": 2.25,
                                 "ray_end": 3.3, "box_warp": 1, "clamp_mode": "softplus", "c_scale": 1.0,
                                 "sr_antialias": True, "superresolution_noise_mode": "none"},
            "sr_kwargs": {"channel_base": 256, "channel_max": 16}}


def frontal_label(batch: int = 1) -> torch.Tensor:
    """The frontal FFHQ camera's label, ``batch`` times."""
    return torch.from_numpy(camera_label(0.0, 0.0)).repeat(batch, 1)


def write_tiny_generator(folder: Path, neural_rendering_resolution: int = 32, seed: int = 0) -> Path:
    """A prior-style generator (z = the standardised head parameters; 2X super-resolution to 128²,
    rendered at ``neural_rendering_resolution``) as generator.safetensors + meta.json in ``folder``."""
    kwargs = tiny_kwargs() | {"z_dim": PARAM_COUNT}
    torch.manual_seed(seed)
    generator = build_generator(kwargs)
    write_converted(folder, kwargs, generator.state_dict(), neural_rendering_resolution=neural_rendering_resolution)
    return folder
