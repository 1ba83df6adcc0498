"""Project folders on disk: a versioned JSON manifest, configs, checkpoints and exports.

Every write is atomic (temporary file in the same folder, then rename), so a crash never
leaves a half-written manifest or checkpoint behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from engine.core.errors import UserInputError

MANIFEST_NAME = "retouch3d.json"
MANIFEST_BACKUP_NAME = "retouch3d.json.bak"
"""a copy of the last manifest written, so a manifest damaged outside the program can be restored"""
SCHEMA_VERSION = 1


def atomic_write(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then move the result onto ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def read_json(path: Path) -> Any:
    """Parsed JSON of ``path``; a UserInputError naming the file when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserInputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: unreadable JSON ({exc})") from None


def save_torch(path: Path, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj``."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def check_writable_folder(path: str | Path, what: str) -> None:
    """Raise UserInputError unless ``path`` is a folder this process can write in, or one it can create
    (its nearest existing parent is a writable folder): checked before long work that ends writing there."""
    path = Path(path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserInputError(f"the {what} {path} cannot be a folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(f"the {what} {path} is not writable ({existing} does not allow writing): choose "
                             "another folder")


class Project:
    """A Retouch3D project folder (``retouch3d.json`` + ``checkpoints/`` + ``renders/`` + ``exports/``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def backup_path(self) -> Path:
        return self.root / MANIFEST_BACKUP_NAME

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def read_manifest(self) -> dict:
        """The manifest, or a UserInputError naming the file when it is missing or unreadable."""
        try:
            data = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise UserInputError(f"{self.root}: not a Retouch3D project (no {MANIFEST_NAME}); train one with "
                                 f"'python main.py train --data DIR --out {self.root}'") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            hint = (f"; the last good copy is {self.backup_path.name} (restore it with "
                    f"'cp {self.backup_path} {self.manifest_path}')") if self._backup_readable() else ""
            raise UserInputError(f"{self.manifest_path}: unreadable project manifest ({exc}){hint}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise UserInputError(f"{self.manifest_path}: project schema {found!r} is not supported "
                                 f"(this version reads {SCHEMA_VERSION})")
        return data

    def write_manifest(self, data: dict) -> None:
        """Replace the manifest (atomically) and keep a backup copy of it."""
        content = {"schema": SCHEMA_VERSION, **data}
        write_json(self.manifest_path, content)
        write_json(self.backup_path, content)

    def update_manifest(self, **fields: Any) -> dict:
        """Set top-level fields of the manifest, keeping the others (a new project starts empty)."""
        data = self.read_manifest() if self.exists() else {}
        data.update(fields)
        data.pop("schema", None)
        self.write_manifest(data)
        return data

    def _backup_readable(self) -> bool:
        try:
            return json.loads(self.backup_path.read_text()).get("schema") == SCHEMA_VERSION
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return False

    def restore_backup(self) -> None:
        """Replace a damaged manifest with the last good copy (UserInputError when there is none)."""
        if not self._backup_readable():
            raise UserInputError(f"{self.root}: no readable backup of the project manifest ({MANIFEST_BACKUP_NAME})")
        atomic_write(self.manifest_path, lambda tmp: tmp.write_bytes(self.backup_path.read_bytes()))

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the highest step, if any."""
        ckpts = sorted(self.checkpoint_dir.glob("step_*.pt"))
        return ckpts[-1] if ckpts else None
