"""compress kernels: bandwidth fraction, top-k against torch.topk, window cost ∝ m·k.

Threads: Numba and torch are pinned to `ceilings.threads` (SMALLSTATE_BENCH_THREADS, default all
cores), the same count the bandwidth ceiling was measured with. Rounds are few for the large case
(3 after a warm-up: it moves 256 MB per call), 30 for the 1M case.
Bandwidth fractions are given against the run's ceiling (`fraction_of_bandwidth`), against a
triad measured right after the kernel (`fraction_of_triad_alongside`) and against a parallel copy
measured right after it (`fraction_of_copy_alongside`: the acceptance ratio of the 4-bit
quantize, at least 0.5, on the native target and with NUMBA_CPU_NAME=haswell); the shared
machine's bandwidth drifts within a run, and the ones measured alongside are the fair ones.
Run: pytest bench/test_bench_compress.py --benchmark-only
"""

import numba
import numpy as np
import pytest
import torch

import compress
from bench.triad import copy_bandwidth_now, triad_bandwidth_now

LENGTHS = {"64M": 1 << 26, "1M": 1 << 20}
D = 16384


@pytest.fixture(scope="module", autouse=True)
def pinned_threads(ceilings):
    numba.set_num_threads(min(ceilings.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(ceilings.threads)


@pytest.fixture(scope="module", params=list(LENGTHS))
def vector(request):
    x = np.random.default_rng(0).standard_normal(LENGTHS[request.param], dtype=np.float32)
    return request.param, x


def run(benchmark, fn, length=LENGTHS["64M"]):
    """Best of 3 rounds for the 64M case (256 MB per call); the 1M case (about 0.1 ms a call)
    takes 30, or the minimum is decided by one interruption on the shared machine."""
    rounds = 3 if length >= LENGTHS["64M"] else 30
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def report(benchmark, ceilings, bytes_moved):
    seconds = benchmark.stats.stats.min
    gbs = bytes_moved / seconds / 1e9
    alongside = triad_bandwidth_now()
    copy = copy_bandwidth_now()
    benchmark.extra_info.update(
        gb_per_s=round(gbs, 2),
        fraction_of_bandwidth=round(gbs / ceilings.bandwidth_gbs, 3),
        triad_alongside_gbs=round(alongside, 1),
        fraction_of_triad_alongside=round(gbs / alongside, 3),
        copy_alongside_gbs=round(copy, 1),
        fraction_of_copy_alongside=round(gbs / copy, 3),
        numba_cpu_name=numba.config.CPU_NAME or "host",
    )


@pytest.mark.benchmark(group="compress-quantize4")
def test_quantize4(benchmark, ceilings, vector):
    name, x = vector
    q = compress.Quantized.empty(x.size, bits=4, bucket=64, bounds_dtype="bfloat16")
    run(
        benchmark,
        lambda: compress.quantize(x, bits=4, bucket=64, out=q, check_finite=False),
        x.size,
    )
    benchmark.extra_info["length"] = name
    report(benchmark, ceilings, x.nbytes + q.nbytes)


@pytest.mark.benchmark(group="compress-dequantize-add")
def test_dequantize_add(benchmark, ceilings, vector):
    name, x = vector
    q = compress.quantize(x, bits=4, bucket=64, bounds_dtype="bfloat16")
    out = np.zeros_like(x)
    run(benchmark, lambda: compress.dequantize(q, out=out, add=True), x.size)
    benchmark.extra_info["length"] = name
    report(benchmark, ceilings, q.nbytes + 2 * out.nbytes)


@pytest.mark.benchmark(group="compress-topk")
def test_topk_blocks(benchmark, ceilings, vector):
    name, x = vector
    out = compress.SparseBlocks.empty(x.size, density=0.01, block_size=D)
    run(
        benchmark,
        lambda: compress.topk_blocks(x, density=0.01, out=out, check_finite=False),
        x.size,
    )
    benchmark.extra_info["length"] = name
    report(benchmark, ceilings, x.nbytes)


@pytest.mark.benchmark(group="compress-topk")
def test_torch_topk_peer(benchmark, ceilings, vector):
    name, x = vector
    view = torch.from_numpy(x).view(-1, D)
    k = compress.block_counts(x.size, density=0.01).k_full
    run(benchmark, lambda: torch.topk(view.abs(), k, dim=1, sorted=False), x.size)
    benchmark.extra_info["length"] = name
    report(benchmark, ceilings, x.nbytes)


@pytest.mark.benchmark(group="compress-fused-ef-topk-requantize")
def test_ef_topk_requantize(benchmark, ceilings, vector):
    name, grad = vector
    error = compress.Quantized.empty(grad.size, bits=4, bucket=64, bounds_dtype="bfloat16")
    window = compress.SparseWindow.empty(grad.size, m=10, density=0.01)
    run(
        benchmark, lambda: compress.ef_topk_requantize(grad, error, window, density=0.01), grad.size
    )
    benchmark.extra_info["length"] = name
    report(benchmark, ceilings, grad.nbytes + 2 * error.nbytes)


# Same m·k (1024 blocks × 164 = 4096 blocks × 41 entries per row), dense length 4× apart.
WINDOW_CASES = {"16M-density1%": (1 << 24, 0.01), "64M-density0.25%": (1 << 26, 0.0025)}


@pytest.mark.benchmark(group="compress-window-adam-apply")
@pytest.mark.parametrize("case", list(WINDOW_CASES))
def test_window_adam_apply_scales_with_mk(benchmark, case):
    length, density = WINDOW_CASES[case]
    rng = np.random.default_rng(1)
    window = compress.SparseWindow.empty(length, m=10, density=density, values_dtype="bfloat16")
    counts = compress.block_counts(length, density=density)
    window.values[...] = rng.integers(0x3C00, 0x3F80, window.values.shape, dtype=np.uint16)
    window.indices[...] = rng.integers(0, D, window.indices.shape, dtype=np.int16)
    param = np.zeros(length, np.float32)
    run(
        benchmark,
        lambda: compress.window_adam_apply(
            window, 20, beta1=0.9, beta2=0.999, eps=1e-8, lr=1e-3, param=param
        ),
    )
    benchmark.extra_info.update(length=length, m_times_k=10 * counts.total_k)
