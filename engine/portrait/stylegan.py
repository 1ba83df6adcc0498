"""StyleGAN2 building blocks in the parameterisation of the official EG3D checkpoints.

Parameters are stored raw, exactly as official state dicts hold them, and the equalised
learning-rate gains are applied when a layer runs (``FullyConnectedLayer.weight_gain`` and so
on), so official weights load by name with no conversion.  Everything runs in float32: blocks
an official network runs in float16 give the same result up to rounding, and the CPU has no
fast float16 path anyway.  Written from the published architecture (StyleGAN2, Karras et al.
2020, whose equation numbers the comments cite; EG3D, Chan et al. 2022); constructors create
their parameters in a fixed order, so a seeded build always draws the same random weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
"""leaky ReLU keeps unit variance when its output is scaled by sqrt(2)"""
ACTIVATIONS = ("linear", "lrelu")
RESAMPLE_TAPS = (1.0, 3.0, 3.0, 1.0)
"""the binomial low-pass filter StyleGAN2 resamples with (outer product, normalised to sum 1)"""
NOISE_MODES = ("random", "const", "none")
DEMODULATION_EPS = 1e-8


def resample_filter() -> torch.Tensor:
    """The 4 x 4 resampling filter: the outer product of RESAMPLE_TAPS, summing to 1."""
    taps = torch.tensor(RESAMPLE_TAPS)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum()


def _depthwise(kernel: torch.Tensor, channels: int, gain: float, dtype: torch.dtype) -> torch.Tensor:
    """``kernel`` (k, k) times ``gain`` as the weight of a per-channel convolution (channels, 1, k, k)."""
    return (kernel * gain).to(dtype).expand(channels, 1, *kernel.shape).contiguous()


def blur(x: torch.Tensor, kernel: torch.Tensor, pad: int, gain: float = 1.0) -> torch.Tensor:
    """Every channel of x filtered by ``kernel`` (scaled by ``gain``) over a border of ``pad`` zeros.
    The binomial filter is symmetric, so this correlation is also its convolution."""
    return F.conv2d(x, _depthwise(kernel, x.shape[1], gain, x.dtype), padding=pad, groups=x.shape[1])


def upsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Twice the resolution, low-pass filtered (the image skip path of the synthesis blocks): inserting a
    zero after every pixel and filtering with 4 x ``kernel`` (to keep the mean) is a transposed
    convolution of stride 2 with that kernel; cropping (taps - 2) / 2 keeps it at exactly 2H x 2W."""
    taps = kernel.shape[-1]
    return F.conv_transpose2d(x, _depthwise(kernel, x.shape[1], 4.0, x.dtype), stride=2, padding=(taps - 2) // 2,
                              groups=x.shape[1])


def activate(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear",
             clamp: float | None = None) -> torch.Tensor:
    """x plus a per-channel (dim 1) bias, through ``activation`` scaled to keep unit variance, then
    clamped to ±clamp (official networks clamp the layers they run in float16)."""
    if bias is not None:
        x = x + bias.view(-1, *[1] * (x.ndim - 2))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    return x if clamp is None else x.clamp(-clamp, clamp)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit root-mean-square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up_filter: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN2's weight (de)modulation: each sample convolves with its own weight w'_ijk = s_i · w_ijk
    (eq. 1; i input channel, j output channel, k tap), and with ``demodulate`` divided by
    sqrt(Σ_i,k w'_ijk² + ε) = sqrt(Σ_i s_i² Σ_k w_ijk² + ε) (eq. 3) so each output has unit variance.
    The batch runs as one grouped convolution that keeps the size; with ``up_filter`` it doubles it
    instead: a transposed convolution of stride 2 whose zero stuffing the filter smooths away."""
    batch, in_channels = styles.shape
    out_channels, _, size, _ = weight.shape
    per_sample = weight * styles.view(batch, 1, in_channels, 1, 1)
    if demodulate:
        variance = styles.square() @ weight.square().sum(dim=(2, 3)).t()  # (batch, out): Σ_i s_i² Σ_k w_ijk²
        per_sample = per_sample * (variance + DEMODULATION_EPS).rsqrt().view(batch, out_channels, 1, 1, 1)
    stacked = x.reshape(1, batch * in_channels, *x.shape[2:])
    if up_filter is None:
        y = F.conv2d(stacked, per_sample.flatten(0, 1), padding=size // 2, groups=batch)
    else:  # a transposed convolution's weight is (in, out) per group
        y = F.conv_transpose2d(stacked, per_sample.transpose(1, 2).flatten(0, 1), stride=2, groups=batch)
        y = blur(y, up_filter, pad=(up_filter.shape[-1] + 1 - size) // 2, gain=4.0)
    return y.view(batch, out_channels, *y.shape[2:])


class FullyConnectedLayer(nn.Module):
    """A dense layer with equalised learning rate: raw ``weight`` (out, in) and ``bias`` are
    scaled by lr_multiplier / sqrt(in) and lr_multiplier when it runs."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain, self.bias_gain = lr_multiplier / math.sqrt(in_features), lr_multiplier

    def forward(self, x: torch.Tensor, outputs: int | None = None) -> torch.Tensor:
        """x (N, in) → (N, out), or its first ``outputs`` columns alone.  A linear layer folds its bias
        into the matrix product (one addmm)."""
        weight, bias = self.weight[:outputs], None if self.bias is None else self.bias[:outputs] * self.bias_gain
        fold = self.activation == "linear"
        y = F.linear(x, weight * self.weight_gain, bias if fold else None)
        return y if fold else activate(y, bias, self.activation)


class MappingNetwork(nn.Module):
    """z (and the camera label c) → w, one copy per synthesis input; truncation pulls towards ``w_avg``."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        label_width = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, label_width)
        widths = [z_dim + label_width, *[w_dim] * num_layers]
        for k, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            self.add_module(f"fc{k}", FullyConnectedLayer(width_in, width_out, activation="lrelu",
                                                          lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """ws (N, num_ws, w_dim).  ``truncation_psi`` < 1 trades variety for typicality in the first
        ``truncation_cutoff`` ws (all by default); ``update_emas`` moves ``w_avg`` (training)."""
        w = self.latent(z, c)
        if update_emas:  # exponential moving average of the batch means, decay w_avg_beta
            self.w_avg.lerp_(w.detach().mean(dim=0), 1 - self.w_avg_beta)
        strength = torch.ones(self.num_ws, 1, device=w.device)
        strength[:truncation_cutoff] = truncation_psi
        return torch.lerp(self.w_avg, w.unsqueeze(1), strength)  # w_avg + psi (w - w_avg), psi 1 past the cutoff

    def latent(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """One w (N, w_dim) per sample: z and the embedded label, each normalised to unit RMS, through the fc layers."""
        inputs = ([z] if self.z_dim > 0 else []) + ([self.embed(c.float())] if self.c_dim > 0 else [])
        h = torch.cat([normalize_2nd_moment(part.float()) for part in inputs], dim=1)
        for layer in (getattr(self, f"fc{k}") for k in range(self.num_layers)):
            h = layer(h)
        return h


class SynthesisLayer(nn.Module):
    """Modulated 3 x 3 convolution (optionally upsampling 2x) + per-pixel noise + bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 conv_clamp: float | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.register_buffer("resample_filter", resample_filter())
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """Features (N, in, R', R') styled by w (N, w_dim) → (N, out, R, R), R = R' * up."""
        y = modulated_conv2d(x, self.weight, self.affine(w), up_filter=self.resample_filter if self.up > 1 else None)
        if noise_mode != "none":
            y = y + self.noise_image(x.shape[0], noise_mode) * self.noise_strength
        return activate(y, self.bias, "lrelu", self.conv_clamp)

    def noise_image(self, batch: int, noise_mode: str) -> torch.Tensor:
        """Unscaled per-pixel noise: the stored image ("const") or fresh Gaussian noise ("random")."""
        if noise_mode == "const":
            return self.noise_const
        return torch.randn([batch, 1, self.resolution, self.resolution], device=self.noise_const.device)


class ToRGBLayer(nn.Module):
    """Modulated 1 x 1 convolution without demodulation: features → image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp, self.weight_gain = conv_clamp, 1 / math.sqrt(in_channels)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Features (N, C, R, R) → image channels (N, img_channels, R, R)."""
        y = modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w), demodulate=False)
        return activate(y, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip-architecture generator: (upsampling) conv0, conv1, and a ToRGB
    added to the upsampled image so far.  ``upsample=False`` keeps the resolution (the first block
    of the 2X and 4X super-resolution modules); a block with ``in_channels == 0`` starts from a
    learned constant and has no conv0."""

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
        """(features, image) of the previous block (None, None for the first) → this block's.
        ``ws`` (N, num_conv + 1, w_dim): one w per convolution, then the one for ToRGB."""
        if self.in_channels == 0:
            x, convs = self.const.expand(ws.shape[0], -1, -1, -1), [self.conv1]
        else:
            convs = [self.conv0, self.conv1]
        for k, conv in enumerate(convs):
            x = conv(x, ws[:, k], noise_mode)
        rgb = self.torgb(x, ws[:, len(convs)])
        if img is None:
            return x, rgb
        return x, (upsample2d(img, self.resample_filter) if self.upsample else img) + rgb


def block_w_spans(blocks: int) -> list[tuple[int, int]]:
    """The ws [start, stop) each of ``blocks`` synthesis blocks reads, the first one starting from the
    constant.  Block k's convolutions take ws 2k - 1 and 2k (only w 0 for the first block, which has
    one) and its ToRGB w 2k + 1, which the next block's first convolution takes too: 2 ws per block."""
    return [(max(2 * k - 1, 0), 2 * k + 2) for k in range(blocks)]


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
        widths = [0] + [min(channel_base // res, channel_max) for res in self.block_resolutions]
        for k, res in enumerate(self.block_resolutions):
            self.add_module(f"b{res}", SynthesisBlock(widths[k], widths[k + 1], w_dim, res, img_channels,
                                                      conv_clamp=conv_clamp))
        self.w_spans = block_w_spans(len(self.block_resolutions))
        self.num_ws = self.w_spans[-1][1]

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """The image (N, img_channels, R, R) of ws (N, num_ws, w_dim)."""
        x = img = None
        for res, (start, stop) in zip(self.block_resolutions, self.w_spans):
            x, img = getattr(self, f"b{res}")(x, img, ws[:, start:stop], noise_mode)
        return img


class StyleGAN2Backbone(nn.Module):
    """Mapping + synthesis: EG3D's triplane generator (96 channels at 256 x 256)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))

    @property
    def num_ws(self) -> int:
        """How many w vectors the synthesis takes."""
        return self.synthesis.num_ws
