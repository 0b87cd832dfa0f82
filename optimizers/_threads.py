"""One busy thread pool at a time during an optimizer step.

torch runs its kernels on its own OpenMP pool; randla's CPU linear algebra runs on the OpenBLAS
that scipy and numpy bundle. When both pools are multi-threaded they spin against each other: on
2 cores an Adapprox step over twelve 512×128 and 384×128 matrices (k_max 16) measured 222 ms
with OpenBLAS at 2 threads and 16 ms at 1 thread. The thin products an optimizer step makes
gain little from a second BLAS thread, so steps run with the bundled BLAS libraries limited to
one thread, restored afterwards.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def single_threaded_blas() -> AbstractContextManager:
    """A context in which numpy's and scipy's BLAS use one thread (about 20 µs to enter+exit)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
