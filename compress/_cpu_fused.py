"""CPU (Numba) kernel of MicroAdam's compression step (ALGORITHMS.md §3.1, first four lines).

Per block, with a block-local scratch a (in cache; float64 for float64 grad, else float32):
a = scale·grad + decode(error); radix-select the top-k of |a| into the window row;
a[selected] = 0; error = quantize(a). Memory traffic per element: grad once, 4-bit error codes
read and written once (+ bounds per bucket).

Speed notes (Numba): helpers that contain loops are not inlined into their caller, and a call
per 64-element bucket (plus the reference counting of the views it is passed) costs more than
the bucket's work; so the per-bucket decode and requantize loops live in this kernel's body, on
views indexed from 0 (no negative-index wraparound code, so they vectorize). Calls happen once
per block (load, select).
"""

import numba
import numpy as np
from numba import njit

from ._cpu_quant import load_bound, ordered_int, store_bounds
from ._cpu_topk import block_k, load_scaled, select_top_k, store_value
from ._scalar import RADIX_BINS, bucket_steps, quant_code


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
    Per block: a scaled copy of grad (one vectorized loop per storage kind), the decode added
    per bucket, the sampled-floor top-k select (`select_top_k`), the gather/zero of the k
    winners, and the requantization per bucket (min/max on ordered integer images of float32
    bits, then round-half-up codes), all on the block's scratch in L1/L2. Needs block_size a
    multiple of bucket and, for 4-bit codes, an even bucket (every bucket starts on a byte).
    """
    n = grad.size
    n_blocks = (n + block_size - 1) // block_size
    max_code = (1 << bits) - 1
    for w in numba.prange(n_workers):
        keys = np.empty(block_size, np.asarray(abs_mask).dtype)
        scratch = keys.view(np.asarray(scale).dtype)
        rounded = np.empty(bucket, np.float32)
        words = rounded.view(np.int32)
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
            for q in range(0, length, bucket):
                m = min(bucket, length - q)
                e = start + q
                step = bucket_steps(
                    load_bound(lo, first_bucket + q // bucket, bounds_bf16),
                    load_bound(hi, first_bucket + q // bucket, bounds_bf16),
                    max_code,
                )[0]
                low = load_bound(lo, first_bucket + q // bucket, bounds_bf16)
                part = a[q : q + m]
                if bits == 8:
                    src = codes[e : e + m]
                    for j in range(m):
                        part[j] = part[j] + (np.float32(src[j]) * step + low)
                else:
                    src = codes[e >> 1 : (e + m + 1) >> 1]
                    for p in range(m >> 1):
                        byte = np.int32(src[p])
                        part[2 * p] = part[2 * p] + (np.float32(byte >> 4) * step + low)
                        part[2 * p + 1] = part[2 * p + 1] + (np.float32(byte & 15) * step + low)
                    if m & 1:
                        v = np.float32(np.int32(src[m >> 1]) >> 4) * step + low
                        part[m - 1] = part[m - 1] + v
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
                m = min(bucket, length - q)
                e = start + q
                x = rounded[:m]
                part = a[q : q + m]
                for j in range(m):
                    x[j] = np.float32(part[j])
                ws = words[:m]
                key_lo = ordered_int(ws[0])
                key_hi = key_lo
                for j in range(1, m):
                    key = ordered_int(ws[j])
                    key_lo = min(key_lo, key)
                    key_hi = max(key_hi, key)
                low, high = store_bounds(
                    np.int32(ordered_int(key_lo)).view(np.float32),
                    np.int32(ordered_int(key_hi)).view(np.float32),
                    lo,
                    hi,
                    first_bucket + q // bucket,
                    bounds_bf16,
                )
                inv_step = bucket_steps(low, high, max_code)[1]
                half = np.float32(0.5)
                if bits == 8:
                    out = codes[e : e + m]
                    for j in range(m):
                        out[j] = quant_code(x[j], low, inv_step, half, max_code)
                else:
                    out = codes[e >> 1 : (e + m + 1) >> 1]
                    for p in range(m >> 1):
                        code_high = quant_code(x[2 * p], low, inv_step, half, max_code)
                        code_low = quant_code(x[2 * p + 1], low, inv_step, half, max_code)
                        out[p] = (code_high << 4) | code_low
                    if m & 1:
                        out[m >> 1] = quant_code(x[m - 1], low, inv_step, half, max_code) << 4
