"""Gaussian probe estimators of the Frobenius error of a factorization (ALGORITHMS.md §1.4)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from randla import _backend, _checks, _scaling


def estimate_error(A: Any, Q: Any, U: Any, *, probes: int = 8, rng: Any = None) -> float:
    """Probe estimate of the **absolute** error ‖A − Q Uᵀ‖_F, without forming A − Q Uᵀ.

    Algorithm: draw a Gaussian n×r block W (r = ``probes``) and return
    sqrt(‖A W − Q (Uᵀ W)‖_F² / r); E‖E w‖² = ‖E‖_F² for a standard normal w, so the squared
    estimate is unbiased, with relative standard deviation at most sqrt(2/r). Because the residual
    is formed explicitly (no cancellation of squared norms) it stays accurate in float32 far below
    the cumulative-norm identity's floor (about 3.5e-3 relative). Q and U need not be orthonormal
    but must be finite (ValueError otherwise). Views of any strides are taken (a view that is
    neither C- nor F-contiguous is copied once, as in `rsvd`).
    The result is never below 100·eps(dtype)·‖A‖_F.

    Cost: 2·m·n·r + 2·(m + n)·k·r flops, one pass over A.

    Reference: Halko, Martinsson, Tropp, SIAM Review 2011, §4.3; Meyer, Musco, Musco, Woodruff,
    Hutch++ (2021) for the trace-estimator view.
    """
    a, _ = _backend.to_core(A, "A")
    total_squares = _checks.matrix(a)
    q, _ = _backend.to_core(Q, "Q")
    u, _ = _backend.to_core(U, "U")
    m, n = a.shape
    for factor, name, rows in ((q, "Q", m), (u, "U", n)):
        if factor.ndim != 2 or factor.shape[0] != rows or factor.shape[1] != q.shape[1]:
            raise ValueError(
                f"{name} must have shape ({rows}, k) with k = Q.shape[1], got {tuple(factor.shape)}"
            )
        if factor.dtype != a.dtype:
            raise TypeError(f"{name} must have A's dtype {a.dtype}, got {factor.dtype}")
        _checks.finite(factor, name)
    probes = _checks.integer(probes, "probes", 1)
    a, q, u = (_checks.blas_layout(x) for x in (a, q, u))
    # Far from ‖A‖_F ≈ 1 the residual's squares would overflow or underflow: work on A·2^-e.
    a, total_squares, exponent = _scaling.to_unit_scale(a, total_squares)
    if exponent:
        u = _scaling.scaled_down(u, exponent)
    w = _backend.standard_normal(
        _checks.generator(rng), (n, probes), a.dtype, _backend.namespace(a)
    )
    residual = _backend.matmul(a, w)
    residual -= _backend.matmul(q, _backend.matmul(u, w, transpose_a=True))
    estimate = math.sqrt(_backend.sum_squares(residual) / probes)
    floor = 100.0 * _backend.eps(a.dtype) * math.sqrt(total_squares)
    return math.ldexp(max(estimate, floor), exponent)


def probe_prefix_errors(
    a: Any, total_squares: float, q: Any, u: Any, rng: Any, probes: int = 8
) -> np.ndarray:
    """Probe estimates of the relative error of every prefix j of (Q, U) at once.

    Needs Q orthonormal and U = AᵀQ (as S-RSI returns). With P = Qᵀ A W, T = Uᵀ W and the
    component R⊥ = (I − QQᵀ) A W (projected out twice for float32 accuracy),
    ‖(A − Q_j U_jᵀ) W‖² = ‖R⊥‖² + Σ_{i≤j} ‖p_i − t_i‖² + Σ_{i>j} ‖p_i‖²: every term is a
    non-negative sum, so no cancellation. Cost: 2·m·n·r + 8·m·k·r flops. Floor: 100·eps(dtype).
    """
    xp = _backend.namespace(a)
    w = _backend.standard_normal(rng, (a.shape[1], probes), a.dtype, xp)
    perpendicular = _backend.matmul(a, w)
    coefficients = _backend.matmul(q, perpendicular, transpose_a=True)
    for _ in range(2):
        perpendicular -= _backend.matmul(q, _backend.matmul(q, perpendicular, transpose_a=True))
    mismatch = coefficients - _backend.matmul(u, w, transpose_a=True)
    kept = _backend.to_host(xp.sum(xp.square(coefficients), axis=1, dtype=xp.float64))
    missed = _backend.to_host(xp.sum(xp.square(mismatch), axis=1, dtype=xp.float64))
    tail = np.concatenate((np.cumsum(kept[::-1])[::-1][1:], [0.0]))
    squares = _backend.sum_squares(perpendicular) + tail + np.cumsum(missed)
    relative = np.sqrt(squares / probes / max(total_squares, np.finfo(np.float64).tiny))
    return np.maximum(relative, 100.0 * _backend.eps(a.dtype))
