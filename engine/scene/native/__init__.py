"""The optional C kernels (hash-grid encoding, ray marching), compiled on first use.

The kernels are plain C with OpenMP, built with the system C compiler into a per-user
cache and called through ctypes; nothing is downloaded.  When no compiler is present
``load_kernels`` returns None and callers use the torch implementations, which are the
reference the kernels are tested against.
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

_SOURCE = Path(__file__).with_name("kernels.c")


def cache_dir() -> Path:
    """Where compiled kernels live (RETOUCH3D_CACHE overrides)."""
    root = os.environ.get("RETOUCH3D_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "retouch3d")
    return Path(root) / "native"


def _compile(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("no C compiler found (install gcc to enable the fast CPU kernels)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [compiler, "-O3", "-fopenmp", "-fPIC", "-shared", "-o", str(out), str(_SOURCE), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {_SOURCE.name} failed: {proc.stderr.strip()[:500]}")
        os.replace(out, target)  # atomic: concurrent processes never load a half-written library


def _library_path() -> Path:
    digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"kernels-{digest}-{platform.machine()}.so"


def needs_compiling() -> bool:
    """Whether the first use of the kernels in this process will compile them (seconds, once per machine):
    jobs do it before their clock starts and say so."""
    return not os.environ.get("RETOUCH3D_NO_NATIVE") and load_kernels.cache_info().currsize == 0 \
        and not _library_path().exists()


@lru_cache(maxsize=1)
def load_kernels() -> ctypes.CDLL | None:
    """The compiled kernel library, or None (with one warning) when it cannot be built."""
    if os.environ.get("RETOUCH3D_NO_NATIVE"):
        return None
    target = _library_path()
    try:
        if not target.exists():
            _compile(target)
        lib = ctypes.CDLL(str(target))
    except (RuntimeError, OSError) as exc:
        warnings.warn(f"fast CPU kernels unavailable, using the slower torch path: {exc}", RuntimeWarning)
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.hash_encode_forward.argtypes = [p, i64, p, i32, i32, p, p, p, p]
    lib.hash_encode_backward.argtypes = [p, i64, p, i32, i32, p, p, p, p]
    lib.march_rays.argtypes = [p, p, p, p, i64, p, i64, i64, p, i32, i32, p, p, p, p, p]
    for fn in (lib.hash_encode_forward, lib.hash_encode_backward, lib.march_rays):
        fn.restype = None
    return lib


def ptr(tensor) -> ctypes.c_void_p:
    """Raw data pointer of a contiguous CPU tensor (or None for NULL)."""
    if tensor is None:
        return ctypes.c_void_p(None)
    assert tensor.is_contiguous() and tensor.device.type == "cpu"
    return ctypes.c_void_p(tensor.data_ptr())
