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
        (lambda: compress.quantize(X, bucket=1), ValueError, "bucket must be an integer >= 2"),
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
        (lambda: compress.quantize(X, stochastic=True, rng=-1), TypeError, "rng"),
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
