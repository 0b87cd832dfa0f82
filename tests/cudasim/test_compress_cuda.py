"""Every compress CUDA kernel under the simulator against its CPU (Numba) twin.

Inputs are small (blocks of 256, a few blocks). Results must match bit for bit, except the
window statistics, whose float32 sums are accumulated with atomics in another order.
"""

import numpy as np
import pytest

from compress import _gpu, _validate
from compress._backend import _cpu_kernels
from compress.topk import _key_view, block_counts, key_format

CPU = _cpu_kernels()
GPU = _gpu.kernel_set()
RNG_SEED = 11

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def twins(*arrays):
    """Two independent copies of each array: one for each kernel set."""
    return [a.copy() for a in arrays], [a.copy() for a in arrays]


@pytest.mark.parametrize(
    ("bits", "bucket", "bf16", "stochastic"),
    [(4, 64, True, False), (8, 32, False, True), (4, 7, False, True)],
)
def test_quantize_and_dequantize(bits, bucket, bf16, stochastic):
    rng = np.random.default_rng(RNG_SEED)
    x = rng.standard_normal(600).astype(np.float32)
    n_buckets = -(-600 // bucket)
    codes = np.zeros(600 if bits == 8 else 300, np.uint8)
    bounds = np.zeros(n_buckets, np.uint16 if bf16 else np.float32)
    (c1, lo1, hi1), (c2, lo2, hi2) = twins(codes, bounds, bounds)
    CPU.quantize(x, c1, lo1, hi1, bits, bucket, bf16, stochastic, np.uint64(99))
    GPU.quantize(x, c2, lo2, hi2, bits, bucket, bf16, stochastic, np.uint64(99))
    for a, b in ((c1, c2), (lo1, lo2), (hi1, hi2)):
        np.testing.assert_array_equal(a, b)
    base = rng.standard_normal(600).astype(np.float32)
    for add in (False, True):
        (o1,), (o2,) = twins(base)
        CPU.dequantize(c1, lo1, hi1, bits, bucket, bf16, o1, add)
        GPU.dequantize(c1, lo1, hi1, bits, bucket, bf16, o2, add)
        np.testing.assert_array_equal(o1, o2)


@pytest.mark.parametrize(
    ("dtype", "values_dtype"), [(np.float32, np.uint16), (np.float64, np.float64)]
)
def test_topk_blocks_with_ties(dtype, values_dtype):
    rng = np.random.default_rng(RNG_SEED)
    x = rng.standard_normal(3 * 256 + 40).astype(dtype)
    x[256:512] = np.round(x[256:512])  # many ties in the second block
    counts = block_counts(x.size, density=0.05, block_size=256)
    x_bits, mask, key_bits = _key_view(x)
    values = np.zeros(counts.total_k, values_dtype)
    indices = np.zeros(counts.total_k, np.int16)
    kind = _validate.storage(values)[1]
    (v1, i1), (v2, i2) = twins(values, indices)
    args = (x, x_bits, mask, key_bits, 256, counts.k_full, counts.k_tail)
    CPU.topk_blocks(*args, v1, kind, i1, 2)
    GPU.topk_blocks(*args, v2, kind, i2, GPU.n_workers(counts.n_blocks))
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(v1, v2)


def test_scatter_gather_zero():
    rng = np.random.default_rng(RNG_SEED)
    x = rng.standard_normal(700).astype(np.float32)
    counts = block_counts(700, density=0.1, block_size=256)
    values = np.zeros(counts.total_k, np.float32)
    indices = np.zeros(counts.total_k, np.int16)
    x_bits, mask, key_bits = _key_view(x)
    CPU.topk_blocks(
        x, x_bits, mask, key_bits, 256, counts.k_full, counts.k_tail, values, 0, indices, 1
    )
    geometry = (256, counts.k_full, counts.k_tail)
    (o1,), (o2,) = twins(x)
    CPU.scatter_add(values, 0, indices, *geometry, -0.5, o1)
    GPU.scatter_add(values, 0, indices, *geometry, -0.5, o2)
    np.testing.assert_array_equal(o1, o2)
    (g1,), (g2,) = twins(np.zeros(counts.total_k, np.uint16))
    CPU.gather(o1, indices, *geometry, g1, 1)
    GPU.gather(o1, indices, *geometry, g2, 1)
    np.testing.assert_array_equal(g1, g2)
    CPU.zero_selected(o1, indices, *geometry)
    GPU.zero_selected(o2, indices, *geometry)
    np.testing.assert_array_equal(o1, o2)


def window_arrays(rng, length, m, block_size, density):
    counts = block_counts(length, density=density, block_size=block_size)
    values = rng.standard_normal((m, counts.total_k)).astype(np.float32)
    indices = np.zeros((m, counts.total_k), np.int16)
    for r in range(m):
        x = rng.standard_normal(length).astype(np.float32)
        x_bits, mask, key_bits = _key_view(x)
        CPU.topk_blocks(
            x,
            x_bits,
            mask,
            key_bits,
            block_size,
            counts.k_full,
            counts.k_tail,
            values[r],
            0,
            indices[r],
            1,
        )
    return counts, values, indices


@pytest.mark.parametrize(
    ("param_kind", "real"),
    [("float32", np.float32), ("bfloat16", np.float32), ("float16", np.float32)]
    + [("float64", np.float64)],
)
@pytest.mark.parametrize("decay", [1.0, 0.97])
def test_window_adam_and_apply(param_kind, real, decay):
    rng = np.random.default_rng(RNG_SEED)
    length, m, block_size = 600, 3, 256
    counts, values, indices = window_arrays(rng, length, m, block_size, 0.1)
    if real == np.float64:
        values = rng.standard_normal(values.shape)
    rows = np.array([1, 0, 2])
    w1 = real(0.9) ** np.arange(3, dtype=real)
    w2 = real(0.999) ** np.arange(3, dtype=real)
    stats = (rows, w1, w2, 256, counts.k_full, counts.k_tail, real(0.5), real(0.02), real(1e-8))
    rtol = 1e-6 if real == np.float32 else 1e-14
    (o1,), (o2,) = twins(np.zeros(length, real))
    CPU.window_adam(values, 0, indices, *stats, o1, 2)
    GPU.window_adam(values, 0, indices, *stats, o2, GPU.n_workers(counts.n_blocks))
    np.testing.assert_allclose(o1, o2, rtol=rtol, atol=0)

    start = rng.standard_normal(length).astype(np.float32)
    if param_kind == "bfloat16":
        param = (start.view(np.uint32) >> 16).astype(np.uint16)
    elif param_kind == "float16":
        param = start.astype(np.float16)
    else:
        param = start.astype(real)
    view, kind = _validate.storage(param)
    (p1,), (p2,) = twins(view)
    CPU.window_adam_apply(values, 0, indices, *stats, real(0.1), p1, kind, decay, 2)
    GPU.window_adam_apply(
        values, 0, indices, *stats, real(0.1), p2, kind, decay, GPU.n_workers(counts.n_blocks)
    )
    if kind == 0:
        np.testing.assert_allclose(p1, p2, rtol=rtol)
    else:
        # u may differ in its last float32 bit; after rounding to 16 bits at most one ulp apart.
        assert np.abs(p1.astype(np.int32) - p2.astype(np.int32)).max() <= 1


@pytest.mark.parametrize(
    ("grad_kind", "bits", "bf16_bounds"),
    [("float32", 4, True), ("bfloat16", 8, False), ("float64", 4, False)],
)
@pytest.mark.parametrize("feedback", [True, False])
def test_ef_topk_requantize(grad_kind, bits, bf16_bounds, feedback):
    rng = np.random.default_rng(RNG_SEED)
    length, block_size, bucket = 600, 256, 64
    g = rng.standard_normal(length)
    if grad_kind == "bfloat16":
        grad = (g.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    else:
        grad = g.astype(grad_kind)
    grad_view, gkind = _validate.storage(grad)
    real = np.float64 if grad_kind == "float64" else np.float32
    _, abs_mask, key_bits = key_format(real)
    scale = (real(-1.0), abs_mask, key_bits)
    n_buckets = -(-length // bucket)
    codes = np.zeros(length if bits == 8 else length // 2, np.uint8)
    bounds = np.zeros(n_buckets, np.uint16 if bf16_bounds else np.float32)
    lo, hi = bounds.copy(), bounds.copy()
    e = (0.3 * rng.standard_normal(length)).astype(np.float32)
    CPU.quantize(e, codes, lo, hi, bits, bucket, bf16_bounds, False, np.uint64(0))
    counts = block_counts(length, density=0.05, block_size=block_size)
    row_values = np.zeros(counts.total_k, np.float64 if real == np.float64 else np.uint16)
    values_kind = _validate.storage(row_values)[1]
    row_indices = np.zeros(counts.total_k, np.int16)
    (c1, l1, h1, v1, i1), (c2, l2, h2, v2, i2) = twins(codes, lo, hi, row_values, row_indices)
    common = (bits, bucket, bf16_bounds, block_size, counts.k_full, counts.k_tail)
    CPU.ef_topk_requantize(
        grad_view, gkind, *scale, c1, l1, h1, *common, v1, values_kind, i1, feedback, 2
    )
    GPU.ef_topk_requantize(
        grad_view,
        gkind,
        *scale,
        c2,
        l2,
        h2,
        *common,
        v2,
        values_kind,
        i2,
        feedback,
        GPU.n_workers(counts.n_blocks),
    )
    for a, b in ((i1, i2), (v1, v2), (c1, c2), (l1, l2), (h1, h2)):
        np.testing.assert_array_equal(a, b)
    if not feedback:  # the error store is left alone
        np.testing.assert_array_equal(c1, codes)
        np.testing.assert_array_equal(l1, lo)


def test_dense_bf16_store_kernels():
    rng = np.random.default_rng(RNG_SEED)
    x = rng.standard_normal(300).astype(np.float32)
    (b1,), (b2,) = twins(np.zeros(300, np.uint16))
    CPU.round_to_bf16(x, b1)
    GPU.round_to_bf16(x, b2)
    np.testing.assert_array_equal(b1, b2)
    (o1,), (o2,) = twins(x)
    CPU.add_bf16(b1, o1)
    GPU.add_bf16(b1, o2)
    np.testing.assert_array_equal(o1, o2)
