"""The STREAM-style triad the bandwidth fractions are measured against (Numba, parallel)."""

import time

import numba
import numpy as np

TRIAD_LENGTH = 1 << 25  # 32M float32 = 128 MiB per array, far beyond any cache


@numba.njit(parallel=True, cache=True)
def _triad(a, b, c, scale):
    for i in numba.prange(a.size):
        a[i] = b[i] + scale * c[i]


def best_seconds(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


_triad_arrays: list[np.ndarray] = []


def triad_bandwidth_now(repeats: int = 5) -> float:
    """The triad's bandwidth (GB/s, best of `repeats`) measured now, on the threads Numba has.

    Set beside a kernel timed just before it: on a shared machine the bandwidth drifts within one
    run (35–80 GB/s seen), so a ceiling measured minutes earlier can misstate a fraction.
    """
    if not _triad_arrays:
        rng = np.random.default_rng(0)
        _triad_arrays.append(np.empty(TRIAD_LENGTH, np.float32))
        _triad_arrays.extend(rng.standard_normal((2, TRIAD_LENGTH), dtype=np.float32))
    a, b, c = _triad_arrays
    _triad(a, b, c, np.float32(0.5))
    return 12 * TRIAD_LENGTH / best_seconds(lambda: _triad(a, b, c, np.float32(0.5)), repeats) / 1e9
