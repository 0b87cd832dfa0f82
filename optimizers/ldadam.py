"""LDAdam: Adam on low-dimensional gradient statistics (Robert et al., arXiv 2410.16103).

The torch plumbing (options, which parameters take the low-rank path, state layout, error
feedback stores); the mathematics of one step is `_ldadam_step.ldadam_matrix_step`, readable
line by line against ALGORITHMS.md §3.2.

Low-rank path: a parameter viewed as a matrix (2-D, or ≥3-D as (shape[0], rest)) whose smaller
side is at least `min_dim` (default max(2·rank, 32)); a group's `compressed=True/False` overrides
the size rule (True still needs a ≥2-D parameter). Every other parameter takes the dense AdamW
path (`_dense`) with the same betas, eps and weight decay.

State of a low-rank m×n parameter projected on its side of size d (the other side s), rank r:
basis P (d×r), moments m and v (r×s), step (int64), side ("left"/"right"), and the error buffer:
"dense": "error" (m×n) in the work dtype (parameter dtype for float32/float64, float32 for
bf16/fp16), folded: it holds e + κ·P·m in the parameter's orientation (P·m is transposed for
side "right"), κ = "error_fold" (a float64 scalar, β1/(1−β1) after every step; see
`_ldadam_step`); "q4"/"q8": compress.Quantized codes (uint8) of e with bf16 bounds per bucket of
64; "none": nothing.
The work dtype of P, m and v is float64 for float64 parameters and float32 otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from ._base import SmallStateOptimizer
from ._dense import dense_adamw_step, dense_state_dtype, init_dense_state
from ._ldadam_step import ldadam_matrix_step
from ._validation import COMMON_CHECKS, Check, flag, in_range, integer, one_of, optional
from ._views import array_view

QUANT_BUCKET = 64
QUANT_BITS = {"q4": 4, "q8": 8}


def lowrank_layout(shape: tuple[int, ...], group: dict[str, Any]) -> tuple[str, int] | None:
    """(side, rank) of the low-rank path for a parameter of `shape`, or None for dense.

    The matrix is (shape[0], prod(shape[1:])). side "auto" projects the smaller side ("left" =
    rows when rows ≤ cols). The rank used is min(rank, smaller side): a larger rank cannot
    compress anything.
    """
    compressed = group["compressed"]
    if compressed is False or len(shape) < 2:
        return None
    rows, cols = shape[0], math.prod(shape[1:])
    smaller = min(rows, cols)
    rank = group["rank"]
    min_dim = group["min_dim"] if group["min_dim"] is not None else max(2 * rank, 32)
    if smaller == 0 or (compressed is None and smaller < min_dim):
        return None
    side = group["side"]
    if side == "auto":
        side = "left" if rows <= cols else "right"
    return side, min(rank, smaller)


def _error_state(mode: str, rows: int, cols: int, dtype: torch.dtype, device) -> dict:
    """The error-feedback store: dense e, or the arrays of a compress.Quantized."""
    if mode == "none":
        return {}
    if mode == "dense":
        return {
            "error": torch.zeros(rows, cols, dtype=dtype, device=device),
            "error_fold": torch.zeros((), dtype=torch.float64, device=device),
        }
    length = rows * cols
    bits = QUANT_BITS[mode]
    buckets = -(-length // QUANT_BUCKET)
    return {
        "error_codes": torch.zeros(-(-length * bits // 8), dtype=torch.uint8, device=device),
        "error_lo": torch.zeros(buckets, dtype=torch.bfloat16, device=device),
        "error_hi": torch.zeros(buckets, dtype=torch.bfloat16, device=device),
    }


def _quantized_feedback(state: dict, mode: str, length: int):
    """A compress.ErrorFeedback over zero-copy views of the state's quantized error."""
    import compress

    stored = compress.Quantized(
        array_view(state["error_codes"]),
        array_view(state["error_lo"]),
        array_view(state["error_hi"]),
        length,
        QUANT_BITS[mode],
        QUANT_BUCKET,
    )
    return compress.ErrorFeedback.quantized(stored)


class LDAdam(SmallStateOptimizer):
    """LDAdam (ALGORITHMS.md §3.2) with the dense AdamW path for small and 1-D parameters.

    Per step and low-rank m×n parameter (rank r, projecting the m side): 10·m·n·r flops with
    the dense error buffer (12 quantized, 8 without), one m×r QR, and full-size traffic of three
    reads of g + e plus read-writes of e and W. State: (m + 2n)·r numbers plus the error store
    (4 B/param "dense" float32, ≈0.56 "q4", ≈1.06 "q8", 0 "none"). Options (all per group,
    validated): lr, betas, eps, weight_decay (decoupled), rank, rho (None = β1 at each step),
    error_feedback ("dense" | "q4" | "q8" | "none"), side ("auto" | "left" | "right"), min_dim
    (None = max(2·rank, 32)), compressed (None | True | False), maximize, nonfinite ("raise" |
    "skip"), seed (rsvd draws for large first bases).
    """

    _layout_options = ("rank", "side", "compressed", "min_dim", "error_feedback")
    _checks: ClassVar[dict[str, Check]] = {
        **COMMON_CHECKS,
        "rank": integer(1),
        "rho": optional(in_range(0.0, 1.0)),
        "error_feedback": one_of("dense", "q4", "q8", "none"),
        "side": one_of("auto", "left", "right"),
        "min_dim": optional(integer(1)),
        "compressed": optional(flag),
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.908, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        rank: int = 16,
        rho: float | None = None,
        error_feedback: str = "dense",
        side: str = "auto",
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
            rank=rank,
            rho=rho,
            error_feedback=error_feedback,
            side=side,
            min_dim=min_dim,
            compressed=compressed,
            maximize=maximize,
            nonfinite=nonfinite,
            seed=seed,
        )
        super().__init__(params, defaults)

    # ----------------------------------------------------------------- hooks
    def _init_state(self, param: torch.Tensor, group: dict[str, Any], key: int) -> dict:
        layout = lowrank_layout(tuple(param.shape), group)
        if layout is None:
            return init_dense_state(param)
        side, rank = layout
        rows = param.shape[0]
        cols = param.numel() // rows
        projected, other = (rows, cols) if side == "left" else (cols, rows)
        dtype = dense_state_dtype(param)
        device = param.device
        return {
            "step": torch.zeros((), dtype=torch.int64, device=device),
            "side": side,
            "basis": torch.zeros(projected, rank, dtype=dtype, device=device),
            "exp_avg": torch.zeros(rank, other, dtype=dtype, device=device),
            "exp_avg_sq": torch.zeros(rank, other, dtype=dtype, device=device),
            **_error_state(group["error_feedback"], rows, cols, dtype, device),
        }

    def _check_loaded_values(self, param: torch.Tensor, group: dict, loaded: dict) -> None:
        """Refuse a projection side other than the one this parameter's layout takes, and an
        error fold κ that is negative or not finite (the next step would add (k − κ)·P·m)."""
        layout = lowrank_layout(tuple(param.shape), group)
        if layout is not None and loaded["side"] != layout[0]:
            raise ValueError(
                f"state 'side' of {self._param_name(param)} must be {layout[0]!r}, "
                f"got {loaded['side']!r}"
            )
        fold = loaded.get("error_fold")
        if fold is not None and not 0.0 <= float(fold) < math.inf:
            raise ValueError(
                f"state 'error_fold' of {self._param_name(param)} must be finite and >= 0, "
                f"got {float(fold)}"
            )

    def _upgrade_loaded_state(self, loaded: dict) -> dict:
        """A dense error buffer saved before it was folded (no "error_fold") holds e itself:
        κ = 0, and the next step folds it."""
        if "error" in loaded and "error_fold" not in loaded:
            return {**loaded, "error_fold": torch.zeros((), dtype=torch.float64)}
        return loaded

    def _path(self, state: dict) -> str:
        if "basis" not in state:
            return "dense"
        return f"ldadam(rank={state['basis'].shape[1]}, side={state['side']})"

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        beta1, beta2 = (float(b) for b in group["betas"])
        lr = float(group["lr"])
        if "basis" not in state:
            dense_adamw_step(
                param,
                grad,
                state,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
            )
            return
        dtype = state["basis"].dtype
        rows = param.shape[0]
        in_place = param.dtype == dtype and param.is_contiguous()
        weight = param.view(rows, -1) if in_place else param.reshape(rows, -1).to(dtype)
        mode = group["error_feedback"]
        residual = self._residual(grad.reshape(rows, -1), state, mode, group["maximize"])
        rho = group["rho"]
        first = int(state["step"]) == 0
        transpose = state["side"] == "right"
        ldadam_matrix_step(
            weight.t() if transpose else weight,
            residual.t() if transpose else residual,
            state["basis"],
            state["exp_avg"],
            state["exp_avg_sq"],
            state["step"],
            beta1=beta1,
            beta2=beta2,
            rho=beta1 if rho is None else float(rho),
            eps=float(group["eps"]),
            lr=lr,
            weight_decay=float(group["weight_decay"]),
            keep_error=mode != "none",
            error_fold=state["error_fold"] if mode == "dense" else None,
            rng=[int(group["seed"]), self._param_key(param, group)] if first else None,
        )
        if mode in QUANT_BITS:
            # compress.quantize reads float32: a float64 residual is rounded first (that rounding
            # is ~1e6 times below the 4/8-bit quantization error that follows).
            flat = residual.view(-1).to(torch.float32)
            _quantized_feedback(state, mode, flat.numel()).store(array_view(flat))
        if not in_place:
            param.copy_(weight.view_as(param))

    # ----------------------------------------------------------------- error feedback
    def _residual(self, grad: torch.Tensor, state: dict, mode: str, maximize: bool):
        """a = ±g + e in the work dtype: the dense error buffer itself, or a scratch buffer.

        "dense" accumulates into e (no copy); "q4"/"q8" decode e into a scratch buffer holding
        ±g; "none" returns the gradient itself when no sign flip or cast is needed (read-only).
        """
        sign = -1.0 if maximize else 1.0
        if mode == "dense":
            return state["error"].add_(grad, alpha=sign)
        dtype = state["basis"].dtype
        if mode == "none" and not maximize and grad.dtype == dtype:
            return grad
        residual = self._scratch(grad.shape, dtype, grad.device)
        torch.mul(grad, sign, out=residual)
        if mode in QUANT_BITS:
            _quantized_feedback(state, mode, residual.numel()).add_to(array_view(residual.view(-1)))
        return residual
