"""Edited training images kept in the project, with a per-view history.

Original capture files are never written.  Every edit of a view is a new PNG under
``edits/views/<view>/`` and ``edits/index.json`` records, per view, the list of versions and
which one is current (-1: the original).  Reverting a view moves its pointer back; the files
stay, so undo and redo are free and a killed job loses nothing it had already saved.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from engine.core.errors import UserInputError
from engine.core.project import atomic_write, read_json, write_json

INDEX_SCHEMA = 1


class EditStore:
    """Per-view edit history of one project (views are named by their image file's stem)."""

    def __init__(self, project_root: Path) -> None:
        self.root = Path(project_root) / "edits"
        self.index_path = self.root / "index.json"
        self._index = self._read()

    def _read(self) -> dict:
        if not self.index_path.exists():
            return {"schema": INDEX_SCHEMA, "views": {}}
        index = read_json(self.index_path)
        if index.get("schema") != INDEX_SCHEMA or not isinstance(index.get("views"), dict):
            raise UserInputError(f"{self.index_path}: not an edit index of schema {INDEX_SCHEMA}")
        return index

    def _write(self) -> None:
        write_json(self.index_path, self._index)

    def views(self) -> list[str]:
        """Views that have at least one saved edit."""
        return sorted(self._index["views"])

    def history(self, view: str) -> list[dict]:
        """Every saved version of ``view``, oldest first (file, instruction and other metadata)."""
        return list(self._index["views"].get(view, {}).get("versions", []))

    def current_index(self, view: str) -> int:
        """Index of the version in use; -1 when the view shows its original image."""
        return int(self._index["views"].get(view, {}).get("current", -1))

    def current(self, view: str) -> np.ndarray | None:
        """The edited image in use for ``view`` (HxWx3 uint8), or None for the original."""
        k = self.current_index(view)
        return None if k < 0 else self.image(view, k)

    def image(self, view: str, k: int) -> np.ndarray:
        """Version ``k`` of ``view`` (HxWx3 uint8)."""
        path = self.root / self._index["views"][view]["versions"][k]["file"]
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB")).copy()
        except OSError as exc:
            raise UserInputError(f"{path}: edited image unreadable ({exc})") from exc

    def add(self, view: str, image: np.ndarray, **meta) -> Path:
        """Save a new version of ``view`` and make it current; later versions (redo) are kept."""
        entry = self._index["views"].setdefault(view, {"versions": [], "current": -1})
        number = len(entry["versions"])
        rel = Path("views") / view / f"{number:04d}.png"
        atomic_write(self.root / rel, lambda p: Image.fromarray(image).save(p, format="PNG"))
        entry["versions"].append({"file": rel.as_posix(), "time": time.time(), **meta})
        entry["current"] = number
        self._write()
        return self.root / rel

    def set_current(self, view: str, k: int) -> None:
        """Use version ``k`` of ``view`` (-1: the original); the basis of undo and redo."""
        versions = self._index["views"].get(view, {}).get("versions", [])
        if not -1 <= k < len(versions):
            raise UserInputError(f"view {view} has no version {k} (it has {len(versions)})")
        if view in self._index["views"]:
            self._index["views"][view]["current"] = k
            self._write()

    def revert(self, view: str) -> None:
        """Show the original image of ``view`` again (its edits stay in the history)."""
        self.set_current(view, -1)
