"""The user's preferences, kept between sessions with QSettings.

``AppSettings`` gives each preference a typed property with a default, so the rest of the
app never deals with QSettings' untyped values (an INI file hands every value back as a
string, and a one-element list as a bare string).  Model paths are kept as the user typed
them; the dialogs check that they exist and the engine loaders say what is missing.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "Retouch3D"
APPLICATION = "Retouch3D"
DEVICES = ("auto", "cpu", "cuda")
"""where models run: "auto" is the GPU when torch sees one, else the CPU"""
MEMORY_PRESETS = ("default", "low")
"""InstructPix2Pix GPU memory use: "low" offloads models to the CPU between uses"""
MAX_RECENT_PROJECTS = 10


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

    def _choice(self, key: str, choices: tuple[str, ...]) -> str:
        """The stored value when it is one of ``choices``, else the first (a hand-edited file stays usable)."""
        value = self._text(key, choices[0])
        return value if value in choices else choices[0]

    @staticmethod
    def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")

    @property
    def ip2p_model(self) -> str:
        """InstructPix2Pix weights: a diffusers folder, a .safetensors/.ckpt file or a hub id ("" = not set)."""
        return self._text("models/ip2p")

    @ip2p_model.setter
    def ip2p_model(self, value: str) -> None:
        self._settings.setValue("models/ip2p", value)

    @property
    def ip2p_config_dir(self) -> str:
        """The diffusers folder holding the configs of a single-file InstructPix2Pix checkpoint ("" = not set)."""
        return self._text("models/ip2p_config")

    @ip2p_config_dir.setter
    def ip2p_config_dir(self, value: str) -> None:
        self._settings.setValue("models/ip2p_config", value)

    @property
    def eg3d_checkpoint(self) -> str:
        """EG3D generator checkpoint file ("" = not set)."""
        return self._text("models/eg3d")

    @eg3d_checkpoint.setter
    def eg3d_checkpoint(self, value: str) -> None:
        self._settings.setValue("models/eg3d", value)

    @property
    def threedpe_checkpoint(self) -> str:
        """3DPE encoder checkpoint file ("" = not set)."""
        return self._text("models/3dpe")

    @threedpe_checkpoint.setter
    def threedpe_checkpoint(self, value: str) -> None:
        self._settings.setValue("models/3dpe", value)

    @property
    def device(self) -> str:
        """One of DEVICES."""
        return self._choice("compute/device", DEVICES)

    @device.setter
    def device(self, value: str) -> None:
        self._check_choice("device", value, DEVICES)
        self._settings.setValue("compute/device", value)

    @property
    def memory_preset(self) -> str:
        """One of MEMORY_PRESETS."""
        return self._choice("compute/memory", MEMORY_PRESETS)

    @memory_preset.setter
    def memory_preset(self, value: str) -> None:
        self._check_choice("memory preset", value, MEMORY_PRESETS)
        self._settings.setValue("compute/memory", value)

    @property
    def lpips_backbone(self) -> str:
        """What engine.metrics.load_lpips gets: "auto" (the torch cache), "off", or the AlexNet weights file."""
        return self._text("models/lpips", "auto") or "auto"

    @lpips_backbone.setter
    def lpips_backbone(self, value: str) -> None:
        self._settings.setValue("models/lpips", value)

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
        """The torch device to use (see ``resolve_device``)."""
        return resolve_device(self.device)


def resolve_device(choice: str) -> str:
    """The torch device for a DEVICES choice: the chosen one, or for "auto" "cuda" when torch sees a GPU,
    else "cpu".  Workers call it with the choice read on the UI thread (QSettings stays there)."""
    if choice != "auto":
        return choice
    import torch  # only here: importing torch costs seconds at startup

    return "cuda" if torch.cuda.is_available() else "cpu"
