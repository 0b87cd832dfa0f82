"""How every Numba CPU function of the library is compiled: njit options, in one place.

Every function is cached on disk (`cache=True`: a later process loads it instead of compiling it)
and compiled without a C callback wrapper (`no_cfunc_wrapper`): nothing here is used as a
first-class function, and each wrapper is one more function to generate and compile, for each
of the ~80 functions a first MicroAdam step compiles (`python -m bench.first_step`). The
Python-callable wrapper stays, on helpers too: without it a helper has a single caller, LLVM then
inlines the quantize range helpers into their kernels, and the 4-bit quantize ran slower for the
AVX2-only target (`NUMBA_CPU_NAME=haswell`) in an A/B of the two.
"""

from collections.abc import Callable
from typing import Any

from numba import njit


def jit(function: Callable | None = None, **options: Any):
    """njit with the library's options (`@jit` or `@jit(parallel=True, ...)`)."""
    decorate = njit(cache=True, no_cfunc_wrapper=True, **options)
    return decorate if function is None else decorate(function)
