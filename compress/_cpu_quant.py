"""CPU (Numba) kernels of block quantization (ALGORITHMS.md §2.2).

Codes: 8-bit one per byte; 4-bit two per byte, even element in the high nibble. Bounds lo/hi per
bucket are float32 or bfloat16 bits (`bf16_bounds`); bf16 bounds are rounded outward first and
the codes are computed against the rounded bounds.
"""

import numba
import numpy as np
from numba import njit

from ._scalar import (
    bf16_bits_to_f32,
    bucket_steps,
    f32_to_bf16_bits_outward,
    hash_uniform,
    quant_code,
)


@njit(cache=True)
def load_bound(bounds, i, bf16):
    """Bucket bound i as float32, from float32 storage or bf16 bits."""
    if bf16:
        return bf16_bits_to_f32(bounds[i])
    return np.float32(bounds[i])


@njit(cache=True)
def read_code(codes, e, bits):
    """Code of element e (4-bit: even element in the high nibble)."""
    if bits == 8:
        return np.int64(codes[e])
    return np.int64((codes[e >> 1] >> (4 - 4 * (e & 1))) & 15)


@njit(cache=True)
def quantize_bucket(src, first, codes, lo_out, hi_out, b, bits, bf16_bounds, stochastic, seed):
    """Quantize src (one bucket, elements first..first+len(src)) into codes and bounds[b].

    One pass for min/max, one to encode (both from cache). A 4-bit byte is completed by the
    element after its even element, so callers keep byte pairs within one thread.
    """
    lo = np.float32(src[0])
    hi = lo
    for j in range(1, src.size):
        v = np.float32(src[j])
        lo = min(lo, v)
        hi = max(hi, v)
    if bf16_bounds:
        lo_bits = f32_to_bf16_bits_outward(lo, False)
        hi_bits = f32_to_bf16_bits_outward(hi, True)
        lo_out[b] = lo_bits
        hi_out[b] = hi_bits
        lo = bf16_bits_to_f32(lo_bits)
        hi = bf16_bits_to_f32(hi_bits)
    else:
        lo_out[b] = lo
        hi_out[b] = hi
    max_code = (1 << bits) - 1
    inv_step = bucket_steps(lo, hi, max_code)[1]
    n = src.size
    j = 0
    if bits == 8:
        for j in range(n):
            codes[first + j] = element_code(src, j, first, lo, inv_step, max_code, stochastic, seed)
        return
    if first & 1 == 1:  # this bucket starts in the low nibble of a byte its predecessor began
        codes[first >> 1] |= element_code(src, 0, first, lo, inv_step, max_code, stochastic, seed)
        j = 1
    n_pairs = (n - j) // 2
    for p in range(n_pairs):
        i = j + 2 * p
        high = element_code(src, i, first, lo, inv_step, max_code, stochastic, seed)
        low = element_code(src, i + 1, first, lo, inv_step, max_code, stochastic, seed)
        codes[(first + i) >> 1] = (high << 4) | low
    j += 2 * n_pairs
    if j < n:
        codes[(first + j) >> 1] = (
            element_code(src, j, first, lo, inv_step, max_code, stochastic, seed) << 4
        )


@njit(cache=True)
def element_code(src, j, first, lo, inv_step, max_code, stochastic, seed):
    """Code of src[j]: round half up, or stochastic with the hash of its global index."""
    offset = hash_uniform(seed, first + j) if stochastic else np.float32(0.5)
    return quant_code(src[j], lo, inv_step, offset, max_code)


@njit(cache=True)
def dequantize_bucket(codes, first, lo_arr, hi_arr, b, bits, bf16_bounds, dst, add):
    """dst[j] (+)= code(first + j)·step + lo for one bucket; dst is the bucket's slice."""
    lo = load_bound(lo_arr, b, bf16_bounds)
    hi = load_bound(hi_arr, b, bf16_bounds)
    step = bucket_steps(lo, hi, (1 << bits) - 1)[0]
    for j in range(dst.size):
        v = np.float32(read_code(codes, first + j, bits)) * step + lo
        if add:
            dst[j] += v
        else:
            dst[j] = v


@njit(parallel=True, cache=True)
def quantize_kernel(x, codes, lo, hi, bits, bucket, bf16_bounds, stochastic, seed):
    """Quantize x per bucket; parallel over chunks of whole bytes (1 or 2 buckets)."""
    n = x.size
    per_chunk = 1 if (bits == 8 or bucket % 2 == 0) else 2
    n_buckets = lo.size
    n_chunks = (n_buckets + per_chunk - 1) // per_chunk
    for c in numba.prange(n_chunks):
        for b in range(c * per_chunk, min((c + 1) * per_chunk, n_buckets)):
            start = b * bucket
            stop = min(start + bucket, n)
            quantize_bucket(
                x[start:stop], start, codes, lo, hi, b, bits, bf16_bounds, stochastic, seed
            )


@njit(parallel=True, cache=True)
def dequantize_kernel(codes, lo, hi, bits, bucket, bf16_bounds, out, add):
    """out (+)= decode(codes) per bucket; parallel over buckets."""
    n = out.size
    for b in numba.prange(lo.size):
        start = b * bucket
        stop = min(start + bucket, n)
        dequantize_bucket(codes, start, lo, hi, b, bits, bf16_bounds, out[start:stop], add)
