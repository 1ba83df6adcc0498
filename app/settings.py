"""The user's preferences, kept between sessions with QSettings.

``AppSettings`` gives each preference a typed property with a default, so the rest of the
app never deals with QSettings' untyped values (an INI file hands every value back as a
string, and a one-element list as a bare string).  Model paths are kept as the user typed
them; the dialogs check that they exist and the engine loaders say what is missing.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from engine.core.devices import DEVICES, resolve_device
from engine.editors.sources import MEMORY_PRESETS, PRECISIONS

ORGANIZATION = "Retouch3D"
APPLICATION = "Retouch3D"
MAX_RECENT_PROJECTS = 10


class _Text:
    """A text preference stored under ``key``; an empty or missing value reads as ``default``."""

    def __init__(self, key: str, doc: str, default: str = "") -> None:
        self.key, self.default, self.__doc__ = key, default, doc

    def __get__(self, owner: "AppSettings | None", cls: type) -> "str | _Text":
        if owner is None:
            return self
        return owner._text(self.key, self.default) or self.default

    def __set__(self, owner: "AppSettings", value: str) -> None:
        owner._settings.setValue(self.key, value)


class _Choice:
    """A preference that is one of ``choices``: a stored value outside them (a hand-edited file) reads as
    the first, and setting one raises ValueError naming the preference."""

    def __init__(self, key: str, name: str, choices: tuple[str, ...], doc: str) -> None:
        self.key, self.name, self.choices, self.__doc__ = key, name, choices, doc

    def __get__(self, owner: "AppSettings | None", cls: type) -> "str | _Choice":
        if owner is None:
            return self
        value = owner._text(self.key, self.choices[0])
        return value if value in self.choices else self.choices[0]

    def __set__(self, owner: "AppSettings", value: str) -> None:
        if value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}")
        owner._settings.setValue(self.key, value)



class AppSettings:
    """Typed access to the stored preferences; pass a QSettings on an INI file to keep tests
    away from the user's real settings."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self._settings = settings if settings is not None else QSettings(ORGANIZATION, APPLICATION)

    def sync(self) -> None:
        """Write pending changes to storage now (QSettings otherwise writes them lazily)."""
        self._settings.sync()

    def _text(self, key: str, default: str = "") -> str:
        value = self._settings.value(key, default)
        return default if value is None else str(value)

    ip2p_model = _Text("models/ip2p", "InstructPix2Pix weights: a diffusers folder, a .safetensors/.ckpt file or a hub id "
                       '("" = not set).')
    ip2p_config_dir = _Text("models/ip2p_config", "The diffusers folder holding the configs of a single-file "
                            'InstructPix2Pix checkpoint ("" = not set).')
    eg3d_checkpoint = _Text("models/eg3d", 'EG3D generator checkpoint file ("" = not set).')
    threedpe_checkpoint = _Text("models/threedpe", 'Official 3DPE checkpoint 3dpe.pt ("" = use the embedded editor).')
    lpips_backbone = _Text("models/lpips", 'What engine.core.metrics.load_lpips gets: "auto" (the torch cache), "off", '
                           "or the AlexNet weights file.", default="auto")
    device = _Choice("compute/device", "device", DEVICES, "One of DEVICES.")
    memory_preset = _Choice("compute/memory", "memory preset", tuple(MEMORY_PRESETS),
                            "One of MEMORY_PRESETS (InstructPix2Pix GPU memory use).")
    precision = _Choice("compute/precision", "precision", tuple(PRECISIONS),
                        "One of PRECISIONS (InstructPix2Pix weights: full float32 by default, half float16 on CUDA).")

    @property
    def autosave_minutes(self) -> int:
        """Minutes between autosaves of an open project; 0 turns autosave off."""
        try:
            return max(0, int(self._settings.value("project/autosave_minutes", 2)))
        except (TypeError, ValueError):
            return 2

    @autosave_minutes.setter
    def autosave_minutes(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"autosave minutes must be 0 (off) or positive; got {value}")
        self._settings.setValue("project/autosave_minutes", int(value))

    @property
    def recent_projects(self) -> list[str]:
        """Project folders, most recent first; folders that no longer exist are left out."""
        value = self._settings.value("project/recent")
        if value is None:
            entries = []
        elif isinstance(value, str):  # QSettings returns a one-element list as its element
            entries = [value]
        else:
            entries = [str(v) for v in value]
        return [p for p in entries if p and Path(p).is_dir()][:MAX_RECENT_PROJECTS]

    @recent_projects.setter
    def recent_projects(self, paths: list[str]) -> None:
        self._settings.setValue("project/recent", list(paths)[:MAX_RECENT_PROJECTS])

    def add_recent(self, path: str | Path) -> None:
        """Put ``path`` first in the recent projects (once, by its absolute form)."""
        path = str(Path(path).expanduser().resolve())
        self.recent_projects = [path] + [p for p in self.recent_projects if p != path]

    @property
    def window_geometry(self) -> QByteArray:
        """The main window's saveGeometry() (empty before the first close)."""
        return QByteArray(self._settings.value("window/geometry", QByteArray()))

    @window_geometry.setter
    def window_geometry(self, value: QByteArray) -> None:
        self._settings.setValue("window/geometry", value)

    @property
    def window_state(self) -> QByteArray:
        """The main window's saveState(): docks and toolbars (empty before the first close)."""
        return QByteArray(self._settings.value("window/state", QByteArray()))

    @window_state.setter
    def window_state(self, value: QByteArray) -> None:
        self._settings.setValue("window/state", value)

    def resolved_device(self) -> str:
        """The torch device to use (see ``engine.core.devices.resolve_device``)."""
        return resolve_device(self.device)
