"""Process-wide policies the engine sets before torch loads (see engine/core/threads.py)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _policy(env: dict[str, str], code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env)
    return out.stdout.strip()


def test_the_engine_and_the_app_ask_openmp_for_passive_waiting_before_torch_loads():
    code = "import {0}, sys, os; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    assert _policy({}, code.format("engine")) == "PASSIVE False"
    assert _policy({}, code.format("app")) == "PASSIVE False"
    assert _policy({"OMP_WAIT_POLICY": "ACTIVE"}, code.format("engine")) == "ACTIVE False"  # the user's choice kept
