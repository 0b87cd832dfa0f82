"""Run every numba.cuda kernel test under the CUDA simulator, in a separate process.

The simulator replaces numba.cuda process-wide when NUMBA_ENABLE_CUDASIM=1 is set before numba is
imported, so it cannot share a process with the rest of the suite.
"""

import os
import subprocess
import sys
from pathlib import Path

CUDASIM_DIR = Path(__file__).parent / "cudasim"
COMPILE_WORKER = Path(__file__).parent / "workers" / "cuda_target_compile.py"


def test_cuda_kernels_pass_under_the_simulator_and_compile_for_a_gpu(tmp_path):
    signatures = tmp_path / "signatures.pickle"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", SMALLSTATE_CUDA_SIGNATURES=str(signatures))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CUDASIM_DIR)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = result.stdout[-6000:] + result.stderr[-2000:]
    # exit code 5 (nothing collected) fails here too: the folder must hold kernel tests.
    assert result.returncode == 0, report
    assert " passed" in result.stdout, report

    # The simulator never types a kernel: compile every launched signature for a real target.
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    compiled = subprocess.run(
        [sys.executable, str(COMPILE_WORKER), str(signatures)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    # It also fails when a kernel of the set was never launched (so never compiled).
    assert compiled.returncode == 0, compiled.stdout[-6000:] + compiled.stderr[-2000:]
    assert compiled.stdout.count("ok ") >= 11, compiled.stdout
