"""House rule: engine/ never imports Qt or the app package (checked on the source and at import time)."""

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"
FORBIDDEN = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph", "superqt", "OpenGL", "app")


def _imported_roots(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def test_engine_sources_import_no_qt_and_no_app():
    offenders = [f"{p.relative_to(ENGINE.parent)}:{line} imports {root}"
                 for p in ENGINE.rglob("*.py") for root, line in _imported_roots(p) if root in FORBIDDEN]
    assert not offenders, offenders


def test_importing_every_engine_module_loads_no_qt():
    modules = sorted(".".join(p.relative_to(ENGINE.parent).with_suffix("").parts) for p in ENGINE.rglob("*.py"))
    modules = [m.removesuffix(".__init__") for m in modules]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
            "print(','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ENGINE.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"engine pulled in: {proc.stdout.strip()}"


def test_import_linter_contract_is_kept():
    """The contract in pyproject.toml, checked by import-linter (a [test] dependency)."""
    import shutil

    exe = shutil.which("lint-imports")
    assert exe is not None, "import-linter is part of the [test] extra"
    proc = subprocess.run([exe], capture_output=True, text=True, cwd=ENGINE.parent)
    assert proc.returncode == 0 and "1 kept, 0 broken" in proc.stdout, proc.stdout[-2000:]
