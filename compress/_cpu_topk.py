"""CPU (Numba) kernels of block top-k and its sparse helpers (ALGORITHMS.md §2.1).

Selection per block is a radix select on magnitude bits (|x| as an unsigned integer orders like
|x| for non-NaN floats): a 2048-bin histogram of the top 11 bits locates the bin holding the
k-th largest magnitude, the elements of that bin become candidates, and further 11-bit levels
narrow them down to the exact threshold T. A final pass in index order takes every element above
T and the lowest-indexed elements equal to T until exactly k are taken. Cost: 2 passes over the
block plus passes over the (usually few) candidates; no sort. Output per block is in index order.
"""

import numba
import numpy as np
from numba import njit

from ._scalar import (
    BF16,
    F16,
    RADIX_BINS,
    RADIX_BITS,
    bf16_bits_to_f32,
    f16_bits_to_f32,
    f32_to_bf16_bits,
    f32_to_f16_bits,
)


@njit(cache=True)
def load_value(src, i, kind):
    """src[i] as float64 (exact) from storage `kind` (NATIVE float, BF16 or F16 bits)."""
    if kind == BF16:
        return np.float64(bf16_bits_to_f32(src[i]))
    if kind == F16:
        return np.float64(f16_bits_to_f32(src[i]))
    return np.float64(src[i])


@njit(cache=True)
def store_value(dst, i, v, kind):
    """dst[i] = v in storage `kind` (BF16/F16 bits: float32 rounded to nearest even)."""
    if kind == BF16:
        dst[i] = f32_to_bf16_bits(v)
    elif kind == F16:
        dst[i] = f32_to_f16_bits(v)
    else:
        dst[i] = v


@njit(cache=True)
def find_bin(hist, k):
    """Highest bin b with count(bins >= b) >= k; returns (b, k - count(bins > b))."""
    above = 0
    for b in range(hist.size - 1, -1, -1):
        if above + hist[b] >= k:
            return b, k - above
        above += hist[b]
    return 0, k


@njit(cache=True)
def select_threshold(bits, abs_mask, key_bits, k, hist, cand):
    """Exact k-th largest key (bits & abs_mask) of a block, and how many keys equal to it to take.

    hist: RADIX_BINS int64 scratch; cand: scratch of bits' dtype, at least bits.size long.
    """
    mask = np.uint64(RADIX_BINS - 1)
    shift = np.uint64(key_bits - RADIX_BITS)
    hist[:] = 0
    for i in range(bits.size):
        hist[(np.uint64(bits[i] & abs_mask) >> shift) & mask] += 1
    chosen, need = find_bin(hist, k)
    m = 0
    for i in range(bits.size):
        key = bits[i] & abs_mask
        if (np.uint64(key) >> shift) & mask == chosen:
            cand[m] = key
            m += 1
    while shift > 0:
        shift = shift - np.uint64(min(RADIX_BITS, shift))
        hist[:] = 0
        for i in range(m):
            hist[(np.uint64(cand[i]) >> shift) & mask] += 1
        chosen, need = find_bin(hist, need)
        kept = 0
        for i in range(m):
            if (np.uint64(cand[i]) >> shift) & mask == chosen:
                cand[kept] = cand[i]
                kept += 1
        m = kept
    return cand[0], need


@njit(cache=True)
def selected_indices(bits, abs_mask, threshold, take_equal, idx):
    """Indices (ascending) of keys above threshold plus the first take_equal keys equal to it."""
    pos = 0
    for i in range(bits.size):
        key = bits[i] & abs_mask
        if key > threshold:
            idx[pos] = i
            pos += 1
        elif key == threshold and take_equal > 0:
            take_equal -= 1
            idx[pos] = i
            pos += 1


@njit(cache=True)
def block_k(b, n_blocks, k_full, k_tail):
    return k_tail if b == n_blocks - 1 else k_full


@njit(parallel=True, cache=True)
def topk_blocks_kernel(
    x,
    x_bits,
    abs_mask,
    key_bits,
    block_size,
    k_full,
    k_tail,
    values,
    values_kind,
    indices,
    n_workers,
):
    """Block top-k of |x| into (values, int16 indices); x_bits is x viewed as unsigned ints."""
    n = x.size
    n_blocks = (n + block_size - 1) // block_size
    for w in numba.prange(n_workers):
        hist = np.empty(RADIX_BINS, np.int64)
        cand = np.empty(block_size, x_bits.dtype)
        idx = np.empty(block_size, np.int64)
        for b in range(w, n_blocks, n_workers):
            start = b * block_size
            block = x_bits[start : min(start + block_size, n)]
            k = block_k(b, n_blocks, k_full, k_tail)
            threshold, take_equal = select_threshold(block, abs_mask, key_bits, k, hist, cand)
            selected_indices(block, abs_mask, threshold, take_equal, idx)
            first = b * k_full
            for p in range(k):
                indices[first + p] = idx[p]
                store_value(values, first + p, x[start + idx[p]], values_kind)


@njit(parallel=True, cache=True)
def scatter_add_kernel(values, values_kind, indices, block_size, k_full, k_tail, scale, out):
    """out[block start + index] += scale · value, per block (parallel over blocks)."""
    n_blocks = (out.size + block_size - 1) // block_size
    for b in numba.prange(n_blocks):
        first = b * k_full
        for p in range(first, first + block_k(b, n_blocks, k_full, k_tail)):
            v = load_value(values, p, values_kind)
            out[b * block_size + indices[p]] += scale * v


@njit(parallel=True, cache=True)
def gather_kernel(x, indices, block_size, k_full, k_tail, values, values_kind):
    """values[p] = x[block start + indices[p]], per block."""
    n_blocks = (x.size + block_size - 1) // block_size
    for b in numba.prange(n_blocks):
        first = b * k_full
        for p in range(first, first + block_k(b, n_blocks, k_full, k_tail)):
            store_value(values, p, x[b * block_size + indices[p]], values_kind)


@njit(parallel=True, cache=True)
def zero_selected_kernel(x, indices, block_size, k_full, k_tail):
    """x[block start + indices[p]] = 0, per block."""
    n_blocks = (x.size + block_size - 1) // block_size
    for b in numba.prange(n_blocks):
        first = b * k_full
        for p in range(first, first + block_k(b, n_blocks, k_full, k_tail)):
            x[b * block_size + indices[p]] = 0
