"""S-RSI, the streamlined randomized subspace iteration, and its adaptive-rank driver AS-RSI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from randla import _backend, _checks, _scaling
from randla.estimate import probe_prefix_errors
from randla.lowrank import LowRank, identity_prefix_errors
from randla.orth import orthonormal_basis

STRATEGIES = ("step", "prefix")


def srsi(
    A: Any,
    rank: int,
    *,
    oversample: int = 5,
    sweeps: int = 5,
    orth: str = "qr",
    precision: str = "full",
    rng: Any = None,
    out: tuple[Any, Any] | None = None,
    total_squares: float | None = None,
) -> LowRank:
    """Streamlined randomized subspace iteration: A ≈ Q Uᵀ with Q (m×rank) orthonormal.

    Algorithm (ALGORITHMS.md §1.1, Adapprox's factorizer): draw a Gaussian n×l block Ω in A's
    dtype, l = rank + oversample (clipped silently to min(m, n)); U ← Ω; repeat ``sweeps`` times:
    Q ← orth(A U), U ← Aᵀ Q. No orthonormalization after the Aᵀ product and no final small SVD:
    Q and U = AᵀQ are the output, so A ≈ QQᵀA. All l columns are kept internally; the first
    ``rank`` are returned, and every prefix j is itself a near-optimal rank-j approximation.
    ``orth="lu"`` normalizes with LU between sweeps, U included (P·L does not orthogonalize, and
    one normalization per A·Aᵀ pair would lose directions below sqrt(eps)·σ1), and with
    Householder QR in the last one, whose U = AᵀQ is left as is.

    The returned :class:`LowRank` carries the relative error of every prefix from the
    cumulative-norm identity (float64, exact up to its floor sqrt(100·eps)).

    Scale invariance: U is never normalized, so A·U grows like ‖A‖². When ‖A‖_F is outside
    2^±48 (float32; 2^±496 in float64) A is first multiplied by a power of two bringing ‖A‖_F
    near 1 (exact: only exponents change) and U is multiplied back at the end; inside that range
    nothing is done. Factors whose true size exceeds the dtype's range still overflow.

    ``out=(Q_buf, U_buf)``: optional preallocated arrays of shapes (m, ≥rank) and (n, ≥rank) in
    A's dtype; the factors are written into their first ``rank`` columns and returned as views.

    ``precision="mixed"`` (float32 CPU arrays): the products of every sweep but the last in
    bfloat16, the last sweep's two in float32, as in :func:`randla.rsvd` (which explains it).

    ``total_squares``: Σ A_ij² (float64) when the caller already has it, for example summed by
    the pass that wrote A; it replaces the pass over A that computes it (which is also the
    finiteness check). Trusted as given: a wrong value gives wrong prefix errors. None, NaN or Inf:
    computed here.

    Cost: 4·m·n·l·sweeps flops in GEMMs, plus ``sweeps`` orthonormalizations of an m×l block
    (≈ 4·m·l² each) and one pass over A for ‖A‖_F² (none with ``total_squares``). Out of the
    safe range: one scaled copy of A (two more passes). Memory: (m + n)·l workspace.

    Reference: Zhao et al., Adapprox, arXiv 2403.14958, §3 (S-RSI); Halko, Martinsson, Tropp,
    SIAM Review 2011, Algorithm 4.4 (randomized subspace iteration).
    """
    a, back = _backend.to_core(A, "A")
    total_squares = _checks.matrix(a, total_squares=total_squares)
    rank = _checks.integer(rank, "rank", 1, min(a.shape))
    buffers = _output_buffers(out, a, rank)
    oversample = _checks.integer(oversample, "oversample", 0)
    sweeps = _checks.integer(sweeps, "sweeps", 1)
    orth = _checks.orth(orth)
    mixed = _checks.precision(precision, a)
    rng = _checks.generator(rng)
    a, total_squares, exponent = _scaling.to_unit_scale(a, total_squares)
    a, low = _prepared(a, mixed, sweeps)
    factors = _factorize(
        a, total_squares, rank, oversample=oversample, sweeps=sweeps, orth=orth, low=low, rng=rng
    )
    return _deliver(factors.truncate(rank), exponent, buffers, back)


@dataclass(frozen=True)
class AdaptiveResult:
    """Output of :func:`adaptive_srsi`.

    ``factors``: the LowRank at the rank actually used; ``next_rank``: the rank to start from at
    the next call (keep it in optimizer state); ``error``: relative Frobenius error of
    ``factors`` — from the identity where it resolves, else a probe estimate (never below
    100·eps(dtype)).
    """

    factors: LowRank
    next_rank: int
    error: float


def adaptive_srsi(
    A: Any,
    *,
    rank: int,
    k_min: int = 1,
    k_max: int,
    tol: float = 1e-3,
    delta: int | None = None,
    strategy: str = "step",
    oversample: int = 5,
    sweeps: int = 5,
    orth: str = "qr",
    precision: str = "full",
    rng: Any = None,
    out: tuple[Any, Any] | None = None,
    total_squares: float | None = None,
) -> AdaptiveResult:
    """AS-RSI: S-RSI whose rank follows a relative-error tolerance (ALGORITHMS.md §1.2).

    e(k) = ‖A − Q_k U_kᵀ‖_F / ‖A‖_F. Δk = ``delta`` (default ceil(0.02·k_max)).

    - ``"step"``: factorize at ``rank``; next_rank = max(k_min, rank − Δk) if e(rank) ≤ tol,
      else min(k_max, rank + Δk). One factorization per call; the rank walks towards the
      smallest rank meeting tol over successive calls (Adapprox's description).
    - ``"prefix"``: factorize at ``rank``; while e > tol and the rank is below k_max, grow it by
      Δk and refactorize; then keep the smallest prefix j ≥ k_min with e(j) ≤ tol (the whole
      factorization if none). next_rank = j.

    Errors come from the cumulative-norm identity; where it cannot resolve them (below
    sqrt(100·eps), about 3.5e-3 in float32) from one all-prefix probe estimate with 8 probes.
    The rank always stays in [k_min, k_max]. ``out`` buffers should have ≥ k_max columns.

    ``precision`` and ``total_squares`` as in :func:`srsi`; the probes always run in A's
    precision.

    Cost: that of :func:`srsi` per factorization, plus 2·m·n·8 flops when probes are needed.

    Reference: Zhao et al., Adapprox, arXiv 2403.14958, §3.2 (AS-RSI; exact rule unpublished,
    both readings implemented); Yu, Gu, Li, SIAM J. Matrix Anal. Appl. 2018 (fixed-accuracy
    randomized factorization with cheap error indicators).
    """
    a, back = _backend.to_core(A, "A")
    total_squares = _checks.matrix(a, total_squares=total_squares)
    k_max = _checks.integer(k_max, "k_max", 1, min(a.shape))
    k_min = _checks.integer(k_min, "k_min", 1, k_max)
    rank = _checks.integer(rank, "rank", k_min, k_max)
    delta = math.ceil(0.02 * k_max) if delta is None else _checks.integer(delta, "delta", 1)
    tol = _checks.positive_real(tol, "tol")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    buffers = _output_buffers(out, a, k_max)
    options = dict(
        oversample=_checks.integer(oversample, "oversample", 0),
        sweeps=_checks.integer(sweeps, "sweeps", 1),
        orth=_checks.orth(orth),
        rng=_checks.generator(rng),
    )
    mixed = _checks.precision(precision, a)
    a, total_squares, exponent = _scaling.to_unit_scale(a, total_squares)
    a, options["low"] = _prepared(a, mixed, options["sweeps"])
    while True:
        factors = _factorize(a, total_squares, rank, **options)
        errors = _certified_errors(a, total_squares, factors, options["rng"])
        met = errors[rank - 1] <= tol
        if strategy == "step" or met or rank == k_max:
            break
        rank = min(k_max, rank + delta)
    if strategy == "step":
        kept = rank
        next_rank = max(k_min, rank - delta) if met else min(k_max, rank + delta)
    else:
        meeting = np.flatnonzero(errors[k_min - 1 : rank] <= tol)
        kept = next_rank = k_min + int(meeting[0]) if meeting.size else rank
    return AdaptiveResult(
        _deliver(factors.truncate(kept), exponent, buffers, back),
        next_rank,
        float(errors[kept - 1]),
    )


def _factorize(
    a: Any,
    total_squares: float,
    rank: int,
    *,
    oversample: int,
    sweeps: int,
    orth: str,
    low: Any,
    rng: Any,
) -> LowRank:
    """S-RSI on a `_prepared` core array (with `low`, its bfloat16 copy, taking the products of
    all sweeps but the last); returns all l = min(rank + p, m, n) columns."""
    xp = _backend.namespace(a)
    m, n = a.shape
    columns = min(rank + oversample, m, n)
    u = _backend.standard_normal(rng, (n, columns), a.dtype, xp)
    y = _backend.empty_product(a, columns)
    for sweep in range(sweeps):
        last = sweep == sweeps - 1
        sweep_low = None if last else low
        _backend.matmul(a, u, out=y, low=sweep_low)
        q = orthonormal_basis(y, "qr" if orth == "lu" and last else orth)
        u = _backend.matmul(a, q, transpose_a=True, low=sweep_low)
        if orth == "lu" and not last:
            # P·L keeps the dominant directions in every column (QR removes them), so the
            # next product would amplify them by σ1² against σj²: normalize U too, as rsvd
            # does.
            u = orthonormal_basis(u, "lu")
    errors, resolved = identity_prefix_errors(total_squares, u)
    return LowRank(q, u, errors, resolved)


def _prepared(a: Any, mixed: bool, sweeps: int) -> tuple[Any, Any]:
    """`a` contiguous, and its bfloat16 copy when mixed precision has sweeps to take in it: made
    once per call, shared by every refactorization of `adaptive_srsi`."""
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = _backend.namespace(a).ascontiguousarray(a)
    return a, (_backend.low_precision_copy(a) if mixed and sweeps > 1 else None)


def _certified_errors(a: Any, total_squares: float, factors: LowRank, rng: Any) -> np.ndarray:
    """Identity errors of every prefix, with probe estimates where the identity cannot resolve."""
    if factors.resolved.all():
        return factors.prefix_errors
    probed = probe_prefix_errors(a, total_squares, factors.Q, factors.U, rng)
    return np.where(factors.resolved, factors.prefix_errors, probed)


def _output_buffers(out: Any, a: Any, columns: int) -> tuple[Any, Any] | None:
    if out is None:
        return None
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise TypeError(f"out must be a pair (Q_buf, U_buf) or None, got {type(out).__name__}")
    buffers = []
    for buffer, name, rows in zip(out, ("out[0]", "out[1]"), a.shape, strict=True):
        core, _ = _backend.to_core(buffer, name)
        if core.ndim != 2 or core.shape[0] != rows or core.shape[1] < columns:
            raise ValueError(
                f"{name} must have shape ({rows}, >= {columns}), got {tuple(core.shape)}"
            )
        if core.dtype != a.dtype:
            raise TypeError(f"{name} must have A's dtype {a.dtype}, got {core.dtype}")
        buffers.append(core)
    return buffers[0], buffers[1]


def _deliver(
    factors: LowRank, exponent: int, buffers: tuple[Any, Any] | None, back: Any
) -> LowRank:
    """Scale U back by 2^exponent, copy into the caller's buffers if given, convert back."""
    q, u = factors.Q, factors.U
    if buffers is not None:
        k = factors.rank
        buffers[0][:, :k] = q
        buffers[1][:, :k] = u
        q, u = buffers[0][:, :k], buffers[1][:, :k]
    _scaling.restore_scale(u, exponent)
    return LowRank(back(q), back(u), factors.prefix_errors, factors.resolved)
