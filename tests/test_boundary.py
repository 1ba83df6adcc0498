"""The layers of the code, checked in one place: the import-linter contracts in pyproject.toml (engine/ never
imports Qt or the app; the core below the engines, the engines below the jobs and the command line).
import-linter reads every import, lazy ones inside functions too."""

import re
import shutil
import subprocess
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports")
    assert exe is not None, "import-linter is part of the [test] extra"
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    proc = subprocess.run([exe], capture_output=True, text=True, cwd=ROOT)
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", proc.stdout)
    assert proc.returncode == 0 and kept and kept.groups() == (str(len(contracts)), "0"), proc.stdout[-3000:]
