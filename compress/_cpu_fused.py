"""CPU (Numba) kernel of MicroAdam's compression step (ALGORITHMS.md §3.1, first four lines).

Per block, with a block-local scratch a (in cache; float64 for float64 grad, else float32):
a = scale·grad + decode(error); radix-select the top-k of |a| into the window row;
a[selected] = 0; error = quantize(a). Memory traffic per element: grad once, 4-bit error codes
read and written once (+ bounds per bucket). Each step is one call per block to a helper that
holds its own loops (Numba does not inline those, so no call happens per bucket or element).
"""

import numba
import numpy as np

from ._cpu_quant import dequantize_range, quantize_range
from ._cpu_topk import block_k, load_scaled, select_top_k, store_value
from ._jit import jit
from ._scalar import RADIX_BINS


def ef_topk_requantize(
    grad,
    grad_kind,
    scale,
    abs_mask,
    key_bits,
    codes,
    lo,
    hi,
    bits,
    bucket,
    bounds_bf16,
    block_size,
    k_full,
    k_tail,
    row_values,
    values_kind,
    row_indices,
    feedback,
    n_workers,
) -> None:
    """The CPU kernel set's ef_topk_requantize: `ef_topk_requantize_kernel` with a block scratch
    per worker, allocated here (scale's float type, and its bits as abs_mask's unsigned type)."""
    work = np.empty((n_workers, block_size), np.asarray(scale).dtype)
    ef_topk_requantize_kernel(
        grad,
        grad_kind,
        scale,
        abs_mask,
        key_bits,
        codes,
        lo,
        hi,
        bits,
        bucket,
        bounds_bf16,
        block_size,
        k_full,
        k_tail,
        row_values,
        values_kind,
        row_indices,
        feedback,
        work,
        work.view(np.asarray(abs_mask).dtype),
    )


@jit(parallel=True)
def ef_topk_requantize_kernel(
    grad,
    grad_kind,
    scale,
    abs_mask,
    key_bits,
    codes,
    lo,
    hi,
    bits,
    bucket,
    bounds_bf16,
    block_size,
    k_full,
    k_tail,
    row_values,
    values_kind,
    row_indices,
    feedback,
    work,
    work_keys,
):
    """One pass per block over grad and the error codes; parallel over blocks, worker w taking
    blocks w, w + n_workers, ... in row w of the scratch `work` (n_workers × block_size, scale's
    float type; `work_keys` is the same memory as magnitude bits). feedback=False leaves the
    error out (a = scale·grad; codes and bounds are neither read nor written).

    Per block: a scaled copy of grad (`load_scaled`, one vectorized loop per storage kind), the
    decode added (`dequantize_range`), the sampled-floor top-k select (`select_top_k`), the
    gather/zero of the k winners, and the requantization (`quantize_range`), all on the
    block's scratch in L1/L2. Blocks start on bucket boundaries (block_size % bucket == 0).
    """
    n = grad.size
    n_blocks = (n + block_size - 1) // block_size
    n_workers = work.shape[0]
    for w in numba.prange(n_workers):
        keys = work_keys[w]
        scratch = work[w]
        hist = np.empty(RADIX_BINS, np.int64)
        cand_keys = np.empty(block_size, keys.dtype)
        narrow = np.empty(block_size, keys.dtype)
        cand_idx = np.empty(block_size, np.int64)
        idx = np.empty(block_size, np.int64)
        for b in range(w, n_blocks, n_workers):
            start = b * block_size
            length = min(block_size, n - start)
            a = scratch[:length]
            load_scaled(grad[start : start + length], grad_kind, scale, a)
            first_bucket = start // bucket
            if feedback:
                dequantize_range(
                    codes, start, lo, hi, first_bucket, bits, bucket, bounds_bf16, a, True
                )
            k = block_k(b, n_blocks, k_full, k_tail)
            select_top_k(
                keys[:length], abs_mask, key_bits, k, idx, cand_keys, cand_idx, narrow, hist
            )
            first = b * k_full
            for p in range(k):
                j = idx[p]
                row_indices[first + p] = j
                store_value(row_values, first + p, a[j], values_kind)
                a[j] = 0.0
            if feedback:
                quantize_range(
                    a, start, codes, lo, hi, first_bucket, bits, bucket, bounds_bf16, False, 0
                )
