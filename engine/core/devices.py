"""Which device models run on: the user's choice, resolved and checked against this machine before any
work starts, so a missing GPU is one sentence the user can act on rather than a torch traceback mid-run.

torch is imported inside the functions: the GUI imports this module at startup, and importing torch
costs seconds.
"""

from __future__ import annotations

import functools

from engine.core.errors import UserInputError

DEVICES = ("auto", "cpu", "cuda")
"""the choices the GUI and the CLI offer: "auto" is the GPU when torch sees one, else the CPU
(the CLI also takes cuda:N for the N-th GPU)"""


def resolve_device(choice: str) -> str:
    """The torch device for a choice: "auto" → "cuda" when torch sees a GPU, else "cpu"; any other as given.
    Workers call it with the choice read on the UI thread (QSettings stays there)."""
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(choice: str) -> str:
    """The device ``choice`` (see DEVICES) resolves to; raises UserInputError when it is not a device name or
    this machine cannot run it (CUDA asked for where torch sees no GPU)."""
    import torch

    device = resolve_device(choice)
    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise UserInputError(f"unknown device {choice!r}: choose auto, cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "PyTorch sees no NVIDIA GPU; check the driver with nvidia-smi")
            raise UserInputError(f"CUDA is not available ({why}), so device {choice!r} cannot be used: run on the "
                                 "CPU (--device cpu or auto; Settings → Device in the editor), or install a CUDA "
                                 "build of PyTorch (https://pytorch.org/get-started/locally/)")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise UserInputError(f"device {choice!r}: this machine has {count} CUDA GPU(s), numbered from 0")
    return device


@functools.lru_cache(maxsize=None)
def native_bfloat16(device: str = "cpu") -> bool:
    """Whether ``device`` is a CPU with bfloat16 matrix instructions (AVX512-BF16 or AMX), where
    bfloat16 convolutions run about 1.5 times as fast as float32 ones."""
    import torch

    if torch.device(device).type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def fast_inference(device: str = "cpu"):
    """A context for a feed-forward network's inference: bfloat16 autocast where the CPU computes it
    natively (``native_bfloat16``), else nothing changes.  For convolutional encoders whose outputs stay
    within a rendering's tolerance, not for renderers (ray geometry needs float32)."""
    import contextlib

    import torch

    if native_bfloat16(device):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
