"""MicroAdam's compression step fused into one pass per block (ALGORITHMS.md §3.1)."""

from __future__ import annotations

import numpy as np

from . import _validate
from ._backend import kernels, namespace
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
    validate: bool = True,
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
    validate=False skips every argument check (about 20 µs per call): only for arguments built
    from a state the caller created and checked itself, as the MicroAdam optimizer does; bad
    arguments then corrupt memory instead of raising.
    """
    if validate:
        _validate.instance(error, Quantized, "error")
        _validate.instance(window, SparseWindow, "window")
        error.check("error")
        if window.block_size % error.bucket != 0 or (error.bits == 4 and error.bucket % 2):
            raise ValueError(
                f"window.block_size must be a multiple of error.bucket (an even bucket for 4-bit "
                f"codes), got block_size {window.block_size} and bucket {error.bucket}"
            )
    _select_into_window(grad, error, window, density, scale, check_finite, validate)


def window_topk(
    grad,
    window: SparseWindow,
    *,
    density: float,
    scale: float = 1.0,
    check_finite: bool = False,
    validate: bool = True,
) -> None:
    """Block top-k of |scale·grad| into window row `window.cursor`, with no error feedback:
    `ef_topk_requantize` without its error store (what is not selected is dropped).

    Same kernel, same selection rule and value rounding; reads grad once and writes only the
    row. grad: float32, float64, float16 or uint16 (bf16 bits). Does not advance the cursor.
    validate as in `ef_topk_requantize`.
    """
    _select_into_window(grad, None, window, density, scale, check_finite, validate)


def _select_into_window(grad, error, window, density, scale, check_finite, validate) -> None:
    """Validate (unless told not to), then run the fused kernel with (error given) or without
    error feedback."""
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
