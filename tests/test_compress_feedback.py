"""Error feedback (ALGORITHMS.md §2.3) and the fused MicroAdam compression step (§3.1)."""

import numpy as np
import pytest

import compress


def test_dense_store_keeps_exactly_what_was_not_sent():
    rng = np.random.default_rng(0)
    g = rng.standard_normal(3000).astype(np.float32)
    feedback = compress.ErrorFeedback.dense(rng.standard_normal(3000).astype(np.float32))
    a = feedback.add_to(g.copy())
    sent = compress.topk_blocks(a, density=0.05, block_size=256)
    residual = compress.zero_selected(a.copy(), sent)
    feedback.store(residual)
    reconstructed = compress.scatter_add(sent, feedback.add_to(np.zeros(3000, np.float32)))
    np.testing.assert_array_equal(reconstructed, a)
    assert feedback.nbytes == 3000 * 4


def test_bf16_dense_store_rounds_to_nearest_even():
    residual = np.float32([1.0, 1.00390625, 1.01171875, -3.3])
    feedback = compress.ErrorFeedback.dense(np.zeros(4, np.uint16))
    feedback.store(residual)
    restored = feedback.add_to(np.zeros(4, np.float32))
    np.testing.assert_array_equal(restored[:3], [1.0, 1.0, 1.015625])
    assert abs(restored[3] + 3.3) <= 3.3 * 2**-8


def test_quantized_store_error_is_bounded_by_the_step():
    rng = np.random.default_rng(1)
    residual = rng.standard_normal(4096).astype(np.float32)
    q = compress.Quantized.empty(4096, bits=4, bucket=64, bounds_dtype="bfloat16")
    feedback = compress.ErrorFeedback.quantized(q)
    feedback.store(residual)
    restored = feedback.add_to(np.zeros(4096))
    lo = (q.lo.astype(np.uint32) << 16).view(np.float32)
    hi = (q.hi.astype(np.uint32) << 16).view(np.float32)
    step = np.repeat((hi - lo) / 15, 64)
    assert np.all(np.abs(restored - residual) <= step / 2 * (1 + 1e-5))
    assert feedback.nbytes == 2048 + 64 * 2 * 2


def unfused_step(grad_ref, error, density, block_size, scale, values_dtype):
    """The composition the fused kernel must equal, built from the public pieces, in grad_ref's
    float type (float64 stays float64 up to the error store, which codes a rounded to float32)."""
    a = grad_ref.dtype.type(scale) * grad_ref
    compress.dequantize(error, out=a, add=True)
    sparse = compress.topk_blocks(a, density=density, block_size=block_size, check_finite=False)
    sent = compress.SparseBlocks.empty(
        a.size, density=density, block_size=block_size, values_dtype=values_dtype
    )
    sent.indices[...] = sparse.indices
    compress.gather(a, sent)
    compress.zero_selected(a, sparse)
    requantized = compress.quantize(
        a.astype(np.float32),
        bits=error.bits,
        bucket=error.bucket,
        bounds_dtype=error.bounds_dtype,
        check_finite=False,
    )
    return sent, requantized


@pytest.mark.parametrize(
    ("grad_dtype", "bits", "bounds_dtype", "values_dtype", "scale"),
    [
        ("float32", 4, "bfloat16", "bfloat16", 1.0),
        ("float32", 8, "float32", "float32", -1.0),
        ("bfloat16", 4, "float32", "bfloat16", 1.0),
        ("float16", 4, "bfloat16", "float32", 0.5),
        ("float64", 8, "bfloat16", "float64", 1.0),
        ("float64", 4, "float32", "float64", -0.3),
    ],
)
def test_fused_step_equals_the_unfused_composition(
    grad_dtype, bits, bounds_dtype, values_dtype, scale
):
    rng = np.random.default_rng(2)
    n, block_size, density = 5000, 1024, 0.02
    grad_ref = rng.standard_normal(n).astype(np.float32)
    if grad_dtype == "bfloat16":
        grad = (grad_ref.view(np.uint32) >> 16).astype(np.uint16)
        grad_ref = (grad.astype(np.uint32) << 16).view(np.float32)
    elif grad_dtype == "float16":
        grad = grad_ref.astype(np.float16)
        grad_ref = grad.astype(np.float32)
    elif grad_dtype == "float64":
        grad = grad_ref = rng.standard_normal(n)  # not representable in float32
    else:
        grad = grad_ref
    error = compress.quantize(
        0.3 * rng.standard_normal(n).astype(np.float32), bits=bits, bounds_dtype=bounds_dtype
    )
    window = compress.SparseWindow.empty(
        n, m=3, density=density, block_size=block_size, values_dtype=values_dtype
    )
    window.cursor = 2
    sent, requantized = unfused_step(grad_ref, error, density, block_size, scale, values_dtype)

    compress.ef_topk_requantize(grad, error, window, density=density, scale=scale)
    np.testing.assert_array_equal(window.indices[2], sent.indices)
    np.testing.assert_array_equal(window.values[2], sent.values)
    np.testing.assert_array_equal(error.codes, requantized.codes)
    np.testing.assert_array_equal(error.lo, requantized.lo)
    np.testing.assert_array_equal(error.hi, requantized.hi)
    assert window.cursor == 2 and not window.indices[:2].any()


def test_fused_step_keeps_float64_exact_at_full_density():
    """density 1 sends all of a = scale·grad + decode(error), computed in float64."""
    rng = np.random.default_rng(4)
    n = 3 * 1024
    grad = rng.standard_normal(n)
    error = compress.quantize(rng.standard_normal(n).astype(np.float32), bits=4)
    expected = -0.7 * grad + compress.dequantize(error).astype(np.float64)
    window = compress.SparseWindow.empty(
        n, m=1, density=1.0, block_size=1024, values_dtype="float64"
    )
    compress.ef_topk_requantize(grad, error, window, density=1.0, scale=-0.7)
    np.testing.assert_array_equal(window.values[0], expected)
    np.testing.assert_array_equal(window.indices[0], np.tile(np.arange(1024), 3))
    assert not compress.dequantize(error).any()


def test_fused_identity_sent_plus_error():
    """a_t = sent_t + e_{t+1} + quantization error, the quantization error within step/2."""
    rng = np.random.default_rng(3)
    n = 2 * 16384 + 77
    grad = rng.standard_normal(n).astype(np.float32)
    error = compress.Quantized.empty(n, bits=4, bucket=64, bounds_dtype="float32")
    error.lo[...] = 0.0
    error.hi[...] = 0.0
    window = compress.SparseWindow.empty(n, m=2, density=0.01, values_dtype="float32")
    compress.ef_topk_requantize(grad, error, window, density=0.01)
    sent = compress.scatter_add(window.row(0), np.zeros(n, np.float32))
    gap = np.abs(grad - sent - compress.dequantize(error))
    step = np.repeat((error.hi - error.lo) / 15, 64)[:n]
    assert np.all(gap <= step / 2 * (1 + 1e-5) + 1e-7)
    assert np.count_nonzero(sent) == window.values.shape[1]


@pytest.mark.parametrize("grad_dtype", ["float32", "bfloat16", "float64"])
def test_window_topk_is_the_fused_step_without_error(grad_dtype):
    """window_topk = topk_blocks of scale·grad into the cursor row, bit for bit; no other row
    and no error store is touched."""
    rng = np.random.default_rng(11)
    n, block_size, density, scale = 3 * 512 + 100, 512, 0.05, -0.5
    values = rng.standard_normal(n).astype(np.float32)
    if grad_dtype == "bfloat16":
        grad = (values.view(np.uint32) >> 16).astype(np.uint16)
        reference = (grad.astype(np.uint32) << 16).view(np.float32) * np.float32(scale)
    else:
        grad = values.astype(grad_dtype)
        reference = grad * grad.dtype.type(scale)
    values_dtype = "float64" if grad_dtype == "float64" else "bfloat16"
    window = compress.SparseWindow.empty(
        n, m=3, density=density, block_size=block_size, values_dtype=values_dtype
    )
    window.cursor = 1
    compress.window_topk(grad, window, density=density, scale=scale)
    expected = compress.topk_blocks(
        reference, density=density, block_size=block_size, values_dtype=values_dtype
    )
    np.testing.assert_array_equal(window.indices[1], expected.indices)
    np.testing.assert_array_equal(window.values[1], expected.values)
    assert window.cursor == 1 and not window.indices[[0, 2]].any()
