"""A 2D edit of the view the user is looking at, beside the render it started from; the scene does not
change.  The window's "Preview" button runs this job, and watches the edit take shape step by step."""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from engine.core.imaging import to_uint8
from engine.core.jobs import CancelToken, Job, Preview, Progress
from engine.editors.base import EditStep, edit_image
from engine.editing.idu import EditConfig, build_editor
from engine.scene.orbit import OrbitCamera
from engine.scene.viewer import FieldView

PREVIEW_SIDE = 256
"""longer side of a previewed view, in pixels: the editor's cost grows with the pixel count"""
PREVIEW_EVERY = 5
"""denoising steps between the intermediate images a preview shows (each costs a decode)"""


def preview_size(aspect: float) -> tuple[int, int]:
    """(width, height) of a preview of a view with this width / height ratio."""
    if aspect >= 1:
        return PREVIEW_SIDE, max(8, round(PREVIEW_SIDE / aspect))
    return max(8, round(PREVIEW_SIDE * aspect)), PREVIEW_SIDE


def edit_preview_job(view: FieldView, camera: OrbitCamera, aspect: float, cfg: EditConfig,
                     cancel: CancelToken | None = None) -> Job:
    """Job: render ``camera``'s view at full quality, edit it with ``cfg``'s editor and instruction, and yield
    the pair as Previews (render | edit, side by side): where the edit heads every ``PREVIEW_EVERY`` denoising
    steps, then the result.  The edit runs on a thread of its own so its steps stream out as they happen.

    ``cfg`` is checked when the job is made (``cfg.validate()``, with the machine's settings, which a form may not
    know): a bad one raises UserInputError before anything renders or loads."""
    cfg.validate()
    return _preview_events(view, camera, aspect, cfg, cancel)


def _preview_events(view: FieldView, camera: OrbitCamera, aspect: float, cfg: EditConfig,
                    cancel: CancelToken | None) -> Job:
    """``edit_preview_job``'s events, for a validated config."""
    width, height = preview_size(aspect)
    yield Progress(0, 1, "rendering this view")
    frame = view.render(camera, width, height, "rgb", step_scale=1.0)
    editor = build_editor(cfg)
    image = torch.from_numpy(frame.image).float() / 255
    events: queue.Queue = queue.Queue()
    outcome: dict = {}

    def heard(step: EditStep) -> None:  # on the edit's thread: decode there, never beside its next step
        shown = step.preview() if step.step % PREVIEW_EVERY == 0 and step.step < step.total else None
        events.put((step, shown))

    def run() -> None:
        try:
            outcome["edited"] = edit_image(editor, image, cfg.instruction, cfg.seed, cfg.guidance, cancel, heard)
        except BaseException as exc:  # re-raised in the job, where its consumer handles it
            outcome["error"] = exc
        finally:
            events.put(None)

    worker = threading.Thread(target=run, name="edit-preview", daemon=True)
    worker.start()
    while (item := events.get()) is not None:
        step, shown = item
        yield Progress(step.step, step.total, "editing this view")
        if shown is not None:
            yield Preview(step.step, np.concatenate([frame.image, to_uint8(shown)], 1), {"layout": "before|after"})
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    yield Preview(0, np.concatenate([frame.image, to_uint8(outcome["edited"])], 1), {"layout": "before|after"})
