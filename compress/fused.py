"""MicroAdam's compression step fused into one pass per block (ALGORITHMS.md §3.1)."""

from __future__ import annotations

import math

import numpy as np

from . import _validate
from ._backend import kernels, namespace
from ._cpu_densify import CHUNK_BUCKETS
from .quantization import Quantized
from .topk import block_counts, counts_of, key_format
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
    check_finite=True checks grad (one extra read) before any state is modified. Every argument
    is checked before anything is written.
    """
    _validate.instance(error, Quantized, "error")
    _validate.instance(window, SparseWindow, "window")
    error.check("error")
    if window.block_size % error.bucket != 0 or (error.bits == 4 and error.bucket % 2):
        raise ValueError(
            f"window.block_size must be a multiple of error.bucket (an even bucket for 4-bit "
            f"codes), got block_size {window.block_size} and bucket {error.bucket}"
        )
    _select_into_window(grad, error, window, density, scale, check_finite, validate=True)


def window_topk(
    grad,
    window: SparseWindow,
    *,
    density: float,
    scale: float = 1.0,
    check_finite: bool = False,
) -> None:
    """Block top-k of |scale·grad| into window row `window.cursor`, with no error feedback:
    `ef_topk_requantize` without its error store (what is not selected is dropped).

    Same kernel, same selection rule and value rounding; reads grad once and writes only the
    row. grad: float32, float64, float16 or uint16 (bf16 bits). Does not advance the cursor.
    Every argument is checked, as in `ef_topk_requantize`.
    """
    _select_into_window(grad, None, window, density, scale, check_finite, validate=True)


def unchecked_select_into_window(
    grad, error: Quantized | None, window: SparseWindow, *, density: float, scale: float
) -> None:
    """`ef_topk_requantize` (error given) or `window_topk` (error None) without any argument
    check: private to the MicroAdam optimizer, whose state arrays were built by it or checked on
    load and whose parameter sizes are checked against them before each step. Not exported: wrong
    arguments here write outside the arrays."""
    _select_into_window(grad, error, window, density, scale, False, validate=False)


def _select_into_window(grad, error, window, density, scale, check_finite, validate) -> None:
    """Validate (`validate`), then run the fused kernel with (error given) or without error
    feedback."""
    n = grad.size
    if validate:
        _validate.vector(grad, "grad", (np.float32, np.float64, np.float16, np.uint16))
        _validate.instance(window, SparseWindow, "window")
        scale = _validate.finite_real(scale, "scale")
        window.check("window", indices=False)  # the step writes row `cursor`, reads no index
        if window.length != n or (error is not None and error.length != n):
            lengths = f"{n}, {window.length}" + ("" if error is None else f", {error.length}")
            names = "grad, window" + ("" if error is None else " and error")
            raise ValueError(f"{names} lengths must agree, got {lengths}")
        counts = block_counts(n, density=density, block_size=window.block_size)
        if (counts.k_full, counts.total_k) != (window.k_full, window.values.shape[1]):
            raise ValueError(
                f"window rows hold (k_full, total_k) = ({window.k_full}, "
                f"{window.values.shape[1]}), density {density} needs ({counts.k_full}, "
                f"{counts.total_k})"
            )
    else:
        counts = counts_of(n, density, window.block_size)
    if check_finite:
        _validate.finite(grad, "grad")
    row = int(window.cursor)
    grad_view, grad_kind = _validate.storage(grad)
    # float64 grad keeps a in float64 (radix keys on uint64 bits); every other grad in float32.
    work_dtype = np.float64 if grad.dtype == np.float64 else np.float32
    _, abs_mask, key_bits = key_format(work_dtype)
    backend = kernels(grad)
    if error is None:  # the kernel's error arguments are not touched; empty stand-ins
        xp = namespace(grad)
        codes, lo, hi = xp.empty(0, np.uint8), xp.empty(0, np.uint16), xp.empty(0, np.uint16)
        bits, bucket = 4, 2
    else:
        codes, lo, hi, bits, bucket = error.codes, error.lo, error.hi, error.bits, error.bucket
    backend.ef_topk_requantize(
        grad_view,
        grad_kind,
        work_dtype(scale),
        abs_mask,
        key_bits,
        codes,
        lo,
        hi,
        bits,
        bucket,
        lo.dtype == np.uint16,
        window.block_size,
        counts.k_full,
        counts.k_tail,
        window.values[row],
        window.values_kind,
        window.indices[row],
        error is not None,
        backend.n_workers(counts.n_blocks),
    )


def densify_from_error(error: Quantized, param, *, alpha: float, lr: float) -> None:
    """MicroAdam's densifying option: param −= lr·α·q, then error = quantize((1 − α)·q), where
    q = decode(error) is the remainder top-k left out (ISTA-DASLab-Optimizers' `alpha`, labelled
    there for pre-training; docs/microadam.md). α = 0 is not allowed here: skip the call.

    param: float32, float64, float16 or uint16 (bf16 bits), the error's length; the update runs
    in the parameter's float type (bf16/f16 in float32, rounded to nearest even), the
    requantization exactly as `quantize` (round half up, bf16 bounds rounded outward).
    alpha in (0, 1), lr finite and >= 0. Cost: one read and write of the error codes and of the
    parameter, per chunk of buckets in a cache-sized scratch (no buffer of the parameter's size).
    """
    _validate.instance(error, Quantized, "error")
    error.check("error")
    _validate.vector(param, "param", (np.float32, np.float64, np.float16, np.uint16))
    if param.size != error.length:
        raise ValueError(f"param and error lengths must agree, got {param.size}, {error.length}")
    if not 0.0 < _validate.real(alpha, "alpha") < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 <= _validate.real(lr, "lr") < math.inf:
        raise ValueError(f"lr must be finite and >= 0, got {lr}")
    if error.bits == 4 and error.bucket % 2:
        raise ValueError(f"error.bucket must be even for 4-bit codes, got {error.bucket}")
    param_view, param_kind = _validate.storage(param)
    step = lr * alpha
    backend = kernels(param)
    backend.densify_from_error(
        error.codes,
        error.lo,
        error.hi,
        error.bits,
        error.bucket,
        error.lo.dtype == np.uint16,
        np.float64(step) if param.dtype == np.float64 else np.float32(step),
        np.float32(1.0 - alpha),
        param_view,
        param_kind,
        backend.n_workers(max(1, -(-error.n_buckets // CHUNK_BUCKETS))),
    )
