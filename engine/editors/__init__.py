"""The 2D image editors: one protocol (``base.ImageEditor``) and one registry.

Scene edits (Instruct-NeRF2NeRF), the portrait engines, the command line and the window all find editors
here; nothing else lists them.  An editor reads its settings from the config of the job that uses it (an
``EditConfig``: instruction, model, device, memory, precision, variation).  Adding one is a module with
the editor and one ``EditorEntry`` below.  This module stays light (no torch): the window reads the
labels before the engine loads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from engine.core.errors import UserInputError

if TYPE_CHECKING:
    from engine.editors.base import ImageEditor


@dataclass(frozen=True)
class EditorEntry:
    """One registered 2D editor."""

    name: str
    """what ``--editor`` and saved projects call it"""
    label: str
    """what the window's editor menu shows"""
    summary: str
    """one line for ``--help`` and the window's note under the menu"""
    needs_model: bool
    """whether it loads weights the user supplies (``--model``)"""
    deterministic: bool
    """whether an edit is a fixed function of the image and instruction: it can be repeated on held-out
    views (so an edit's fidelity is measured), takes a per-call ``variation`` and ignores diffusion guidance"""
    check: Callable[[Any], None]
    """raises UserInputError for settings it cannot run with, before any model is loaded: what this editor asks
    of them beyond ``EditConfig.validate``'s own checks (which it is part of: an instruction reaches it stripped
    and not empty, the device resolved)"""
    build: Callable[[Any], "ImageEditor"]
    """the editor for checked settings (loads its model once per session and settings)"""


def _check_offline(settings: Any) -> None:
    from engine.editors.offline import check_variation, resolve

    resolve(settings.instruction)  # within the vocabulary
    check_variation(settings.variation)


def _build_offline(settings: Any) -> "ImageEditor":
    from engine.editors.offline import OfflineEditor

    return OfflineEditor(variation=settings.variation)


def _check_ip2p(settings: Any) -> None:
    from engine.editors.sources import check_model_source, check_run_options

    check_model_source(settings.model, settings.model_config)
    check_run_options(settings.device, settings.memory, settings.precision)


_loaded: dict[tuple, "ImageEditor"] = {}
"""the InstructPix2Pix editor last built, by the settings it was built with: previews and edits of one session
reuse it instead of reading gigabytes of weights each time (one at a time: each holds a whole pipeline)"""
_loading = threading.Lock()


def _build_ip2p(settings: Any) -> "ImageEditor":
    from engine.editors.ip2p import load_ip2p

    source = Path(str(settings.model)).expanduser()
    changed = source.stat().st_mtime_ns if source.exists() else None  # weights replaced on disk load again
    key = (settings.model, changed, settings.model_config, str(settings.device), settings.memory, settings.precision)
    with _loading:
        if key not in _loaded:
            _loaded.clear()  # free the previous pipeline before loading another
            _loaded[key] = load_ip2p(settings.model, device=settings.device, memory=settings.memory,
                                     config_dir=settings.model_config, precision=settings.precision)
        return _loaded[key]


def forget_loaded_editors() -> None:
    """Drop the cached editor models (their memory is freed once no job holds them)."""
    with _loading:
        _loaded.clear()


EDITORS: dict[str, EditorEntry] = {entry.name: entry for entry in (
    EditorEntry("offline", "Offline (embedded)", "global edits from a fixed vocabulary, no model download",
                needs_model=False, deterministic=True, check=_check_offline, build=_build_offline),
    EditorEntry("ip2p", "InstructPix2Pix", "free-form instructions with InstructPix2Pix weights you supply",
                needs_model=True, deterministic=False, check=_check_ip2p, build=_build_ip2p),
)}
"""every 2D editor, the default first"""


def editor_entry(name: str) -> EditorEntry:
    """The registered editor ``name``; an unknown name is a user error listing the known ones."""
    if name not in EDITORS:
        raise UserInputError(f"unknown editor {name!r}; choose one of {', '.join(EDITORS)}")
    return EDITORS[name]
