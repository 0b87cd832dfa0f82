"""Run a bench module's child half in a fresh interpreter and read back its result.

The child prints one JSON object as its last line of output; a fresh process is what makes an
empty compile cache or a different Numba threading layer take effect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child(module: str, args: list[str], env: dict[str, str]) -> dict:
    """`python -m module --child *args` from the repository root with `env` added to this
    process's environment; the JSON object of its last output line."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--child", *args],
        cwd=ROOT,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])
