"""Retouch3D desktop editor (PySide6). The only package that imports Qt."""

import sys

import engine  # noqa: F401  (the engine's process-wide thread and memory policies, set before torch loads)

# Mesa's software OpenGL (llvmpipe) and triton's bundled LLVM cannot share a process: once a GL
# context exists, importing triton (which torch does lazily, e.g. for the first optimizer)
# crashes it.  The editor never compiles kernels with triton, so torch is told it is absent.
if "triton" not in sys.modules:
    sys.modules["triton"] = None

# PySide6 6.12.0 releases a reference to None on every call of a method that returns nothing
# (widget.update(), timer.start(), processEvents()...).  On Python < 3.12, where None is not
# immortal, the editor then aborts after some minutes with "deallocating None".
_QT_VERSION = tuple(int(part) for part in __import__("PySide6").__version__.split(".")[:3])
if _QT_VERSION == (6, 12, 0) and sys.version_info < (3, 12):
    raise ImportError("PySide6 6.12.0 crashes on Python < 3.12 (it drops references to None); install "
                      "another version: pip install 'PySide6>=6.8,!=6.12.0'")
