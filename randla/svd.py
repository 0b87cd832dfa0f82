"""Randomized SVD (HMT Algorithm 4.4) and warm-started subspace iteration (ALGORITHMS.md §1.3)."""

from __future__ import annotations

from typing import Any

from randla import _backend, _checks, _scaling
from randla.orth import orthonormal_basis


def rsvd(
    A: Any,
    rank: int,
    *,
    oversample: int = 10,
    power_iters: int | None = None,
    orth: str = "qr",
    precision: str = "full",
    rng: Any = None,
) -> tuple[Any, Any, Any]:
    """Randomized truncated SVD: A ≈ U diag(S) Vt with U (m×rank), S (rank,), Vt (rank×n).

    Algorithm: Halko-Martinsson-Tropp Algorithm 4.4 (randomized subspace iteration) with
    l = rank + oversample columns (clipped silently to min(m, n)): Q ← orth(A Ω), then
    ``power_iters`` times Q ← orth(A orth(Aᵀ Q)); finally the small SVD of B = QᵀA, computed as
    the SVD of the tall n×l block AᵀQ. When m < n it works on Aᵀ so the tall side is the long one.
    An A with ‖A‖_F outside 2^±48 (float32; 2^±496 in float64) is first scaled by a power of two
    to ‖A‖_F ≈ 1 (exact) and S scaled back, so that AΩ cannot overflow the QR.
    Signs are deterministic: the largest-magnitude entry of every column of U is positive (as
    scikit-learn's svd_flip). S is in descending order; dtype is preserved (float32 LAPACK for
    float32).

    ``power_iters=None`` picks 7 when rank < 0.1·min(m, n), else 4 (scikit-learn's rule: a small
    rank sits deeper in a slowly decaying spectrum, where more iterations pay).

    ``orth`` normalizes after every product: ``"qr"`` (default, Householder everywhere),
    ``"cholqr2"`` (GEMM-based, falls back to QR on ill-conditioned blocks) or ``"lu"`` (LU
    between products, QR for the last one, as scikit-learn does). QR stays the default: interleaved
    runs of the three (4096×1024, rank 64, float32) differed by less than the run-to-run noise at
    equal error, so accuracy decided.

    ``precision="mixed"`` (float32 CPU arrays) computes every product of the range finder but the
    last in bfloat16 (torch.mm on a bfloat16 copy of A, float32 accumulation; the blocks in
    between are orthonormalized in float32); the last range-finder product and B = QᵀA stay in
    float32. Early power iterations only improve the starting block, and the float32 product that
    follows them removes their rounding, so the error matches ``"full"`` (rank 64, 4096×1024,
    σ_j = 1/j: ‖A − USVᵀ‖_F/optimum − 1 = 3.83e-4 mixed, 3.79e-4 full), with 10 of 12 products
    reading half the bytes at the bfloat16 rate, which pays only where the CPU has bfloat16
    matrix instructions (AVX512-BF16, AMX); measure before choosing it (docs/randla.md). It holds a
    bfloat16 copy of A (half of A's bytes).

    Cost: (4·power_iters + 4)·m·n·l flops in GEMMs, plus 2·power_iters + 1 orthonormalizations of
    tall blocks (≈ 4·m·l² each) and a (4·n·l² + 8·l³)-flop small SVD.

    Reference: Halko, Martinsson, Tropp, SIAM Review 53(2), 2011, Algorithms 4.4 and 5.1.
    """
    a, back = _backend.to_core(A, "A")
    total_squares = _checks.matrix(a)
    rank = _checks.integer(rank, "rank", 1, min(a.shape))
    oversample = _checks.integer(oversample, "oversample", 0)
    if power_iters is None:
        power_iters = 7 if rank < 0.1 * min(a.shape) else 4
    power_iters = _checks.integer(power_iters, "power_iters", 0)
    orth = _checks.orth(orth)
    mixed = _checks.precision(precision, a)
    rng = _checks.generator(rng)
    xp = _backend.namespace(a)
    a, _, exponent = _scaling.to_unit_scale(a, total_squares)
    transposed = a.shape[0] < a.shape[1]
    if transposed:
        a = a.T
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = xp.ascontiguousarray(a)
    columns = min(rank + oversample, a.shape[1])
    omega = _backend.standard_normal(rng, (a.shape[1], columns), a.dtype, xp)
    low = _backend.low_precision_copy(a) if mixed and power_iters > 0 else None
    q = _alternating_basis(a, omega, 2 * power_iters + 1, orth, low)
    w, s, v_t = _backend.svd_thin(_backend.matmul(a, q, transpose_a=True))
    left = _backend.matmul(q, v_t.T[:, :rank])
    right = w[:, :rank].T
    if transposed:
        left, right = right.T, left.T
    signs = xp.sign(left[xp.argmax(xp.abs(left), axis=0), xp.arange(rank)])
    signs[signs == 0] = 1
    left *= signs
    right = xp.ascontiguousarray(right * signs[:, None])
    values = xp.ascontiguousarray(s[:rank])
    _scaling.restore_scale(values, exponent)
    return back(xp.ascontiguousarray(left)), back(values), back(right)


def subspace_iteration(A: Any, Q0: Any, *, iters: int = 1, orth: str = "qr") -> Any:
    """Warm-started subspace iteration: ``iters`` times Q ← orth(A (Aᵀ Q)), from Q0 (m×k).

    LDAdam's "power iteration" warm start: one step refreshes a projection basis that tracks a
    slowly moving dominant subspace. No orthonormalization between the two products (Q0 is
    orthonormal); ``orth="lu"`` normalizes with LU after every product (AᵀQ included: P·L does not
    orthogonalize), except the last, which uses QR. A(AᵀQ) grows
    like ‖A‖², so an A with ‖A‖_F outside 2^±48 (float32; 2^±496 in float64) is first scaled
    by a power of two to ‖A‖_F ≈ 1 (exact, and Q does not depend on it); inside, nothing is done.
    A and Q0 must be finite; views of any strides are taken (one contiguous copy of a view
    that is neither C- nor F-contiguous, as in `rsvd`).

    Cost: 4·m·n·k flops in GEMMs plus one orthonormalization (≈ 4·m·k²; with "lu" also an n×k LU)
    per iteration; out of the safe range, one scaled copy of A.

    Reference: Halko, Martinsson, Tropp, SIAM Review 2011, Algorithm 4.4; Robert et al., LDAdam,
    arXiv 2410.16103, §3.
    """
    a, back = _backend.to_core(A, "A")
    total_squares = _checks.matrix(a)
    q, _ = _backend.to_core(Q0, "Q0")
    if q.ndim != 2 or q.shape[0] != a.shape[0] or not 1 <= q.shape[1] <= min(a.shape):
        raise ValueError(
            f"Q0 must have shape ({a.shape[0]}, k) with 1 <= k <= {min(a.shape)}, "
            f"got {tuple(q.shape)}"
        )
    if q.dtype != a.dtype:
        raise TypeError(f"Q0 must have A's dtype {a.dtype}, got {q.dtype}")
    _checks.finite(q, "Q0")
    iters = _checks.integer(iters, "iters", 1)
    orth = _checks.orth(orth)
    a, q = _checks.blas_layout(a), _checks.blas_layout(q)
    a, _, _ = _scaling.to_unit_scale(a, total_squares)
    for step in range(iters):
        last = step == iters - 1
        middle = _backend.matmul(a, q, transpose_a=True)
        if orth == "lu":  # LU does not orthogonalize: normalize after every product
            middle = orthonormal_basis(middle, "lu")
        q = orthonormal_basis(_backend.matmul(a, middle), "qr" if orth == "lu" and last else orth)
    return back(q)


def _alternating_basis(a: Any, block: Any, products: int, orth: str, low: Any = None) -> Any:
    """Orthonormal basis after ``products`` alternating products A·, Aᵀ·, A·, … (odd count);
    with `low` (a bfloat16 copy of A) all products but the last are taken with it."""
    columns = block.shape[1]
    buffers = [_backend.empty_product(a, columns, transpose_a=side) for side in (False, True)]
    for step in range(products):
        side = step % 2
        step_low = low if step < products - 1 else None
        _backend.matmul(a, block, transpose_a=bool(side), out=buffers[side], low=step_low)
        method = "qr" if orth == "lu" and step == products - 1 else orth
        block = orthonormal_basis(buffers[side], method)
    return block
