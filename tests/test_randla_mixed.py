"""precision="mixed": bfloat16 power iterations with a float32 finish, as accurate as "full".

The oracles are those of test_randla_core (optimal rank-64 error, prefix errors against the
truncated SVD, the adaptive rank) on the same known spectra, plus the structure of the
computation: which products run in bfloat16, and that nothing else changes.
"""

import math

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

import randla
from tests.test_randla_core import RANK, known_matrix, optimal_errors

SPECTRA = ["harmonic", "geometric", "rank64_noise"]


@pytest.fixture(scope="module", params=SPECTRA)
def case(request):
    a64, sigma = known_matrix(request.param)
    return a64.astype(np.float32), a64, sigma


def _rsvd_error(a64, result):
    u, s, vt = (np.asarray(x, dtype=np.float64) for x in result)
    return float(np.linalg.norm(a64 - (u * s) @ vt))


def test_mixed_rsvd_reaches_the_optimal_error_like_full(case):
    a, a64, sigma = case
    optimum = math.sqrt(np.sum(sigma[RANK:] ** 2))
    slack = 100 * np.finfo(np.float32).eps * np.linalg.norm(sigma)
    full = _rsvd_error(a64, randla.rsvd(a, RANK, power_iters=5, rng=1))
    mixed_result = randla.rsvd(a, RANK, power_iters=5, precision="mixed", rng=1)
    assert all(x.dtype == np.float32 for x in mixed_result)
    mixed = _rsvd_error(a64, mixed_result)
    assert mixed <= 1.001 * optimum + slack
    assert mixed <= full * (1 + 1e-4) + slack


def test_mixed_srsi_prefixes_track_truncated_svd(case):
    a, _, sigma = case
    full = randla.srsi(a, RANK, rng=2)
    mixed = randla.srsi(a, RANK, precision="mixed", rng=2)
    optimum = optimal_errors(sigma)[:RANK]
    clear = mixed.resolved & (optimum > 10 * randla.identity_floor(np.float32))
    assert mixed.resolved[:8].all()
    excess = mixed.prefix_errors[clear] / optimum[clear] - 1.0
    assert np.all(np.abs(excess) < 0.05)
    assert np.mean(np.abs(excess) < 0.02) >= 0.95
    both = clear & full.resolved  # within 10x of the floor, float32 rounding of the identity
    assert np.allclose(mixed.prefix_errors[both], full.prefix_errors[both], rtol=1e-3)


def test_mixed_adaptive_rank_settles_like_full():
    sigma = np.concatenate([np.ones(20), np.full(280, 1e-5)])
    a = known_matrix(sigma, rows=500, cols=300, seed=5)[0].astype(np.float32)
    ranks = {}
    for precision in ("full", "mixed"):
        rank = 64
        for step in range(40):
            result = randla.adaptive_srsi(
                a, rank=rank, k_max=64, tol=1e-3, precision=precision, rng=step
            )
            rank = result.next_rank
        ranks[precision] = rank
    assert abs(ranks["mixed"] - ranks["full"]) <= 2
    assert 19 <= ranks["mixed"] <= 22


@pytest.mark.parametrize("shape", [(600, 200), (200, 600)])
def test_all_products_but_the_last_sweep_run_in_bfloat16(bfloat16_products, shape):
    a = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    calls = bfloat16_products
    randla.rsvd(a, 10, power_iters=3, precision="mixed", rng=0)
    assert calls == [False, True] * 3  # A·Ω, then (Aᵀ·, A·)×3 but the last A· and B = QᵀA
    calls.clear()
    randla.srsi(a, 10, sweeps=4, precision="mixed", rng=0)
    assert calls == [False, True] * 3
    calls.clear()
    # Nothing left for bfloat16: identical to "full".
    assert np.array_equal(
        randla.srsi(a, 10, sweeps=1, precision="mixed", rng=0).U,
        randla.srsi(a, 10, sweeps=1, rng=0).U,
    )
    for x, y in zip(
        randla.rsvd(a, 10, power_iters=0, precision="mixed", rng=0),
        randla.rsvd(a, 10, power_iters=0, rng=0),
        strict=True,
    ):
        assert np.array_equal(x, y)
    assert calls == []


def test_mixed_restores_thread_limits_and_takes_tensors():
    before = [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()]
    a = torch.from_numpy(np.random.default_rng(4).standard_normal((300, 120), dtype=np.float32))
    u, s, vt = randla.rsvd(a, 8, precision="mixed", rng=0)
    assert isinstance(u, torch.Tensor) and u.dtype == torch.float32
    factors = randla.srsi(a, 8, precision="mixed", rng=0)
    assert isinstance(factors.Q, torch.Tensor)
    after = [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()]
    assert after == before


def test_mixed_scales_matrices_far_from_unit_norm():
    a, _ = known_matrix("harmonic", rows=300, cols=200)
    for scale in (1e30, 1e-30):
        scaled = (a * scale).astype(np.float32)
        u, s, vt = randla.rsvd(scaled, 10, precision="mixed", rng=0)
        assert np.all(np.isfinite(s))
        np.testing.assert_allclose(s / scale, 1.0 / np.arange(1, 11), rtol=1e-3)
