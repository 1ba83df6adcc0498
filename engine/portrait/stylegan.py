"""StyleGAN2 building blocks in the parameterisation of the official EG3D checkpoints.

Parameters are stored raw, exactly as official state dicts hold them, and the equalised
learning-rate gains are applied when a layer runs (``FullyConnectedLayer.weight_gain`` and so
on), so official weights load by name with no conversion.  Everything runs in float32: blocks
an official network runs in float16 give the same result up to rounding, and the CPU has no
fast float16 path anyway.  Written from the published architecture (StyleGAN2, Karras et al.
2020; EG3D, Chan et al. 2022).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
"""leaky ReLU keeps unit variance when its output is scaled by sqrt(2)"""
RESAMPLE_TAPS = (1.0, 3.0, 3.0, 1.0)
"""the binomial low-pass filter StyleGAN2 resamples with (outer product, normalised to sum 1)"""
NOISE_MODES = ("random", "const", "none")


def resample_filter() -> torch.Tensor:
    """The 4 x 4 resampling filter: the outer product of RESAMPLE_TAPS, summing to 1."""
    taps = torch.tensor(RESAMPLE_TAPS)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad (x0, x1, y0, y1; negative values crop), convolve each channel
    with ``kernel`` (a true convolution: the kernel is flipped), then keep every ``down``-th pixel."""
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]
    weight = (kernel * gain ** (kernel.ndim / 2)).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, weight[None, None].repeat(channels, 1, 1, 1), groups=channels)
    return x[:, :, ::down, ::down]


def upsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Twice the resolution, low-pass filtered (the image skip path of the synthesis blocks)."""
    taps = kernel.shape[-1]
    return upfirdn2d(x, kernel, up=2, padding=((taps + 1) // 2, (taps - 2) // 2, (taps + 1) // 2, (taps - 2) // 2),
                     gain=4.0)


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by ``gain``, clamp to ±clamp."""
    if bias is not None:
        x = x + bias.reshape([1, -1] + [1] * (x.ndim - 2))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif activation != "linear":
        raise ValueError(f"unknown activation {activation!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit root-mean-square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, kernel: torch.Tensor | None = None,
                     demodulate: bool = True) -> torch.Tensor:
    """StyleGAN2's modulated convolution as one grouped convolution: the weight scaled per sample
    by its styles (and demodulated to unit output variance); ``up=2`` is a stride-2 transposed
    convolution followed by the low-pass ``kernel``."""
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    if up == 1:
        x = F.conv2d(x, w.reshape(batch * out_channels, in_channels, kh, kw), padding=padding, groups=batch)
    else:
        # transposed convolution wants (in, out) per group; then the filter evens out the zero stuffing
        w = w.transpose(1, 2).reshape(batch * in_channels, out_channels, kh, kw)
        x = F.conv_transpose2d(x, w, stride=up, groups=batch)
        taps = kernel.shape[-1]
        pad0 = padding + (taps + up - 1) // 2 - (kw - 1)
        pad1 = padding + (taps - up) // 2 - (kw - up)
        x = upfirdn2d(x, kernel, padding=(pad0, pad1, pad0, pad1), gain=up ** 2)
    x = x.reshape(batch, out_channels, *x.shape[2:])
    if noise is not None:
        x = x + noise
    return x


class FullyConnectedLayer(nn.Module):
    """A dense layer with equalised learning rate: raw ``weight`` (out, in) and ``bias`` are
    scaled by lr_multiplier / sqrt(in) and lr_multiplier when it runs."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        gain = LRELU_GAIN if self.activation == "lrelu" else 1.0
        return bias_act(x.matmul(w.t()), b, self.activation, gain)


class MappingNetwork(nn.Module):
    """z (and the camera label c) → w, repeated ``num_ws`` times; truncation pulls towards ``w_avg``."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        features = [z_dim + embed_features] + [w_dim] * num_layers
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                                          lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:  # noqa: D102
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3 x 3 convolution (optionally upsampling 2x) + per-pixel noise + bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 conv_clamp: float | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.register_buffer("resample_filter", resample_filter())
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:  # noqa: D102
        noise = None
        if noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, self.affine(w), noise, up=self.up, padding=self.padding,
                             kernel=self.resample_filter)
        return bias_act(x, self.bias, "lrelu", LRELU_GAIN, self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1 x 1 convolution without demodulation: features → image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip-architecture generator: (upsampling) conv0, conv1, and a ToRGB
    added to the upsampled image so far.  ``upsample=False`` keeps the resolution (the first block
    of the 2X and 4X super-resolution modules); a block with ``in_channels == 0`` starts from a
    learned constant."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None, upsample: bool = True) -> None:
        super().__init__()
        self.in_channels, self.resolution, self.upsample = in_channels, resolution, upsample
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2 if upsample else 1,
                                        conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", resample_filter())
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str = "random") -> tuple[torch.Tensor, torch.Tensor]:
        """``ws``: (B, num_conv + 1, w_dim), one w per convolution and one for ToRGB."""
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = self.conv0(x, next(w_iter), noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode)
        if img is not None and self.upsample:
            img = upsample2d(img, self.resample_filter)
        rgb = self.torgb(x, next(w_iter))
        return x, rgb if img is None else img + rgb


class SynthesisNetwork(nn.Module):
    """ws → an image of ``img_channels`` at ``img_resolution``, built from 4 x 4 up by SynthesisBlocks
    named ``b4``, ``b8``, ... with min(channel_base / resolution, channel_max) channels each.
    ``num_fp16_res`` and ``fused_modconv_default`` are official constructor arguments that change
    only the arithmetic, not the result: accepted so official kwargs construct it, otherwise unused."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, conv_clamp: float | None = None,
                 fused_modconv_default: str | bool = True) -> None:
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, img_channels,
                                   conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's ToRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:  # noqa: D102
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode)
            w_idx += block.num_conv
        return img


class StyleGAN2Backbone(nn.Module):
    """Mapping + synthesis: EG3D's triplane generator (96 channels at 256 x 256)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))
