"""The registry of radiance-field models selectable by name (``--model``)."""

from __future__ import annotations

from torch import nn

from engine.core.errors import UserInputError
from engine.scene.models import FastModel, FastModelConfig
from engine.scene.nerfacto import NerfactoModel, NerfactoModelConfig

MODEL_PRESETS: dict[str, tuple[type, type]] = {
    "fast": (FastModelConfig, FastModel),
    "nerfacto": (NerfactoModelConfig, NerfactoModel),
}
"""name → (config class with the defaults, model class)"""


def model_config(name: str):
    """The preset config for ``name``, or a UserInputError listing the choices."""
    if name not in MODEL_PRESETS:
        raise UserInputError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODEL_PRESETS))}")
    return MODEL_PRESETS[name][0]()


def build_model(cfg, num_images: int, contracted: bool) -> nn.Module:
    """Instantiate the model a config describes."""
    return MODEL_PRESETS[cfg.name][1](cfg, num_images, contracted)
