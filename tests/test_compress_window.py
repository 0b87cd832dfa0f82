"""Sliding-window Adam statistics (ALGORITHMS.md §2.4) against a dense float64 reference."""

import numpy as np
import pytest
import torch

import compress
from compress.fused import unchecked_select_into_window
from compress.window import unchecked_window_adam_apply

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def random_window(length, *, m, block_size, density, rng, values_dtype="float32"):
    window = compress.SparseWindow.empty(
        length, m=m, density=density, block_size=block_size, values_dtype=values_dtype
    )
    for r in range(m):
        x = rng.standard_normal(length).astype(np.float32)
        compress.topk_blocks(x, density=density, block_size=block_size, out=window.row(r))
    return window


def row_values_f64(window, r):
    v = window.values[r]
    if v.dtype == np.uint16:
        return (v.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return v.astype(np.float64)


def dense_reference(window, t):
    """u from dense float64 M and S built row by row."""
    moment = np.zeros(window.length)
    second = np.zeros(window.length)
    support = np.zeros(window.length, bool)
    for age in range(min(t, window.m)):
        r = (window.cursor - 1 - age) % window.m
        row = window.row(r)
        dense = compress.scatter_add(
            compress.SparseBlocks(
                row_values_f64(window, r), row.indices, row.length, row.block_size, row.k_full
            ),
            np.zeros(window.length),
        )
        moment += BETA1**age * dense
        second += BETA2**age * dense**2
        support[compress.scatter_add(row, np.zeros(window.length)) != 0] = True
    c1 = (1 - BETA1) / (1 - BETA1**t)
    c2 = (1 - BETA2) / (1 - BETA2**t)
    return np.where(support, c1 * moment / (np.sqrt(c2 * second) + EPS), 0.0)


@pytest.mark.parametrize(
    ("t", "cursor", "values_dtype"),
    [(10, 0, "float32"), (3, 3, "float32"), (25, 7, "bfloat16"), (12, 2, "float64")],
)
def test_window_adam_matches_the_dense_reference(t, cursor, values_dtype):
    rng = np.random.default_rng(t)
    # Small blocks with 25% density make indices repeat across rows.
    window = random_window(
        1000, m=10, block_size=64, density=0.25, rng=rng, values_dtype=values_dtype
    )
    window.cursor = cursor
    expected = dense_reference(window, t)
    out = np.zeros(1000, np.float32)
    compress.window_adam(window, t, beta1=BETA1, beta2=BETA2, eps=EPS, out=out)
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=1e-6)
    untouched = np.full(1000, 7.0)
    compress.window_adam(window, t, beta1=BETA1, beta2=BETA2, eps=EPS, out=untouched)
    on_support = expected != 0
    assert np.all(untouched[~on_support] == 7.0)


def test_partially_filled_window_ignores_unwritten_rows():
    rng = np.random.default_rng(5)
    window = random_window(500, m=6, block_size=100, density=0.1, rng=rng)
    window.cursor = 2  # rows 0 and 1 written; rows 2..5 hold stale data that must be ignored
    expected = dense_reference(window, 2)
    out = np.zeros(500, np.float32)
    compress.window_adam(window, 2, beta1=BETA1, beta2=BETA2, eps=EPS, out=out)
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=1e-6)
    stale = compress.scatter_add(window.row(4), np.zeros(500)) != 0
    fresh = (compress.scatter_add(window.row(0), np.zeros(500)) != 0) | (
        compress.scatter_add(window.row(1), np.zeros(500)) != 0
    )
    assert not out[stale & ~fresh].any()


@pytest.mark.parametrize("param_dtype", [np.float32, np.float64, np.float16])
def test_apply_updates_each_support_coordinate_once(param_dtype):
    rng = np.random.default_rng(6)
    window = random_window(700, m=4, block_size=50, density=0.3, rng=rng)
    window.cursor = 1
    u = compress.window_adam(window, 9, beta1=BETA1, beta2=BETA2, eps=EPS, out=np.zeros(700))
    param = rng.standard_normal(700).astype(param_dtype)
    before = param.copy()
    compress.window_adam_apply(window, 9, beta1=BETA1, beta2=BETA2, eps=EPS, lr=0.01, param=param)
    expected = (before.astype(np.float64) - 0.01 * u).astype(param_dtype)
    tolerance = 1e-3 if param_dtype == np.float16 else 1e-6
    np.testing.assert_allclose(param, expected, rtol=tolerance, atol=tolerance)
    assert np.all(param[u == 0] == before[u == 0])


@pytest.mark.parametrize("param_dtype", [np.float32, np.float16, np.uint16])
def test_apply_without_decay_keeps_every_bit_off_the_support(param_dtype):
    """Without decay the CPU kernel still rewrites each block (it is faster): every value off
    the support, -0.0, subnormals, Inf and quiet-NaN payloads included, must come back bit for
    bit (bf16 bits, uint16 here, are multiplied by an integer one). Signalling NaNs of float
    parameters become quiet, as under torch's `param.mul_(1.0)`; the draw leaves them out."""
    rng = np.random.default_rng(9)
    window = random_window(1000, m=3, block_size=100, density=0.05, rng=rng)
    u = compress.window_adam(window, 3, beta1=BETA1, beta2=BETA2, eps=EPS, out=np.zeros(1000))
    width = np.dtype(param_dtype).itemsize * 8
    bits = rng.integers(0, 2**width, 1000, dtype=np.uint64).astype(f"uint{width}")
    if param_dtype != np.uint16:  # set the quiet bit of every NaN
        quiet = np.array(1 << np.finfo(param_dtype).nmant - 1, bits.dtype)
        bits[np.isnan(bits.view(param_dtype))] |= quiet
    param = bits.view(param_dtype) if param_dtype != np.uint16 else bits
    before = param.copy()
    with np.errstate(invalid="ignore"):
        compress.window_adam_apply(
            window, 3, beta1=BETA1, beta2=BETA2, eps=EPS, lr=0.01, param=param, decay=1.0
        )
    off = u == 0
    assert off.sum() > 800
    np.testing.assert_array_equal(param.view(bits.dtype)[off], before.view(bits.dtype)[off])


def test_an_eps_below_float32s_range_computes_in_float64():
    """eps = 1e-46 rounds to 0 in float32: a repeated coordinate would then divide 0 by 0."""
    rng = np.random.default_rng(11)
    window = random_window(2000, m=4, block_size=100, density=0.2, rng=rng)
    u = compress.window_adam(window, 4, beta1=BETA1, beta2=BETA2, eps=1e-46, out=np.zeros(2000))
    param = np.zeros(2000, np.float32)
    compress.window_adam_apply(window, 4, beta1=BETA1, beta2=BETA2, eps=1e-46, lr=1.0, param=param)
    np.testing.assert_array_equal(param, (-u).astype(np.float32))


@pytest.mark.parametrize("scale", [1.0, 1e-30, 3e38])
def test_float32_direction_is_within_float32_rounding_and_finite_at_the_extremes(scale):
    """Parameters narrower than float64 take u's square root and division in float32 while the
    moments are in range, in float64 beyond: within a few float32 ulps of the float64 u either
    way, and finite for values up to float32's maximum (Adam's normalization keeps |u| small)."""
    rng = np.random.default_rng(10)
    window = random_window(2000, m=4, block_size=100, density=0.2, rng=rng)
    window.values[...] = np.clip(window.values.astype(np.float64) * scale, -3.4e38, 3.4e38)
    u = compress.window_adam(window, 4, beta1=BETA1, beta2=BETA2, eps=EPS, out=np.zeros(2000))
    param = np.zeros(2000, np.float32)
    compress.window_adam_apply(window, 4, beta1=BETA1, beta2=BETA2, eps=EPS, lr=1.0, param=param)
    assert np.isfinite(param).all() and np.abs(u).max() < 10
    np.testing.assert_allclose(param, -u, rtol=4 * np.finfo(np.float32).eps, atol=1e-37)


def test_apply_on_bf16_bits_equals_float32_update_rounded():
    rng = np.random.default_rng(7)
    window = random_window(900, m=5, block_size=128, density=0.2, rng=rng, values_dtype="bfloat16")
    u = compress.window_adam(
        window, 5, beta1=BETA1, beta2=BETA2, eps=EPS, out=np.zeros(900, np.float32)
    )
    start = rng.standard_normal(900).astype(np.float32)
    bits = (start.view(np.uint32) >> 16).astype(np.uint16)  # truncated: exact bf16 values
    param_f32 = (bits.astype(np.uint32) << 16).view(np.float32)
    updated = param_f32 - np.float32(0.05) * u
    # Round to nearest even on the upper 16 bits (no NaN here).
    word = updated.view(np.uint32).astype(np.uint64)
    expected = ((word + 0x7FFF + ((word >> 16) & 1)) >> 16).astype(np.uint16)
    compress.window_adam_apply(window, 5, beta1=BETA1, beta2=BETA2, eps=EPS, lr=0.05, param=bits)
    np.testing.assert_array_equal(bits, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_apply_with_decay_equals_torch_decay_then_apply(dtype):
    """decay is fused into the apply pass; it must equal param.mul_(decay) first, bit for bit,
    on and off the support (ragged last block included)."""
    rng = np.random.default_rng(9)
    window = random_window(1000, m=6, block_size=128, density=0.2, rng=rng, values_dtype="bfloat16")
    window.cursor = 3
    start = torch.from_numpy(rng.standard_normal(1000)).to(dtype)
    decay = 1.0 - 3e-3 * 0.1
    options = dict(beta1=BETA1, beta2=BETA2, eps=EPS, lr=3e-3)

    def core(tensor):
        return tensor.view(torch.uint16).numpy() if dtype == torch.bfloat16 else tensor.numpy()

    fused, separate = start.clone(), start.clone().mul_(decay)
    compress.window_adam_apply(window, 7, param=core(fused), decay=decay, **options)
    compress.window_adam_apply(window, 7, param=core(separate), **options)
    assert torch.equal(fused.view(torch.uint8), separate.view(torch.uint8))
    assert not torch.equal(fused, start)


def float64_window(length, *, m, block_size, density, rng):
    """A float64 window whose values are not float32-representable (indices from top-k)."""
    window = random_window(
        length, m=m, block_size=block_size, density=density, rng=rng, values_dtype="float64"
    )
    window.values[...] = rng.standard_normal(window.values.shape)
    return window


def test_float64_window_statistics_are_float64():
    rng = np.random.default_rng(8)
    window = float64_window(1000, m=6, block_size=64, density=0.25, rng=rng)
    window.cursor = 4
    expected = dense_reference(window, 9)
    out = compress.window_adam(window, 9, beta1=BETA1, beta2=BETA2, eps=EPS, out=np.zeros(1000))
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=0)
    param = rng.standard_normal(1000)
    before = param.copy()
    compress.window_adam_apply(window, 9, beta1=BETA1, beta2=BETA2, eps=EPS, lr=0.01, param=param)
    np.testing.assert_allclose(param, before - 0.01 * expected, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("feedback", [True, False])
def test_unvalidated_step_equals_the_validated_one(feedback):
    """The unchecked private variants (the optimizer's path) skip only the checks: the same
    bytes come out of the fused selection and the window update, step after step (the cached
    β^age weights too)."""
    n, density = 70_000, 0.01
    states = []
    for validate in (True, False):
        window = compress.SparseWindow.empty(n, m=3, density=density)
        error = compress.Quantized.empty(n, bits=4, bucket=64, bounds_dtype="bfloat16")
        param = np.ones(n, np.float32)
        steps = np.random.default_rng(6)
        for t in range(1, 6):
            grad = steps.standard_normal(n, dtype=np.float32)
            kept = error if feedback else None
            if not validate:
                unchecked_select_into_window(grad, kept, window, density=density, scale=1.0)
            elif feedback:
                compress.ef_topk_requantize(grad, error, window, density=density)
            else:
                compress.window_topk(grad, window, density=density)
            window.advance()
            apply = compress.window_adam_apply if validate else unchecked_window_adam_apply
            apply(window, t, beta1=0.9, beta2=0.999, eps=1e-8, lr=1e-2, param=param, decay=0.99)
        states.append((window.values.copy(), window.indices.copy(), error.codes.copy(), param))
    for validated, unvalidated in zip(*states, strict=True):
        np.testing.assert_array_equal(validated, unvalidated)
    assert not np.array_equal(states[0][3], np.ones(n, np.float32))


def test_validated_calls_still_refuse_bad_arguments():
    window = compress.SparseWindow.empty(1000, m=2, density=0.01)
    with pytest.raises(ValueError, match="lr"):
        compress.window_adam_apply(
            window, 1, beta1=0.9, beta2=0.999, eps=1e-8, lr=-1.0, param=np.ones(1000, np.float32)
        )
