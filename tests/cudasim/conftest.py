"""Guard: these tests only mean something under the CUDA simulator.

With SMALLSTATE_CUDA_SIGNATURES set to a file path, every kernel launch of compress's CUDA kernel
set is also recorded (kernel name and the numba types of its arguments) and the set of distinct
signatures pickled to that file at the end of the session. The simulator runs kernels as Python
and never types them; tests/test_cuda_simulator.py compiles each recorded signature for a real
GPU target from that file (tests/workers/cuda_target_compile.py).
"""

import os
import pickle

import numba
import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        raise pytest.UsageError("tests/cudasim must run with NUMBA_ENABLE_CUDASIM=1")


class RecordingKernel:
    """Stands in for a simulator kernel: records each launch's argument types, then launches."""

    def __init__(self, name, kernel, seen):
        self.name, self.kernel, self.seen = name, kernel, seen

    def __getitem__(self, launch_config):
        launch = self.kernel[launch_config]

        def record_and_launch(*args):
            self.seen.add((self.name, tuple(numba.typeof(arg) for arg in args)))
            return launch(*args)

        return record_and_launch


@pytest.fixture(autouse=True, scope="session")
def record_kernel_signatures():
    path = os.environ.get("SMALLSTATE_CUDA_SIGNATURES")
    if not path:
        yield
        return
    from compress import _cuda_kernels

    seen: set = set()
    patch = pytest.MonkeyPatch()
    for name, kernel in vars(_cuda_kernels).items():
        if type(kernel).__name__ == "FakeCUDAKernel" and not kernel._device:
            patch.setattr(_cuda_kernels, name, RecordingKernel(name, kernel, seen))
    yield
    patch.undo()
    with open(path, "wb") as file:
        pickle.dump(sorted(seen, key=str), file)
