"""CPU (Numba) kernels of block top-k and its sparse helpers (ALGORITHMS.md §2.1).

Selection per block works on magnitude bits (|x| as an unsigned integer orders like |x| for
non-NaN floats). A strided sample (every SAMPLE_STRIDE-th key) gives a floor that, with a
4-sigma margin, leaves about 2-4·k keys above it; one vectorized pass packs the tests into a
bit mask per 64 keys and the set bits give the candidates in index order (all keys when the
sample misjudged, so the result is always exact); a radix select on the candidates, with
histograms fitted to the range of the keys left (see `select_threshold`), narrows them to the
few around the threshold, and a sort of those (at most SORT_BELOW keys) gives the exact
threshold T; the candidates above T and the lowest-indexed ones equal to T make exactly k.
Cost: one pass over the block plus O(k) work; no sort of the block. Output per block is in
index order, ties to the lowest index.
"""

import math

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from ._jit import jit
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

SAMPLE_STRIDE = 16  # threshold sample: every 16th key of a block
GROUP = 64  # keys per candidate bit mask (one uint64)
SORT_BELOW = 64  # radix select finishes with a sort once this few keys remain


@jit
def load_value(src, i, kind):
    """src[i] as float64 (exact) from storage `kind` (NATIVE float, BF16 or F16 bits)."""
    if kind == BF16:
        return np.float64(bf16_bits_to_f32(src[i]))
    if kind == F16:
        return np.float64(f16_bits_to_f32(src[i]))
    return np.float64(src[i])


@jit
def load_scaled(src, kind, scale, out):
    """out[j] = scale · src[j] in out's dtype, src in storage `kind` (NATIVE, BF16 or F16 bits).

    The storage branch is taken once, outside the loops, so each loop vectorizes (no float64
    round trip: bf16/f16 convert exactly to float32, native floats to out's dtype).
    """
    if kind == BF16:
        for j in range(out.size):
            out[j] = scale * bf16_bits_to_f32(src[j])
    elif kind == F16:
        for j in range(out.size):
            out[j] = scale * f16_bits_to_f32(src[j])
    else:
        for j in range(out.size):
            out[j] = scale * out.dtype.type(src[j])


@jit
def store_value(dst, i, v, kind):
    """dst[i] = v in storage `kind` (BF16/F16 bits: float32 rounded to nearest even)."""
    if kind == BF16:
        dst[i] = f32_to_bf16_bits(v)
    elif kind == F16:
        dst[i] = f32_to_f16_bits(v)
    else:
        dst[i] = v


@jit
def find_bin(hist, k, top):
    """Highest bin b <= top with count(bins >= b) >= k; returns (b, k - count(bins > b))."""
    above = 0
    for b in range(top, -1, -1):
        if above + hist[b] >= k:
            return b, k - above
        above += hist[b]
    return 0, k


@jit
def key_range(keys, m):
    """(min, max) of keys[:m], m >= 1 (one vectorized pass)."""
    low = keys[0]
    high = low
    for i in range(1, m):
        low = min(low, keys[i])
        high = max(high, keys[i])
    return low, high


@jit
def sorted_copy(source, m, out):
    """out[:m] = source[:m] in ascending order; source may be out itself. Insertion sort: m is at
    most SORT_BELOW, and it compiles in a fraction of the time of Numba's np.sort (whose
    quicksort, with the shape checks of a slice copy, was a fifth of a first MicroAdam step's
    compilation)."""
    for i in range(m):
        key = source[i]
        j = i
        while j > 0 and out[j - 1] > key:
            out[j] = out[j - 1]
            j -= 1
        out[j] = key


@jit
def select_threshold(keys, k, hist, cand):
    """Exact k-th largest of the (already masked) keys of a block, and how many keys equal to it
    to take (k minus the count of larger keys).

    Range-adaptive radix select: each level histograms (key − min) >> shift over at most
    2^bits bins, bits growing with the number of keys left (6 up to RADIX_BITS) and shift the
    smallest that fits the keys' current range into them, so the bins cover only values that
    occur; the keys in the bin holding the k-th largest go on to the next level. Once at most
    SORT_BELOW keys remain they are sorted (`sorted_copy`); once all remaining keys are equal,
    that is the answer. Each level divides the range by 2^bits, so levels are few (one or two for
    the candidates of a sampled floor). hist: RADIX_BINS int64 scratch; cand: scratch of keys'
    dtype, at least keys.size long.
    """
    m = keys.size
    need = k
    in_cand = False  # level 0 reads keys; later levels read and compact cand in place
    while True:
        source = cand if in_cand else keys
        low, high = key_range(source, m)
        if low == high:
            return low, need
        if m <= SORT_BELOW:
            rest = cand[:m]
            sorted_copy(source, m, rest)
            threshold = rest[m - need]
            larger = 0
            for i in range(m - need + 1, m):
                larger += rest[i] > threshold
            return threshold, need - larger
        bits = 6
        while bits < RADIX_BITS and (1 << bits) < m:
            bits += 1
        span = np.uint64(high - low)
        shift = np.uint64(0)
        while (span >> shift) >= np.uint64(1 << bits):
            shift += np.uint64(1)
        top = np.int64(span >> shift)
        hist[: top + 1] = 0
        base = np.uint64(low)
        for i in range(m):
            hist[(np.uint64(source[i]) - base) >> shift] += 1
        chosen, need = find_bin(hist, need, top)
        kept = 0
        for i in range(m):
            key = source[i]
            cand[kept] = key
            kept += np.int64((np.uint64(key) - base) >> shift) == chosen
        m = kept
        in_cand = True


@jit
def sample_floor(keys, abs_mask, key_bits, k, hist):
    """A key t0 below which (very likely) fewer than all but at least k keys lie above: the lower
    edge of the top-level radix bin holding rank r of a stride-SAMPLE_STRIDE sample, r set
    4 standard deviations above the sample's expected count above the k-th key. 0 if unsure."""
    n_sample = keys.size // SAMPLE_STRIDE
    expected = k * n_sample / keys.size
    rank = int(expected + 4.0 * math.sqrt(expected) + 2.0)
    if rank >= n_sample:
        return keys.dtype.type(0)
    shift = np.uint64(key_bits - RADIX_BITS)
    mask = np.uint64(RADIX_BINS - 1)
    hist[:] = 0
    top = 0
    for i in range(n_sample):
        digit = (np.uint64(keys[i * SAMPLE_STRIDE] & abs_mask) >> shift) & mask
        hist[digit] += 1
        top = max(top, np.int64(digit))
    chosen = find_bin(hist, rank, top)[0]
    return keys.dtype.type(np.uint64(chosen) << shift)


@jit
def gather_candidates(keys, abs_mask, floor, cand_keys, cand_idx):
    """Keys >= floor (masked) and their positions, ascending; returns their count.

    Per group of GROUP keys, one branch-free (vectorized) pass packs the tests into a bit mask;
    the set bits are then visited lowest first (trailing-zero count), so the work beyond the
    pass is one short step per candidate.
    """
    n = keys.size
    m = 0
    whole = n - n % GROUP
    one = np.uint64(1)
    for g in range(0, whole, GROUP):
        group = keys[g : g + GROUP]
        hits = np.uint64(0)
        for lane in range(GROUP):
            hits |= np.uint64((group[lane] & abs_mask) >= floor) << np.uint64(lane)
        while hits != 0:
            lane = trailing_zeros(hits)
            cand_keys[m] = group[lane] & abs_mask
            cand_idx[m] = g + lane
            m += 1
            hits &= hits - one
    for i in range(whole, n):
        key = keys[i] & abs_mask
        if key >= floor:
            cand_keys[m] = key
            cand_idx[m] = i
            m += 1
    return m


@jit
def select_top_k(keys, abs_mask, key_bits, k, idx, cand_keys, cand_idx, narrow, hist):
    """idx[:k] = positions (ascending) of the k largest keys & abs_mask; ties -> lowest index.

    A sampled floor keeps ~2-4·k candidates in one vectorized pass (all keys if the sample
    misjudged), the exact radix select runs on the candidates only, and a last pass over the
    candidates in index order takes every key above the threshold and the first equal ones.
    Scratch: cand_keys/narrow (keys' dtype) and cand_idx (int) of keys.size, hist RADIX_BINS.
    """
    floor = sample_floor(keys, abs_mask, key_bits, k, hist)
    m = gather_candidates(keys, abs_mask, floor, cand_keys, cand_idx)
    if m < k:
        m = gather_candidates(keys, abs_mask, keys.dtype.type(0), cand_keys, cand_idx)
    threshold, take_equal = select_threshold(cand_keys[:m], k, hist, narrow)
    pos = 0
    for i in range(m):  # branch-free: which candidates win is unpredictable
        key = cand_keys[i]
        equal = key == threshold
        take = (key > threshold) | (equal & (take_equal > 0))
        idx[pos] = cand_idx[i]
        pos += take
        take_equal -= equal & take


@jit
def block_k(b, n_blocks, k_full, k_tail):
    return k_tail if b == n_blocks - 1 else k_full


@jit(parallel=True)
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
        cand_keys = np.empty(block_size, x_bits.dtype)
        narrow = np.empty(block_size, x_bits.dtype)
        cand_idx = np.empty(block_size, np.int64)
        idx = np.empty(block_size, np.int64)
        for b in range(w, n_blocks, n_workers):
            start = b * block_size
            block = x_bits[start : min(start + block_size, n)]
            k = block_k(b, n_blocks, k_full, k_tail)
            select_top_k(block, abs_mask, key_bits, k, idx, cand_keys, cand_idx, narrow, hist)
            first = b * k_full
            for p in range(k):
                indices[first + p] = idx[p]
                store_value(values, first + p, x[start + idx[p]], values_kind)


@jit(parallel=True)
def scatter_add_kernel(values, values_kind, indices, block_size, k_full, k_tail, scale, out):
    """out[block start + index] += scale · value, per block (parallel over blocks)."""
    n_blocks = (out.size + block_size - 1) // block_size
    for b in numba.prange(n_blocks):
        first = b * k_full
        for p in range(first, first + block_k(b, n_blocks, k_full, k_tail)):
            v = load_value(values, p, values_kind)
            out[b * block_size + indices[p]] += scale * v


@jit(parallel=True)
def gather_kernel(x, indices, block_size, k_full, k_tail, values, values_kind):
    """values[p] = x[block start + indices[p]], per block."""
    n_blocks = (x.size + block_size - 1) // block_size
    for b in numba.prange(n_blocks):
        first = b * k_full
        for p in range(first, first + block_k(b, n_blocks, k_full, k_tail)):
            store_value(values, p, x[b * block_size + indices[p]], values_kind)


@jit(parallel=True)
def zero_selected_kernel(x, indices, block_size, k_full, k_tail):
    """x[block start + indices[p]] = 0, per block."""
    n_blocks = (x.size + block_size - 1) // block_size
    for b in numba.prange(n_blocks):
        first = b * k_full
        for p in range(first, first + block_k(b, n_blocks, k_full, k_tail)):
            x[b * block_size + indices[p]] = 0
