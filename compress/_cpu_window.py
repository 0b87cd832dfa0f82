"""CPU (Numba) kernels of the sliding-window Adam statistics (ALGORITHMS.md §2.4).

Per block, a block-local float64 scratch (M, S) is touched only at the window's indices: zero
the selected slots, accumulate β^age-weighted values and squares row by row (oldest row first),
then read u back at the same slots. float64 holds v² and the sums of any finite float32 or bf16
values without overflow (|v| up to 3.4e38). Cost O(m·k) flops and bytes, independent of the
dense length; the scratch is block-local, so its width costs no memory traffic.
"""

import math

import numba
import numpy as np
from numba import njit

from ._cpu_topk import block_k, load_value, store_value
from ._scalar import NATIVE


@njit(cache=True)
def zero_block_moments(indices, rows, first, k, m_scratch, s_scratch):
    """M[j] = S[j] = 0 at the block's entries (only those: the scratch is never swept whole)."""
    for a in range(rows.size):
        row_indices = indices[rows[a]]
        for p in range(first, first + k):
            j = row_indices[p]
            m_scratch[j] = 0.0
            s_scratch[j] = 0.0


@njit(cache=True)
def add_block_moments(values, values_kind, indices, rows, w1, w2, first, k, m_scratch, s_scratch):
    """M[j] += Σ w1[age]·v, S[j] += Σ w2[age]·v² over the block's entries, oldest row first;
    rows[age] = row number."""
    for a in range(rows.size - 1, -1, -1):
        row_values = values[rows[a]]  # one view per row, not per entry
        row_indices = indices[rows[a]]
        for p in range(first, first + k):
            j = row_indices[p]
            v = m_scratch.dtype.type(load_value(row_values, p, values_kind))
            m_scratch[j] += w1[a] * v
            s_scratch[j] += w2[a] * v * v


@njit(cache=True)
def adam_direction(m_scratch, s_scratch, j, c1, c2, eps):
    """u = c1·M[j] / (sqrt(c2·S[j]) + eps) in float64."""
    root = m_scratch.dtype.type(math.sqrt(c2 * s_scratch[j]))
    return c1 * m_scratch[j] / (root + eps)


@njit(parallel=True, cache=True)
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
        m_scratch = np.empty(block_size, w1.dtype)
        s_scratch = np.empty(block_size, w1.dtype)
        for b in range(w, n_blocks, n_workers):
            first = b * k_full
            k = block_k(b, n_blocks, k_full, k_tail)
            zero_block_moments(indices, rows, first, k, m_scratch, s_scratch)
            add_block_moments(
                values, values_kind, indices, rows, w1, w2, first, k, m_scratch, s_scratch
            )
            base = b * block_size
            for a in range(rows.size):
                for p in range(first, first + k):
                    j = indices[rows[a], p]
                    out[base + j] = adam_direction(m_scratch, s_scratch, j, c1, c2, eps)


@njit(cache=True)
def decay_block(block, kind, decay):
    """block *= decay in the parameter's float type (bf16/f16 bits: in float32, rounded to nearest
    even), as torch's `param.mul_(decay)`."""
    if kind == NATIVE:
        typed = block.dtype.type(decay)
        for i in range(block.size):
            block[i] = block[i] * typed
    else:
        typed32 = np.float32(decay)
        for i in range(block.size):
            store_value(block, i, np.float32(load_value(block, i, kind)) * typed32, kind)


@njit(cache=True)
def touch_block(block):
    """Read one element per 64-byte line in order: the hardware prefetcher then brings the block
    in at streaming speed before the scattered updates, which would otherwise each wait for
    memory. Returns a value only so the loop is kept."""
    total = 0
    for i in range(0, block.size, 64 // block.itemsize):
        total += block[i] != 0
    return total


@njit(parallel=True, cache=True)
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
    """Per block: param *= decay (a sequential pass, which also brings the block into cache;
    without decay, a read-only pass when the window holds more entries than the block has cache
    lines, so that most lines would be fetched one by one anyway), then param[j] -= lr·u[j] once
    per coordinate of the window's support. The scratch starts zeroed and every entry clears
    M[j] and S[j] right after using them, so it is zero again for the next block and a repeated
    coordinate then computes u = 0 (0 / (0 + eps)) and subtracts nothing: no zeroing pass, no
    branch.

    Scratch, weights, c1, c2, eps and u are float64; u is rounded to the parameter's float type
    and the update runs in it (lr has that type); bf16/f16 bits update in float32, then round to
    nearest even. Returns a count from the read-only passes (meaningless; keeps them).
    """
    n = param.size
    n_blocks = (n + block_size - 1) // block_size
    kept = 0
    for w in numba.prange(n_workers):
        m_scratch = np.zeros(block_size, w1.dtype)
        s_scratch = np.zeros(block_size, w1.dtype)
        for b in range(w, n_blocks, n_workers):
            first = b * k_full
            k = block_k(b, n_blocks, k_full, k_tail)
            base = b * block_size
            block = param[base : min(base + block_size, n)]
            if decay != 1:
                decay_block(block, param_kind, decay)
            elif rows.size * k * 64 >= block.size * block.itemsize:  # more updates than lines
                kept += touch_block(block)
            add_block_moments(
                values, values_kind, indices, rows, w1, w2, first, k, m_scratch, s_scratch
            )
            for a in range(rows.size):
                row_indices = indices[rows[a]]
                for p in range(first, first + k):
                    j = row_indices[p]
                    u = adam_direction(m_scratch, s_scratch, j, c1, c2, eps)
                    m_scratch[j] = 0.0
                    s_scratch[j] = 0.0
                    if param_kind == NATIVE:
                        block[j] = block[j] - lr * block.dtype.type(u)
                    else:
                        x = np.float32(load_value(block, j, param_kind))
                        store_value(block, j, x - lr * np.float32(u), param_kind)
    return kept
