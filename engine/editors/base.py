"""The one protocol every 2D image editor follows.

Instruct-NeRF2NeRF edits a view by noising the field's current render of it to level ``t``
and denoising it conditioned on the captured image and the instruction.  Every editor takes
those same inputs so the Iterative Dataset Update, the GUI preview and the CLI can use any
of them.  Images are (H, W, 3) float tensors in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from engine.core.errors import UserInputError
from engine.core.jobs import CancelToken


@dataclass
class Guidance:
    """Diffusion guidance of an edit (Instruct-NeRF2NeRF's values)."""

    text: float = 7.5
    """s_T: how strongly the edit follows the instruction"""
    image: float = 1.5
    """s_I: how strongly the edit keeps the conditioning image"""
    steps: int = 20
    """DDIM denoising steps, spread over the noise levels from t down to 0 (IN2N)"""


@dataclass(frozen=True)
class EditStep:
    """One denoising step of a 2D edit, as an editor's ``on_step`` callback receives it (diffusers'
    ``callback_on_step_end`` habit): a slow edit reports its steps and can show where it is heading."""

    step: int
    """steps done"""
    total: int
    """steps of the whole edit"""
    preview: Callable[[], torch.Tensor]
    """the image the edit heads for after this step (HxWx3 in [0, 1], the render's size); computed only when
    called (a decode of the predicted clean latents)"""


StepCallback = Callable[[EditStep], None]


class ImageEditor(Protocol):
    """Edits one view: ``render`` (current field) noised to ``t`` in [0, 1], conditioned on ``original``."""

    name: str
    adds_matter: bool
    """whether an edit can paint new things into a view (a generative editor) rather than only change the look
    of what is there: a local edit then also covers the region's empty space, where the new thing appears"""

    def edit(self, render: torch.Tensor, original: torch.Tensor, instruction: str, t: float, seed: int,
             guidance: Guidance | None = None, cancel: CancelToken | None = None,
             on_step: StepCallback | None = None) -> torch.Tensor:
        """The edited image, same size as ``render``, values in [0, 1]; ``on_step`` hears of every step."""
        ...


def edit_image(editor: ImageEditor, image: torch.Tensor, instruction: str, seed: int = 0,
               guidance: Guidance | None = None, cancel: CancelToken | None = None,
               on_step: StepCallback | None = None) -> torch.Tensor:
    """Edit one image outside any 3D job: start from full noise (t = 1), conditioned on the image."""
    return editor.edit(image, image, instruction, 1.0, seed, guidance, cancel, on_step)


def check_instruction(instruction: str) -> str:
    """The instruction stripped; an empty one is a user error."""
    text = (instruction or "").strip()
    if not text:
        raise UserInputError("the instruction is empty: type what the edit should do, e.g. 'make it bronze'")
    return text


def check_edit_inputs(render: torch.Tensor, original: torch.Tensor, t: float) -> None:
    """Shapes and ranges every editor expects; raises UserInputError naming the problem."""
    if render.ndim != 3 or render.shape[-1] != 3:
        raise UserInputError(f"the render must be an HxWx3 image, got shape {tuple(render.shape)}")
    if original.shape != render.shape:
        raise UserInputError(f"the original image {tuple(original.shape)} and the render {tuple(render.shape)} "
                             "differ in size")
    if not 0.0 <= t <= 1.0:
        raise UserInputError(f"the noise level t must lie in [0, 1], got {t}")
