"""CPU (Numba) kernel of MicroAdam's compression step (ALGORITHMS.md §3.1, first four lines).

Per block, with a block-local scratch a (in cache; float64 for float64 grad, else float32):
a = scale·grad + decode(error); radix-select the top-k of |a| into the window row;
a[selected] = 0; error = quantize(a). Memory traffic per element: grad once, 4-bit error codes
read and written once (+ bounds per bucket).
"""

import numba
import numpy as np
from numba import njit

from ._cpu_quant import dequantize_bucket, quantize_bucket
from ._cpu_topk import block_k, load_value, select_top_k, store_value
from ._scalar import RADIX_BINS


@njit(parallel=True, cache=True)
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
    n_workers,
):
    """One pass per block over grad and the error codes; parallel over blocks.

    The scratch has scale's float type; its keys (magnitude bits) abs_mask's unsigned type.
    Per block: a scaled copy of grad (one vectorized loop), the decode added per bucket, the
    sampled-floor top-k select (`select_top_k`), the gather/zero of the k winners, and the
    requantization per bucket, all on the block's scratch in L1/L2.
    """
    n = grad.size
    n_blocks = (n + block_size - 1) // block_size
    for w in numba.prange(n_workers):
        keys = np.empty(block_size, np.asarray(abs_mask).dtype)
        scratch = keys.view(np.asarray(scale).dtype)
        hist = np.empty(RADIX_BINS, np.int64)
        cand_keys = np.empty(block_size, keys.dtype)
        narrow = np.empty(block_size, keys.dtype)
        cand_idx = np.empty(block_size, np.int64)
        idx = np.empty(block_size, np.int64)
        for b in range(w, n_blocks, n_workers):
            start = b * block_size
            length = min(block_size, n - start)
            a = scratch[:length]
            source = grad[start : start + length]
            for j in range(length):
                a[j] = scale * a.dtype.type(load_value(source, j, grad_kind))
            first_bucket = start // bucket
            for q in range(0, length, bucket):
                dequantize_bucket(
                    codes,
                    start + q,
                    lo,
                    hi,
                    first_bucket + q // bucket,
                    bits,
                    bounds_bf16,
                    a,
                    q,
                    min(bucket, length - q),
                    True,
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
            for q in range(0, length, bucket):
                quantize_bucket(
                    a,
                    q,
                    min(bucket, length - q),
                    start + q,
                    codes,
                    lo,
                    hi,
                    first_bucket + q // bucket,
                    bits,
                    bounds_bf16,
                    False,
                    0,
                )
