"""A 2D edit of the view the user is looking at, beside the render it started from; the scene does not
change.  The window's "Preview" button runs this job."""

from __future__ import annotations

import numpy as np
import torch

from engine.core.imaging import to_uint8
from engine.core.jobs import CancelToken, Job, Preview, Progress
from engine.editors.base import edit_image
from engine.editing.idu import EditConfig, build_editor
from engine.scene.orbit import OrbitCamera
from engine.scene.viewer import FieldView

PREVIEW_SIDE = 256
"""longer side of a previewed view, in pixels: the editor's cost grows with the pixel count"""


def preview_size(aspect: float) -> tuple[int, int]:
    """(width, height) of a preview of a view with this width / height ratio."""
    if aspect >= 1:
        return PREVIEW_SIDE, max(8, round(PREVIEW_SIDE / aspect))
    return max(8, round(PREVIEW_SIDE * aspect)), PREVIEW_SIDE


def edit_preview_job(view: FieldView, camera: OrbitCamera, aspect: float, cfg: EditConfig,
                     cancel: CancelToken | None = None) -> Job:
    """Job: render ``camera``'s view at full quality, edit it with ``cfg``'s editor and instruction, and yield
    the pair as one Preview (render | edit, side by side)."""
    cfg.validate()  # with the machine's settings, which a form may not know
    width, height = preview_size(aspect)
    yield Progress(0, 2, "rendering this view")
    frame = view.render(camera, width, height, "rgb", step_scale=1.0)
    yield Progress(1, 2, "editing it")
    image = torch.from_numpy(frame.image).float() / 255
    edited = edit_image(build_editor(cfg), image, cfg.instruction, cfg.seed, cfg.guidance, cancel)
    yield Preview(0, np.concatenate([frame.image, to_uint8(edited)], 1), {"layout": "before|after"})
    yield Progress(2, 2, "done")
