"""Where InstructPix2Pix weights may come from (a diffusers folder, a single checkpoint file, or a hub id)
and how they may run (memory preset, precision), as plain facts the GUI and the CLI check without
loading diffusers or torch.

GPU memory of InstructPix2Pix (Stable Diffusion 1.5-class: UNet 860 M parameters, VAE 84 M, CLIP
text encoder 123 M; estimated from these counts and 512² activations with PyTorch's memory-efficient
attention, not measured): full precision holds about 4.3 GB of weights and peaks near 6 GB at 512²;
half precision about 2.2 GB and near 3 GB; the low memory preset keeps on the GPU only the models
that run (at most the UNet, 3.4 GB full / 1.7 GB half, and the VAE) and peaks near 4.5 / 2.5 GB.  The
field being trained needs its own memory on top (Instruct-NeRF2NeRF reports ~15 GB in all for its
full-precision method, ~12 GB for half precision).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from engine.core.errors import CheckpointError, UserInputError

DEFAULT_HUB_ID = "timbrooks/instruct-pix2pix"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
"""single-file checkpoints (loaded with the configs of the same model's diffusers folder)"""
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the shape of a Hugging Face hub id (owner/name)."""
    return bool(_HUB_ID.fullmatch(str(text)))


MEMORY_PRESETS = {
    "default": "every model stays on the GPU",
    "low": "models wait on the CPU and move to the GPU one at a time; slower; CUDA only, needs accelerate",
}
"""InstructPix2Pix GPU memory use: each preset and what it does (the GUI and CLI show these words)"""
PRECISIONS = {
    "full": "float32, Instruct-NeRF2NeRF's default: ~4.3 GB of weights, ~6 GB of GPU memory at 512²",
    "half": "float16, its small variant: ~2.2 GB of weights, ~3 GB at 512²; CUDA only",
}
"""InstructPix2Pix weight precision: each choice and what it needs (the GUI and CLI show these words)"""
OFFLOAD_MISSING = ("the low memory preset offloads models to the CPU with the accelerate package (0.17 or newer), "
                   "which is missing here: pip install -U accelerate (or pip install -e '.[offload]' in the "
                   "Retouch3D folder), or use the default memory preset")
"""what a user without accelerate reads when asking for the low memory preset"""


def check_run_options(device: str, memory: str, precision: str) -> None:
    """Raise UserInputError when InstructPix2Pix cannot run with ``memory`` and ``precision`` on ``device``
    (a resolved torch device name): half precision off CUDA, or CPU offload without accelerate."""
    if memory not in MEMORY_PRESETS:
        raise UserInputError(f"memory must be one of {', '.join(MEMORY_PRESETS)}, got {memory!r}")
    if precision not in PRECISIONS:
        raise UserInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    on_cuda = device.split(":")[0] == "cuda"
    if precision == "half" and not on_cuda:
        raise UserInputError(f"half precision (float16) runs on CUDA only and the device is {device!r}: choose "
                             "full precision (--precision full; Settings → Precision in the editor) or a CUDA device")
    if memory == "low" and on_cuda and importlib.util.find_spec("accelerate") is None:
        raise UserInputError(OFFLOAD_MISSING)


def model_kind(model: str | None, config_dir: str | None = None) -> str:
    """How ``model`` gives InstructPix2Pix weights, without reading them: "folder" (an existing folder, a diffusers
    pipeline), "checkpoint" (a .safetensors/.ckpt file, with ``config_dir``, the diffusers folder of the same model
    for its configs) or "hub" (shaped like a hub id; whether the hub has it shows on loading).  Raises
    UserInputError when no model is given, CheckpointError when ``model`` is none of them (or a checkpoint lacks
    ``config_dir``).  The one reading of a model source: ``check_model_source`` (the editor registry's check) and
    ``load_ip2p`` both use it, so they say the same."""
    if not model:
        raise UserInputError(f"the InstructPix2Pix editor needs a model (--model; in the editor: Settings → Model "
                             f"files, or Browse…): a diffusers folder, a .safetensors/.ckpt file or a hub id such "
                             f"as {DEFAULT_HUB_ID}")
    path = Path(model).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise CheckpointError(f"{path} is not an InstructPix2Pix model: choose a diffusers folder or a "
                                  ".safetensors/.ckpt file")
        if not config_dir:
            raise CheckpointError(f"{path} is a single checkpoint file: also give the diffusers folder of the same "
                                  f"model for its configs (--model-config DIR; Settings → Model files in the editor), "
                                  f"e.g. `hf download {DEFAULT_HUB_ID} --include '*.json' --include '*.txt' "
                                  "--local-dir DIR`")
        return "checkpoint"
    if is_hub_id(model):
        return "hub"
    raise CheckpointError(f"no InstructPix2Pix model at {path}: give a diffusers folder, a .safetensors/.ckpt file, "
                          f"or a hub id such as {DEFAULT_HUB_ID}")


def check_model_source(model: str | None, config_dir: str | None = None) -> None:
    """Raise UserInputError unless ``model`` can name InstructPix2Pix weights, without loading them: a
    diffusers folder (with model_index.json), a .safetensors/.ckpt file with ``config_dir`` (the diffusers
    folder of the same model, with model_index.json), or something shaped like a hub id (``model_kind``).
    Whether a folder holds every part of a pipeline shows on loading (``load_ip2p``)."""
    kind = model_kind(model, config_dir)
    if kind == "folder" and not (Path(model).expanduser() / "model_index.json").is_file():
        raise CheckpointError(f"{Path(model).expanduser()} is not a diffusers folder (it has no model_index.json): "
                              "choose the InstructPix2Pix folder itself, or a .safetensors/.ckpt file")
    if kind == "checkpoint" and not (Path(config_dir).expanduser() / "model_index.json").is_file():
        raise CheckpointError(f"{Path(config_dir).expanduser()}, given for the configs of the single checkpoint file "
                              f"{Path(model).expanduser()} (--model-config DIR; Settings → Model files in the "
                              "editor), is not a diffusers folder: it lacks model_index.json; e.g. `hf download "
                              f"{DEFAULT_HUB_ID} --include '*.json' --include '*.txt' --local-dir DIR`")
