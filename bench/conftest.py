"""Machine ceilings measured once per benchmark run.

Every kernel benchmark reports its fraction of two ceilings measured in the same run, on the
same thread count: the memory bandwidth of a STREAM-style triad (Numba, parallel) and the float32
GEMM rate (the best of numpy's and torch's BLAS on a square product); torch's bfloat16 GEMM rate
is the ceiling of randla's ``precision="mixed"`` products. The ceilings go into the
pytest-benchmark JSON (`machine_ceilings`) and the terminal summary.
"""

import os
from dataclasses import asdict, dataclass

import numba
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from bench.triad import best_seconds, triad_bandwidth_now

BENCH_THREADS = int(os.environ.get("SMALLSTATE_BENCH_THREADS", os.cpu_count() or 1))
GEMM_SIZE = 2048


@dataclass(frozen=True)
class Ceilings:
    bandwidth_gbs: float
    gemm_gflops: float
    numpy_gemm_gflops: float
    torch_gemm_gflops: float
    bfloat16_gemm_gflops: float
    threads: int


def measure_ceilings(threads: int = BENCH_THREADS) -> Ceilings:
    """Triad bandwidth (12 bytes moved per element, the STREAM convention) and sgemm rate."""
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    bandwidth = triad_bandwidth_now()
    rng = np.random.default_rng(0)

    x = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    y = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    out = np.empty_like(x)
    flops = 2.0 * GEMM_SIZE**3
    with threadpool_limits(threads):
        np.matmul(x, y, out=out)
        numpy_rate = flops / best_seconds(lambda: np.matmul(x, y, out=out), 3) / 1e9
    tx, ty, tout = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(out)
    torch.mm(tx, ty, out=tout)
    torch_rate = flops / best_seconds(lambda: torch.mm(tx, ty, out=tout), 3) / 1e9
    bx, by = tx.to(torch.bfloat16), ty.to(torch.bfloat16)
    bout = torch.mm(bx, by)
    bfloat16_rate = flops / best_seconds(lambda: torch.mm(bx, by, out=bout), 3) / 1e9
    return Ceilings(
        bandwidth_gbs=bandwidth,
        gemm_gflops=max(numpy_rate, torch_rate),
        numpy_gemm_gflops=numpy_rate,
        torch_gemm_gflops=torch_rate,
        bfloat16_gemm_gflops=bfloat16_rate,
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
            f"torch {c.torch_gemm_gflops:.1f}), bfloat16 GEMM (torch) "
            f"{c.bfloat16_gemm_gflops:.1f} GFLOP/s"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_benchmark_generate_json(config, benchmarks, include_data, machine_info, commit_info):
    """Leave out benchmarks that recorded no timing (a test skipped or stopped inside
    `benchmark.pedantic`): pytest-benchmark would otherwise fail on them and write no JSON for
    the whole session."""
    benchmarks[:] = [bench for bench in benchmarks if bench.stats.data]
    yield
