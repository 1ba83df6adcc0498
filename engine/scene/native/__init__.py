"""The scene's optional C kernels (hash-grid encoding, ray marching), compiled on first use
(engine.core.native); without a compiler ``load_kernels`` returns None and callers use the torch
implementations, which are the reference the kernels are tested against."""

from __future__ import annotations

import ctypes
from pathlib import Path

from engine.core.native import NativeLibrary, ptr

_p, _i64, _i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
KERNELS = NativeLibrary(Path(__file__).with_name("kernels.c"), {
    "hash_encode_forward": [_p, _i64, _p, _i32, _i32, _p, _p, _p, _p],
    "hash_encode_backward": [_p, _i64, _p, _i32, _i32, _p, _p, _p, _p],
    "march_rays": [_p, _p, _p, _p, _i64, _p, _i64, _i64, _p, _i32, _i32, _p, _p, _p, _p, _p]})
load_kernels = KERNELS.load
"""the compiled library, or None (with one warning) when it cannot be built"""
needs_compiling = KERNELS.needs_compiling

__all__ = ["KERNELS", "load_kernels", "needs_compiling", "ptr"]
