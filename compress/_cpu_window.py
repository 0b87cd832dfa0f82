"""CPU (Numba) kernels of the sliding-window Adam statistics (ALGORITHMS.md §2.4).

Per block, a block-local float64 scratch of (M, S) pairs is touched only at the window's
indices: zero the selected slots, accumulate β^age-weighted values and squares row by row
(oldest row first), then read u back at the same slots. M[j] and S[j] sit side by side
(`moments[2j]`, `moments[2j + 1]`), so each entry touches one cache line of the scratch, not
two.
float64 holds v² and the sums of any finite float32 or bf16 values without overflow (|v| up to
3.4e38). Cost O(m·k) flops and bytes, independent of the dense length; the scratch is
block-local, so its width costs no memory traffic.
"""

import math

import numba
import numpy as np

from ._cpu_topk import block_k, load_value, store_value
from ._jit import jit
from ._scalar import NARROW_LIMIT, NARROW_MIN_EPS, NATIVE


@jit
def zero_block_moments(indices, rows, first, k, moments):
    """M[j] = S[j] = 0 at the block's entries (only those: the scratch is never swept whole)."""
    for a in range(rows.size):
        row_indices = indices[rows[a]]
        for p in range(first, first + k):
            j = 2 * np.int64(row_indices[p])
            moments[j] = 0.0
            moments[j + 1] = 0.0


@jit
def add_block_moments(values, values_kind, indices, rows, w1, w2, first, k, moments):
    """M[j] += Σ w1[age]·v, S[j] += Σ w2[age]·v² over the block's entries, oldest row first;
    rows[age] = row number."""
    for a in range(rows.size - 1, -1, -1):
        row_values = values[rows[a]]  # one view per row, not per entry
        row_indices = indices[rows[a]]
        for p in range(first, first + k):
            j = 2 * np.int64(row_indices[p])
            v = moments.dtype.type(load_value(row_values, p, values_kind))
            moments[j] += w1[a] * v
            moments[j + 1] += w2[a] * v * v


@jit
def adam_direction(moments, j, c1, c2, eps):
    """u = c1·M[j] / (sqrt(c2·S[j]) + eps) in float64."""
    root = moments.dtype.type(math.sqrt(c2 * moments[2 * j + 1]))
    return c1 * moments[2 * j] / (root + eps)


@jit
def narrow_direction(moments, j, c1, c2, eps):
    """u of `adam_direction` as float32, for parameters narrower than float64 (float32, bf16,
    float16), which round u to float32 or less anyway.

    The square root and the division run in float32 (float32 division and square root take
    about half the divider time of float64 on x86 cores); the result
    differs from the float64 u rounded to float32 by an ulp or two (about 1 element in 10^4),
    and NARROW_LIMIT sends out-of-range moments through float64.
    """
    second = c2 * moments[2 * j + 1]
    first = c1 * moments[2 * j]
    if second < NARROW_LIMIT and abs(first) < NARROW_LIMIT:
        return np.float32(first) / (np.sqrt(np.float32(second)) + np.float32(eps))
    return np.float32(first / (math.sqrt(second) + eps))


@jit(parallel=True)
def window_adam_kernel(
    values,
    values_kind,
    indices,
    rows,
    w1,
    w2,
    block_size,
    k_full,
    k_tail,
    c1,
    c2,
    eps,
    out,
    n_workers,
):
    """out[j] = u[j] on the window's support (other entries of out untouched)."""
    n = out.size
    n_blocks = (n + block_size - 1) // block_size
    for w in numba.prange(n_workers):
        moments = np.empty(2 * block_size, w1.dtype)
        for b in range(w, n_blocks, n_workers):
            first = b * k_full
            k = block_k(b, n_blocks, k_full, k_tail)
            zero_block_moments(indices, rows, first, k, moments)
            add_block_moments(values, values_kind, indices, rows, w1, w2, first, k, moments)
            base = b * block_size
            for a in range(rows.size):
                for p in range(first, first + k):
                    j = np.int64(indices[rows[a], p])
                    out[base + j] = adam_direction(moments, j, c1, c2, eps)


@jit
def decay_block(block, kind, decay):
    """block *= decay in the parameter's float type (bf16/f16 bits: in float32, rounded to nearest
    even), as torch's `param.mul_(decay)`. decay = 1 rewrites every element unchanged (its bits
    times a runtime one, which the compiler cannot drop): see `window_adam_apply_kernel`."""
    if kind == NATIVE or decay == 1:
        typed = block.dtype.type(decay)
        for i in range(block.size):
            block[i] = block[i] * typed
    else:
        typed32 = np.float32(decay)
        for i in range(block.size):
            store_value(block, i, np.float32(load_value(block, i, kind)) * typed32, kind)


@jit(parallel=True)
def window_adam_apply_kernel(
    values,
    values_kind,
    indices,
    rows,
    w1,
    w2,
    block_size,
    k_full,
    k_tail,
    c1,
    c2,
    eps,
    lr,
    param,
    param_kind,
    decay,
    n_workers,
):
    """Per block: param *= decay, a sequential pass that brings the block into cache and runs
    even when decay = 1 (then it rewrites each element unchanged): the scattered updates that
    follow run faster on lines the pass has just written than on lines only read (measured
    with bench/test_bench_microadam.py), then param[j] -= lr·u[j] once per coordinate of the
    window's support. The scratch starts zeroed and every entry clears M[j] and S[j] right after
    using them, so it is zero again for the next block and a repeated coordinate then computes
    u = 0 (0 / (0 + eps)) and subtracts nothing: no zeroing pass, no branch.

    Scratch, weights, c1 and c2 are float64; u is float64 for float64 parameters (or an eps
    below float32's smallest normal number) and float32 (`narrow_direction`) for the others,
    then rounded to the parameter's float type, and the update runs in it (lr has that type);
    bf16/f16 bits update in float32, then round to nearest even.
    """
    n = param.size
    n_blocks = (n + block_size - 1) // block_size
    # u in float64 throughout for float64 parameters, and for an eps float32 cannot hold
    wide = (param_kind == NATIVE and param.itemsize == 8) or eps < NARROW_MIN_EPS
    for w in numba.prange(n_workers):
        moments = np.zeros(2 * block_size, w1.dtype)
        for b in range(w, n_blocks, n_workers):
            first = b * k_full
            k = block_k(b, n_blocks, k_full, k_tail)
            base = b * block_size
            block = param[base : min(base + block_size, n)]
            decay_block(block, param_kind, decay)
            add_block_moments(values, values_kind, indices, rows, w1, w2, first, k, moments)
            for a in range(rows.size):
                row_indices = indices[rows[a]]
                for p in range(first, first + k):
                    j = np.int64(row_indices[p])
                    if wide:
                        u = adam_direction(moments, j, c1, c2, eps)
                    else:
                        u = narrow_direction(moments, j, c1, c2, eps)
                    moments[2 * j] = 0.0
                    moments[2 * j + 1] = 0.0
                    if param_kind == NATIVE:
                        block[j] = block[j] - lr * block.dtype.type(u)
                    else:
                        x = np.float32(load_value(block, j, param_kind))
                        store_value(block, j, x - lr * np.float32(u), param_kind)
