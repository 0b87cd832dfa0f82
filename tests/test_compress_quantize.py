"""Block quantization (ALGORITHMS.md §2.2): ranges, error bounds, packing, bf16 bounds, SR."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import compress

finite_f32 = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)


def unpack_codes(q: compress.Quantized) -> np.ndarray:
    if q.bits == 8:
        return q.codes.astype(np.int64)
    pairs = np.stack([q.codes >> 4, q.codes & 15], axis=1).reshape(-1)
    return pairs[: q.length].astype(np.int64)


def bounds_f32(q: compress.Quantized):
    if q.lo.dtype == np.uint16:
        to_f32 = lambda b: (b.astype(np.uint32) << 16).view(np.float32)  # noqa: E731
        return to_f32(q.lo), to_f32(q.hi)
    return q.lo, q.hi


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float32, st.integers(1, 300), elements=finite_f32),
    bits=st.sampled_from([4, 8]),
    bucket=st.sampled_from([2, 3, 7, 64]),
    bounds_dtype=st.sampled_from(["float32", "bfloat16"]),
)
def test_codes_in_range_and_error_within_half_step(x, bits, bucket, bounds_dtype):
    q = compress.quantize(x, bits=bits, bucket=bucket, bounds_dtype=bounds_dtype)
    codes = unpack_codes(q)
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    lo, hi = bounds_f32(q)
    per_elem = np.arange(x.size) // bucket
    assert np.all(lo[per_elem] <= x) and np.all(x <= hi[per_elem])
    step = (hi.astype(np.float64) - lo) / (2**bits - 1)
    err = np.abs(x.astype(np.float64) - compress.dequantize(q))
    slack = 1e-5 * np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64) + 1e-30
    assert np.all(err <= step[per_elem] / 2 + slack[per_elem])


def test_constant_bucket_decodes_exactly_to_lo():
    # bf16 bounds round outward, so a bucket stays constant only for bf16-exact values.
    for values, bounds_dtype in (([3.1, -2.7, 0.0], "float32"), ([3.125, -2.75, 0.0], "bfloat16")):
        x = np.repeat(np.float32(values), 64)
        q = compress.quantize(x, bits=4, bounds_dtype=bounds_dtype)
        assert not unpack_codes(q).any()
        decoded = compress.dequantize(q)
        np.testing.assert_array_equal(decoded, x)
    q = compress.quantize(x, bits=8)
    np.testing.assert_array_equal(compress.dequantize(q), x)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("bucket", [2, 5, 16])
def test_packing_round_trips_for_every_length(bits, bucket):
    rng = np.random.default_rng(bits * 100 + bucket)
    levels = 2**bits - 1
    for length in range(1, 3 * bucket + 1):
        codes = rng.integers(0, levels + 1, length)
        # Buckets holding 0 and `levels` make every code exactly representable.
        codes[::bucket] = 0
        if length > 1:
            codes[1::bucket] = levels
        x = codes.astype(np.float32)
        q = compress.quantize(x, bits=bits, bucket=bucket)
        assert q.codes.size == (length if bits == 8 else (length + 1) // 2)
        lo = q.lo[np.arange(length) // bucket]
        np.testing.assert_array_equal(unpack_codes(q), x - lo)
        np.testing.assert_array_equal(compress.dequantize(q), x)


def test_bf16_bounds_are_rounded_outward():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4096).astype(np.float32)
    q = compress.quantize(x, bits=4, bucket=64, bounds_dtype="bfloat16")
    lo, hi = bounds_f32(q)
    assert np.all(lo <= x.reshape(-1, 64).min(1)) and np.all(hi >= x.reshape(-1, 64).max(1))
    assert q.lo.dtype == np.uint16 and q.nbytes == 2048 + 2 * 64 * 2


def test_dequantize_add_accumulates_into_out():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(1000).astype(np.float32)
    base = rng.standard_normal(1000)
    q = compress.quantize(x, bits=8, bucket=32)
    out = base.copy()
    compress.dequantize(q, out=out, add=True)
    np.testing.assert_allclose(out, base + compress.dequantize(q), rtol=1e-12, atol=1e-12)


def test_stochastic_rounding_is_reproducible_and_unbiased():
    # 64 elements per bucket with fixed endpoints 0 and 15: step = 1, x = 7.3 everywhere else.
    n_buckets = 4000
    x = np.full((n_buckets, 64), 7.3, np.float32)
    x[:, 0], x[:, 1] = 0.0, 15.0
    x = x.reshape(-1)
    a = compress.quantize(x, bits=4, stochastic=True, rng=123)
    b = compress.quantize(x, bits=4, stochastic=True, rng=123)
    c = compress.quantize(x, bits=4, stochastic=True, rng=124)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert not np.array_equal(a.codes, c.codes)
    inner = compress.dequantize(a).reshape(n_buckets, 64)[:, 2:].astype(np.float64)
    assert set(np.unique(inner)) <= {7.0, 8.0}
    # Each decode is Bernoulli(0.3) + 7: variance 0.21; the mean's standard error sets the bound.
    standard_error = np.sqrt(0.21 / inner.size)
    assert abs(inner.mean() - 7.3) < 5 * standard_error
    deterministic = compress.dequantize(compress.quantize(x, bits=4)).reshape(n_buckets, 64)
    assert np.all(deterministic[:, 2:] == 7.0)


def test_out_container_is_reused():
    x = np.linspace(-1, 1, 200, dtype=np.float32)
    q = compress.Quantized.empty(200, bits=4, bucket=64, bounds_dtype="float32")
    codes = q.codes
    assert compress.quantize(x, out=q) is q and q.codes is codes
    np.testing.assert_array_equal(q.codes, compress.quantize(x).codes)


@pytest.mark.parametrize("bits", [4, 8])
def test_parallel_chunks_agree_with_short_pieces(bits):
    # A vector of several parallel chunks (odd bucket, ragged tail) against the same data
    # quantized in short pieces of whole buckets, each far below one chunk.
    from compress._cpu_quant import CHUNK_BUCKETS

    bucket = 63
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal(3 * CHUNK_BUCKETS * bucket + 101) * 3).astype(np.float32)
    whole = compress.quantize(x, bits=bits, bucket=bucket, bounds_dtype="bfloat16")
    piece = 10 * bucket  # even, so 4-bit pieces end on whole bytes
    parts = [
        compress.quantize(x[i : i + piece], bits=bits, bucket=bucket, bounds_dtype="bfloat16")
        for i in range(0, x.size, piece)
    ]
    for field in ("codes", "lo", "hi"):
        joined = np.concatenate([getattr(p, field) for p in parts])
        np.testing.assert_array_equal(getattr(whole, field), joined)
    np.testing.assert_array_equal(
        compress.dequantize(whole), np.concatenate([compress.dequantize(p) for p in parts])
    )


def ordered_extremes(bucket_values: np.ndarray) -> tuple[float, float]:
    """Smallest and largest float of a bucket in IEEE total order (-0.0 below +0.0)."""
    bits = bucket_values.view(np.int32).astype(np.int64)
    keys = np.where(bits < 0, -(bits & 0x7FFFFFFF) - 1, bits)
    return bucket_values[np.argmin(keys)], bucket_values[np.argmax(keys)]


@pytest.mark.parametrize("bucket", [64, 5])
def test_float32_bounds_are_the_bucket_extremes_bit_for_bit(bucket):
    # Buckets of every sign pattern: positive, negative, mixed, signed zeros only, infinities,
    # subnormals, and float32's extremes; float32 bounds must be the exact min and max.
    rng = np.random.default_rng(11)
    edge = np.float32([0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, np.inf, -np.inf])
    patterns = [
        rng.standard_normal(bucket),
        np.abs(rng.standard_normal(bucket)) + 1,
        -np.abs(rng.standard_normal(bucket)) - 1,
        rng.choice(edge[:2], bucket),
        np.full(bucket, -0.0),
        rng.choice(edge, bucket),
        -rng.choice(edge[2:], bucket) * rng.random(bucket),
        rng.choice(edge[[0, 1, 2, 3]], bucket),
    ]
    x = np.concatenate(patterns).astype(np.float32)
    for bits in (4, 8):
        q = compress.quantize(
            x, bits=bits, bucket=bucket, bounds_dtype="float32", check_finite=False
        )
        for b, values in enumerate(x.reshape(-1, bucket)):
            lo, hi = ordered_extremes(values)
            assert q.lo[b].tobytes() == lo.tobytes() and q.hi[b].tobytes() == hi.tobytes(), b
