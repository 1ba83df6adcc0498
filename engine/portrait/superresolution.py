"""EG3D's super-resolution modules: the neural-rendered feature image (32 channels, its first 3
the raw colour) → the output image, through two StyleGAN2 synthesis blocks styled by the last w.

| module (official class name)     | output | input it resizes to | block0                  | block1                  |
|----------------------------------|--------|---------------------|-------------------------|-------------------------|
| SuperresolutionHybrid2X          | 128    | 64                  | 32→128 at 64, no upsample | 128→64 at 128          |
| SuperresolutionHybrid4X          | 256    | 128 (only upwards)  | 32→128 at 128, no upsample | 128→64 at 256         |
| SuperresolutionHybrid8X          | 512    | 128                 | 32→128 at 256           | 128→64 at 512           |
| SuperresolutionHybrid8XDC        | 512    | 128                 | 32→256 at 256           | 256→128 at 512          |

Blocks an official network runs in float16 (``sr_num_fp16_res > 0``) clamp their activations to
±256; that clamp is kept, the arithmetic stays float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.portrait.stylegan import SynthesisBlock, resample_filter

SR_W_DIM = 512
FP16_CONV_CLAMP = 256.0


@dataclass(frozen=True)
class SuperResolutionSpec:
    """One official super-resolution module's layout."""

    output: int
    input: int
    block0: tuple[int, int]
    """(output channels, resolution) of block0"""
    block1: tuple[int, int]
    block0_upsamples: bool
    resize_only_upwards: bool = False
    filter_buffer: bool = True
    """whether the official module keeps a ``resample_filter`` buffer of its own (8XDC does not)"""


SUPERRESOLUTION_MODULES = {
    "SuperresolutionHybrid2X": SuperResolutionSpec(128, 64, (128, 64), (64, 128), block0_upsamples=False),
    "SuperresolutionHybrid4X": SuperResolutionSpec(256, 128, (128, 128), (64, 256), block0_upsamples=False,
                                                   resize_only_upwards=True),
    "SuperresolutionHybrid8X": SuperResolutionSpec(512, 128, (128, 256), (64, 512), block0_upsamples=True),
    "SuperresolutionHybrid8XDC": SuperResolutionSpec(512, 128, (256, 256), (128, 512), block0_upsamples=True,
                                                     filter_buffer=False),
}
"""by the class name official checkpoints record in rendering_kwargs['superresolution_module']"""


def module_name(qualified: str) -> str:
    """'training.superresolution.SuperresolutionHybrid8XDC' → 'SuperresolutionHybrid8XDC'."""
    return qualified.rsplit(".", 1)[-1]


class SuperResolution(nn.Module):
    """One of the official super-resolution modules, chosen by class name (see the module table)."""

    def __init__(self, name: str, channels: int, img_resolution: int, sr_num_fp16_res: int = 0,
                 sr_antialias: bool = True, **_official_kwargs) -> None:
        """``_official_kwargs`` (channel_base, channel_max, fused_modconv_default, ...) are what
        official checkpoints pass; they do not change these modules' layout or results."""
        super().__init__()
        short = module_name(name)
        if short not in SUPERRESOLUTION_MODULES:
            raise ValueError(f"unknown super-resolution module {name!r}; known: {', '.join(SUPERRESOLUTION_MODULES)}")
        spec = SUPERRESOLUTION_MODULES[short]
        if img_resolution != spec.output:
            raise ValueError(f"{short} produces {spec.output} x {spec.output} images, not {img_resolution}")
        self.spec, self.sr_antialias = spec, sr_antialias
        clamp = FP16_CONV_CLAMP if sr_num_fp16_res > 0 else None
        (mid, res0), (out, res1) = spec.block0, spec.block1
        self.block0 = SynthesisBlock(channels, mid, SR_W_DIM, res0, 3, conv_clamp=clamp, upsample=spec.block0_upsamples)
        self.block1 = SynthesisBlock(mid, out, SR_W_DIM, res1, 3, conv_clamp=clamp)
        if spec.filter_buffer:  # unused, but part of the official state dict
            self.register_buffer("resample_filter", resample_filter())

    def forward(self, rgb: torch.Tensor, features: torch.Tensor, ws: torch.Tensor,
                noise_mode: str = "none") -> torch.Tensor:
        """The output image (N, 3, R, R) from the raw colour and the feature image (N, 32, r, r); every
        layer of both blocks is styled by the last of ``ws``."""
        style = ws[:, -1:].expand(-1, 3, -1)
        if self.resizes(features.shape[-1]):
            rgb, features = (F.interpolate(image, size=(self.spec.input,) * 2, mode="bilinear", align_corners=False,
                                           antialias=self.sr_antialias) for image in (rgb, features))
        x, rgb = self.block0(features, rgb, style, noise_mode)
        return self.block1(x, rgb, style, noise_mode)[1]

    def resizes(self, size: int) -> bool:
        """Whether an r x r input is first resized to the module's input size (4X only enlarges)."""
        return size < self.spec.input or (size > self.spec.input and not self.spec.resize_only_upwards)
