"""Adapprox: Adam's second moment kept as an adaptive-rank factorization from S-RSI.

Reference: Zhao et al., "Adapprox: Memory Efficient Optimization via Adaptive Randomized Low-Rank
Approximation", arXiv 2403.14958. No public code exists; this is the reconstruction specified in
ALGORITHMS.md §3.3 (step), §1.1 (S-RSI) and §1.2 (rank control), computed by
`randla.adaptive_srsi`. The class below is the torch plumbing; `adapprox_step` is the arithmetic
of one matrix, readable top to bottom against §3.3.

Per m×n matrix (a ≥3-D tensor is viewed as (shape[0], rest)), with k the current rank:

    V = β2·max(Q_k U_kᵀ, 0) + (1−β2)·G²         dense m×n, in a shared scratch workspace
    Q, U, k = AS-RSI(V; rank, k_min, k_max, Δk, ξ, sweeps, oversample, rng=[key, t])
    Û = G / (sqrt(V) + ε);  Û ← Û / max(1, RMS(Û)/d)
    M = β1·M + (1−β1)·Û   (M = Û when β1 = 0)
    W ← W(1 − ηλ) − η·M

State per matrix: Q (m×k_max) and U (n×k_max), allocated once so checkpoint shapes never change
(Q orthonormal for m ≤ n; a tall matrix is factorized as Vᵀ, which leaves U orthonormal);
`rank` (the columns of Q, U holding the current factors), `next_rank` (the rank the next
factorization starts from), `step`, `key` (the random draws are `rng=[key, step]`, so a resumed
run and data-parallel replicas draw the same Ω without storing a generator) and the first moment
M (param shape) only while β1 > 0. Factors and M are float32 (float64 for float64 parameters).
Parameters the factored path does not take get the dense AdamW path (`_dense`).

Cost per matrix and step, r = rank + oversample, l = sweeps: 2mnk flops to rebuild V, 4·l·mn·r
flops of S-RSI products plus l thin QRs (≈4·min(m, n)·r² each), and the elementwise work over
m×n (G², clamp, sqrt, +ε, divide, norm, the moment and the parameter update): on CPU three
fused Numba passes, ≈52 bytes per element in float32 (`_adapprox_kernels`), elsewhere about ten
torch passes, ≈100 bytes per element. The dense m×n workspace is the only full-size transient;
one buffer per (device, dtype) is shared by all parameters and kept off the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

import randla

from . import _adapprox_kernels as _kernels
from ._base import SmallStateOptimizer
from ._dense import dense_adamw_step, dense_state_dtype, init_dense_state
from ._validation import COMMON_CHECKS, flag, in_range, integer, one_of, optional
from ._views import array_view, mark_written

#: Smallest side a matrix needs for the factored path when `min_dim` is None.
DEFAULT_MIN_SIDE = 32


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int] | None:
    """(shape[0], product of the rest) for a ≥2-D shape; None for scalars and vectors."""
    if len(shape) < 2:
        return None
    rows = shape[0]
    return rows, math.prod(shape[1:])


def takes_factored_path(shape: torch.Size | tuple[int, ...], group: dict[str, Any]) -> bool:
    """Whether a parameter of this shape gets the Adapprox path under `group`'s options.

    `compressed` True/False forces the choice for every ≥2-D parameter (vectors are always dense).
    Otherwise the smaller side must reach `min_dim`; with `min_dim=None` it must reach 32 and the
    factor buffers (m + n)·min(k_max, m, n) must be smaller than the m·n second moment they replace.
    """
    dims = matrix_shape(shape)
    if dims is None or 0 in dims:
        return False
    if group["compressed"] is not None:
        return group["compressed"]
    m, n = dims
    if group["min_dim"] is not None:
        return min(m, n) >= group["min_dim"]
    return min(m, n) >= DEFAULT_MIN_SIDE and (m + n) * min(group["k_max"], m, n) < m * n


def _add_scaled(target: torch.Tensor, source: torch.Tensor, factor: float | torch.Tensor) -> None:
    """target += factor·source in place; factor a Python number or a 0-d tensor on target's
    device (a scale computed there: no host read)."""
    if torch.is_tensor(factor):
        target.addcmul_(source, factor)
    else:
        target.add_(source, alpha=factor)


def _apply_update(
    param: torch.Tensor,
    direction: torch.Tensor,
    step_size: float | torch.Tensor,
    decay: float,
    scratch: torch.Tensor,
) -> None:
    """param ← param·(1 − decay) − step_size·direction (step_size a number or a 0-d tensor).

    Parameters in the state's precision are updated in place (1–2 passes); low-precision ones get
    the whole change computed in float32 in `scratch` and are rounded once.
    """
    if param.dtype == direction.dtype:
        if decay:
            param.mul_(1.0 - decay)
        _add_scaled(param, direction, -step_size)
        return
    torch.mul(direction, -step_size, out=scratch)
    if decay:
        scratch.add_(param, alpha=-decay)
    param.add_(scratch)


def moment_exponent(
    grad_peak: float,
    factors: tuple[torch.Tensor, torch.Tensor],
    beta2: float,
    dtype: torch.dtype,
    factor_peak: float | None = None,
) -> int:
    """e ≥ 0 such that V·4^-e fits `dtype` with room to spare; 0 (nothing scaled) when V does.

    `grad_peak` = max|G| (`peak_magnitude(grad)`); `factors` = (Q_k, U_k) with V = Q_k U_kᵀ. One
    of the factors has orthonormal columns (rows of norm ≤ 1), so V's entries are bounded by
    β2·sqrt(k)·max(max|Q_k|, max|U_k|) + (1−β2)·max|G|² whichever it is (a checkpoint written
    before tall matrices were factorized as Vᵀ holds the roles the other way round). The bound
    is computed in log2 so that it cannot overflow: V is left as is while it is below
    2^(maxexp − 28) (2^100 in float32, |G| up to about 3e16 at β2 = 0.999), else e brings the
    bound to about 1. Cost: one read pass over each factor, none when `factor_peak`
    (max(max|Q_k|, max|U_k|), as `peak_tensor` computes it on the device) is given.
    """
    logs = []
    if grad_peak > 0 and beta2 < 1:
        logs.append(2.0 * math.log2(grad_peak) + math.log2(1.0 - beta2))
    rank = factors[0].shape[1]
    peak_factor = (
        max((peak_magnitude(f) for f in factors), default=0.0)
        if factor_peak is None
        else factor_peak
    )
    if peak_factor > 0:
        logs.append(math.log2(peak_factor) + 0.5 * math.log2(rank))
    log_bound = max(logs, default=-math.inf) + 1.0
    if log_bound <= _max_exponent(dtype) - 28:
        return 0
    return math.ceil(log_bound / 2)


def peak_magnitude(t: torch.Tensor) -> float:
    """max|t| (0 for an empty tensor, NaN if t holds a NaN) from one min/max pass.

    torch's aminmax reads t once in one vectorized pass and propagates NaN (vector_norm with
    ord=inf was many times slower on CPU).
    """
    if not t.numel():
        return 0.0
    low, high = torch.aminmax(t)
    return max(-float(low), float(high))


def peak_tensor(t: torch.Tensor) -> torch.Tensor:
    """max|t| as a 0-d float64 tensor on t's device (0 when empty, NaN if t holds a NaN): what
    `peak_magnitude` returns, computed without reading it on the host."""
    if not t.numel():
        return torch.zeros((), dtype=torch.float64, device=t.device)
    low, high = torch.aminmax(t)
    return torch.maximum(low.neg(), high).to(torch.float64)


def _extremes(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(min t, max t) as 0-d tensors on t's device (zeros when t is empty); NaN propagates."""
    if not t.numel():
        zero = t.new_zeros(())
        return zero, zero
    return torch.aminmax(t)


def _max_exponent(dtype: torch.dtype) -> int:
    """e with 2^(e−1) <= finfo.max < 2^e: 128 for float32, 1024 for float64."""
    return math.frexp(torch.finfo(dtype).max)[1]


def _times_power_of_two(t: torch.Tensor, exponent: int) -> torch.Tensor:
    """t·2^exponent in place, in two exact multiplications so each factor is representable."""
    half = exponent // 2
    return t.mul_(2.0**half).mul_(2.0 ** (exponent - half))


def adapprox_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: dict[str, torch.Tensor],
    workspace: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    clip_threshold: float,
    k_min: int,
    rank_step: int | None,
    tol: float,
    sweeps: int,
    oversample: int,
    rank_strategy: str,
    precision: str,
    bias_correction: bool,
    maximize: bool,
    grad_peak: float | None = None,
    factor_peak: float | None = None,
) -> None:
    """One Adapprox step (ALGORITHMS.md §3.3) for one matrix parameter, in place.

    `grad_peak`: max|G| when the caller has it (the optimizer's finite check computes it), else
    None and it is computed here (one pass over G). `factor_peak`: max(max|Q_k|, max|U_k|) of
    the current factors, likewise (see `moment_exponent`).

    `workspace` is an m×n scratch matrix in the state's dtype; it is overwritten. `state` holds
    Q, U, rank, next_rank, step, key and (when β1 > 0) exp_avg. With `bias_correction`, V is
    divided by 1 − β2^t and M by 1 − β1^t (Adam's corrections; off in the reconstruction).
    Negative entries of the rebuilt β2-term (a low-rank product need not be non-negative) are
    clamped to zero before G² is mixed in, which keeps V ≥ (1−β2)·G² > 0 wherever G ≠ 0.

    `precision="mixed"` runs S-RSI's power iterations in bfloat16 (`randla.srsi`) when the state
    is float32 on CPU; elsewhere it computes as "full".

    Large finite gradients: when V could leave the dtype's range (`moment_exponent` e > 0) the
    step works on V·4^-e and G·2^-e (exact power-of-two scalings, one extra m×n copy of G·2^-e
    that step only), so Û is the exact Adam direction. The factor carrying the magnitudes (U, or Q
    for a tall matrix) is stored scaled back by 4^e, but
    saturated at 2^(maxexp − 2) in max-abs: a second moment beyond the dtype's range is kept at
    the largest storable magnitude (its shape intact), never as Inf or NaN.
    """
    Q, U = state["Q"], state["U"]
    k_cap = Q.shape[1]
    as_param = workspace.view(param.shape)
    step = int(state["step"]) + 1
    rank = int(state["rank"])
    # A tall matrix is factorized as its transpose, so S-RSI's QRs run on the shorter side: then
    # U holds the orthonormal factor and Q the scaled one (V ≈ Q Uᵀ either way).
    tall = Q.shape[0] > U.shape[0]
    orthonormal, scaled = (U, Q) if tall else (Q, U)
    if grad_peak is None:
        grad_peak = peak_magnitude(grad)
    exponent = moment_exponent(
        grad_peak, (Q[:, :rank], U[:, :rank]), beta2, workspace.dtype, factor_peak
    )

    # Clamp the rebuilt moment BEFORE mixing in G², so V ≥ (1−β2)·G² and |Û| ≤ 1/sqrt(1−β2):
    # clamping after lets a negative fit make Û = G/ε, and the RMS clip then shrinks the whole
    # matrix's update (measured: ~400× on a small LM).
    if rank:
        q, u = Q[:, :rank], U[:, :rank]
        if exponent:  # scale the factor that carries the magnitudes
            if tall:
                q = _times_power_of_two(q.clone(), -2 * exponent)
            else:
                u = _times_power_of_two(u.clone(), -2 * exponent)
        torch.mm(q, u.T, out=workspace)
    if exponent:
        grad = grad * 2.0**-exponent
    fused = _fused_passes(param, grad, workspace)
    total_squares = None
    if fused is not None:
        g, v = fused
        if not rank:
            v.fill(0.0)
        total_squares = _kernels.mix_second_moment(
            v, g, v.dtype.type(beta2), v.dtype.type(1.0 - beta2)
        )
    else:
        if rank:
            workspace.clamp_min_(0.0).mul_(beta2)
        else:
            workspace.zero_()
        as_param.addcmul_(grad, grad, value=1.0 - beta2)

    result = randla.adaptive_srsi(
        workspace.T if tall else workspace,
        rank=int(state["next_rank"]),
        k_min=min(k_min, k_cap),
        k_max=k_cap,
        tol=tol,
        delta=rank_step if rank_step is not None else math.ceil(0.02 * k_cap),
        strategy=rank_strategy,
        oversample=oversample,
        sweeps=sweeps,
        precision=precision
        if workspace.dtype == torch.float32 and workspace.device.type == "cpu"
        else "full",
        rng=[int(state["key"]), step],
        out=(orthonormal, scaled),
        total_squares=total_squares,
    )
    if exponent:
        _restore_saturated(scaled[:, : result.factors.rank], 2 * exponent)
    state["rank"].fill_(result.factors.rank)
    state["next_rank"].fill_(result.next_rank)
    state["step"].fill_(step)

    # Û = G / (sqrt(V/c2) + ε) = √c2 · G / (sqrt(V) + ε√c2), c2 the second-moment correction.
    root_c2 = math.sqrt(1.0 - beta2**step) if bias_correction else 1.0
    # On the scaled path ε scales with G; kept >= the smallest normal so 0/0 cannot occur.
    floor = eps * root_c2 * 2.0**-exponent
    eps_added = max(floor, torch.finfo(workspace.dtype).tiny)
    if fused is not None:
        norm = math.sqrt(_kernels.adam_direction(g, v, v.dtype.type(eps_added)))
    else:
        workspace.sqrt_().add_(eps_added)
        torch.div(grad, as_param, out=as_param)
        norm = torch.linalg.vector_norm(workspace)  # stays on the device: no host read
    rms = root_c2 * norm / math.sqrt(workspace.numel())
    ratio = rms / clip_threshold
    scale = root_c2 / (ratio.clamp_min(1.0) if torch.is_tensor(ratio) else max(1.0, ratio))
    sign = -1.0 if maximize else 1.0
    decay = lr * weight_decay
    exp_avg = state.get("exp_avg")
    if exp_avg is not None:
        alpha = (1.0 - beta1) * scale * sign
        step_size = lr / (1.0 - beta1**step) if bias_correction else lr
    else:
        step_size = lr * scale * sign

    if fused is not None and (exp_avg is None or exp_avg.is_contiguous()):
        t = v.dtype.type
        weights = array_view(param).reshape(-1)
        if exp_avg is None:
            _kernels.parameter_only(v, weights, t(1.0 - decay), t(step_size))
        else:
            moment = array_view(exp_avg).reshape(-1)
            _kernels.moment_and_parameter(
                v, moment, weights, t(beta1), t(alpha), t(1.0 - decay), t(step_size)
            )
        mark_written(param)
    elif exp_avg is not None:
        _add_scaled(exp_avg.mul_(beta1), as_param, alpha)
        _apply_update(param, exp_avg, step_size, decay, as_param)
    else:
        _apply_update(param, as_param, step_size, decay, as_param)


def _fused_passes(param: torch.Tensor, grad: torch.Tensor, workspace: torch.Tensor):
    """(G, V) as flat numpy views when the fused CPU loops apply, else None: every tensor on
    the CPU, contiguous and of the workspace's dtype (so W and G share V's element order)."""
    dtype = workspace.dtype
    if not (
        workspace.device.type == "cpu"
        and param.device.type == "cpu"
        and param.dtype == dtype
        and grad.dtype == dtype
        and param.is_contiguous()
        and grad.is_contiguous()
        and workspace.is_contiguous()
    ):
        return None
    return array_view(grad).reshape(-1), array_view(workspace).reshape(-1)


def _restore_saturated(u: torch.Tensor, exponent: int) -> None:
    """u ← u·2^e in place, e = exponent lowered so that max|u| stays below 2^(maxexp − 2).

    e is computed on u's device (0-d integer tensors: no host read) and applied as two exact
    power-of-two factors built from their exponent bits.
    """
    if not u.numel():
        return
    peak = u.abs().amax()
    _, binary_exponent = torch.frexp(peak)
    limit = (_max_exponent(u.dtype) - 2 - binary_exponent).clamp_max(exponent)
    total = torch.where(peak > 0, limit, torch.full_like(limit, exponent))
    half = torch.div(total, 2, rounding_mode="floor")
    u.mul_(_power_of_two(half, u.dtype)).mul_(_power_of_two(total - half, u.dtype))


def _power_of_two(exponent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2^exponent exactly, as a 0-d tensor of `dtype` (float32 or float64), from an integer
    tensor in the dtype's normal exponent range: the biased exponent written into the bits."""
    if dtype == torch.float64:
        return ((exponent.to(torch.int64) + 1023) << 52).view(torch.float64)
    return ((exponent.to(torch.int32) + 127) << 23).view(torch.float32)


class Adapprox(SmallStateOptimizer):
    """Adam with its second moment stored as an adaptive-rank S-RSI factorization (§3.3).

    Matrices (2-D, or ≥3-D viewed as (shape[0], rest)) chosen by `takes_factored_path` keep
    Q (m×k_max), U (n×k_max), the rank and, when β1 > 0, a dense first moment: 4(m+n)k_max + 4mn
    bytes (no first moment: 4(m+n)k_max) instead of AdamW's 8mn. Other parameters use dense AdamW
    with the same betas, eps and weight decay. `describe()` reports each parameter's path.

    Options (all per param group; `k_max`, `k_init`, `min_dim` and `compressed` are read when a
    parameter's state is created, the others at every step):
        lr, betas, eps, weight_decay: as AdamW (decoupled decay).
        clip_threshold: d, the update-RMS clip of Adafactor.
        k_max, k_min, k_init: rank bounds and start (k_init None = k_max); all capped at min(m, n).
        rank_step: Δk (None = ceil(0.02·k_max), with k_max capped per matrix).
        tol: ξ, the relative Frobenius error the rank controller aims for.
        sweeps, oversample: S-RSI's l and p.
        rank_strategy: "step" (±Δk per step) or "prefix" (smallest prefix within tol); §1.2.
        precision: "full" or "mixed": S-RSI's power iterations in bfloat16, its last sweep in
            float32 (`randla.srsi`); float32 state on CPU only, elsewhere it computes as "full".
        bias_correction: Adam's bias corrections (off in the reconstruction).
        min_dim, compressed: which parameters take the factored path (`takes_factored_path`).
        maximize, nonfinite, seed: the contract's options; `seed` keys the random draws.
    """

    _layout_options = ("k_max", "min_dim", "compressed")
    _checks = {
        **COMMON_CHECKS,
        "clip_threshold": in_range(0.0, math.inf, low_open=True),
        "k_max": integer(1),
        "k_min": integer(1),
        "k_init": optional(integer(1)),
        "rank_step": optional(integer(1)),
        "tol": in_range(0.0, 1.0, low_open=True),
        "sweeps": integer(1),
        "oversample": integer(0),
        "rank_strategy": one_of("step", "prefix"),
        "precision": one_of("full", "mixed"),
        "bias_correction": flag,
        "min_dim": optional(integer(1)),
        "compressed": optional(flag),
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_threshold: float = 1.0,
        k_max: int = 256,
        k_min: int = 1,
        k_init: int | None = None,
        rank_step: int | None = None,
        tol: float = 1e-3,
        sweeps: int = 5,
        oversample: int = 5,
        rank_strategy: str = "step",
        precision: str = "full",
        bias_correction: bool = False,
        min_dim: int | None = None,
        compressed: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
        seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            clip_threshold=clip_threshold,
            k_max=k_max,
            k_min=k_min,
            k_init=k_init,
            rank_step=rank_step,
            tol=tol,
            sweeps=sweeps,
            oversample=oversample,
            rank_strategy=rank_strategy,
            precision=precision,
            bias_correction=bias_correction,
            min_dim=min_dim,
            compressed=compressed,
            maximize=maximize,
            nonfinite=nonfinite,
            seed=seed,
        )
        super().__init__(params, defaults)

    def _validate(self, options: dict[str, Any]) -> None:
        super()._validate(options)
        k_min, k_max, k_init = options["k_min"], options["k_max"], options["k_init"]
        if k_min > k_max:
            raise ValueError(f"k_min must be <= k_max ({k_max}), got {k_min}")
        if k_init is not None and not k_min <= k_init <= k_max:
            raise ValueError(f"k_init must be in [k_min, k_max] = [{k_min}, {k_max}], got {k_init}")

    def _init_state(self, param: torch.Tensor, group: dict[str, Any], key: int) -> dict:
        if not takes_factored_path(param.shape, group):
            return init_dense_state(param)
        m, n = matrix_shape(param.shape)
        k_cap = min(group["k_max"], m, n)
        start = group["k_init"] if group["k_init"] is not None else k_cap
        start = max(min(start, k_cap), min(group["k_min"], k_cap))
        dtype, device = dense_state_dtype(param), param.device

        def counter(value: int) -> torch.Tensor:  # host memory, as torch.optim's step
            return torch.tensor(value, dtype=torch.int64)

        state = {
            "step": counter(0),
            "key": counter(key),
            "rank": counter(0),
            "next_rank": counter(start),
            "Q": torch.zeros(m, k_cap, dtype=dtype, device=device),
            "U": torch.zeros(n, k_cap, dtype=dtype, device=device),
        }
        if group["betas"][0] > 0:
            state["exp_avg"] = torch.zeros(param.shape, dtype=dtype, device=device)
        return state

    def _check_loaded_state(self, param: torch.Tensor, group: dict, loaded: dict) -> None:
        # The first moment follows β1 > 0 at each step, and a scheduler moves β1 after the step:
        # a checkpoint may hold it while the group's β1 is now 0, or lack it while β1 > 0.
        beta1, beta2 = group["betas"]
        if ("exp_avg" in loaded) != (beta1 > 0):
            group = {**group, "betas": (0.5 if "exp_avg" in loaded else 0.0, beta2)}
        super()._check_loaded_state(param, group, loaded)

    def _check_loaded_values(self, param: torch.Tensor, group: dict, loaded: dict) -> None:
        """Refuse ranks outside [0, k] (next_rank: [1, k]) and a negative random key."""
        if "Q" not in loaded:
            return
        where, cap = self._param_name(param), loaded["Q"].shape[1]
        for name, low in (("rank", 0), ("next_rank", 1)):
            value = int(loaded[name])
            if not low <= value <= cap:
                raise ValueError(
                    f"state {name!r} of {where} must be in [{low}, {cap}], got {value}"
                )
        if int(loaded["key"]) < 0:
            raise ValueError(f"state 'key' of {where} must be >= 0, got {int(loaded['key'])}")

    def _step_statistics(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict | None
    ) -> list[torch.Tensor]:
        """min G, max G and, for a factored state, min and max of Q_k and of U_k, as 0-d tensors
        on the device (one aminmax pass each). They are finite exactly when G is, so the finite
        check and the overflow guard (`moment_exponent`, which takes max|·| = max(−min, max))
        share one pass over G and the one host read of the step."""
        extremes = list(_extremes(grad))
        if state and "Q" in state:
            rank = int(state["rank"])
            extremes += [*_extremes(state["Q"][:, :rank]), *_extremes(state["U"][:, :rank])]
        return extremes

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        beta1, beta2 = group["betas"]
        extremes = self._host_statistics().get(param)
        grad_peak = max(-extremes[0], extremes[1]) if extremes else None
        factor_peak = None
        if extremes and len(extremes) == 6:
            factor_peak = max(max(-low, high) for low, high in (extremes[2:4], extremes[4:6]))
        if "Q" not in state:
            dense_adamw_step(
                param,
                grad,
                state,
                lr=float(group["lr"]),
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
            return
        # The first moment exists exactly while β1 > 0, so state keys always match the group.
        if beta1 > 0 and "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param, dtype=state["Q"].dtype)
        elif beta1 == 0:
            state.pop("exp_avg", None)
        factors = state["Q"]
        workspace = self._scratch(
            (factors.shape[0], state["U"].shape[0]), factors.dtype, factors.device
        )
        adapprox_step(
            param,
            grad,
            state,
            workspace,
            lr=float(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            clip_threshold=group["clip_threshold"],
            k_min=group["k_min"],
            rank_step=group["rank_step"],
            tol=group["tol"],
            sweeps=group["sweeps"],
            oversample=group["oversample"],
            rank_strategy=group["rank_strategy"],
            precision=group["precision"],
            bias_correction=group["bias_correction"],
            maximize=group["maximize"],
            grad_peak=grad_peak,
            factor_peak=factor_peak,
        )

    def _path(self, state: dict) -> str:
        if "Q" not in state:
            return "dense"
        return f"adapprox(k={int(state['rank'])}/{state['Q'].shape[1]})"
