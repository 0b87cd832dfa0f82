"""CPU (Numba) kernel of MicroAdam's compression step (ALGORITHMS.md §3.1, first four lines).

Per block, with a block-local float32 scratch a (in cache): a = scale·grad + decode(error);
radix-select the top-k of |a| into the window row; a[selected] = 0; error = quantize(a). Memory
traffic per element: grad once, 4-bit error codes read and written once (+ bounds per bucket).
"""

import numba
import numpy as np
from numba import njit

from ._cpu_quant import dequantize_bucket, quantize_bucket
from ._cpu_topk import block_k, load_value, select_threshold, selected_indices, store_value
from ._scalar import RADIX_BINS

ABS_MASK_F32 = np.uint32(0x7FFFFFFF)


@njit(parallel=True, cache=True)
def ef_topk_requantize_kernel(
    grad,
    grad_kind,
    scale,
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
    """One pass per block over grad and the error codes; parallel over blocks."""
    n = grad.size
    n_blocks = (n + block_size - 1) // block_size
    scale32 = np.float32(scale)
    for w in numba.prange(n_workers):
        scratch = np.empty(block_size, np.float32)
        keys = scratch.view(np.uint32)
        hist = np.empty(RADIX_BINS, np.int64)
        cand = np.empty(block_size, np.uint32)
        idx = np.empty(block_size, np.int64)
        for b in range(w, n_blocks, n_workers):
            start = b * block_size
            length = min(block_size, n - start)
            a = scratch[:length]
            for j in range(length):
                a[j] = scale32 * np.float32(load_value(grad, start + j, grad_kind))
            first_bucket = start // bucket
            for q in range(0, length, bucket):
                stop = min(q + bucket, length)
                dequantize_bucket(
                    codes,
                    start + q,
                    lo,
                    hi,
                    first_bucket + q // bucket,
                    bits,
                    bounds_bf16,
                    a[q:stop],
                    True,
                )
            k = block_k(b, n_blocks, k_full, k_tail)
            threshold, take_equal = select_threshold(keys[:length], ABS_MASK_F32, 31, k, hist, cand)
            selected_indices(keys[:length], ABS_MASK_F32, threshold, take_equal, idx)
            first = b * k_full
            for p in range(k):
                j = idx[p]
                row_indices[first + p] = j
                store_value(row_values, first + p, a[j], values_kind)
                a[j] = 0.0
            for q in range(0, length, bucket):
                stop = min(q + bucket, length)
                quantize_bucket(
                    a[q:stop],
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
