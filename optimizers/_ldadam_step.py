"""LDAdam's functional step on one matrix (ALGORITHMS.md §3.2), left projection.

A tall matrix is handled by passing the transposed views of its weight and residual: the step
itself only ever sees a "work" matrix of shape m×n whose m rows are projected (P is m×r).

Notation: a = g + e (gradient plus error feedback), P the basis, m and v the r×n moments,
t the completed steps, k = β1/(1−β1), c1 = ρ/(1−β1^t), c2 = 1−ρ.

The warm-started subspace iteration of §3.2 is Q ← orth(B (Bᵀ P_old)) with
B = c1·P_old m + c2·a. B is a rank-r matrix plus a, so it is never formed: with P_oldᵀ P_old = I,

    Bᵀ P_old = c1·mᵀ + c2·aᵀ P_old                    (n×r)
    B Z      = c1·P_old (m Z) + c2·a Z                  (m×r)

which reads a twice instead of writing and reading the m×n matrices P_old m and B (four full-size
passes saved).

The generalized error feedback e_new = a − P_new g̃ + k·(P_old m − P_new m̃) needs P_old m, a
rank-r product of inner dimension 2r beside P_new (g̃ + k·m̃). The dense error buffer avoids it by
being stored folded: it holds ê = e + κ·P m (κ = k of the step that wrote it, kept in the state)
instead of e. Then the g + e pass yields â = a + κ·P_old m directly, and with κ = k

    P_newᵀ â = g̃ + k·m̃,        e_new + k·P_new m_new = â − P_new (P_newᵀ â − k·m_new)

so g̃ comes from ĝ = P_newᵀ â as ĝ − k·m̃ (r×n), the next folded buffer is one update of inner
dimension r, and the subspace iteration above runs on â with c1 − c2·k in place of c1. A step
whose κ differs from its k (β1 changed, or a buffer saved unfolded with κ = 0) first adds
(k − κ)·P_old m. The quantized buffers stay unfolded: k·P m is several times larger than e and
would take their codes' range. The rounding the fold adds is that of numbers about k times as
large as e, in the error buffer's float32 or float64.

Cost per step (t ≥ 1), m×n×r products: aᵀP_old, aZ, P_newᵀa and the weight update, plus the error
update (inner dimension r folded, 2r unfolded): 10·m·n·r flops with the dense buffer, 12·m·n·r with
a quantized one, 8·m·n·r without error feedback; full-size memory traffic: three reads of a, one
read-write of e (when kept) and one of W. The QR (m×r) is torch's Householder QR on one thread
(`householder_q`); products are in the work dtype (float32 or float64): the three with the full
matrix a and r columns, the full-size updates of e and W and the small C·m and (C∘C)·v̂ are each
one torch.mm/addmm (BLAS; transposed views are passed as gemm's transpose flags, not copied;
scalings ride in gemm's α and β). The r×n moment arithmetic runs in two Numba loops on CPU
(`_ldadam_kernels`), as torch operations elsewhere.
"""

from __future__ import annotations

import math

import torch

import randla

from . import _ldadam_kernels as _kernels
from ._views import array_view

EXACT_SVD_MAX_SIDE = 512
"""First-step basis: exact SVD when min(m, n) is at most this, randla.rsvd above it.

At this size an exact SVD (about 4·m²·n flops) costs no more than a randomized SVD with the power
iterations below ((2q+2)·2·m·n·(r+10) flops for r near 64), and it is the oracle the reference
comparison needs. Above it the exact SVD grows quadratically in the smaller side while the
first basis only has to be close: every later step refines it with a subspace iteration."""

RSVD_POWER_ITERS = 4
RSVD_OVERSAMPLE = 10


def initial_basis(a: torch.Tensor, rank: int, *, rng: list[int] | None) -> torch.Tensor:
    """Top-`rank` left singular vectors of the m×n matrix `a` (m×rank, orthonormal columns).

    Exact (torch.linalg.svd, LAPACK gesdd in a's dtype) when min(m, n) ≤ EXACT_SVD_MAX_SIDE,
    otherwise `randla.rsvd` with RSVD_POWER_ITERS power iterations and RSVD_OVERSAMPLE extra
    columns, seeded with `rng`. Column signs are irrelevant: the LDAdam update is invariant to
    them (see `ldadam_matrix_step`).
    """
    if min(a.shape) <= EXACT_SVD_MAX_SIDE:
        return torch.linalg.svd(a, full_matrices=False).U[:, :rank]
    u, _, _ = randla.rsvd(
        a, rank, oversample=RSVD_OVERSAMPLE, power_iters=RSVD_POWER_ITERS, rng=rng
    )
    return u[:, :rank]


def warm_subspace_iteration(
    a: torch.Tensor, basis: torch.Tensor, exp_avg: torch.Tensor, *, c1: float, c2: float
) -> torch.Tensor:
    """One subspace iteration orth(B Bᵀ P_old) on B = c1·P_old m + c2·a, B never formed.

    Cost: 4·m·n·r + 2·(m+n)·r² flops, two reads of a, one m×r QR (`householder_q`).
    """
    z = torch.mm(a.t(), basis).mul_(c2).add_(exp_avg.t(), alpha=c1)
    y = torch.mm(a, z).mul_(c2)
    y.addmm_(basis, torch.mm(exp_avg, z), alpha=c1)
    return householder_q(y)


def householder_q(y: torch.Tensor) -> torch.Tensor:
    """Q of y's economic Householder QR (LAPACK geqrf + orgqr through torch.linalg.qr).

    y is finite without a check (none that would read a device value per matrix): the step's
    gradients passed the finite screen and `range_exponent` scales inputs that could overflow
    the products before they reach here.

    The algorithm of randla.orthonormalize(method="qr"), called on the torch tensor itself: no
    round trip through a Fortran-ordered numpy copy. It runs on torch's thread pool as the user
    configured it: a step changes no thread count, which another Python thread would see
    (docs/threads.md).
    """
    return torch.linalg.qr(y).Q


def fused_moments(exp_avg: torch.Tensor, projected: torch.Tensor) -> bool:
    """Whether the r×n moment arithmetic runs in `_ldadam_kernels` (CPU tensors of one dtype)
    rather than as torch operations."""
    on_cpu = exp_avg.device.type == "cpu" and projected.device.type == "cpu"
    return on_cpu and projected.dtype == exp_avg.dtype


def ldadam_matrix_step(
    weight: torch.Tensor,
    residual: torch.Tensor,
    basis: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    *,
    beta1: float,
    beta2: float,
    rho: float,
    eps: float,
    lr: float,
    weight_decay: float,
    keep_error: bool,
    error_fold: torch.Tensor | None = None,
    rng: list[int] | None,
) -> None:
    """One LDAdam step in place on an m×n work matrix (left projection).

    weight: W (m×n), updated in place. basis P (m×r), exp_avg m and exp_avg_sq v (r×n) and the
    int64 `step` are updated in place. All tensors but `error_fold` share one dtype (float32 or
    float64). `residual` and the error buffer, three ways:

    - keep_error=False: residual = a = g + e, only read;
    - keep_error=True, error_fold None: residual = a on entry, the new error
      e = a − P_new g̃ + k·(P_old m − P_new m̃) on exit;
    - keep_error=True, error_fold κ (a float64 scalar tensor): the folded buffer (module
      docstring), residual = a + κ·P_old m on entry, e + k·P_new m_new on exit, κ ← k.

    The result is invariant to the column signs of P (P → P D, D = diag(±1)): g̃, m̃ and m flip
    rows with D, C = P_newᵀP_old becomes D_new C D_old so C∘C and (C m̂)² are unchanged, and every
    product that leaves the subspace (P m, P g̃, P u) is unchanged. So the sign conventions of SVD
    and QR never matter.
    """
    if error_fold is not None and not keep_error:
        raise ValueError("error_fold needs keep_error=True (a folded buffer is rewritten)")
    t = int(step)
    k = beta1 / (1.0 - beta1)
    fold = 0.0
    if error_fold is not None:
        fold = k
        held = float(error_fold)
        if t > 0 and held != k:  # β1 changed, or a buffer saved unfolded: fold it with this k
            residual.addmm_(basis, exp_avg, alpha=k - held)
    if t == 0:
        new_basis = initial_basis(residual, basis.shape[1], rng=rng)
    else:
        bias1 = 1.0 - beta1**t
        new_basis = warm_subspace_iteration(
            residual, basis, exp_avg, c1=rho / bias1 - (1.0 - rho) * fold, c2=1.0 - rho
        )
    projected = torch.mm(new_basis.t(), residual)  # g̃ + κ·m̃ (r×n), row-major

    if t > 0:
        change = torch.mm(new_basis.t(), basis)
        moved_avg = torch.mm(change, exp_avg)
    if keep_error and error_fold is None:
        if t == 0:
            residual.addmm_(new_basis, projected, alpha=-1.0)
        else:
            both_bases = torch.cat((basis, new_basis), dim=1)
            rank = basis.shape[1]
            both_moments = exp_avg.new_empty(2 * rank, exp_avg.shape[1])
            torch.mul(exp_avg, k, out=both_moments[:rank])
            torch.mul(moved_avg, -k, out=both_moments[rank:]).sub_(projected)
            residual.addmm_(both_bases, both_moments)
    fused = fused_moments(exp_avg, projected)
    typed = array_view(exp_avg).dtype.type if fused else float
    if t > 0:
        bias2 = 1.0 - beta2**t
        if fused:
            _kernels.centered_second_moment(
                array_view(exp_avg_sq),
                array_view(exp_avg),
                typed(1.0 / bias2),
                typed(1.0 / bias1**2),
            )
        else:
            exp_avg_sq.div_(bias2).addcmul_(exp_avg, exp_avg, value=-1.0 / bias1**2)
        exp_avg_sq.copy_(torch.mm(change.square_(), exp_avg_sq))

    step += 1
    bias1_next = 1.0 - beta1 ** (t + 1)
    bias2_next = 1.0 - beta2 ** (t + 1)
    direction = torch.empty_like(exp_avg)
    feedback = torch.empty_like(exp_avg) if error_fold is not None else None
    if fused:
        _kernels.moments_and_direction(
            array_view(exp_avg),
            array_view(exp_avg_sq),
            array_view(moved_avg if t > 0 else exp_avg),
            array_view(projected),
            t > 0,
            typed(1.0 / bias1**2 if t > 0 else 0.0),
            typed(bias2 if t > 0 else 0.0),
            (typed(beta1), typed(1.0 - beta1), typed(beta2), typed(1.0 - beta2)),
            typed(1.0 / bias2_next),
            typed(eps),
            typed(fold),
            array_view(direction),
            None if feedback is None else array_view(feedback),
        )
    else:
        if t > 0:
            exp_avg_sq.addcmul_(moved_avg, moved_avg, value=1.0 / bias1**2).mul_(bias2).abs_()
            exp_avg.copy_(moved_avg)
        gradient = projected.sub(exp_avg, alpha=fold) if fold else projected
        exp_avg.mul_(beta1).add_(gradient, alpha=1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1.0 - beta2)
        torch.div(exp_avg_sq, bias2_next, out=direction).sqrt_().add_(eps)
        torch.div(exp_avg, direction, out=direction)
        if feedback is not None:
            torch.mul(exp_avg, fold, out=feedback).sub_(projected)
    if feedback is not None:
        residual.addmm_(new_basis, feedback)
        error_fold.fill_(fold)
    weight.addmm_(new_basis, direction, beta=1.0 - lr * weight_decay, alpha=-lr / bias1_next)
    basis.copy_(new_basis)


# ----------------------------------------------------------------- finite spikes
# A finite gradient of any size must not overflow the step: the products of the subspace
# iteration grow as |a|², the second moment as g̃². LDAdam's direction m/(sqrt(v) + ε) is unchanged
# when a, e and m are scaled by 2^-x, v by 4^-x and ε by 2^-x, and power-of-two scalings are exact,
# so a step whose inputs could overflow runs on scaled inputs and its outputs are scaled back.

RANGE_SLACK_BITS = 8
"""Bits kept free beside the bound of `range_exponent` (the products' constant factors)."""


def range_exponent(
    peaks: tuple[float, float, float, float],
    *,
    shape: tuple[int, int],
    rank: int,
    beta1: float,
    beta2: float,
    fold_gap: float,
    dtype: torch.dtype,
) -> int:
    """x ≥ 0 such that one step on a·2^-x, m·2^-x, v·4^-x stays below 2^(maxexp − 2) of `dtype`
    everywhere; 0 (nothing scaled: the step as written) when the unscaled one does.

    peaks = (max|g|, max|e|, max|m|, max v) before the step (e the error store as kept, folded
    or not); fold_gap = |k − κ| when the dense buffer is refolded this step (else 0); shape the
    m×n work matrix. Bound, in log2: L = max(log2‖a‖_F, log2(2/(1−β1)·‖m‖_F), log2 sqrt(‖v‖_F·…))
    with ‖·‖_F ≤ sqrt(numel)·max, |a| ≤ max|g| + max|e| + fold_gap·sqrt(r)·max|m|; every product
    of the step (Bᵀ P, B Z, g̃², v/(1−β2^t), m²/(1−β1^t)², (C∘C)·v) is below
    2^(2L + slack), slack = log2(r/((1−β1)²(1−β2))) + RANGE_SLACK_BITS. Ordinary gradients are
    ~40 bits below the float32 limit, so the exponent is 0 for them. Cost: none (host numbers).
    """
    peak_g, peak_e, peak_m, peak_v = peaks
    rows, cols = shape
    # the bound on |a| summed at 2^-64, so that float64 peaks near its largest cannot overflow
    low = 2.0**-64
    peak_a = peak_g * low + peak_e * low + fold_gap * math.sqrt(rank) * (peak_m * low)
    logs = []
    if peak_a > 0:
        logs.append(math.log2(peak_a) + 64.0 + 0.5 * math.log2(rows * cols))
    if peak_m > 0:
        logs.append(
            math.log2(peak_m) + 0.5 * math.log2(rank * cols) + math.log2(2.0 / (1.0 - beta1))
        )
    if peak_v > 0:
        logs.append(0.5 * (math.log2(peak_v) + math.log2(rank * cols)))
    if not logs:
        return 0
    bound = max(logs)
    slack = (
        math.log2(rank) - 2.0 * math.log2(1.0 - beta1) - math.log2(1.0 - beta2) + RANGE_SLACK_BITS
    )
    room = math.frexp(torch.finfo(dtype).max)[1] - 2
    if 2.0 * bound + slack <= room:
        return 0
    return max(1, math.ceil(bound - (room - slack) / 2.0))


def times_power_of_two(t: torch.Tensor, exponent: int) -> torch.Tensor:
    """t·2^exponent in place, exact unless a result leaves the normal range: multiplications by
    2^±96 at most, each factor representable in float32."""
    while exponent:
        part = max(-96, min(96, exponent))
        t.mul_(2.0**part)
        exponent -= part
    return t


def restore_range(scaled: list[tuple[torch.Tensor, int]], exponent: int) -> int:
    """Scale each tensor t (power p: t·2^(p·x) is its true value) back by 2^(p·x') in place, with
    x' = x unless a true value would exceed 2^(maxexp − 2): then x' < x is the largest that keeps
    every tensor below it, the same for all, so ratios such as m/sqrt(v) (the update direction)
    are kept and the state holds the spike shrunk by 2^(x − x') rather than Inf. Returns x'.
    Cost: one max pass over each tensor."""
    restored = exponent
    for t, power in scaled:
        peak = float(t.abs().max()) if t.numel() else 0.0
        if peak > 0:
            room = math.frexp(torch.finfo(t.dtype).max)[1] - 2 - math.log2(peak)
            restored = min(restored, math.floor(room / power))
    restored = max(0, restored)
    for t, power in scaled:
        times_power_of_two(t, power * restored)
    return restored
