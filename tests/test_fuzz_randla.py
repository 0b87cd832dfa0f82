"""Property-based fuzzing of randla's public functions (hypothesis).

Every generated call either works — finite output, orthonormal Q, errors in [0, 1], the caller's
array kind and dtype back — or raises ValueError/TypeError whose message names the bad argument.
Inputs cover numpy and torch, float16/32/64, bfloat16, ints, bool and complex dtypes, empty,
1×1, 1×n, n×1 and very wide/tall shapes, ±0, denormals, NaN and ±Inf.

Magnitudes of valid inputs span 1e±30 (float32-safe): srsi/subspace_iteration used to overflow
outside about 1e±19 (fixed; the regression tests at the bottom keep it so), as were the missing
finite checks of Y/Q0/Q/U, the rng message and the negative-stride views of subspace_iteration
and estimate_error.
Run with `--hypothesis-show-statistics` to see the number of cases per function.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import randla

# Fixed examples by default (a stable suite); SMALLSTATE_FUZZ_EXAMPLES=N explores N fresh ones.
DEEP = os.environ.get("SMALLSTATE_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(DEEP or 30),
    derandomize=DEEP is None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FLOATS = (np.float32, np.float64)
BAD_DTYPES = (np.float16, np.int32, np.int64, np.bool_, np.complex64, np.uint8)
SPECIALS = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}
HARMLESS = {"zero": 0.0, "-zero": -0.0, "denormal": 1e-310, "tiny": 1e-30}
SHAPES = st.one_of(
    st.tuples(st.integers(1, 10), st.integers(1, 10)),
    st.sampled_from([(1, 1), (1, 64), (64, 1), (2, 200), (200, 2), (0, 4), (4, 0)]),
)


def tolerance(dtype) -> float:
    return 5e-4 if np.dtype(dtype) == np.float32 else 1e-10


@st.composite
def matrices(draw, shapes=SHAPES, allow_bad=True):
    """(array, problem) where problem is None for a valid input, else the expected exception."""
    shape = draw(shapes)
    bad_dtype = allow_bad and draw(st.booleans()) and draw(st.booleans())
    dtype = draw(st.sampled_from(BAD_DTYPES if bad_dtype else FLOATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.integers(-30, 30))
    values = rng.standard_normal(shape) * scale
    if draw(st.booleans()) and values.size:  # low rank
        k = draw(st.integers(1, max(1, min(shape))))
        values = rng.standard_normal((shape[0], k)) @ rng.standard_normal((k, shape[1])) * scale
    special = draw(st.sampled_from([None, *HARMLESS, *(SPECIALS if allow_bad else ())]))
    if special is not None and values.size:
        where = tuple(draw(st.integers(0, s - 1)) for s in shape)
        values[where] = {**SPECIALS, **HARMLESS}[special]
    if np.dtype(dtype).kind == "c":
        array = values.astype(dtype)
    else:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            array = values.astype(dtype)
    if draw(st.booleans()):  # torch input (plus bfloat16, which numpy lacks)
        array = torch.from_numpy(np.ascontiguousarray(array))
        if allow_bad and dtype == np.float16 and draw(st.booleans()):
            array = array.to(torch.bfloat16)
    if draw(st.booleans()) and array.ndim == 2:
        array = array.T.T if isinstance(array, torch.Tensor) else np.asfortranarray(array)
    if bad_dtype:
        problem = (TypeError, ValueError) if 0 in shape else TypeError
    elif 0 in shape:
        problem = ValueError
    elif special in SPECIALS:
        problem = ValueError
    else:
        problem = None
    return array, problem


def as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    return np.asarray(x)


def assert_same_kind(result, source) -> None:
    assert type(result) is type(source)
    assert as_numpy(result).dtype == as_numpy(source).dtype


def assert_orthonormal(q, dtype) -> None:
    q = as_numpy(q).astype(np.float64)
    assert np.isfinite(q).all()
    gram = q.T @ q
    np.testing.assert_allclose(
        gram, np.eye(q.shape[1]), atol=tolerance(dtype) * max(10, q.shape[0])
    )


def expect_refusal(problem, call, *names) -> None:
    with pytest.raises(problem) as caught:
        call()
    assert any(name in str(caught.value) for name in names), str(caught.value)


orth_methods = st.sampled_from(["qr", "cholqr2", "lu"])
rngs = st.one_of(
    st.none(),
    st.integers(0, 2**31),
    st.lists(st.integers(0, 2**31), min_size=1, max_size=3),
    st.builds(np.random.default_rng, st.integers(0, 100)),
)


@FUZZ
@given(matrices(), st.integers(-1, 12), st.integers(0, 6), st.integers(1, 3), orth_methods, rngs)
def test_srsi_works_or_refuses(case, rank, oversample, sweeps, orth, rng):
    a, problem = case
    call = lambda: randla.srsi(a, rank, oversample=oversample, sweeps=sweeps, orth=orth, rng=rng)  # noqa: E731
    if problem is None and not 1 <= rank <= min(a.shape):
        problem = ValueError
    if problem is not None:
        expect_refusal(problem, call, "A", "rank")
        return
    factors = call()
    dtype = as_numpy(a).dtype
    assert factors.rank == rank and factors.Q.shape == (a.shape[0], rank)
    assert factors.U.shape == (a.shape[1], rank)
    assert_same_kind(factors.Q, a)
    assert_orthonormal(factors.Q, dtype)
    errors = factors.prefix_errors
    assert errors.dtype == np.float64 and np.isfinite(errors).all()
    assert (errors >= 0).all() and (errors <= 1 + 1e-6).all()
    assert np.isfinite(as_numpy(factors.U)).all()
    dense = as_numpy(a).astype(np.float64)
    norm = np.linalg.norm(dense)
    if norm > 0 and factors.resolved[-1]:
        actual = np.linalg.norm(dense - as_numpy(factors.to_dense()).astype(np.float64)) / norm
        assert actual == pytest.approx(errors[-1], abs=20 * randla.identity_floor(dtype))


@FUZZ
@given(
    matrices(),
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(1, 12),
    st.sampled_from([1e-6, 1e-3, 0.1, 0.9]),
    st.sampled_from(["step", "prefix"]),
    st.one_of(st.none(), st.integers(1, 4)),
)
def test_adaptive_srsi_keeps_rank_in_bounds(case, rank, k_min, k_max, tol, strategy, delta):
    a, problem = case
    options = dict(rank=rank, k_min=k_min, k_max=k_max, tol=tol, strategy=strategy, delta=delta)
    call = lambda: randla.adaptive_srsi(a, **options, sweeps=2, rng=0)  # noqa: E731
    if problem is None and not (
        k_max <= min(a.shape) and k_min <= k_max and k_min <= rank <= k_max
    ):
        problem = ValueError
    if problem is not None:
        expect_refusal(problem, call, "A", "rank", "k_min", "k_max")
        return
    result = call()
    assert k_min <= result.factors.rank <= k_max
    assert k_min <= result.next_rank <= k_max
    assert np.isfinite(result.error) and 0 <= result.error <= 1 + 1e-6
    assert_same_kind(result.factors.Q, a)
    assert_orthonormal(result.factors.Q, as_numpy(a).dtype)


@FUZZ
@given(matrices(), st.integers(-1, 12), st.integers(0, 4), st.integers(0, 3), orth_methods)
def test_rsvd_factors_are_orthonormal_sorted_and_signed(case, rank, oversample, power, orth):
    a, problem = case
    call = lambda: randla.rsvd(  # noqa: E731
        a, rank, oversample=oversample, power_iters=power, orth=orth, rng=1
    )
    if problem is None and not 1 <= rank <= min(a.shape):
        problem = ValueError
    if problem is not None:
        expect_refusal(problem, call, "A", "rank")
        return
    u, s, vt = call()
    dtype = as_numpy(a).dtype
    for factor in (u, s, vt):
        assert_same_kind(factor, a)
    u, s, vt = as_numpy(u), as_numpy(s), as_numpy(vt)
    assert u.shape == (a.shape[0], rank) and s.shape == (rank,) and vt.shape == (rank, a.shape[1])
    assert np.isfinite(s).all() and (s >= 0).all() and (np.diff(s) <= tolerance(dtype) * s[0]).all()
    assert_orthonormal(u, dtype)
    assert_orthonormal(vt.T, dtype)
    largest = u[np.argmax(np.abs(u), axis=0), np.arange(rank)]
    assert (largest >= 0).all()


@FUZZ
@given(matrices(allow_bad=False), st.integers(1, 6), st.integers(1, 3), orth_methods)
def test_subspace_iteration_returns_an_orthonormal_basis(case, k, iters, orth):
    a, problem = case
    assume(problem is None and k <= min(a.shape))
    a_np = as_numpy(a)
    q0 = np.linalg.qr(np.random.default_rng(k).standard_normal((a.shape[0], k)))[0]
    q0 = q0.astype(a_np.dtype)
    if isinstance(a, torch.Tensor):
        q0 = torch.from_numpy(q0)
    q = randla.subspace_iteration(a, q0, iters=iters, orth=orth)
    assert_same_kind(q, a)
    assert q.shape == (a.shape[0], k)
    assert_orthonormal(q, a_np.dtype)


@FUZZ
@given(matrices(), orth_methods)
def test_orthonormalize_works_or_refuses(case, method):
    y, problem = case
    if y.shape[0] < y.shape[1]:
        problem = ValueError if problem is None else (TypeError, ValueError)
    call = lambda: randla.orthonormalize(y, method=method)  # noqa: E731
    if problem is not None:
        expect_refusal(problem, call, "Y")
        return
    before = as_numpy(y).copy()
    q = call()
    assert np.array_equal(as_numpy(y), before, equal_nan=True)  # input untouched
    assert_same_kind(q, y)
    assert q.shape == y.shape
    if method == "lu":  # spans the same space but is not orthonormal by design
        assert np.isfinite(as_numpy(q)).all()
    else:
        assert_orthonormal(q, as_numpy(y).dtype)


@FUZZ
@given(matrices(), st.integers(0, 10), st.integers(1, 4))
def test_estimate_error_is_finite_and_near_the_truth(case, probes, k):
    a, problem = case
    if problem is None and probes < 1:
        problem = ValueError
    a_np = as_numpy(a)
    k = max(1, min(k, *a.shape)) if 0 not in a.shape else 1
    q = np.zeros((a.shape[0], k), dtype=a_np.dtype if a_np.dtype in FLOATS else np.float64)
    u = np.zeros((a.shape[1], k), dtype=q.dtype)
    if isinstance(a, torch.Tensor):
        q, u = torch.from_numpy(q), torch.from_numpy(u)
    call = lambda: randla.estimate_error(a, q, u, probes=max(probes, 0) or 0, rng=3)  # noqa: E731
    if problem is not None:
        expect_refusal(problem, call, "A", "probes")
        return
    estimate = call()
    truth = np.linalg.norm(a_np.astype(np.float64))
    assert np.isfinite(estimate) and estimate >= 0
    # zero factors: the estimate is of ‖A‖_F itself; 1 probe has a chi-square(1) spread
    if probes >= 8 and truth > 0:
        assert 0.2 * truth <= estimate <= 3 * truth


@FUZZ
@given(
    st.one_of(
        st.just(-1),
        st.floats(allow_nan=True),
        st.text(max_size=3),
        st.just(True),
        st.lists(st.floats(), min_size=1, max_size=2),
    )
)
def test_bad_rng_is_refused_naming_rng(rng):
    a = np.ones((4, 3))
    with pytest.raises((TypeError, ValueError)) as caught:
        randla.srsi(a, 1, rng=rng)
    assert "rng" in str(caught.value)


# ------------------------------------------------- regression tests of fixed bugs
@pytest.mark.parametrize("scale", [1e20, 1e-30])
def test_srsi_is_scale_invariant_over_the_float32_range(scale):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((20, 3)) @ rng.standard_normal((3, 15))).astype(np.float32)
    reference = randla.srsi(a, 3, rng=0)
    scaled = randla.srsi(a * np.float32(scale), 3, rng=0)
    assert np.isfinite(scaled.Q).all()
    np.testing.assert_allclose(scaled.prefix_errors, reference.prefix_errors, atol=1e-3)
    result = randla.adaptive_srsi(a * np.float32(scale), rank=2, k_max=4, rng=0)
    assert np.isfinite(result.error) and result.error < 0.5


def test_subspace_iteration_survives_large_finite_input():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 15)).astype(np.float32) * np.float32(1e20)
    q0 = np.linalg.qr(rng.standard_normal((20, 3)))[0].astype(np.float32)
    assert np.isfinite(randla.subspace_iteration(a, q0)).all()


@pytest.mark.parametrize("function", ["orthonormalize", "subspace_iteration", "estimate_error"])
def test_nonfinite_factors_are_refused(function):
    a = np.ones((5, 3))
    bad = np.full((5, 2), np.nan)
    calls = {
        "orthonormalize": lambda: randla.orthonormalize(bad),
        "subspace_iteration": lambda: randla.subspace_iteration(a, bad),
        "estimate_error": lambda: randla.estimate_error(a, bad, np.ones((3, 2))),
    }
    with pytest.raises(ValueError, match="finite"):
        calls[function]()


def test_negative_seed_error_names_rng():
    with pytest.raises(ValueError, match="rng"):
        randla.srsi(np.ones((4, 3)), 1, rng=-1)


VIEWS = {
    "rows reversed": lambda x: x[::-1],
    "columns reversed": lambda x: x[:, ::-1],
    "every other row": lambda x: x[::2],
}


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("argument", ["A", "Q"])
def test_subspace_iteration_and_estimate_error_take_views_of_any_strides(view, argument):
    """As rsvd: a view that is neither C- nor F-contiguous (negative or gapped strides) gives the
    result of its contiguous copy instead of torch's "negative strides" error (to float64
    rounding: a view reaches BLAS with other transpose flags than the copy, and the products
    may then sum in another order, so the last bit can differ between runs)."""
    rng = np.random.default_rng(3)
    big_a = rng.standard_normal((40, 30))
    big_q = np.linalg.qr(rng.standard_normal((40, 8)))[0]
    a = VIEWS[view](big_a) if argument == "A" else big_a[: 40 // (2 if "other" in view else 1)]
    rows = a.shape[0]
    q = VIEWS[view](big_q)[:rows, :4] if argument == "Q" else big_q[:rows, :4]
    u = rng.standard_normal((a.shape[1], 4))
    assert not (a.flags.c_contiguous and q.flags.c_contiguous)
    expected = randla.subspace_iteration(np.ascontiguousarray(a), np.ascontiguousarray(q))
    np.testing.assert_allclose(randla.subspace_iteration(a, q), expected, rtol=1e-12, atol=1e-14)
    seeded = dict(probes=4, rng=0)
    expected = randla.estimate_error(np.ascontiguousarray(a), np.ascontiguousarray(q), u, **seeded)
    reversed_view_of_u = u[::-1].copy()[::-1]  # u's values, negative row stride
    assert randla.estimate_error(a, q, reversed_view_of_u, **seeded) == pytest.approx(
        expected, rel=1e-12
    )
