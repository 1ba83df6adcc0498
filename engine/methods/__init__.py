"""The registry of methods (nerfstudio's ``method_configs`` habit): each is an engine job with a documented config,
offered by the command line as a command whose flags are the config's fields, and by the window as a form in its
workspace.  Adding a method is a module holding its ``XxxConfig`` (a docstring per field, the paper's defaults)
and its job ``job(config, cancel) -> Job``, and one ``register`` call below.

This module stays light (no torch): ``--help`` lists the methods without importing them; a method's module loads
when it is run or its flags are asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

WORKSPACES = ("scene", "portrait")
"""where the window offers a method"""


@dataclass(frozen=True)
class Method:
    """One registered method."""

    name: str
    """its command (``python main.py NAME``; ``python main.py portrait NAME`` for a portrait method) and its name
    in the window"""
    summary: str
    """one line for ``--help`` and the window"""
    config: str
    """"module:Class" of its documented config"""
    job: str
    """"module:function": ``job(config, cancel)`` yields the job's events"""
    workspace: str
    """the window's workspace that offers it (one of WORKSPACES); the command line's too: a portrait method is a
    subcommand of ``portrait``"""

    def config_class(self) -> type:
        return _load(self.config)

    def job_function(self) -> Callable[..., Any]:
        return _load(self.job)


def _load(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


METHODS: dict[str, Method] = {}
"""every method, by name, in the order they were registered"""


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a name already taken is a programming error)."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is registered already")
    if method.workspace not in WORKSPACES:
        raise ValueError(f"{method.name}: workspace must be one of {WORKSPACES}, not {method.workspace!r}")
    METHODS[method.name] = method
    return method


register(Method("train", "train a radiance field on a capture and evaluate it on held-out frames",
                "engine.scene.trainer:TrainConfig", "engine.scene.trainer:train_job", "scene"))
register(Method("edit", "edit a trained scene from an instruction (Instruct-NeRF2NeRF)",
                "engine.editing.idu:EditConfig", "engine.editing.idu:edit_job", "scene"))
register(Method("train-prior", "train the embedded portrait prior on synthetic heads (resumes a stopped run in the "
                "same folder)", "engine.portrait.prior:PriorConfig", "engine.portrait.prior:train_prior_job",
                "portrait"))
register(Method("train-encoder", "train the embedded image-to-triplane encoder (3DPE's Live3D encoder at the prior's "
                "scale) on synthetic heads; runs under torchrun too (resumes a stopped run in the same folder)",
                "engine.portrait.live3d:EncoderConfig", "engine.portrait.live3d:train_encoder_job", "portrait"))
register(Method("distill", "distill the embedded 3DPE editor from the portrait vocabulary's 2D teacher (L2D + L3D; "
                "only the prompt encoder and final stage learn); runs under torchrun too (resumes a stopped run)",
                "engine.portrait.distill:DistillConfig", "engine.portrait.distill:distill_job", "portrait"))
register(Method("adapt", "teach the embedded 3DPE editor a new style from about ten (input, edited) pairs in minutes "
                "(only the prompt encoder and the final stage's normalisation layers are tuned)",
                "engine.portrait.adapt:AdaptConfig", "engine.portrait.adapt:adapt_job", "portrait"))
register(Method("train-i2t", "pre-train FF3D's image-to-triplane network (I2T) to reproduce the portrait prior's "
                "triplanes from frontal views (resumes a stopped run in the same folder)",
                "engine.portrait.ff3d:PretrainConfig", "engine.portrait.ff3d:pretrain_i2t_job", "portrait"))
