"""randla.rsvd and randla.srsi against scikit-learn's randomized_svd and torch.svd_lowrank.

Same float32 matrix (σ_j = 1/j, random orthonormal singular vectors), rank 64, oversampling 10,
5 power iterations for every method (srsi: 6 sweeps = the same 12 products), randla in both
precisions ("mixed": bfloat16 power iterations, float32 finish). Threads are pinned to
``ceilings.threads`` for numpy/scipy (threadpoolctl) and torch (torch.set_num_threads).
extra_info: the excess of the Frobenius error over the optimal rank-64 error (error/optimum − 1,
the optimum from a float64 SVD, computed once per matrix and cached) for the timed call (seed 0)
and its mean and maximum over seeds 0-4 (the random start moves it by about ±1e-4, more than the
methods differ), and the floor:
product flops / ceilings.gemm_gflops (float32), for "mixed" its 10 bfloat16 products at
ceilings.bfloat16_gemm_gflops and 2 float32 ones at the float32 rate.

`test_rsvd_against_torch_alternating` calls randla.rsvd and torch.svd_lowrank in turn, with the
same matrix, settings and threads, so that both medians come from the same minutes of a shared
machine: both run their products on torch.mm, so the ratio compares the algorithms, not the BLAS.
"""

import statistics
import time

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_limits

import randla

RANK, OVERSAMPLE, POWER_ITERS = 64, 10, 5
SHAPES = [(4096, 1024), (4096, 4096)]


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def case(request):
    m, n = request.param
    rng = np.random.default_rng(0)
    left = scipy.linalg.qr(rng.standard_normal((m, n), dtype=np.float32), mode="economic")[0]
    right = scipy.linalg.qr(rng.standard_normal((n, n), dtype=np.float32), mode="economic")[0]
    a = np.ascontiguousarray((left / np.arange(1, n + 1, dtype=np.float32)) @ right.T)
    key = f"randla/optimal_rank{RANK}_error/{m}x{n}"
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    optimum = cache.get(key, None) if cache is not None else None
    if optimum is None:
        sigma = scipy.linalg.svdvals(a.astype(np.float64), check_finite=False)
        optimum = float(np.sqrt(np.sum(sigma[RANK:] ** 2)))
        if cache is not None:
            cache.set(key, optimum)
    return a, optimum


SEEDS = range(5)


def _randla_rsvd(precision):
    def run(a, _, seed=0):
        return randla.rsvd(
            a, RANK, oversample=OVERSAMPLE, power_iters=POWER_ITERS, precision=precision, rng=seed
        )

    return run


def _randla_srsi(precision):
    def run(a, _, seed=0):
        return randla.srsi(
            a, RANK, oversample=OVERSAMPLE, sweeps=POWER_ITERS + 1, precision=precision, rng=seed
        )

    return run


def _sklearn(a, _, seed=0):
    return randomized_svd(a, RANK, n_oversamples=OVERSAMPLE, n_iter=POWER_ITERS, random_state=seed)


def _torch(_, tensor, seed=0):
    torch.manual_seed(seed)
    u, s, v = torch.svd_lowrank(tensor, q=RANK + OVERSAMPLE, niter=POWER_ITERS)
    return u[:, :RANK].numpy(), s[:RANK].numpy(), v[:, :RANK].T.numpy()


METHODS = {
    "randla.rsvd": _randla_rsvd("full"),
    "randla.rsvd mixed": _randla_rsvd("mixed"),
    "randla.srsi": _randla_srsi("full"),
    "randla.srsi mixed": _randla_srsi("mixed"),
    "sklearn.randomized_svd": _sklearn,
    "torch.svd_lowrank": _torch,
}


def _error(a, result):
    if isinstance(result, randla.LowRank):
        approx = result.Q.astype(np.float64) @ result.U.T.astype(np.float64)
    else:
        u, s, vt = (np.asarray(x, dtype=np.float64) for x in result)
        approx = (u * s) @ vt
    return float(np.linalg.norm(a.astype(np.float64) - approx))


@pytest.mark.parametrize("method", list(METHODS))
def test_low_rank(benchmark, ceilings, case, method):
    a, optimum = case
    m, n = a.shape
    benchmark.group = f"randla rank-{RANK} {m}x{n} float32"
    torch.set_num_threads(ceilings.threads)
    tensor = torch.from_numpy(a)
    run = METHODS[method]
    with threadpool_limits(ceilings.threads):
        result = benchmark.pedantic(run, args=(a, tensor), rounds=5, warmup_rounds=1)
        seed_excess = [_error(a, run(a, tensor, seed)) / optimum - 1 for seed in SEEDS]
    products = 2 * POWER_ITERS + 2
    low = products - 2 if method.endswith("mixed") else 0
    product_flops = 2.0 * m * n * (RANK + OVERSAMPLE)
    floor_s = product_flops * (
        (products - low) / (ceilings.gemm_gflops * 1e9)
        + low / (ceilings.bfloat16_gemm_gflops * 1e9)
    )
    benchmark.extra_info.update(
        excess_error=_error(a, result) / optimum - 1,
        excess_error_mean_of_5_seeds=float(np.mean(seed_excess)),
        excess_error_max_of_5_seeds=float(np.max(seed_excess)),
        floor_ms=floor_s * 1e3,
        floor_fraction=floor_s / benchmark.stats.stats.median,
        threads=ceilings.threads,
    )


ALTERNATING_ROUNDS = 9


@pytest.mark.benchmark(group="randla-rsvd-vs-torch-alternating")
def test_rsvd_against_torch_alternating(benchmark, ceilings, case):
    """randla.rsvd (full precision) and torch.svd_lowrank, one call each per round; extra_info
    holds both medians and their ratio."""
    a, _ = case
    torch.set_num_threads(ceilings.threads)
    tensor = torch.from_numpy(a)
    runs = {"randla.rsvd": METHODS["randla.rsvd"], "torch.svd_lowrank": _torch}
    seconds: dict[str, list[float]] = {name: [] for name in runs}

    def one_call_each():
        for name, run in runs.items():
            start = time.perf_counter()
            run(a, tensor)
            seconds[name].append(time.perf_counter() - start)

    with threadpool_limits(ceilings.threads):
        benchmark.pedantic(one_call_each, rounds=ALTERNATING_ROUNDS, warmup_rounds=1)
    medians = {name: statistics.median(times[1:] or times) for name, times in seconds.items()}
    benchmark.extra_info.update(
        randla_rsvd_median_s=medians["randla.rsvd"],
        torch_svd_lowrank_median_s=medians["torch.svd_lowrank"],
        rsvd_vs_torch=medians["randla.rsvd"] / medians["torch.svd_lowrank"],
        threads=ceilings.threads,
    )
