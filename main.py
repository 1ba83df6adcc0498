"""Retouch3D entry point: the GUI by default, headless jobs through subcommands."""

import os
import sys

# Idle OpenMP threads sleep instead of spinning: torch and the C kernels use two OpenMP runtimes
# that take turns, and spinning threads of one slow the other (about 10% of training time).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from engine.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
