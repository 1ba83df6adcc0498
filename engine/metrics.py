"""Image quality metrics on float images in [0,1], (H, W, 3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB (peak 1)."""
    mse = float(torch.mean((pred.float() - target.float()) ** 2))
    return float("inf") if mse == 0 else -10 * math.log10(mse)


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity with a Gaussian window (Wang et al. 2004), averaged over pixels and channels."""
    coords = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(3, 1, window, window).contiguous()
    x = pred.float().permute(2, 0, 1)[None]
    y = target.float().permute(2, 0, 1)[None]
    blur = lambda img: F.conv2d(img, kernel, groups=3)  # noqa: E731  (valid region only, as the reference does)
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())
