"""Where InstructPix2Pix weights may come from, as plain facts the GUI can check without
loading diffusers or torch: a diffusers folder, a single checkpoint file, or a hub id."""

from __future__ import annotations

import re

DEFAULT_HUB_ID = "timbrooks/instruct-pix2pix"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
"""single-file checkpoints (loaded with the configs of the same model's diffusers folder)"""
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the shape of a Hugging Face hub id (owner/name)."""
    return bool(_HUB_ID.fullmatch(str(text)))
