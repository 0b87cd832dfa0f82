"""One busy thread pool at a time during an optimizer step.

torch runs its kernels on its own OpenMP pool; randla's CPU linear algebra runs on the OpenBLAS
that scipy and numpy bundle. When both pools are multi-threaded they spin against each other: on
2 cores an Adapprox step over twelve 512×128 and 384×128 matrices (k_max 16) measured 222 ms
with OpenBLAS at 2 threads and 16 ms at 1 thread. So steps run with the bundled BLAS libraries
limited to one thread (restored afterwards), and randla's gemm-sized products go to torch.mm, on
torch's pool, which has all the threads (`randla._backend.torch_products`); only the small QRs
and SVDs stay on the one-thread OpenBLAS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

from randla._backend import torch_products

_controller: ThreadpoolController | None = None


@contextmanager
def one_busy_pool() -> Iterator[None]:
    """Bundled BLAS at one thread and randla's large products on torch (about 20 µs)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"), torch_products():
        yield
