"""Process-wide policies the engine sets before torch loads (see engine/core/threads.py)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _policy(env: dict[str, str], code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES} | env)
    return out.stdout.strip()


def test_the_engine_and_the_app_ask_openmp_for_short_spinning_before_torch_loads():
    code = "import {0}, sys, os; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    assert _policy({}, code.format("engine")) == "1000 False"
    assert _policy({}, code.format("app")) == "1000 False"
    assert _policy({"GOMP_SPINCOUNT": "5"}, code.format("engine")) == "5 False"  # the user's choice kept
    assert _policy({"OMP_WAIT_POLICY": "PASSIVE"}, code.format("engine")) == "None False"  # a policy the user chose
