"""LDAdam's r×n moment arithmetic (ALGORITHMS.md §3.2) in two Numba loops (CPU tensors).

Between its matrix products an LDAdam step updates the r×n moments m and v with about fifteen
small torch operations (centering v before the transfer, restoring it after, the two Adam
averages, the bias-corrected direction), each a pass over r×n and a dispatch of a few
microseconds. These two loops do the same arithmetic per element in two passes:

- `centered_second_moment`: v ← v/c2 − m²/c1² (before v is carried to the new basis);
- `moments_and_direction`: after the transfer v ← |(v + m̃²/c1²)·c2| and m ← m̃ (skipped on the
  first step), then g̃ = ĝ − κ·m̃ from the projection ĝ of the folded residual (κ = 0 unfolded),
  m ← β1·m + (1−β1)·g̃, v ← β2·v + (1−β2)·g̃², d = m / (sqrt(v/c2') + ε), and for a folded
  error buffer the right factor κ·m − ĝ of its update,

with c1, c2 the bias corrections of the previous step and c2' that of this one.
`_ldadam_step.ldadam_matrix_step` takes them when the moments and g̃ are CPU tensors of one dtype
(any strides: g̃ may be a transposed view); elsewhere (CUDA) it runs the torch operations, which
agree up to rounding (a multiplication by a reciprocal here where torch divides). Kept because
the benchmark's step measured faster with them than with the torch operations, steps of the two
alternating in one process (docs/ldadam.md gives the numbers).
"""

import numba
import numpy as np

from compress._jit import jit


@jit(parallel=True)
def centered_second_moment(v, m, inv_c2, inv_c1_squared):
    """v ← v·inv_c2 − m²·inv_c1_squared in place (v, m: r×n)."""
    for i in numba.prange(v.shape[0]):
        for j in range(v.shape[1]):
            v[i, j] = v[i, j] * inv_c2 - m[i, j] * m[i, j] * inv_c1_squared


@jit(parallel=True)
def moments_and_direction(
    m,
    v,
    moved,
    g,
    transferred,
    inv_c1_squared,
    c2,
    betas,
    inv_c2_next,
    eps,
    fold,
    direction,
    feedback,
):
    """The moments after the transfer and this step's Adam direction, in place (all r×n).

    transferred (every step but the first): v ← |(v + moved²·inv_c1_squared)·c2|, m ← moved.
    Then, with the projected gradient γ = g − fold·m: m ← β1·m + (1−β1)·γ,
    v ← β2·v + (1−β2)·γ², direction = m / (sqrt(v·inv_c2_next) + ε), and when `feedback` is
    not None, feedback = fold·m − g (the right factor of the folded error update, see
    `_ldadam_step`). betas = (β1, 1−β1, β2, 1−β2), each rounded from float64 to the state's dtype
    (1−β taken in float32 from a rounded β would lose most of its digits for β near 1).
    """
    beta1, keep1, beta2, keep2 = betas
    for i in numba.prange(m.shape[0]):
        for j in range(m.shape[1]):
            mean, second = m[i, j], v[i, j]
            if transferred:
                mean = moved[i, j]
                second = np.abs((second + mean * mean * inv_c1_squared) * c2)
            projected = g[i, j]
            gradient = projected - fold * mean
            mean = beta1 * mean + keep1 * gradient
            second = beta2 * second + keep2 * gradient * gradient
            m[i, j] = mean
            v[i, j] = second
            direction[i, j] = mean / (np.sqrt(second * inv_c2_next) + eps)
            if feedback is not None:
                feedback[i, j] = fold * mean - projected
