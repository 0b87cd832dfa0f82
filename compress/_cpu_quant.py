"""CPU (Numba) kernels of block quantization (ALGORITHMS.md §2.2).

Codes: 8-bit one per byte; 4-bit two per byte, even element in the high nibble. Bounds lo/hi per
bucket are float32 or bfloat16 bits (`bf16_bounds`); bf16 bounds are rounded outward first and
the codes are computed against the rounded bounds.

The range helpers loop over all buckets of a range themselves: Numba does not inline a helper
that holds a loop, and a call per bucket costs more than a 64-element bucket's work. Inside,
every index is an unsigned (uint64) integer: Numba adds a negative-index wraparound check to
each access with a signed index, which blocks vectorization, and the alternative, a view per
bucket indexed from 0, pays reference-count updates per view (atomic, on the array shared by
all threads, so every thread contends for one cache line; docs/compress.md).
Every inner loop is branch-free so that LLVM vectorizes it: the min/max reduction (on the float
bits as integers), the encode (clamp then truncate, no fused multiply-add) and the decode.
Parallel kernels hand each thread chunks of `chunk_buckets` buckets; the fused MicroAdam kernel
hands each a block.
"""

import numba
import numpy as np

from ._jit import jit
from ._scalar import (
    bf16_bits_to_f32,
    bucket_steps,
    dequant_value,
    f32_to_bf16_bits_outward,
    hash_uniform,
    quant_code,
)

CHUNK_BUCKETS = 2048
"""Buckets per parallel chunk, at most (`chunk_buckets`): 128K elements of the default bucket,
far past any chunk's fixed costs (a call, its scratch allocations, a restart of the memory
streams), and small enough that a vector of a few million elements still splits into several
chunks per thread."""
MIN_CHUNK_BUCKETS = 256


def chunk_buckets(n_buckets: int) -> int:
    """Buckets per parallel chunk for a vector of n_buckets: CHUNK_BUCKETS, or fewer (down to
    MIN_CHUNK_BUCKETS) so that each of Numba's threads gets four chunks or more. Always even, so
    that a chunk starts on a whole byte for any bucket length."""
    per_thread = n_buckets // (4 * numba.get_num_threads())
    return max(MIN_CHUNK_BUCKETS, min(CHUNK_BUCKETS, per_thread - per_thread % 2))


def quantize(x, codes, lo, hi, bits, bucket, bf16_bounds, stochastic, seed) -> None:
    """The CPU kernel set's quantize (`quantize_kernel` with its chunk length)."""
    per_chunk = chunk_buckets(-(-x.size // bucket))
    quantize_kernel(x, codes, lo, hi, bits, bucket, bf16_bounds, stochastic, seed, per_chunk)


def dequantize(codes, lo, hi, bits, bucket, bf16_bounds, out, add) -> None:
    """The CPU kernel set's dequantize (`dequantize_kernel` with its chunk length)."""
    per_chunk = chunk_buckets(-(-out.size // bucket))
    dequantize_kernel(codes, lo, hi, bits, bucket, bf16_bounds, out, add, per_chunk)


@jit
def load_bound(bounds, i, bf16):
    """Bucket bound i as float32, from float32 storage or bf16 bits."""
    if bf16:
        return bf16_bits_to_f32(bounds[i])
    return np.float32(bounds[i])


@jit
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


U0, U1, U2 = np.uint64(0), np.uint64(1), np.uint64(2)
HALF = np.float32(0.5)  # round-half-up offset
ONE = np.float32(1.0)  # the scale of every bucket whose bounds need no rescaling
SIGN_BIT = np.uint32(0x80000000)
GROUP = np.uint64(16)
"""Buckets per phase of `quantize_range`: the group's float32 bounds and steps fill whole vectors
(one of 16 lanes, two of 8), and its source (4 KiB at the default bucket) stays in the smallest
L1 data cache in use (32 KiB) between the min/max phase and the encode that reads it again."""
FULL_BUCKET = 64
"""The default bucket length: a whole bucket of it takes copies of the min/max and 4-bit encode
loops (the encode's for scale 1, every bucket whose bounds are neither beyond 2^126 nor closer
than 2^-100) whose trip count is this literal, so LLVM unrolls their vector bodies completely,
without the trip-count tests and remainder paths a 64-element loop otherwise pays per bucket. A
derived choice, not a tuned one (it follows the default bucket): without the copies the whole
quantize ran markedly slower on an AVX-512 and on an AVX2 machine alike
(bench/test_bench_compress.py)."""


@jit
def quantize_range(
    src, first, codes, lo_out, hi_out, b0, bits, bucket, bf16_bounds, stochastic, seed
):
    """Quantize src (global elements first .. first + src.size - 1, starting bucket b0) into codes
    and bounds. Buckets go in groups of GROUP, in three phases: the min/max of each bucket; the
    bounds (bf16 rounding, storing) and steps of the whole group; the encode of each bucket (from
    cache). Taking the per-bucket scalar work (bf16 rounding, a division) out of the streaming
    loops lets the processor overlap it with them, and, the helpers being branch-free, each of
    the group's bound loops runs as one vector loop. The min/max loop runs over the whole bucket
    (element 0 twice): from element 1 it would be 63 long, with a scalar remainder that costs
    more than its vector body.
    Rounding offsets: 0.5 (round half up) or the hash of the element index (stochastic). A 4-bit
    byte is completed by the element after its even element, so a range must start on an even
    element (or on the range's first byte) for ranges to run in parallel.
    """
    max_code = (1 << bits) - 1
    words = src.view(np.int32)  # these two are used by float32 sources only
    unsigned_words = src.view(np.uint32)
    offsets = np.full(min(bucket, src.size), np.float32(0.5))  # bucket may exceed the range
    group_lo = np.empty(GROUP, np.float32)
    group_hi = np.empty(GROUP, np.float32)
    group_scale = np.empty(GROUP, np.float32)
    group_base = np.empty(GROUP, np.float32)
    group_inv_step = np.empty(GROUP, np.float32)
    n_total, width, start = np.uint64(src.size), np.uint64(bucket), np.uint64(first)
    n_buckets = (n_total + width - U1) // width  # unsigned: see the module docstring
    for g in range(U0, n_buckets, GROUP):
        group = min(GROUP, n_buckets - g)
        # min/max: float32 data reduce their bits as integers (integer min/max vectorizes, float
        # min/max does not in Numba): the signed minimum and maximum and the unsigned maximum.
        # Non-negative floats order like their bits as signed integers; among negative ones the
        # largest unsigned bits are the most negative float and the smallest signed bits the
        # one nearest zero. So min = the unsigned maximum if it has the sign bit (a negative
        # value is present), else the signed minimum; max = the signed maximum if it is >= 0
        # (a non-negative value is present), else the signed minimum. -0.0 < +0.0 here. float64
        # data (the fused step's float64 scratch) take a scalar loop on float32-rounded values.
        for i in range(group):
            q = (g + i) * width
            n = min(width, n_total - q)
            if src.itemsize == 4:
                signed_lo = words[q]
                signed_hi = signed_lo
                unsigned_hi = unsigned_words[q]
                if n == FULL_BUCKET:  # see FULL_BUCKET
                    for j in range(FULL_BUCKET):
                        signed_lo = min(signed_lo, words[q + np.uint64(j)])
                        signed_hi = max(signed_hi, words[q + np.uint64(j)])
                        unsigned_hi = max(unsigned_hi, unsigned_words[q + np.uint64(j)])
                else:
                    for j in range(n):  # from 0, not 1: a 64-long loop vectorizes with no remainder
                        signed_lo = min(signed_lo, words[q + j])
                        signed_hi = max(signed_hi, words[q + j])
                        unsigned_hi = max(unsigned_hi, unsigned_words[q + j])
                lo_bits = np.int32(unsigned_hi) if unsigned_hi >= SIGN_BIT else signed_lo
                hi_bits = signed_hi if signed_hi >= 0 else signed_lo
                group_lo[i] = np.int32(lo_bits).view(np.float32)
                group_hi[i] = np.int32(hi_bits).view(np.float32)
            else:
                lo = np.float32(src[q])
                hi = lo
                for j in range(n):
                    v = np.float32(src[q + j])
                    lo = min(lo, v)
                    hi = max(hi, v)
                group_lo[i] = lo
                group_hi[i] = hi
        for i in range(group):
            group_lo[i], group_hi[i] = store_bounds(
                group_lo[i], group_hi[i], lo_out, hi_out, np.uint64(b0) + g + i, bf16_bounds
            )
        for i in range(group):
            scale, _, base, _, inv_step = bucket_steps(group_lo[i], group_hi[i], max_code)
            group_scale[i] = scale
            group_base[i] = base
            group_inv_step[i] = inv_step
        for i in range(group):
            q = (g + i) * width
            n = min(width, n_total - q)
            e = start + q
            scale, base, inv_step = group_scale[i], group_base[i], group_inv_step[i]
            if stochastic:
                for j in range(n):
                    offsets[j] = hash_uniform(seed, e + j)
            if bits == 8:
                for j in range(n):
                    codes[e + j] = quant_code(
                        src[q + j], scale, base, inv_step, offsets[j], max_code
                    )
                continue
            j = U0
            if e & U1 == U1:  # this bucket starts in the low nibble of a byte begun before it
                codes[e >> U1] |= quant_code(src[q], scale, base, inv_step, offsets[0], max_code)
                j = U1
            n_pairs = (n - j) >> U1
            byte0 = (e + j) >> U1
            if stochastic:
                for p in range(n_pairs):
                    k = j + U2 * p
                    high = quant_code(src[q + k], scale, base, inv_step, offsets[k], max_code)
                    low = quant_code(
                        src[q + k + U1], scale, base, inv_step, offsets[k + U1], max_code
                    )
                    codes[byte0 + p] = (high << 4) | low
            elif n_pairs == FULL_BUCKET // 2 and scale == ONE:  # see FULL_BUCKET
                # x·1 is x exactly: the codes of every ordinary bucket without the multiply
                for p in range(FULL_BUCKET // 2):
                    k = j + U2 * np.uint64(p)
                    high = quant_code(src[q + k], ONE, base, inv_step, HALF, max_code)
                    low = quant_code(src[q + k + U1], ONE, base, inv_step, HALF, max_code)
                    codes[byte0 + np.uint64(p)] = (high << 4) | low
            else:  # a constant offset, not a load per code
                for p in range(n_pairs):
                    k = j + U2 * p
                    high = quant_code(src[q + k], scale, base, inv_step, HALF, max_code)
                    low = quant_code(src[q + k + U1], scale, base, inv_step, HALF, max_code)
                    codes[byte0 + p] = (high << 4) | low
            j += U2 * n_pairs
            if j < n:
                codes[(e + j) >> U1] = (
                    quant_code(src[q + j], scale, base, inv_step, offsets[j], max_code) << 4
                )


@jit
def dequantize_range(codes, first, lo_arr, hi_arr, b0, bits, bucket, bf16_bounds, dst, add):
    """dst[j] (+)= code(first + j)·step + lo of its bucket, for all of dst (starting bucket b0).
    Buckets go in groups of GROUP: the steps of the whole group first (one vector loop), then the
    decode of each bucket."""
    max_code = (1 << bits) - 1
    group_unscale = np.empty(GROUP, np.float32)
    group_base = np.empty(GROUP, np.float32)
    group_step = np.empty(GROUP, np.float32)
    n_total, width, start = np.uint64(dst.size), np.uint64(bucket), np.uint64(first)
    n_buckets = (n_total + width - U1) // width  # unsigned: see the module docstring
    for g in range(U0, n_buckets, GROUP):
        group = min(GROUP, n_buckets - g)
        for i in range(group):
            lo = load_bound(lo_arr, np.uint64(b0) + g + i, bf16_bounds)
            hi = load_bound(hi_arr, np.uint64(b0) + g + i, bf16_bounds)
            _, unscale, base, step, _ = bucket_steps(lo, hi, max_code)
            group_unscale[i] = unscale
            group_base[i] = base
            group_step[i] = step
        for i in range(group):
            q = (g + i) * width
            n = min(width, n_total - q)
            e = start + q
            unscale, base, step = group_unscale[i], group_base[i], group_step[i]
            if bits == 8:
                if add:
                    for j in range(n):
                        dst[q + j] += dequant_value(codes[e + j], step, base, unscale)
                else:
                    for j in range(n):
                        dst[q + j] = dequant_value(codes[e + j], step, base, unscale)
                continue
            j = U0
            if e & U1 == U1:
                v = dequant_value(codes[e >> U1] & 15, step, base, unscale)
                dst[q] = dst[q] + v if add else v
                j = U1
            n_pairs = (n - j) >> U1
            byte0 = (e + j) >> U1
            pair0 = q + j
            if add:  # two loops rather than a select per element: each vectorizes
                for p in range(n_pairs):
                    byte = np.int32(codes[byte0 + p])
                    dst[pair0 + U2 * p] += dequant_value(byte >> 4, step, base, unscale)
                    dst[pair0 + U2 * p + U1] += dequant_value(byte & 15, step, base, unscale)
            else:
                for p in range(n_pairs):
                    byte = np.int32(codes[byte0 + p])
                    dst[pair0 + U2 * p] = dequant_value(byte >> 4, step, base, unscale)
                    dst[pair0 + U2 * p + U1] = dequant_value(byte & 15, step, base, unscale)
            j += U2 * n_pairs
            if j < n:
                v = dequant_value(codes[(e + j) >> U1] >> 4, step, base, unscale)
                dst[q + j] = dst[q + j] + v if add else v


@jit(parallel=True)
def quantize_kernel(x, codes, lo, hi, bits, bucket, bf16_bounds, stochastic, seed, per_chunk):
    """Quantize x per bucket; parallel over chunks of per_chunk (even) buckets."""
    n = x.size
    chunk = per_chunk * bucket
    for c in numba.prange((n + chunk - 1) // chunk):
        start = c * chunk
        quantize_range(
            x[start : min(start + chunk, n)],
            start,
            codes,
            lo,
            hi,
            c * per_chunk,
            bits,
            bucket,
            bf16_bounds,
            stochastic,
            seed,
        )


@jit(parallel=True)
def dequantize_kernel(codes, lo, hi, bits, bucket, bf16_bounds, out, add, per_chunk):
    """out (+)= decode(codes) per bucket; parallel over chunks of per_chunk (even) buckets."""
    n = out.size
    chunk = per_chunk * bucket
    for c in numba.prange((n + chunk - 1) // chunk):
        start = c * chunk
        dequantize_range(
            codes,
            start,
            lo,
            hi,
            c * per_chunk,
            bits,
            bucket,
            bf16_bounds,
            out[start : min(start + chunk, n)],
            add,
        )
