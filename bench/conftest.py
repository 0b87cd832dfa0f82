"""Machine ceilings measured once per benchmark run.

Every kernel benchmark reports its fraction of two ceilings measured in the same run, on the
same thread count: the memory bandwidth of a STREAM-style triad (Numba, parallel) and the float32
GEMM rate (the best of numpy's and torch's BLAS on a square product). The ceilings go into the
pytest-benchmark JSON (`machine_ceilings`) and the terminal summary.
"""

import os
import time
from dataclasses import asdict, dataclass

import numba
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

BENCH_THREADS = int(os.environ.get("SMALLSTATE_BENCH_THREADS", os.cpu_count() or 1))
TRIAD_LENGTH = 1 << 25  # 32M float32 = 128 MiB per array, far beyond any cache
GEMM_SIZE = 2048


@numba.njit(parallel=True, cache=True)
def _triad(a, b, c, scale):
    for i in numba.prange(a.size):
        a[i] = b[i] + scale * c[i]


def _best_seconds(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@dataclass(frozen=True)
class Ceilings:
    bandwidth_gbs: float
    gemm_gflops: float
    numpy_gemm_gflops: float
    torch_gemm_gflops: float
    threads: int


def measure_ceilings(threads: int = BENCH_THREADS) -> Ceilings:
    """Triad bandwidth (12 bytes moved per element, the STREAM convention) and sgemm rate."""
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    a = np.empty(TRIAD_LENGTH, np.float32)
    b = rng.standard_normal(TRIAD_LENGTH, dtype=np.float32)
    c = rng.standard_normal(TRIAD_LENGTH, dtype=np.float32)
    _triad(a, b, c, np.float32(0.5))
    triad_s = _best_seconds(lambda: _triad(a, b, c, np.float32(0.5)), 5)
    bandwidth = 12 * TRIAD_LENGTH / triad_s / 1e9

    x = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    y = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    out = np.empty_like(x)
    flops = 2.0 * GEMM_SIZE**3
    with threadpool_limits(threads):
        np.matmul(x, y, out=out)
        numpy_rate = flops / _best_seconds(lambda: np.matmul(x, y, out=out), 3) / 1e9
    tx, ty, tout = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(out)
    torch.mm(tx, ty, out=tout)
    torch_rate = flops / _best_seconds(lambda: torch.mm(tx, ty, out=tout), 3) / 1e9
    return Ceilings(
        bandwidth_gbs=bandwidth,
        gemm_gflops=max(numpy_rate, torch_rate),
        numpy_gemm_gflops=numpy_rate,
        torch_gemm_gflops=torch_rate,
        threads=threads,
    )


_measured: list[Ceilings] = []


@pytest.fixture(scope="session")
def ceilings() -> Ceilings:
    """The machine's bandwidth and GEMM ceilings, measured once in this run."""
    if not _measured:
        _measured.append(measure_ceilings())
    return _measured[0]


def pytest_benchmark_update_json(config, benchmarks, output_json):
    if _measured:
        output_json["machine_ceilings"] = asdict(_measured[0])


def pytest_terminal_summary(terminalreporter):
    if _measured:
        c = _measured[0]
        terminalreporter.write_line(
            f"machine ceilings ({c.threads} threads): triad bandwidth {c.bandwidth_gbs:.1f} GB/s, "
            f"float32 GEMM {c.gemm_gflops:.1f} GFLOP/s (numpy {c.numpy_gemm_gflops:.1f}, "
            f"torch {c.torch_gemm_gflops:.1f})"
        )
