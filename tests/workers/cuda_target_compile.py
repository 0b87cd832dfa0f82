"""Compile recorded CUDA kernel signatures for a real GPU target, with no GPU and no toolkit.

Usage: python cuda_target_compile.py SIGNATURES_PICKLE
Each (kernel name, argument types) pair recorded under the simulator (tests/cudasim/conftest.py)
is typed and lowered to NVVM IR by numba-cuda's front end for compute capability 8.0. That is
the step where Numba's CUDA target refuses what the simulator accepts (an attribute it cannot
type, a NumPy call it has no CUDA lowering for). Prints one line per signature and exits 1 if
any failed or a kernel of the set was never launched, 2 if there was nothing to compile.
"""

import pickle
import sys

from numba import types
from numba.cuda import dispatcher
from numba.cuda.compiler import compile_cuda

from compress import _cuda_kernels

COMPUTE_CAPABILITY = (8, 0)


class TargetDevice:
    """What a device function's compile asks of the current device: only its capability."""

    compute_capability = COMPUTE_CAPABILITY


# Device functions compile for the current device's capability; with no driver, name ours.
dispatcher.get_current_device = TargetDevice


def main(path: str) -> int:
    with open(path, "rb") as file:
        signatures = pickle.load(file)
    if not signatures:
        print("no kernel launches were recorded")
        return 2
    kernels = {
        name
        for name, value in vars(_cuda_kernels).items()
        if hasattr(value, "targetoptions") and not value.targetoptions.get("device")
    }
    never_launched = kernels - {name for name, _ in signatures}
    failed = len(never_launched)
    for name in sorted(never_launched):
        print(f"FAILED  {name}: never launched under the simulator, so never compiled here")
    for name, argument_types in signatures:
        kernel = getattr(_cuda_kernels, name)
        try:
            compile_cuda(kernel.py_func, types.void, argument_types, cc=COMPUTE_CAPABILITY)
            print(f"ok      {name}{argument_types}")
        except Exception as error:  # report every failing signature, not only the first
            failed += 1
            print(f"FAILED  {name}{argument_types}: {type(error).__name__}: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
