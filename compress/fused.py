"""MicroAdam's compression step fused into one pass per block (ALGORITHMS.md §3.1)."""

from __future__ import annotations

import numpy as np

from . import _validate
from ._backend import kernels
from .quantization import Quantized
from .topk import block_counts, key_format
from .window import SparseWindow


def ef_topk_requantize(
    grad,
    error: Quantized,
    window: SparseWindow,
    *,
    density: float,
    scale: float = 1.0,
    check_finite: bool = False,
) -> None:
    """Per block: a = scale·grad + decode(error); top-k of |a| into window row `window.cursor`
    (window's value dtype, block-relative int16 indices, ascending); a[selected] = 0;
    error = quantize(a) (this quantization's own error is dropped). scale = -1 maximizes.

    a is float64 for float64 grad (the window then keeps float64-exact values when its dtype is
    float64), float32 otherwise; the error store is coded from a rounded to float32.
    Equals the unfused composition dequantize(add) → topk_blocks → zero_selected → quantize bit
    for bit, but reads grad once and the error codes once (block scratch stays in cache).
    Does not advance the cursor. grad: float32, float64, float16 or uint16 (bf16 bits).
    window.block_size must be a multiple of error.bucket (an even bucket for 4-bit codes).
    check_finite=True checks grad (one extra read) before any state is modified.
    """
    _validate.vector(grad, "grad", (np.float32, np.float64, np.float16, np.uint16))
    error.check("error")
    window.check("window", indices=False)  # the step writes row `cursor`, reads no index
    n = grad.size
    if error.length != n or window.length != n:
        raise ValueError(
            f"grad, error and window lengths must agree, got {n}, {error.length}, {window.length}"
        )
    if window.block_size % error.bucket != 0 or (error.bits == 4 and error.bucket % 2):
        raise ValueError(
            f"window.block_size must be a multiple of error.bucket (an even bucket for 4-bit "
            f"codes), got block_size {window.block_size} and bucket {error.bucket}"
        )
    counts = block_counts(n, density=density, block_size=window.block_size)
    if (counts.k_full, counts.total_k) != (window.k_full, window.values.shape[1]):
        raise ValueError(
            f"window rows hold (k_full, total_k) = ({window.k_full}, {window.values.shape[1]}), "
            f"density {density} needs ({counts.k_full}, {counts.total_k})"
        )
    if check_finite:
        _validate.finite(grad, "grad")
    row = int(window.cursor)
    grad_view, grad_kind = _validate.storage(grad)
    # float64 grad keeps a in float64 (radix keys on uint64 bits); every other grad in float32.
    work_dtype = np.float64 if grad.dtype == np.float64 else np.float32
    _, abs_mask, key_bits = key_format(work_dtype)
    backend = kernels(grad)
    backend.ef_topk_requantize(
        grad_view,
        grad_kind,
        work_dtype(scale),
        abs_mask,
        key_bits,
        error.codes,
        error.lo,
        error.hi,
        error.bits,
        error.bucket,
        error.lo.dtype == np.uint16,
        window.block_size,
        counts.k_full,
        counts.k_tail,
        window.values[row],
        window.values_kind,
        window.indices[row],
        backend.n_workers(counts.n_blocks),
    )
