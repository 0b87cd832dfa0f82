"""CPU (Numba) kernels of block quantization (ALGORITHMS.md §2.2).

Codes: 8-bit one per byte; 4-bit two per byte, even element in the high nibble. Bounds lo/hi per
bucket are float32 or bfloat16 bits (`bf16_bounds`); bf16 bounds are rounded outward first and
the codes are computed against the rounded bounds.

Every per-bucket helper works on an index range of its source, read through a view indexed
from 0 (a negative-index wraparound check per access would block vectorization), and keeps its
inner loop branch-free so that LLVM vectorizes it: the min/max reduction (on integer images of
the float bits), the encode (clamp then truncate, no fused multiply-add) and the decode.
Parallel kernels hand each thread a chunk of CHUNK_BUCKETS buckets.
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

CHUNK_BUCKETS = 256  # even, so that a chunk starts on a whole byte for any bucket length


@njit(cache=True)
def load_bound(bounds, i, bf16):
    """Bucket bound i as float32, from float32 storage or bf16 bits."""
    if bf16:
        return bf16_bits_to_f32(bounds[i])
    return np.float32(bounds[i])


@njit(cache=True)
def ordered_int(bits):
    """int32 float bits -> int32 that orders like the float (and back: the map is an involution)."""
    return np.int32(bits ^ ((bits >> np.int32(31)) & np.int32(0x7FFFFFFF)))


@njit(cache=True)
def value_range(src, s0, n):
    """(min, max) of float32(src[s0 : s0 + n]), n >= 1.

    float32 sources reduce order-preserving integer images of their bits (integer min/max
    vectorizes; float min/max reductions do not in Numba), so -0.0 < +0.0 here. Other sources
    (the float64 scratch of the fused step) take a scalar loop.
    """
    part = src[s0 : s0 + n]  # a view indexed from 0: no negative-index wraparound code
    if part.itemsize == 4:
        words = part.view(np.int32)
        key_lo = ordered_int(words[0])
        key_hi = key_lo
        for j in range(1, n):
            key = ordered_int(words[j])
            key_lo = min(key_lo, key)
            key_hi = max(key_hi, key)
        lo_bits, hi_bits = np.int32(ordered_int(key_lo)), np.int32(ordered_int(key_hi))
        return lo_bits.view(np.float32), hi_bits.view(np.float32)
    lo = np.float32(part[0])
    hi = lo
    for j in range(1, n):
        v = np.float32(part[j])
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@njit(cache=True)
def store_bounds(lo, hi, lo_out, hi_out, b, bf16_bounds):
    """Store bucket b's bounds (bf16: rounded outward) and return them as float32."""
    if bf16_bounds:
        lo_bits = f32_to_bf16_bits_outward(lo, False)
        hi_bits = f32_to_bf16_bits_outward(hi, True)
        lo_out[b] = lo_bits
        hi_out[b] = hi_bits
        return bf16_bits_to_f32(lo_bits), bf16_bits_to_f32(hi_bits)
    lo_out[b] = lo
    hi_out[b] = hi
    return lo, hi


@njit(cache=True)
def element_code(x, e, lo, inv_step, max_code, stochastic, seed):
    """Code of value x at global index e: round half up, or stochastic with the hash of e."""
    offset = hash_uniform(seed, e) if stochastic else np.float32(0.5)
    return quant_code(x, lo, inv_step, offset, max_code)


@njit(cache=True)
def quantize_bucket(
    src, s0, n, first, codes, lo_out, hi_out, b, bits, bf16_bounds, stochastic, seed
):
    """Quantize src[s0 : s0 + n] (global elements first .. first + n - 1) into codes, bounds[b].

    One min/max pass and one encode pass (both from cache). A 4-bit byte is completed by the
    element after its even element, so callers keep byte pairs within one thread.
    """
    lo, hi = value_range(src, s0, n)
    lo, hi = store_bounds(lo, hi, lo_out, hi_out, b, bf16_bounds)
    max_code = (1 << bits) - 1
    inv_step = bucket_steps(lo, hi, max_code)[1]
    part = src[s0 : s0 + n]
    if bits == 8:
        out = codes[first : first + n]
        for j in range(n):
            out[j] = element_code(part[j], first + j, lo, inv_step, max_code, stochastic, seed)
        return
    j = 0
    if first & 1 == 1:  # this bucket starts in the low nibble of a byte its predecessor began
        codes[first >> 1] |= element_code(part[0], first, lo, inv_step, max_code, stochastic, seed)
        j = 1
    n_pairs = (n - j) >> 1
    pairs = part[j : j + 2 * n_pairs]
    out = codes[(first + j) >> 1 : ((first + j) >> 1) + n_pairs]
    e = first + j
    for p in range(n_pairs):
        high = element_code(pairs[2 * p], e + 2 * p, lo, inv_step, max_code, stochastic, seed)
        low = element_code(
            pairs[2 * p + 1], e + 2 * p + 1, lo, inv_step, max_code, stochastic, seed
        )
        out[p] = (high << 4) | low
    j += 2 * n_pairs
    if j < n:
        last = element_code(part[j], first + j, lo, inv_step, max_code, stochastic, seed)
        codes[(first + j) >> 1] = last << 4


@njit(cache=True)
def dequantize_bucket(codes, first, lo_arr, hi_arr, b, bits, bf16_bounds, dst, d0, n, add):
    """dst[d0 + j] (+)= code(first + j)·step + lo for j < n (one bucket)."""
    lo = load_bound(lo_arr, b, bf16_bounds)
    hi = load_bound(hi_arr, b, bf16_bounds)
    step = bucket_steps(lo, hi, (1 << bits) - 1)[0]
    part = dst[d0 : d0 + n]  # views indexed from 0: no negative-index wraparound code
    if bits == 8:
        src = codes[first : first + n]
        for j in range(n):
            v = np.float32(src[j]) * step + lo
            part[j] = part[j] + v if add else v
        return
    j = 0
    if first & 1 == 1:
        v = np.float32(codes[first >> 1] & 15) * step + lo
        part[0] = part[0] + v if add else v
        j = 1
    n_pairs = (n - j) >> 1
    src = codes[(first + j) >> 1 : ((first + j) >> 1) + n_pairs]
    pairs = part[j : j + 2 * n_pairs]
    for p in range(n_pairs):
        byte = np.int32(src[p])
        high = np.float32(byte >> 4) * step + lo
        low = np.float32(byte & 15) * step + lo
        pairs[2 * p] = pairs[2 * p] + high if add else high
        pairs[2 * p + 1] = pairs[2 * p + 1] + low if add else low
    j += 2 * n_pairs
    if j < n:
        v = np.float32(codes[(first + j) >> 1] >> 4) * step + lo
        part[j] = part[j] + v if add else v


@njit(parallel=True, cache=True)
def quantize_kernel(x, codes, lo, hi, bits, bucket, bf16_bounds, stochastic, seed):
    """Quantize x per bucket; parallel over chunks of CHUNK_BUCKETS buckets."""
    n = x.size
    n_buckets = lo.size
    for c in numba.prange((n_buckets + CHUNK_BUCKETS - 1) // CHUNK_BUCKETS):
        for b in range(c * CHUNK_BUCKETS, min((c + 1) * CHUNK_BUCKETS, n_buckets)):
            start = b * bucket
            quantize_bucket(
                x,
                start,
                min(bucket, n - start),
                start,
                codes,
                lo,
                hi,
                b,
                bits,
                bf16_bounds,
                stochastic,
                seed,
            )


@njit(parallel=True, cache=True)
def dequantize_kernel(codes, lo, hi, bits, bucket, bf16_bounds, out, add):
    """out (+)= decode(codes) per bucket; parallel over chunks of CHUNK_BUCKETS buckets."""
    n = out.size
    n_buckets = lo.size
    for c in numba.prange((n_buckets + CHUNK_BUCKETS - 1) // CHUNK_BUCKETS):
        for b in range(c * CHUNK_BUCKETS, min((c + 1) * CHUNK_BUCKETS, n_buckets)):
            start = b * bucket
            dequantize_bucket(
                codes, start, lo, hi, b, bits, bf16_bounds, out, start, min(bucket, n - start), add
            )
