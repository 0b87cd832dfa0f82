"""MicroAdam's densifying kernel (`densify_from_error`) under the simulator against its CPU twin:
parameters and requantized error bit for bit, for every parameter storage kind."""

import numpy as np
import pytest

from compress import _validate
from compress._backend import _cpu_kernels
from compress._gpu import kernel_set
from compress.quantization import quantize

CPU = _cpu_kernels()
GPU = kernel_set()


@pytest.mark.parametrize("param_dtype", [np.float32, np.float64, np.float16, np.uint16])
@pytest.mark.parametrize("bf16_bounds", [True, False])
def test_densify_from_error_matches_the_cpu_kernel(param_dtype, bf16_bounds):
    rng = np.random.default_rng(5)
    n, bucket = 301, 64  # an odd tail: the last byte holds one code
    error = quantize(
        rng.standard_normal(n).astype(np.float32),
        bits=4,
        bucket=bucket,
        bounds_dtype="bfloat16" if bf16_bounds else "float32",
    )
    if param_dtype == np.uint16:
        param = (rng.integers(0x3C00, 0x4000, n)).astype(np.uint16)  # bf16 bits near 1
    else:
        param = rng.standard_normal(n).astype(param_dtype)
    view, kind = _validate.storage(param)
    step = np.float64(0.03) if param_dtype == np.float64 else np.float32(0.03)
    results = []
    for kernels in (CPU, GPU):
        codes, lo, hi, p = error.codes.copy(), error.lo.copy(), error.hi.copy(), view.copy()
        kernels.densify_from_error(
            codes, lo, hi, 4, bucket, bf16_bounds, step, np.float32(0.7), p, kind, 1
        )
        results.append((codes, lo, hi, p))
    for cpu, gpu in zip(*results, strict=True):
        np.testing.assert_array_equal(cpu, gpu)
    assert not np.array_equal(results[0][2], error.hi)  # the bounds shrink by 1 - alpha
    assert not np.array_equal(results[0][3], view)
