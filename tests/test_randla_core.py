"""randla against known spectra (ALGORITHMS.md §1 oracles), its API contract and its errors.

Every test that touches arrays runs on each backend: numpy always, CuPy when a CUDA device and
cupy are present (the `gpu`-marked parameter skips with its reason otherwise).
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import randla

ROWS, COLS, RANK = 1000, 700, 64


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy", reason="cupy is not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError as error:
        pytest.skip(f"no usable CUDA device: {error}")
    return cupy


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    return np if request.param == "numpy" else _cupy_or_skip()


def host(x):
    return x.get() if type(x).__module__.startswith("cupy") else np.asarray(x)


def _orthonormal(rows, columns, seed):
    gaussian = np.random.default_rng(seed).standard_normal((rows, columns))
    return scipy.linalg.qr(gaussian, mode="economic")[0]


SPECTRA = {
    "harmonic": lambda k: 1.0 / np.arange(1, k + 1),
    "geometric": lambda k: 0.5 ** np.arange(1, k + 1),
    "rank64_noise": lambda k: np.where(np.arange(k) < RANK, 1.0, 1e-3),
}


def known_matrix(spectrum, rows=ROWS, cols=COLS, seed=0):
    """U diag(σ) Vᵀ (float64) with random orthonormal U, V, and its singular values."""
    sigma = SPECTRA[spectrum](min(rows, cols)) if isinstance(spectrum, str) else spectrum
    left, right = _orthonormal(rows, sigma.size, seed), _orthonormal(cols, sigma.size, seed + 1)
    return (left * sigma) @ right.T, sigma


def optimal_errors(sigma):
    """Relative Frobenius error of the best rank-j approximation, j = 1..len(sigma)."""
    tail = np.cumsum((sigma**2)[::-1])[::-1]
    return np.sqrt(np.append(tail[1:], 0.0) / tail[0])


@pytest.fixture(scope="module", params=list(SPECTRA))
def spectrum_case(request):
    return request.param, *known_matrix(request.param)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rsvd_reaches_optimal_rank64_error(xp, spectrum_case, dtype):
    _, a64, sigma = spectrum_case
    a = a64.astype(dtype)
    u, s, vt = randla.rsvd(xp.asarray(a), RANK, rng=1)
    assert u.dtype == s.dtype == vt.dtype == dtype
    error = np.linalg.norm(a.astype(np.float64) - (host(u) * host(s)) @ host(vt))
    optimum = math.sqrt(np.sum(sigma[RANK:] ** 2))
    slack = 100 * np.finfo(dtype).eps * np.linalg.norm(sigma)
    assert error <= 1.001 * optimum + slack


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_srsi_prefixes_track_truncated_svd(xp, spectrum_case, dtype):
    _, a64, sigma = spectrum_case
    factors = randla.srsi(xp.asarray(a64.astype(dtype)), RANK, rng=2)
    optimum = optimal_errors(sigma)[:RANK]
    floor = randla.identity_floor(dtype)
    resolved = factors.resolved
    assert resolved[:8].all()
    assert np.all(factors.prefix_errors[~resolved] == floor)
    assert np.all(optimum[~resolved] < 1.5 * floor)
    # S-RSI has no final small SVD, so prefix j converges like (σ_{j+1}/σ_j)^(2·sweeps): with
    # σ_j = 1/j the small-j prefixes (gap 0.8 at j = 4) stay a few percent above the optimum.
    # Within 10x of the floor the identity is resolved but not yet accurate to 2%.
    clear = resolved & (optimum > 10 * floor)
    excess = factors.prefix_errors[clear] / optimum[clear] - 1.0
    assert np.all(np.abs(excess) < 0.05)
    assert np.mean(np.abs(excess) < 0.02) >= 0.95


def test_identity_equals_explicit_error_float64(xp):
    a, _ = known_matrix("harmonic")
    factors = randla.srsi(xp.asarray(a), RANK, rng=3)
    q, u = host(factors.Q), host(factors.U)
    for j in (1, 7, 32, RANK):
        explicit = np.linalg.norm(a - q[:, :j] @ u[:, :j].T) / np.linalg.norm(a)
        assert factors.prefix_errors[j - 1] == pytest.approx(explicit, rel=1e-8)


def test_probe_estimator_certifies_where_identity_cannot(xp):
    rows, cols, rank, target = 1000, 400, 20, 1e-5
    noise = target * math.sqrt(rank) / math.sqrt(cols - rank)
    sigma = np.where(np.arange(cols) < rank, 1.0, noise)
    a = known_matrix(sigma, rows, cols)[0].astype(np.float32)
    factors = randla.srsi(xp.asarray(a), rank, rng=4)
    q, u = host(factors.Q).astype(np.float64), host(factors.U).astype(np.float64)
    true = np.linalg.norm(a.astype(np.float64) - q @ u.T)
    assert true / np.linalg.norm(a) < 3 * target
    raw_identity = 1.0 - np.sum(u**2) / np.sum(a.astype(np.float64) ** 2)
    assert abs(raw_identity - (true / np.linalg.norm(a)) ** 2) > 100 * target**2
    assert not factors.resolved[-1]
    assert factors.prefix_errors[-1] > 100 * true / np.linalg.norm(a)
    estimate = randla.estimate_error(xp.asarray(a), factors.Q, factors.U, rng=5)
    assert true / 2 <= estimate <= 2 * true


@pytest.fixture(scope="module")
def rank20_matrix():
    """Numerical rank 20 at tol 1e-3: e(19) ≈ 0.22, e(20) ≈ 5e-5."""
    sigma = np.where(np.arange(300) < 20, 1.0, 1e-5)
    return known_matrix(sigma, 1000, 300)[0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k_min", [1, 24])
def test_adaptive_step_settles_near_smallest_rank(xp, rank20_matrix, dtype, k_min):
    a, k_max, delta = xp.asarray(rank20_matrix.astype(dtype)), 64, 4
    rank, seen = k_max, []
    for call in range(16):
        result = randla.adaptive_srsi(
            a, rank=rank, k_min=k_min, k_max=k_max, delta=delta, rng=[7, call]
        )
        assert result.factors.rank == rank and k_min <= result.next_rank <= k_max
        assert (result.error <= 1e-3) == (rank >= 20)
        rank = result.next_rank
        seen.append(rank)
    assert all(abs(r - max(20, k_min)) <= delta for r in seen[-4:])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("start", [64, 10])
def test_adaptive_prefix_picks_smallest_rank(xp, rank20_matrix, dtype, start):
    a = xp.asarray(rank20_matrix.astype(dtype))
    result = randla.adaptive_srsi(a, rank=start, k_max=64, strategy="prefix", rng=8)
    assert result.factors.rank == result.next_rank == 20
    assert result.error <= 1e-3
    bounded = randla.adaptive_srsi(
        a, rank=max(start, 30), k_min=30, k_max=64, strategy="prefix", rng=8
    )
    assert bounded.next_rank == 30


def test_adaptive_rank_capped_at_k_max_when_tol_unreachable(xp, rank20_matrix):
    a = xp.asarray(rank20_matrix)
    for strategy in ("step", "prefix"):
        result = randla.adaptive_srsi(a, rank=63, k_max=64, tol=1e-9, strategy=strategy, rng=9)
        assert result.next_rank == 64 and result.error > 1e-9


def test_given_total_squares_replaces_the_pass_and_is_trusted(xp, rank20_matrix):
    a = xp.asarray(rank20_matrix)
    exact = float(np.sum(host(a) ** 2))
    options = dict(rank=20, k_max=64, rng=[5, 1])
    computed = randla.adaptive_srsi(a, **options)
    for hint in (exact, math.nan, math.inf):  # non-finite hints: computed as without one
        given = randla.adaptive_srsi(a, **options, total_squares=hint)
        np.testing.assert_array_equal(host(given.factors.U), host(computed.factors.U))
        # The hint and the kernel's float64 pass sum in different orders (the pass's order
        # follows Numba's threading layer); ‖A‖² − Σ‖u‖² cancels that ~1e-15 relative difference
        # up to err² ≈ 1.4e-9 at the last prefix here, so rtol 1e-4 bounds it with room.
        np.testing.assert_allclose(
            given.factors.prefix_errors, computed.factors.prefix_errors, rtol=1e-4
        )
        assert given.next_rank == computed.next_rank
    # A wrong (here 4x too large) total is used as given: a factorization that captures all of A
    # then seems to miss 3/4 of it, and the step strategy grows the rank.
    inflated = randla.adaptive_srsi(a, **options, total_squares=4 * exact)
    assert inflated.factors.prefix_errors[-1] == pytest.approx(math.sqrt(0.75), rel=1e-3)
    assert inflated.next_rank > computed.next_rank
    single = randla.srsi(a, 20, rng=3, total_squares=4 * exact)
    assert single.prefix_errors[-1] == pytest.approx(math.sqrt(0.75), rel=1e-3)


def test_float32_path_stays_float32(xp):
    a = xp.asarray(known_matrix("harmonic", 600, 300)[0].astype(np.float32))
    factors = randla.srsi(a, 16, rng=10)
    assert factors.Q.dtype == factors.U.dtype == np.float32
    q = randla.orthonormalize(a[:, :40], method="qr")
    # LAPACK's Householder Q in float64: the float32 one equals it to float32 rounding
    reference = scipy.linalg.qr(host(a[:, :40]).astype(np.float64), mode="economic")[0]
    assert q.dtype == np.float32
    np.testing.assert_allclose(host(q), reference, atol=2e-6)
    u, s, vt = randla.rsvd(a, 16, rng=10)
    assert u.dtype == s.dtype == vt.dtype == np.float32
    assert randla.subspace_iteration(a, factors.Q).dtype == np.float32


def test_same_seed_same_result(xp):
    a = xp.asarray(known_matrix("harmonic", 600, 300)[0])
    for seed in (11, [11, 3, 5]):
        first, second = randla.srsi(a, 8, rng=seed), randla.srsi(a, 8, rng=seed)
        np.testing.assert_array_equal(host(first.Q), host(second.Q))
        np.testing.assert_array_equal(
            randla.rsvd(a, 8, rng=seed)[0], randla.rsvd(a, 8, rng=seed)[0]
        )
    assert not np.array_equal(host(randla.srsi(a, 8, rng=12).Q), host(first.Q))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_draws_are_standard_normal_and_a_function_of_the_generator_state(dtype):
    from randla import _backend

    draws = _backend.standard_normal(np.random.default_rng(4), (400, 250), dtype, np)
    assert draws.dtype == dtype and draws.shape == (400, 250) and draws.flags.c_contiguous
    values = draws.astype(np.float64).ravel()
    size = values.size
    assert abs(values.mean()) < 5 / math.sqrt(size)  # mean 0, 5 standard errors
    assert abs(values.var() - 1) < 5 * math.sqrt(2 / size)  # variance 1 (sd of s² is √(2/N))
    assert abs(np.mean(np.abs(values) < 1) - 0.682689) < 5 * math.sqrt(0.2166 / size)
    generator = np.random.default_rng(4)
    first = _backend.standard_normal(generator, (400, 250), dtype, np)
    np.testing.assert_array_equal(first, draws)
    second = _backend.standard_normal(generator, (400, 250), dtype, np)
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 5 / math.sqrt(size)


@pytest.mark.parametrize("method", ["qr", "cholqr2"])
def test_orthonormalize_is_orthonormal_and_spans(xp, method):
    y = np.random.default_rng(13).standard_normal((1000, 40)) @ np.diag(np.logspace(0, 2, 40))
    for dtype in (np.float32, np.float64):
        q = host(randla.orthonormalize(xp.asarray(y.astype(dtype)), method=method))
        tolerance = 50 * np.finfo(dtype).eps * math.sqrt(40)
        assert np.abs(q.T @ q - np.eye(40)).max() < tolerance
        residual = y - q @ (q.T @ y)
        assert np.linalg.norm(residual) < 100 * np.finfo(dtype).eps * np.linalg.norm(y) * 40


def test_lu_normalizer_spans_and_is_bounded(xp):
    y = np.random.default_rng(14).standard_normal((500, 20))
    pl = host(randla.orthonormalize(xp.asarray(y), method="lu"))
    assert np.abs(pl).max() <= 1.0 + 1e-12
    coefficients = np.linalg.lstsq(pl, y, rcond=None)[0]
    assert np.linalg.norm(y - pl @ coefficients) < 1e-10 * np.linalg.norm(y)


def test_cholqr2_falls_back_to_qr_on_rank_deficient_input(xp):
    rng = np.random.default_rng(15)
    y = rng.standard_normal((800, 10)) @ rng.standard_normal((10, 30))
    q = host(randla.orthonormalize(xp.asarray(y), method="cholqr2"))
    assert np.all(np.isfinite(q))
    assert np.abs(q.T @ q - np.eye(30)).max() < 1e-12
    assert np.linalg.norm(y - q @ (q.T @ y)) < 1e-12 * np.linalg.norm(y)


@pytest.mark.parametrize("orth", ["qr", "cholqr2", "lu"])
def test_every_orth_method_serves_the_algorithms(xp, orth):
    a64, sigma = known_matrix("harmonic", 800, 400)
    a = xp.asarray(a64)
    factors = randla.srsi(a, 16, orth=orth, rng=16)
    q = host(factors.Q)
    assert np.abs(q.T @ q - np.eye(16)).max() < 1e-12
    u, s, vt = randla.rsvd(a, 16, orth=orth, rng=16)
    np.testing.assert_allclose(host(s), sigma[:16], rtol=1e-3)
    q = host(randla.subspace_iteration(a, factors.Q, iters=2, orth=orth))
    assert np.abs(q.T @ q - np.eye(16)).max() < 1e-12


def test_rsvd_signs_deterministic_and_wide_input(xp):
    a = known_matrix("harmonic", 300, 700)[0]
    u, s, vt = (host(x) for x in randla.rsvd(xp.asarray(a), 10, rng=17))
    assert u.shape == (300, 10) and vt.shape == (10, 700)
    biggest = u[np.argmax(np.abs(u), axis=0), np.arange(10)]
    assert np.all(biggest > 0)
    assert np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(s, 1.0 / np.arange(1, 11), rtol=1e-6)


def test_out_buffers_receive_the_factors(xp):
    a = xp.asarray(known_matrix("harmonic", 500, 200)[0])
    q_buf, u_buf = xp.zeros((500, 32)), xp.zeros((200, 32))
    factors = randla.srsi(a, 12, rng=18, out=(q_buf, u_buf))
    reference = randla.srsi(a, 12, rng=18)
    np.testing.assert_array_equal(host(q_buf[:, :12]), host(reference.Q))
    np.testing.assert_array_equal(host(u_buf[:, :12]), host(reference.U))
    assert np.all(host(q_buf[:, 12:]) == 0)
    q_buf[0, 0] = 42.0
    assert float(factors.Q[0, 0]) == 42.0


def test_lowrank_container(xp):
    a64 = known_matrix("harmonic", 500, 200)[0]
    factors = randla.srsi(xp.asarray(a64), 12, rng=19)
    assert factors.rank == 12 and factors.nbytes == (500 + 200) * 12 * 8
    head = factors.truncate(5)
    assert head.rank == 5 and head.prefix_errors.shape == (5,)
    dense = host(head.to_dense())
    assert np.linalg.norm(a64 - dense) / np.linalg.norm(a64) == pytest.approx(
        head.prefix_errors[-1], rel=1e-8
    )
    with pytest.raises(ValueError, match="j must be"):
        factors.truncate(13)


def test_torch_tensors_in_torch_tensors_out():
    torch = pytest.importorskip("torch")
    a64 = known_matrix("harmonic", 400, 200)[0]
    tensor = torch.tensor(a64, dtype=torch.float32, requires_grad=True)
    u, s, vt = randla.rsvd(tensor, 8, rng=20)
    assert all(isinstance(x, torch.Tensor) and x.dtype == torch.float32 for x in (u, s, vt))
    reference = randla.rsvd(a64.astype(np.float32), 8, rng=20)
    np.testing.assert_array_equal(u.numpy(), reference[0])
    factors = randla.srsi(tensor, 8, rng=20)
    assert isinstance(factors.Q, torch.Tensor) and isinstance(factors.to_dense(), torch.Tensor)
    q = randla.orthonormalize(tensor[:, :10], method="cholqr2")
    assert isinstance(q, torch.Tensor) and q.shape == (400, 10)
    assert isinstance(randla.subspace_iteration(tensor, factors.Q), torch.Tensor)
    assert randla.estimate_error(tensor, factors.Q, factors.U) > 0
    result = randla.adaptive_srsi(tensor.double(), rank=8, k_max=16, rng=20)
    assert isinstance(result.factors.U, torch.Tensor) and result.factors.U.dtype == torch.float64
    with pytest.raises(TypeError, match="A must be float32 or float64"):
        randla.rsvd(tensor.half(), 4)


def _bad_calls(xp):
    a = xp.asarray(np.random.default_rng(21).standard_normal((40, 30)))
    with_nan = a.copy()
    with_nan[3, 4] = np.nan
    with_inf = a.copy()
    with_inf[0, 0] = np.inf
    return [
        (ValueError, "A must be 2-D", lambda: randla.srsi(a[0], 2)),
        (ValueError, "A must have non-empty", lambda: randla.rsvd(a[:0], 2)),
        (ValueError, r"rank must be in \[1, 30\], got 0", lambda: randla.srsi(a, 0)),
        (ValueError, r"rank must be in \[1, 30\], got 31", lambda: randla.rsvd(a, 31)),
        (TypeError, "rank must be an int", lambda: randla.rsvd(a, 2.5)),
        (ValueError, "oversample must be >= 0", lambda: randla.srsi(a, 2, oversample=-1)),
        (ValueError, "sweeps must be >= 1", lambda: randla.srsi(a, 2, sweeps=0)),
        (ValueError, "power_iters must be", lambda: randla.rsvd(a, 2, power_iters=-1)),
        (
            TypeError,
            "A must have dtype float32 or float64, got int",
            lambda: randla.srsi(xp.ones((5, 5), dtype=int), 2),
        ),
        (TypeError, "A must have dtype .* got complex", lambda: randla.rsvd(a + 1j, 2)),
        (TypeError, "A must have dtype .* got bool", lambda: randla.rsvd(a > 0, 2)),
        (ValueError, "A must be finite", lambda: randla.srsi(with_nan, 2)),
        (ValueError, "A must be finite", lambda: randla.rsvd(with_inf, 2)),
        (ValueError, "orth must be one of", lambda: randla.srsi(a, 2, orth="svd")),
        (ValueError, "precision must be one of", lambda: randla.rsvd(a, 2, precision="half")),
        (ValueError, "precision='mixed'", lambda: randla.srsi(a, 2, precision="mixed")),
        (ValueError, "method must be one of", lambda: randla.orthonormalize(a, method="x")),
        (ValueError, "Y must be a 2-D block", lambda: randla.orthonormalize(a.T)),
        (TypeError, "rng must be None, an int", lambda: randla.srsi(a, 2, rng="seed")),
        (TypeError, "rng must be", lambda: randla.rsvd(a, 2, rng=1.5)),
        (
            ValueError,
            r"k_max must be in \[1, 30\]",
            lambda: randla.adaptive_srsi(a, rank=2, k_max=31),
        ),
        (
            ValueError,
            r"rank must be in \[3, 10\]",
            lambda: randla.adaptive_srsi(a, rank=2, k_min=3, k_max=10),
        ),
        (
            ValueError,
            "tol must be a float > 0",
            lambda: randla.adaptive_srsi(a, rank=2, k_max=10, tol=0),
        ),
        (
            ValueError,
            "strategy must be one of",
            lambda: randla.adaptive_srsi(a, rank=2, k_max=10, strategy="grow"),
        ),
        (
            ValueError,
            "delta must be >= 1",
            lambda: randla.adaptive_srsi(a, rank=2, k_max=10, delta=0),
        ),
        (
            ValueError,
            r"out\[0\] must have shape \(40, >= 5\)",
            lambda: randla.srsi(a, 5, out=(xp.zeros((40, 4)), xp.zeros((30, 5)))),
        ),
        (
            TypeError,
            r"out\[1\] must have A's dtype",
            lambda: randla.srsi(a, 5, out=(xp.zeros((40, 5)), xp.zeros((30, 5), dtype=np.float32))),
        ),
        (ValueError, "Q0 must have shape", lambda: randla.subspace_iteration(a, a[:5])),
        (
            ValueError,
            "probes must be >= 1",
            lambda: randla.estimate_error(a, a[:, :3], a[:30, :3], probes=0),
        ),
        (ValueError, "U must have shape", lambda: randla.estimate_error(a, a[:, :3], a[:, :3])),
        (TypeError, "A must be a numpy array", lambda: randla.srsi([[1.0, 2.0]], 1)),
        (
            ValueError,
            "total_squares must be a float >= 0 or None, got -1.0",
            lambda: randla.srsi(a, 2, total_squares=-1.0),
        ),
        (
            ValueError,
            "total_squares must be a float >= 0 or None, got 'big'",
            lambda: randla.adaptive_srsi(a, rank=2, k_max=10, total_squares="big"),
        ),
    ]


def test_validation_errors_name_the_argument(xp):
    for error, message, call in _bad_calls(xp):
        with pytest.raises(error, match=message):
            call()


@pytest.mark.parametrize("scale", [1e160, 1e-170])
def test_estimate_error_far_from_unit_scale_in_float64(scale):
    a = np.random.default_rng(0).standard_normal((50, 40))
    factors = randla.srsi(a, 5, rng=0)
    unit = randla.estimate_error(a, factors.Q, factors.U, rng=0)
    scaled = randla.srsi(a * scale, 5, rng=0)
    far = randla.estimate_error(a * scale, scaled.Q, scaled.U, rng=0)
    assert math.isfinite(far) and far > 0
    assert far / scale == pytest.approx(unit, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lu_normalization_reaches_the_qr_error(dtype):
    # σ_i = 0.5^i: one LU per A·Aᵀ pair lost every direction below sqrt(eps)·σ1.
    rng = np.random.default_rng(0)
    left = np.linalg.qr(rng.standard_normal((500, 300)))[0]
    right = np.linalg.qr(rng.standard_normal((300, 300)))[0]
    a = ((left * 0.5 ** np.arange(300)) @ right.T).astype(dtype)
    rank = 20 if dtype == np.float32 else 30
    errors = {}
    for orth in ("qr", "lu"):
        f = randla.srsi(a, rank, rng=0, orth=orth)
        errors[orth] = np.linalg.norm(a.astype(np.float64) - f.Q.astype(np.float64) @ f.U.T)
        q = randla.subspace_iteration(
            a, np.linalg.qr(rng.standard_normal((500, rank)))[0].astype(dtype), iters=6, orth=orth
        )
        errors[orth + "-si"] = np.linalg.norm(a - q @ (q.T @ a))
    assert errors["lu"] <= 1.5 * errors["qr"]
    assert errors["lu-si"] <= 1.5 * errors["qr-si"]


def test_rsvd_of_a_float32_matrix_near_the_largest_float():
    g = np.random.default_rng(0).standard_normal((400, 300))
    a = (g / np.linalg.norm(g) * 0.9 * np.finfo(np.float32).max).astype(np.float32)
    u, s, vt = randla.rsvd(a, 5, rng=0)
    exact = scipy.linalg.svdvals(a.astype(np.float64))[:5]
    assert np.all(np.isfinite(s)) and s.dtype == np.float32
    np.testing.assert_allclose(s, exact, rtol=0.05)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself
def test_array_subclasses():
    m = np.asmatrix(np.random.default_rng(0).standard_normal((40, 30)))
    u, s, vt = randla.rsvd(m, 3, rng=0)
    assert type(u) is np.ndarray and u.shape == (40, 3)
    with pytest.raises(TypeError, match="A must be a plain array, got a masked array"):
        randla.srsi(np.ma.masked_array(np.ones((4, 4))), 1)
    with pytest.raises(TypeError, match="A must be a dense"):
        randla.rsvd(torch.eye(4).to_sparse(), 1)


def test_identity_floor_takes_torch_dtypes_and_rng_takes_int_arrays():
    assert randla.identity_floor(torch.float32) == randla.identity_floor(np.float32)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        randla.identity_floor(torch.int32)
    a = np.random.default_rng(0).standard_normal((30, 20))
    np.testing.assert_array_equal(
        randla.srsi(a, 3, rng=np.array([1, 2])).Q, randla.srsi(a, 3, rng=[1, 2]).Q
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(768, 6), (300, 69), (40, 40), (5, 1), (3, 7)])
def test_qr_on_torchs_lapack_equals_scipys_qr(dtype, shape):
    """`_backend.qr_q` runs geqrf/orgqr through torch (torch's LAPACK and thread pool): the Q of
    scipy.linalg.qr (the same Householder convention, so the same signs) to rounding."""
    from randla import _backend

    y = np.asfortranarray(np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype))
    expected = scipy.linalg.qr(y.astype(np.float64), mode="economic")[0]
    q = _backend.qr_q(y.copy(order="F"))
    assert q.dtype == dtype and q.shape == expected.shape
    np.testing.assert_allclose(q, expected, atol=50 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(768, 6), (300, 69), (40, 40), (5, 1), (3, 7)])
def test_lu_on_torchs_lapack_gives_the_row_permuted_lower_factor(dtype, shape):
    """`_backend.lu_pl` (torch's getrf, LAPACK's row swaps applied to L in one gather) returns
    P·L of y = P L U: it equals scipy's permute_l factor to rounding, and P·L·U = y."""
    from randla import _backend

    y = np.asfortranarray(np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype))
    expected, upper = scipy.linalg.lu(y.astype(np.float64), permute_l=True)
    pl = _backend.lu_pl(y.copy(order="F"))
    assert pl.dtype == dtype and pl.shape == expected.shape
    tolerance = 100 * np.finfo(dtype).eps
    np.testing.assert_allclose(pl, expected, atol=tolerance)
    np.testing.assert_allclose(pl.astype(np.float64) @ upper, y, atol=tolerance * 10)


def test_draws_do_not_follow_torchs_default_device():
    """float32 draws come from torch.randn: a user's torch.set_default_device must not move
    them off the CPU (here the meta device, which holds no data)."""
    a = known_matrix("harmonic", 300, 200)[0].astype(np.float32)
    expected = randla.srsi(a, 5, rng=1).Q
    torch.set_default_device("meta")
    try:
        result = randla.srsi(a, 5, rng=1).Q
    finally:
        torch.set_default_device(None)
    np.testing.assert_array_equal(result, expected)
