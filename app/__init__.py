"""Retouch3D desktop editor (PySide6). The only package that imports Qt."""

import sys

# Mesa's software OpenGL (llvmpipe) and triton's bundled LLVM cannot share a process: once a GL
# context exists, importing triton (which torch does lazily, e.g. for the first optimizer)
# crashes it.  The editor never compiles kernels with triton, so torch is told it is absent.
if "triton" not in sys.modules:
    sys.modules["triton"] = None
