"""Optional C kernels, compiled on first use.

A kernel file is plain C with OpenMP, built with the system C compiler into a per-user cache (named by the
source's hash, so an edited file is rebuilt) and called through ctypes; nothing is downloaded.  When no
compiler is present ``NativeLibrary.load`` returns None and callers use their torch implementations, which
are the reference the kernels are tested against.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

ENGINE_ROOT = Path(__file__).resolve().parents[1]
"""kernel sources live under it; a library is named by the source's path there (scene-native-kernels-...)"""
DISABLE_VARIABLE = "RETOUCH3D_NO_NATIVE"
"""set (to anything) to use the torch implementations everywhere"""


def cache_dir() -> Path:
    """Where compiled kernels live (RETOUCH3D_CACHE overrides)."""
    root = os.environ.get("RETOUCH3D_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "retouch3d")
    return Path(root) / "native"


def ptr(tensor) -> ctypes.c_void_p:
    """Raw data pointer of a contiguous CPU tensor (or None for NULL)."""
    if tensor is None:
        return ctypes.c_void_p(None)
    assert tensor.is_contiguous() and tensor.device.type == "cpu"
    return ctypes.c_void_p(tensor.data_ptr())


class NativeLibrary:
    """One C source file and the signatures of the functions callers use from it."""

    def __init__(self, source: Path, signatures: dict[str, list]) -> None:
        """``signatures``: each function's ctypes argument types (every function returns void)."""
        self.source, self.signatures = source, signatures
        self.load = lru_cache(maxsize=1)(self._load)

    def path(self) -> Path:
        """The compiled library's path in the cache."""
        digest = hashlib.sha256(self.source.read_bytes()).hexdigest()[:16]
        name = "-".join(self.source.resolve().relative_to(ENGINE_ROOT).with_suffix("").parts)
        return cache_dir() / f"{name}-{digest}-{platform.machine()}.so"

    def needs_compiling(self) -> bool:
        """Whether the first use in this process will compile the kernels (seconds, once per machine): jobs do it
        before their clock starts and say so."""
        return not os.environ.get(DISABLE_VARIABLE) and self.load.cache_info().currsize == 0 \
            and not self.path().exists()

    def _load(self) -> ctypes.CDLL | None:
        """The compiled library, or None (with one warning) when it cannot be built."""
        if os.environ.get(DISABLE_VARIABLE):
            return None
        target = self.path()
        try:
            if not target.exists():
                self._compile(target)
            lib = ctypes.CDLL(str(target))
        except (RuntimeError, OSError) as exc:
            warnings.warn(f"fast CPU kernels unavailable, using the slower torch path: {exc}", RuntimeWarning)
            return None
        for name, argtypes in self.signatures.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, None
        return lib

    def _compile(self, target: Path) -> None:
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if compiler is None:
            raise RuntimeError("no C compiler found (install gcc to enable the fast CPU kernels)")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            cmd = [compiler, "-O3", "-fopenmp", "-fPIC", "-shared", "-o", str(out), str(self.source), "-lm"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling {self.source.name} failed: {proc.stderr.strip()[:500]}")
            os.replace(out, target)  # atomic: concurrent processes never load a half-written library
