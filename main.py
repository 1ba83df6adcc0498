"""Retouch3D entry point: the editor window by default, headless jobs through subcommands.

    python main.py                  the editor
    python main.py demo             the editor on the procedural demo scene, training
    python main.py demo --headless  the same demo in the terminal (see --help for every command)
"""

import sys


def _wants_window(argv: list[str]) -> bool:
    return not argv or (argv[0] == "demo" and "--headless" not in argv and not {"-h", "--help"} & set(argv))


if __name__ == "__main__":
    args = sys.argv[1:]
    if _wants_window(args):
        from app.main_window import run

        sys.exit(run(demo=bool(args)))
    from engine.cli import main

    sys.exit(main())
