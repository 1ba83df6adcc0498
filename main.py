"""Retouch3D entry point: the GUI by default, headless jobs through subcommands."""

import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
