"""bench/gpu_check.py where no GPU is visible (CUDA_VISIBLE_DEVICES=""): one line, exit code 2,
nothing written."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def run_script(*args, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path):
    out = tmp_path / "check"
    result = run_script("--out", str(out), tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], lines
    assert not out.exists()


def test_help_names_the_output_option(tmp_path):
    result = run_script("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--out" in result.stdout and "--budget" in result.stdout
