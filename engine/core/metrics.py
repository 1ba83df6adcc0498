"""Image quality metrics on float images in [0,1], (H, W, 3)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.core.errors import CheckpointError


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


ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""torchvision's ImageNet AlexNet weights, the backbone LPIPS ('alex') measures features with"""

LPIPS_BACKBONES = ("auto", "imagenet", "random", "off")


def alexnet_weights_path() -> Path:
    """Where torchvision keeps (and LPIPS looks for) the ImageNet AlexNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def load_lpips(backbone: str = "auto", without: str = "editing with the L1 loss only"
               ) -> tuple[torch.nn.Module | None, str | None]:
    """The LPIPS (AlexNet) loss, frozen, and a warning for the user when it had to be left out.

    ``backbone``: "imagenet" needs the ImageNet AlexNet file (in the torch cache, or a path to
    it); "auto" uses it when present and otherwise returns (None, why); "random" uses a randomly
    initialised backbone (tests: no ImageNet files needed); "off" disables LPIPS.  Nothing is
    ever downloaded.  ``without`` ends the warning: what the caller does without LPIPS.
    """
    if backbone == "off":
        return None, None
    path = alexnet_weights_path() if backbone in ("auto", "imagenet") else Path(backbone)
    if backbone != "random" and not path.is_file():
        message = (f"LPIPS needs torchvision's ImageNet AlexNet weights, not found at {path}: download "
                   f"https://download.pytorch.org/models/{ALEXNET_FILE} to {alexnet_weights_path()} "
                   "(or choose the file in Settings)")
        if backbone == "auto":
            return None, f"{message}; {without}"
        raise CheckpointError(message)
    import warnings

    import lpips

    with warnings.catch_warnings(), torch.random.fork_rng():  # lpips still calls torchvision's deprecated 'pretrained'
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(0)  # the "random" backbone is the same every time, whatever ran before
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    if backbone != "random":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise CheckpointError(f"{path}: not a readable AlexNet weights file ({exc})") from None
        for k in range(1, 6):
            for idx, module in getattr(model.net, f"slice{k}").named_children():
                for name, tensor in module.named_parameters(recurse=False):
                    key = f"features.{idx}.{name}"
                    if key not in state:
                        raise CheckpointError(f"{path}: {key} is missing; this is not torchvision's AlexNet")
                    tensor.data.copy_(state[key])
    model.eval().requires_grad_(False)
    return model, None
