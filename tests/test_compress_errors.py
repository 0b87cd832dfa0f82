"""Bad inputs raise clear errors naming the argument and the accepted range."""

import numpy as np
import pytest

import compress

X = np.linspace(-1, 1, 100, dtype=np.float32)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: compress.topk_blocks(X, density=1.5), ValueError, r"density must be in \(0, 1\]"),
        (lambda: compress.topk_blocks(X, density=0.0), ValueError, "density"),
        (lambda: compress.topk_blocks(X, density=0.1, block_size=0), ValueError, "block_size"),
        (lambda: compress.topk_blocks(X, density=0.1, block_size=32768), ValueError, "32767"),
        (lambda: compress.quantize(X, bits=3), ValueError, "bits must be 4 or 8"),
        (lambda: compress.quantize(X, bucket=1), ValueError, r"bucket must be an integer in \[2, "),
        (lambda: compress.quantize(X, bucket=2**31), ValueError, "2147483647"),
        (lambda: compress.quantize(X.reshape(10, 10)), ValueError, "x must be 1-D"),
        (lambda: compress.quantize(X[::2]), ValueError, "x must be contiguous"),
        (lambda: compress.quantize(X.astype(np.int32)), TypeError, "x dtype must be one of"),
        (lambda: compress.quantize(list(X)), TypeError, "numpy or CuPy array"),
        (
            lambda: compress.topk_blocks(X, density=0.1, values_dtype="int8"),
            ValueError,
            "values_dtype",
        ),
        (lambda: compress.quantize(X, bounds_dtype="float16"), ValueError, "bounds_dtype"),
        (lambda: compress.dequantize(compress.quantize(X), add=True), ValueError, "add=True"),
        (lambda: compress.quantize(X, stochastic=True, rng=-1), ValueError, r"rng .*2\*\*64"),
        (lambda: compress.quantize(X, stochastic=True, rng=2**64), ValueError, "rng"),
        (lambda: compress.quantize(X, stochastic=True, rng=True), TypeError, "rng"),
        (lambda: compress.dequantize("q"), TypeError, "q must be a Quantized"),
        (
            lambda: compress.quantize(
                X,
                out=compress.Quantized.empty(100, bounds_dtype="bfloat16"),
                bounds_dtype="float32",
            ),
            ValueError,
            "bounds_dtype 'float32' differs from out's 'bfloat16'",
        ),
        (
            lambda: compress.scatter_add(compress.topk_blocks(X, density=0.1), X.copy(), scale="2"),
            TypeError,
            "scale must be a real number",
        ),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected_before_any_work(bad):
    x = X.copy()
    x[17] = bad
    with pytest.raises(ValueError, match="x must be finite"):
        compress.quantize(x)
    with pytest.raises(ValueError, match="x must be finite"):
        compress.topk_blocks(x, density=0.1)
    compress.quantize(x, check_finite=False)  # the optimizers may skip the check


def test_fused_step_validates_before_modifying_state():
    n = 4096
    grad = np.ones(n, np.float32)
    grad[5] = np.nan
    error = compress.quantize(np.linspace(0, 1, n, dtype=np.float32))
    codes = error.codes.copy()
    window = compress.SparseWindow.empty(n, m=2, density=0.01, block_size=1024)
    with pytest.raises(ValueError, match="grad must be finite"):
        compress.ef_topk_requantize(grad, error, window, density=0.01, check_finite=True)
    np.testing.assert_array_equal(error.codes, codes)
    with pytest.raises(ValueError, match="multiple of error.bucket"):
        odd = compress.SparseWindow.empty(n, m=2, density=0.01, block_size=1000)
        compress.ef_topk_requantize(np.ones(n, np.float32), error, odd, density=0.01)
    with pytest.raises(ValueError, match="density 0.5 needs"):
        compress.ef_topk_requantize(np.ones(n, np.float32), error, window, density=0.5)
    with pytest.raises(ValueError, match="lengths must agree"):
        compress.ef_topk_requantize(np.ones(n - 1, np.float32), error, window, density=0.01)


def test_window_arguments_are_checked():
    window = compress.SparseWindow.empty(100, m=3, density=0.1, block_size=50)
    out = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="t must be >= 1"):
        compress.window_adam(window, 0, beta1=0.9, beta2=0.999, eps=1e-8, out=out)
    with pytest.raises(ValueError, match=r"beta2 must be in \[0, 1\)"):
        compress.window_adam(window, 1, beta1=0.9, beta2=1.0, eps=1e-8, out=out)
    with pytest.raises(TypeError, match="param dtype"):
        compress.window_adam_apply(
            window, 1, beta1=0.9, beta2=0.999, eps=1e-8, lr=1e-3, param=np.zeros(100, np.int64)
        )
    window.cursor = 3
    with pytest.raises(ValueError, match="cursor"):
        compress.window_adam(window, 1, beta1=0.9, beta2=0.999, eps=1e-8, out=out)


@pytest.mark.parametrize("scale", [None, "1", np.nan, np.inf])
def test_fused_scale_is_checked_before_the_state_changes(scale):
    grad = np.linspace(-1, 1, 300, dtype=np.float32)
    window = compress.SparseWindow.empty(
        300, m=1, density=0.1, block_size=64, values_dtype="float32"
    )
    error = compress.Quantized.empty(300, bucket=64)
    with pytest.raises((TypeError, ValueError), match="scale"):
        compress.window_topk(grad, window, density=0.1, scale=scale)
    with pytest.raises((TypeError, ValueError), match="scale"):
        compress.ef_topk_requantize(grad, error, window, density=0.1, scale=scale)
    assert not window.values.any()
    with pytest.raises(TypeError, match="error must be a Quantized"):
        compress.ef_topk_requantize(grad, None, window, density=0.1)


def test_a_bucket_longer_than_the_vector_is_one_bucket():
    x = np.arange(1, 11, dtype=np.float32)
    huge = compress.quantize(x, bits=8, bucket=2**31 - 1)  # no int64 overflow, no huge scratch
    whole = compress.quantize(x, bits=8, bucket=10)
    np.testing.assert_array_equal(huge.codes, whole.codes)
    np.testing.assert_array_equal(compress.dequantize(huge), compress.dequantize(whole))


def test_numpy_integer_sizes_are_computed_as_python_ints():
    counts = compress.block_counts(np.uint16(60000), density=1.0, block_size=np.uint16(7))
    assert (counts.n_blocks, counts.k_tail) == (8572, 3)
    assert compress.block_counts(100000, density=0.5, block_size=np.int16(16384)).n_blocks == 7
    assert compress.Quantized.empty(np.uint8(200), bucket=np.uint8(3)).codes.size == 100
    window = compress.SparseWindow.empty(
        np.uint16(60000), m=np.uint8(2), density=0.5, block_size=np.uint16(7)
    )
    total = compress.block_counts(60000, density=0.5, block_size=7).total_k
    assert window.values.shape == (2, total) and type(window.length) is int


def test_a_quantized_store_takes_a_float64_residual():
    residual = np.random.default_rng(1).standard_normal(1000)
    store = compress.ErrorFeedback.quantized(compress.Quantized.empty(1000, bits=8, bucket=50))
    store.store(residual)
    decoded = store.add_to(np.zeros(1000))
    step = (residual.max() - residual.min()) / 255  # the widest bucket's step bounds them all
    assert np.abs(decoded - residual).max() <= step / 2 * 1.01


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("kind", ["q4", "q8", "dense", "bf16"])
def test_an_error_store_refuses_a_non_finite_residual_and_keeps_its_contents(kind, bad):
    """Like quantize: a quantized store would decode NaN/Inf as finite garbage."""
    if kind == "dense":
        store = compress.ErrorFeedback.dense(np.zeros(100, np.float32))
    elif kind == "bf16":
        store = compress.ErrorFeedback.dense(np.zeros(100, np.uint16))
    else:
        q = compress.Quantized.empty(100, bits=int(kind[1]), bucket=10)
        store = compress.ErrorFeedback.quantized(q)
    store.store(X)
    before = store.add_to(np.zeros(100, np.float32))
    residual = X.copy()
    residual[17] = bad
    with pytest.raises(ValueError, match="residual must be finite"):
        store.store(residual)
    assert np.array_equal(store.add_to(np.zeros(100, np.float32)), before)


@pytest.mark.parametrize("bounds", ["float32", "bfloat16"])
def test_dequantize_refuses_bounds_out_of_order_or_not_finite(bounds):
    q = compress.quantize(X, bits=4, bucket=10, bounds_dtype=bounds)
    assert np.abs(compress.dequantize(q) - X).max() < 0.2  # the untampered codes decode
    for lo, hi in [(5.0, 1.0), (np.nan, 1.0), (0.0, np.inf), (-np.inf, 0.0)]:
        tampered = compress.Quantized(q.codes, q.lo.copy(), q.hi.copy(), q.length, q.bits, 10)
        pair = np.array([lo, hi], np.float32)
        if bounds == "bfloat16":
            pair = (pair.view(np.uint32) >> 16).astype(np.uint16)
        tampered.lo[3], tampered.hi[3] = pair
        with pytest.raises(ValueError, match="bounds must be finite with lo <= hi.*bucket 3"):
            compress.dequantize(tampered)
        with pytest.raises(ValueError, match="bounds must be finite"):
            compress.ErrorFeedback.quantized(tampered).add_to(np.zeros(100, np.float32))
