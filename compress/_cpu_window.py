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
def accumulate_block_moments(
    values, values_kind, indices, rows, w1, w2, first, k, m_scratch, s_scratch
):
    """M[j] = Σ w1[age]·v, S[j] = Σ w2[age]·v² over the block's entries; rows[age] = row number."""
    for a in range(rows.size):
        for p in range(first, first + k):
            j = indices[rows[a], p]
            m_scratch[j] = 0.0
            s_scratch[j] = 0.0
    for a in range(rows.size - 1, -1, -1):
        r = rows[a]
        for p in range(first, first + k):
            j = indices[r, p]
            v = m_scratch.dtype.type(load_value(values[r], p, values_kind))
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
            accumulate_block_moments(
                values, values_kind, indices, rows, w1, w2, first, k, m_scratch, s_scratch
            )
            base = b * block_size
            for a in range(rows.size):
                for p in range(first, first + k):
                    j = indices[rows[a], p]
                    out[base + j] = adam_direction(m_scratch, s_scratch, j, c1, c2, eps)


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
    n_workers,
):
    """param[j] -= lr·u[j] once per coordinate of the window's support (S = -1 marks done).

    Scratch, weights, c1, c2, eps are float64. u is rounded to the parameter's float type and the
    update runs in it (lr has that type); bf16/f16 bits update in float32, then round to nearest
    even.
    """
    n = param.size
    n_blocks = (n + block_size - 1) // block_size
    for w in numba.prange(n_workers):
        m_scratch = np.empty(block_size, w1.dtype)
        s_scratch = np.empty(block_size, w1.dtype)
        for b in range(w, n_blocks, n_workers):
            first = b * k_full
            k = block_k(b, n_blocks, k_full, k_tail)
            accumulate_block_moments(
                values, values_kind, indices, rows, w1, w2, first, k, m_scratch, s_scratch
            )
            base = b * block_size
            for a in range(rows.size):
                for p in range(first, first + k):
                    j = indices[rows[a], p]
                    if s_scratch[j] < 0:
                        continue
                    u = adam_direction(m_scratch, s_scratch, j, c1, c2, eps)
                    s_scratch[j] = -1.0
                    if param_kind == NATIVE:
                        param[base + j] = param[base + j] - lr * param.dtype.type(u)
                    else:
                        p = np.float32(load_value(param, base + j, param_kind))
                        store_value(param, base + j, p - lr * np.float32(u), param_kind)
