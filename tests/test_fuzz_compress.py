"""Property-based fuzzing of compress's public functions (hypothesis).

Each generated call either works — outputs finite, top-k selections exact, codes decoding inside
their bucket within half a step, window statistics equal to a float64 reference — or raises
ValueError/TypeError naming the bad argument. Inputs: float16/32/64, bf16 bits, ints, bool,
complex, 2-D, non-contiguous, empty and 1-element vectors, densities in and out of (0, 1], block
sizes and buckets at their limits, ±0, denormals, NaN, ±Inf.

The fuzzers keep |x| <= 1e30 and window values <= 1e15; dedicated regression tests cover bucket
ranges beyond float32's (|x| ~ 1e38 of both signs), window values above ~1e19 and out-of-range
indices (probed in a subprocess, since an unchecked index would write out of bounds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compress

# Fixed examples by default (a stable suite); SMALLSTATE_FUZZ_EXAMPLES=N explores N fresh ones.
DEEP = os.environ.get("SMALLSTATE_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(DEEP or 20),
    derandomize=DEEP is None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
WORKERS = Path(__file__).resolve().parent / "workers"
BAD_DTYPES = (np.float16, np.int32, np.int16, np.bool_, np.complex64, np.uint8)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


@st.composite
def vectors(draw, dtypes=(np.float32, np.float64), max_len=300, max_exponent=30, specials=True):
    """A 1-D array with a random magnitude and some special values sprinkled in."""
    length = draw(st.one_of(st.integers(1, max_len), st.sampled_from([1, 2, 3, 64, 65])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    exponent = draw(st.integers(-max_exponent, max_exponent))
    values = rng.standard_normal(length) * 10.0**exponent
    if draw(st.booleans()):  # ties and repeats
        values = np.round(values / 10.0**exponent) * 10.0**exponent
    chosen = draw(st.lists(st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 1e-40]), max_size=4))
    for value in chosen if specials else ():
        values[draw(st.integers(0, length - 1))] = value
    dtype = draw(st.sampled_from(dtypes))
    with np.errstate(over="ignore", under="ignore"):
        return values.astype(dtype)


def expect_refusal(call, names, kinds=(ValueError, TypeError)) -> None:
    with pytest.raises(kinds) as caught:
        call()
    assert any(name in str(caught.value) for name in names), str(caught.value)


# --------------------------------------------------------------------------- block top-k
@FUZZ
@given(
    vectors(),
    st.one_of(st.floats(0.001, 1.0), st.sampled_from([1.0, 1e-9, 0.5])),
    st.one_of(st.integers(1, 70), st.sampled_from([1, 2, 32767])),
    st.sampled_from(["float32", "float64", "bfloat16"]),
)
def test_topk_blocks_selects_exactly_the_largest(x, density, block_size, values_dtype):
    sparse = compress.topk_blocks(
        x, density=density, block_size=block_size, values_dtype=values_dtype
    )
    counts = compress.block_counts(x.size, density=density, block_size=block_size)
    assert sparse.values.shape == sparse.indices.shape == (counts.total_k,)
    for b in range(counts.n_blocks):
        block = x[b * block_size : (b + 1) * block_size]
        k = counts.k_tail if b == counts.n_blocks - 1 else counts.k_full
        idx = sparse.indices[b * counts.k_full : b * counts.k_full + k].astype(np.int64)
        assert (np.diff(idx) > 0).all() and idx.min() >= 0 and idx.max() < block.size
        unselected = np.delete(np.abs(block), idx)
        if unselected.size:
            assert np.abs(block[idx]).min() >= unselected.max()
        values = sparse.values[b * counts.k_full : b * counts.k_full + k]
        if values_dtype == "bfloat16":
            assert np.array_equal(values, f32_to_bf16(block[idx].astype(np.float32)))
        else:
            assert np.array_equal(values, block[idx].astype(values_dtype))
    dense = np.zeros_like(x)
    compress.scatter_add(sparse, dense) if values_dtype != "bfloat16" else None
    if values_dtype == x.dtype.name:
        kept = dense != 0
        assert np.array_equal(dense[kept], x[kept])
        assert np.array_equal(compress.zero_selected(x.copy(), sparse) + dense, x)


@FUZZ
@given(
    st.sampled_from(["dtype", "2d", "strided", "empty", "nan", "inf", "density", "block_size"]),
    st.sampled_from(BAD_DTYPES),
    st.sampled_from([0.0, -0.1, 1.5, float("nan"), float("inf")]),
    st.sampled_from([0, -1, 32768, 10**9]),
)
def test_topk_blocks_refuses_bad_input_naming_it(problem, dtype, density, block_size):
    x = np.linspace(-1, 1, 12, dtype=np.float32)
    options = dict(density=0.5, block_size=4)
    names = ["x"]
    if problem == "dtype":
        x = x.astype(dtype)
    elif problem == "2d":
        x = x.reshape(3, 4)
    elif problem == "strided":
        x = x[::2]
    elif problem == "empty":
        x, names = x[:0], ["length", "x"]
    elif problem in ("nan", "inf"):
        x[3] = np.nan if problem == "nan" else -np.inf
    else:
        options[problem] = density if problem == "density" else block_size
        names = [problem]
    expect_refusal(lambda: compress.topk_blocks(x, **options), names)


# --------------------------------------------------------------------------- quantization
@FUZZ
@given(
    vectors(dtypes=(np.float32,), max_len=400),
    st.sampled_from([4, 8]),
    st.one_of(st.integers(2, 80), st.sampled_from([2, 64, 10**6])),
    st.sampled_from(["float32", "bfloat16"]),
    st.booleans(),
    st.integers(0, 2**40),
)
def test_quantize_decodes_inside_each_bucket_within_a_step(x, bits, bucket, bounds, stoch, seed):
    q = compress.quantize(
        x, bits=bits, bucket=bucket, bounds_dtype=bounds, stochastic=stoch, rng=seed
    )
    q.check()
    assert q.nbytes == q.codes.nbytes + q.lo.nbytes + q.hi.nbytes
    decoded = compress.dequantize(q)
    assert decoded.dtype == np.float32 and np.isfinite(decoded).all()
    lo = bf16_to_f32(q.lo) if bounds == "bfloat16" else q.lo
    hi = bf16_to_f32(q.hi) if bounds == "bfloat16" else q.hi
    per_element = np.arange(x.size) // bucket
    lo_e, hi_e = lo[per_element].astype(np.float64), hi[per_element].astype(np.float64)
    assert (lo_e <= x).all() and (x <= hi_e).all()
    step = (hi_e - lo_e) / (2**bits - 1)
    slack = 4 * np.spacing(np.maximum(np.abs(lo_e), np.abs(hi_e)).astype(np.float32))
    bound = (1.0 if stoch else 0.5) * step * (1 + 1e-5) + slack
    # a bucket narrower than float32's normal range has a subnormal step: within its width
    bound[hi_e - lo_e < 1e-37] = 2 * (hi_e - lo_e)[hi_e - lo_e < 1e-37]
    assert (np.abs(decoded.astype(np.float64) - x) <= bound).all()
    tiny = hi_e - lo_e < 1e-37  # such buckets may decode a subnormal step off their bounds
    assert (lo_e - slack <= decoded)[~tiny].all() and (decoded <= hi_e + slack)[~tiny].all()
    again = compress.quantize(
        x, bits=bits, bucket=bucket, bounds_dtype=bounds, stochastic=stoch, rng=seed
    )
    assert np.array_equal(again.codes, q.codes)  # reproducible for an int seed
    base = np.ones(x.size, np.float64)
    added = compress.dequantize(q, out=base, add=True)
    np.testing.assert_allclose(added, 1.0 + decoded.astype(np.float64), rtol=1e-6, atol=1e-30)


@FUZZ
@given(
    st.sampled_from(["dtype", "2d", "nan", "bits", "bucket", "bounds", "rng", "add", "out"]),
    st.sampled_from(BAD_DTYPES + (np.float64,)),
)
def test_quantize_refuses_bad_input_naming_it(problem, dtype):
    x = np.linspace(-1, 1, 10, dtype=np.float32)
    options, names = {}, [problem]
    if problem == "dtype":
        x, names = x.astype(dtype), ["x"]
    elif problem == "2d":
        x, names = x.reshape(2, 5), ["x"]
    elif problem == "nan":
        x[0], names = np.nan, ["x"]
    elif problem == "bits":
        options["bits"] = 3
    elif problem == "bucket":
        options["bucket"] = 1
    elif problem == "bounds":
        options["bounds_dtype"], names = "float16", ["bounds_dtype"]
    elif problem == "rng":
        options.update(stochastic=True, rng=-3)
    if problem in ("add", "out"):
        q = compress.quantize(x)
        call = (
            (lambda: compress.dequantize(q, add=True))
            if problem == "add"
            else (lambda: compress.dequantize(q, out=np.zeros(3, np.float32)))
        )
        expect_refusal(call, ["out"])
        return
    expect_refusal(lambda: compress.quantize(x, **options), names)


# --------------------------------------------------------------------------- error feedback
@FUZZ
@given(
    vectors(dtypes=(np.float32,), max_len=200),
    st.sampled_from(["float32", "float64", "bfloat16", "q4", "q8"]),
)
def test_error_feedback_round_trips_what_it_stored(residual, store):
    n = residual.size
    if store.startswith("q"):
        ef = compress.ErrorFeedback.quantized(
            compress.Quantized.empty(n, bits=int(store[1]), bucket=16, bounds_dtype="float32")
        )
    else:
        dtype = np.uint16 if store == "bfloat16" else np.dtype(store)
        ef = compress.ErrorFeedback.dense(np.zeros(n, dtype))
    buf = np.zeros(n, np.float32)
    ef.store(residual)
    ef.add_to(buf)
    assert np.isfinite(buf).all()
    if store in ("float32", "float64"):
        assert np.array_equal(buf, residual)
    elif store == "bfloat16":
        assert np.array_equal(buf, bf16_to_f32(f32_to_bf16(residual)))
    else:
        width = np.ptp(residual) if n > 1 else 0.0
        assert np.abs(buf - residual).max() <= width / (2 ** int(store[1]) - 1) + 1e-30
    ef.add_to(buf)  # adding twice doubles
    assert np.isfinite(buf).all()


# --------------------------------------------------------------------------- sliding window
def dense_window_reference(window, t, beta1, beta2, eps):
    """u on the window's support in float64, written from the definition."""
    n, rows = window.length, min(t, window.m)
    m_sum, s_sum, support = np.zeros(n), np.zeros(n), np.zeros(n, bool)
    for age in range(rows):
        row = window.row((window.cursor - 1 - age) % window.m)
        values = row.values
        if values.dtype == np.uint16:
            values = bf16_to_f32(values)
        positions = np.repeat(np.arange(row.n_blocks) * row.block_size, row.k_full)[
            : values.size
        ] + row.indices.astype(np.int64)
        m_sum[positions] += beta1**age * values.astype(np.float64)
        s_sum[positions] += beta2**age * values.astype(np.float64) ** 2
        support[positions] = True
    c1 = (1 - beta1) / (1 - beta1**t)
    c2 = (1 - beta2) / (1 - beta2**t)
    return c1 * m_sum / (np.sqrt(c2 * s_sum) + eps), support


@st.composite
def windows(draw):
    n = draw(st.integers(1, 200))
    block_size = draw(st.integers(1, 64))
    density = draw(st.floats(0.01, 1.0))
    m = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from(["float32", "float64", "bfloat16"]))
    window = compress.SparseWindow.empty(
        n, m=m, density=density, block_size=block_size, values_dtype=dtype
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.integers(-15, 15))
    t = draw(st.integers(1, 3 * m))
    for _ in range(min(t, m)):
        row = window.row(window.cursor)
        compress.topk_blocks(
            (rng.standard_normal(n) * scale).astype(np.float32),
            density=density,
            block_size=block_size,
            values_dtype=dtype,
            out=row,
        )
        window.advance()
    window.cursor = draw(st.integers(0, m - 1)) if t > m else window.cursor
    return window, t


@FUZZ
@given(
    windows(),
    st.floats(0.0, 0.999),
    st.floats(0.0, 0.9999),
    st.sampled_from([1e-8, 1e-3, 1.0]),
    st.sampled_from([np.float32, np.float64]),
)
def test_window_adam_matches_the_float64_definition(case, beta1, beta2, eps, out_dtype):
    window, t = case
    expected, support = dense_window_reference(window, t, beta1, beta2, eps)
    out = np.full(window.length, 7.0, out_dtype)
    compress.window_adam(window, t, beta1=beta1, beta2=beta2, eps=eps, out=out)
    assert np.isfinite(out).all()
    assert (out[~support] == 7.0).all()  # off-support entries untouched
    np.testing.assert_allclose(out[support], expected[support], rtol=2e-4, atol=1e-6)
    param = np.zeros(window.length, out_dtype)
    compress.window_adam_apply(window, t, beta1=beta1, beta2=beta2, eps=eps, lr=0.5, param=param)
    np.testing.assert_allclose(param[support], -0.5 * expected[support], rtol=2e-4, atol=1e-6)
    assert (param[~support] == 0).all()


@FUZZ
@given(windows(), st.sampled_from(["t", "beta1", "beta2", "out", "cursor", "param"]))
def test_window_adam_refuses_bad_arguments(case, problem):
    window, t = case
    options = dict(beta1=0.9, beta2=0.999, eps=1e-8)
    out = np.zeros(window.length, np.float32)
    names = [problem]
    if problem == "t":
        t = 0
    elif problem in ("beta1", "beta2"):
        options[problem] = 1.0
    elif problem == "out":
        out = np.zeros(window.length + 1, np.float32)
    elif problem == "cursor":
        window.cursor = window.m
    else:
        param = np.zeros(window.length, np.int32)
        expect_refusal(
            lambda: compress.window_adam_apply(window, t, lr=1.0, param=param, **options), names
        )
        return
    expect_refusal(lambda: compress.window_adam(window, t, out=out, **options), names)


# --------------------------------------------------------------------------- fused step
@FUZZ
@given(
    vectors(dtypes=(np.float32,), max_len=300, max_exponent=15, specials=False),
    st.sampled_from([(16, 8), (32, 16), (64, 64), (64, 2)]),
    st.floats(0.01, 1.0),
    st.sampled_from([1.0, -1.0]),
    st.sampled_from(["float32", "bfloat16"]),
    st.integers(1, 3),
)
def test_fused_step_equals_the_unfused_composition(grad, sizes, density, scale, dtype, steps):
    block_size, bucket = sizes
    n = grad.size
    fused_error = compress.Quantized.empty(n, bits=4, bucket=bucket)
    plain_error = compress.Quantized.empty(n, bits=4, bucket=bucket)
    window = compress.SparseWindow.empty(
        n, m=2, density=density, block_size=block_size, values_dtype=dtype
    )
    for step in range(steps):
        g = grad * np.float32(step + 1)
        compress.ef_topk_requantize(g, fused_error, window, density=density, scale=scale)
        a = (np.float32(scale) * g).astype(np.float32)
        compress.dequantize(plain_error, out=a, add=True)
        sparse = compress.topk_blocks(a, density=density, block_size=block_size, values_dtype=dtype)
        compress.zero_selected(a, sparse)
        compress.quantize(a, bits=4, bucket=bucket, bounds_dtype="bfloat16", out=plain_error)
        row = window.row(window.cursor)
        assert np.array_equal(row.indices, sparse.indices)
        assert np.array_equal(row.values, sparse.values)
        assert np.array_equal(fused_error.codes, plain_error.codes)
        assert np.array_equal(fused_error.lo, plain_error.lo)
        window.advance()


@FUZZ
@given(
    st.integers(1, 300),
    st.sampled_from([np.float32, np.float64, np.float16, np.uint16]),
    st.sampled_from([0.0, 1e-40, 1.0, 1e4]),
)
def test_fused_step_accepts_every_grad_dtype_and_stays_finite(n, dtype, magnitude):
    grad = (np.random.default_rng(n).standard_normal(n) * magnitude).astype(
        np.float32 if dtype == np.uint16 else dtype
    )
    if dtype == np.uint16:
        grad = f32_to_bf16(grad)
    error = compress.Quantized.empty(n, bits=4, bucket=64)
    window = compress.SparseWindow.empty(n, m=3, density=0.1, block_size=128)
    for _ in range(4):
        compress.ef_topk_requantize(grad, error, window, density=0.1)
        window.advance()
    assert np.isfinite(compress.dequantize(error)).all()
    assert np.isfinite(bf16_to_f32(window.values)).all()
    assert (window.indices >= 0).all() and (window.indices < 128).all()


# --------------------------------------------------------------- regression tests of fixed bugs
@pytest.mark.parametrize("bounds", ["float32", "bfloat16"])
def test_quantize_of_huge_finite_values_decodes_finite(bounds):
    x = np.array([3e38, -3e38, 1.0, 0.0], np.float32)
    decoded = compress.dequantize(compress.quantize(x, bucket=4, bounds_dtype=bounds))
    assert np.isfinite(decoded).all()


def test_window_adam_of_large_finite_values_is_finite():
    window = compress.SparseWindow.empty(8, m=2, density=0.5, block_size=4, values_dtype="float32")
    for _ in range(2):
        x = np.array([3e38, -1e20, 1.0, 0.0] * 2, np.float32)
        compress.topk_blocks(x, density=0.5, block_size=4, out=window.row(window.cursor))
        window.advance()
    out = np.zeros(8, np.float32)
    compress.window_adam(window, 2, beta1=0.9, beta2=0.999, eps=1e-8, out=out)
    assert np.isfinite(out).all()
    assert np.abs(out).max() > 0.5  # Adam's step on a huge consistent gradient is ~1, not 0


@pytest.mark.parametrize(
    "option, value",
    [("eps", 0.0), ("eps", -1.0), ("lr", float("nan")), ("decay", float("inf"))],
)
def test_window_adam_apply_validates_eps_lr_and_decay(option, value):
    window = compress.SparseWindow.empty(8, m=2, density=0.5, block_size=4, values_dtype="float32")
    options = dict(beta1=0.9, beta2=0.999, eps=1e-8, lr=1e-3)
    options[option] = value
    param = np.ones(8, np.float32)
    with pytest.raises(ValueError, match=option):
        compress.window_adam_apply(window, 1, param=param, **options)
    assert (param == 1).all()


@pytest.mark.parametrize(
    "name, call",
    [
        (
            "block_size",
            lambda: compress.topk_blocks(np.ones(4, np.float32), density=0.5, block_size=True),
        ),
        ("density", lambda: compress.topk_blocks(np.ones(4, np.float32), density="0.5")),
        ("length", lambda: compress.block_counts(2.5, density=0.5)),
        (
            "t",
            lambda: compress.window_adam(
                compress.SparseWindow.empty(
                    4, m=1, density=1.0, block_size=4, values_dtype="float32"
                ),
                1.5,
                beta1=0.9,
                beta2=0.9,
                eps=1e-8,
                out=np.zeros(4, np.float32),
            ),
        ),
    ],
    ids=["block_size=True", "density='0.5'", "length=2.5", "t=1.5"],
)
def test_non_integer_sizes_are_refused(name, call):
    with pytest.raises((TypeError, ValueError)) as caught:
        call()
    assert str(caught.value).startswith(name), str(caught.value)


def test_quantize_of_denormal_bucket_is_within_half_a_step():
    x = np.array([1e-45, -1e-45, 0.0, 0.0], np.float32)
    decoded = compress.dequantize(compress.quantize(x, bucket=4, bounds_dtype="float32"))
    assert np.abs(decoded - x).max() <= 0.5 * (2e-45 / 15) + 1.5e-45


@pytest.mark.parametrize("operation", ["scatter_add", "gather", "window_adam_apply"])
def test_out_of_range_indices_are_refused(operation):
    # run in a child: an unchecked index writes outside the array and may corrupt the heap
    done = subprocess.run(
        [sys.executable, str(WORKERS / "out_of_range_indices.py"), operation],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("refused"), done.stdout
