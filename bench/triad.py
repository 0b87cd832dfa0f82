"""The STREAM-style triad and copy the bandwidth fractions are measured against (Numba, parallel).

Copy (a[i] = b[i], 8 bytes per float32 element: one read, one write) is the ceiling a streaming
codec such as the 4-bit quantize is held to (issue 23: at least half of it, in the same run);
triad (a[i] = b[i] + s·c[i], 12 bytes) is the STREAM convention the other fractions use.
"""

import time

import numba
import numpy as np

TRIAD_LENGTH = 1 << 25  # 32M float32 = 128 MiB per array, far beyond any cache


@numba.njit(parallel=True, cache=True)
def _triad(a, b, c, scale):
    for i in numba.prange(a.size):
        a[i] = b[i] + scale * c[i]


@numba.njit(parallel=True, cache=True)
def _copy(a, b):
    for i in numba.prange(a.size):
        a[i] = b[i]


def best_seconds(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


_triad_arrays: list[np.ndarray] = []


def _arrays() -> list[np.ndarray]:
    """The triad's three arrays (one output, two random inputs), made on first use."""
    if not _triad_arrays:
        rng = np.random.default_rng(0)
        _triad_arrays.append(np.empty(TRIAD_LENGTH, np.float32))
        _triad_arrays.extend(rng.standard_normal((2, TRIAD_LENGTH), dtype=np.float32))
    return _triad_arrays


def triad_bandwidth_now(repeats: int = 5) -> float:
    """The triad's bandwidth (GB/s, best of `repeats`) measured now, on the threads Numba has.

    Set beside a kernel timed just before it: on a shared machine the bandwidth drifts within one
    run (35–80 GB/s seen), so a ceiling measured minutes earlier can misstate a fraction.
    """
    a, b, c = _arrays()
    _triad(a, b, c, np.float32(0.5))
    return 12 * TRIAD_LENGTH / best_seconds(lambda: _triad(a, b, c, np.float32(0.5)), repeats) / 1e9


def copy_bandwidth_now(repeats: int = 5) -> float:
    """A parallel copy's bandwidth (GB/s, 8 bytes per float32 element, best of `repeats`)
    measured now, on the threads Numba has, over the triad's arrays."""
    a, b, _ = _arrays()
    _copy(a, b)
    return 8 * TRIAD_LENGTH / best_seconds(lambda: _copy(a, b), repeats) / 1e9
