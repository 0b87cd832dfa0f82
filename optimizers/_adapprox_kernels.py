"""The elementwise passes of an Adapprox step fused into three Numba loops (CPU tensors).

torch runs the step's elementwise work as about ten separate passes over m×n (clamp, scale and
mix V; sqrt, +ε, divide; the norm; moment and parameter updates), about 100 bytes per element in
float32. These loops do the same arithmetic per element in three passes and about 52 bytes per
element:

- `mix_second_moment`: V ← β2·max(V, 0) + (1−β2)·G², after the rebuilt low-rank term is in V,
  returning ‖V‖_F² for S-RSI;
- `adam_direction`: V ← G / (sqrt(V) + ε) in place, returning Σ Û² in float64 (the RMS clip);
- `moment_and_parameter` / `parameter_only`: M ← β1·M + α·Û and W ← κ·W − η·M (or W ← κ·W − η·Û).

`adapprox.adapprox_step` takes them when every tensor is on the CPU, contiguous, and of the
state's dtype; everything else (CUDA, bf16 parameters, strided gradients) keeps the torch passes.
Results match the torch passes up to float rounding: torch may fuse a multiply-add, the mix may
regroup its products (see `mix_second_moment`), and the sums run in another order. Kept because
the benchmark's step measured faster with them than with the torch passes, steps of the two
alternating in one process (docs/adapprox.md gives the numbers).
"""

import numba
import numpy as np

from compress._jit import jit


@jit(parallel=True, fastmath={"reassoc"})
def mix_second_moment(v, g, beta2, weight):
    """v ← β2·max(v, 0) + weight·g·g, in place (v, g flat, one float dtype); returns Σ v² of the
    stored values, in float64 (S-RSI's ‖V‖_F², so it need not read V for it).

    reassoc lets the float64 sum run on several vector accumulators; it also lets LLVM regroup
    the update's products (weight·g·g as weight·(g·g)), so the products are taken in float64,
    where g² of any finite float32 g fits (in float32 it would overflow for |g| > 1.8e19 while
    weight·g² fits, as `moment_exponent` guarantees), and an entry may differ from the torch
    passes in its last bit.
    """
    total = 0.0
    weight64 = np.float64(weight)
    for i in numba.prange(v.size):
        gradient = np.float64(g[i])
        mixed = v.dtype.type(max(v[i], 0.0) * beta2 + weight64 * gradient * gradient)
        v[i] = mixed
        total += np.float64(mixed) * np.float64(mixed)
    return total


@jit(parallel=True, fastmath={"reassoc"})
def adam_direction(g, v, eps):
    """v ← g / (sqrt(v) + eps) in place; returns Σ v² after the update, in float64.

    reassoc only lets the float64 sum run on several vector accumulators.
    """
    total = 0.0
    for i in numba.prange(v.size):
        u = g[i] / (np.sqrt(v[i]) + eps)
        v[i] = u
        total += np.float64(u) * np.float64(u)
    return total


@jit(parallel=True)
def moment_and_parameter(u, m, w, beta1, alpha, keep, step):
    """m ← β1·m + α·u, then w ← keep·w − step·m, in place."""
    for i in numba.prange(u.size):
        moment = m[i] * beta1 + alpha * u[i]
        m[i] = moment
        w[i] = w[i] * keep - step * moment


@jit(parallel=True)
def parameter_only(u, w, keep, step):
    """w ← keep·w − step·u, in place (no first moment)."""
    for i in numba.prange(u.size):
        w[i] = w[i] * keep - step * u[i]
