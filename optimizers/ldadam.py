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
from ._ldadam_step import ldadam_matrix_step, range_exponent, restore_range, times_power_of_two
from ._validation import COMMON_CHECKS, Check, flag, in_range, integer, one_of, optional
from ._views import array_view
from .adapprox import peak_tensor

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
            "error_fold": torch.zeros((), dtype=torch.float64),  # host memory, read per step
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
    """A compress.ErrorFeedback over zero-copy views of the state's quantized error. Built
    without `ErrorFeedback.quantized`'s read of the bounds (a wait for the device per parameter
    on a GPU): `quantize` wrote them, or `_check_loaded_values` checked them on load."""
    import compress

    stored = compress.Quantized(
        array_view(state["error_codes"]),
        array_view(state["error_lo"]),
        array_view(state["error_hi"]),
        length,
        QUANT_BITS[mode],
        QUANT_BUCKET,
    )
    return compress.ErrorFeedback(quantized_store=stored)


class LDAdam(SmallStateOptimizer):
    """LDAdam (ALGORITHMS.md §3.2) with the dense AdamW path for small and 1-D parameters.

    Per step and low-rank m×n parameter (rank r, projecting the m side): 10·m·n·r flops with
    the dense error buffer (12 quantized, 8 without), one m×r QR, and full-size traffic of three
    reads of g + e plus read-writes of e and W. State: (m + 2n)·r numbers plus the error store
    (4 B/param "dense" float32, ≈0.56 "q4", ≈1.06 "q8", 0 "none"). Options (all per group,
    validated): lr, betas, eps, weight_decay (decoupled), rank, rho (None = β1 at each step),
    error_feedback ("dense" | "q4" | "q8" | "none"), side ("auto" | "left" | "right"), min_dim
    (None = max(2·rank, 32)), compressed (None | True | False), maximize, nonfinite ("raise" |
    "skip"), seed (rsvd draws for large first bases); eps must be > 0.

    Finite gradients of any size: the step's finite check also reads max|g|, max|e|, max|m| and
    max v; when they bound a product of the step beyond 2^(maxexp − 2) (`range_exponent`), the
    step runs on a, m, v and ε scaled by exact powers of two and its results are scaled back,
    saturated as a whole where a value would not fit (`restore_range`). Ordinary gradients take
    the step as written. Cost: one min/max pass over g (replacing the finite check's sum) and,
    with the dense error buffer, one over e.
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
            "step": torch.zeros((), dtype=torch.int64),  # host memory, as torch.optim's
            "side": side,
            "basis": torch.zeros(projected, rank, dtype=dtype, device=device),
            "exp_avg": torch.zeros(rank, other, dtype=dtype, device=device),
            "exp_avg_sq": torch.zeros(rank, other, dtype=dtype, device=device),
            **_error_state(group["error_feedback"], rows, cols, dtype, device),
        }

    def _check_loaded_values(self, param: torch.Tensor, group: dict, loaded: dict) -> None:
        """Refuse a projection side other than the one this parameter's layout takes, quantized
        error bounds that are not finite or out of order (the step decodes them unchecked), and
        an error fold κ that is negative or not finite (the next step would add (k − κ)·P·m)."""
        layout = lowrank_layout(tuple(param.shape), group)
        if layout is not None and loaded["side"] != layout[0]:
            raise ValueError(
                f"state 'side' of {self._param_name(param)} must be {layout[0]!r}, "
                f"got {loaded['side']!r}"
            )
        if "error_lo" in loaded:
            from compress import _validate

            bounds = (array_view(loaded[key].detach().cpu()) for key in ("error_lo", "error_hi"))
            _validate.ordered_bounds(*bounds, f"the quantized error of {self._param_name(param)}")
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

    def _step_statistics(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict | None
    ) -> torch.Tensor:
        """[max|g|, max|e|, max|m|, max v] on the device (max|g| alone before the first step and
        on the dense path): max|g| is NaN or Inf unless g is finite, so the finite check and the
        overflow guard (`range_exponent`) share the step's one host read. Cost: one min/max pass
        over g (as the base class's sum) and, with the dense error buffer, one over e."""
        peaks = [peak_tensor(grad)]
        if state and "basis" in state:
            if "error" in state:
                error = peak_tensor(state["error"])
            elif "error_lo" in state:
                error = torch.maximum(
                    peak_tensor(state["error_lo"]), peak_tensor(state["error_hi"])
                )
            else:
                error = torch.zeros((), dtype=torch.float64, device=grad.device)
            peaks += [error, peak_tensor(state["exp_avg"]), peak_tensor(state["exp_avg_sq"])]
        return torch.stack([peak.to(device=grad.device) for peak in peaks])

    def _range_exponent(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict, mode: str, beta1, beta2
    ) -> int:
        """The power-of-two scaling this step needs (`range_exponent`; 0 for ordinary values),
        from the step's host statistics (computed here if the step did not record them)."""
        peaks = self._host_statistics().get(param)
        if peaks is not None and len(peaks) == 1 and int(state["step"]) == 0:
            peaks = [peaks[0], 0.0, 0.0, 0.0]  # state made this step: e, m and v are zero
        if peaks is None or len(peaks) < 4:
            peaks = self._step_statistics(param, grad, state).tolist()
        fold_gap = 0.0
        if mode == "dense" and int(state["step"]) > 0:
            fold_gap = abs(beta1 / (1.0 - beta1) - float(state["error_fold"]))
        basis, exp_avg = state["basis"], state["exp_avg"]
        return range_exponent(
            tuple(peaks),
            shape=(basis.shape[0], exp_avg.shape[1]),
            rank=basis.shape[1],
            beta1=beta1,
            beta2=beta2,
            fold_gap=fold_gap,
            dtype=basis.dtype,
        )

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
        exponent = self._range_exponent(param, grad, state, mode, beta1, beta2)
        residual = self._residual(grad.reshape(rows, -1), state, mode, group["maximize"], exponent)
        if exponent:
            times_power_of_two(state["exp_avg"], -exponent)
            times_power_of_two(state["exp_avg_sq"], -2 * exponent)
        rho = group["rho"]
        first = int(state["step"]) == 0
        transpose = state["side"] == "right"
        # ε scales with the moments, floored at 8·sqrt(smallest normal): where the scaled g̃²
        # underflows to 0, |m| < sqrt(tiny) and m / (sqrt(v) + ε) stays below 1/8
        eps = max(float(group["eps"]) * 2.0**-exponent, 8.0 * math.sqrt(torch.finfo(dtype).tiny))
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
            eps=eps if exponent else float(group["eps"]),
            lr=lr,
            weight_decay=float(group["weight_decay"]),
            keep_error=mode != "none",
            error_fold=state["error_fold"] if mode == "dense" else None,
            rng=[int(group["seed"]), self._param_key(param, group)] if first else None,
        )
        if exponent:
            kept = [(residual, 1)] if mode != "none" else []
            restore_range([(state["exp_avg"], 1), (state["exp_avg_sq"], 2), *kept], exponent)
        if mode in QUANT_BITS:
            # compress.quantize reads float32: a float64 residual is rounded first (that rounding
            # is ~1e6 times below the 4/8-bit quantization error that follows), within 2^±126 so
            # that the bucket widths stay finite.
            flat = residual.view(-1)
            if flat.dtype != torch.float32:
                flat = flat.clamp(-(2.0**126), 2.0**126).to(torch.float32)
            _quantized_feedback(state, mode, flat.numel()).store(
                array_view(flat), check_finite=False
            )
        if not in_place:
            param.copy_(weight.view_as(param))

    # ----------------------------------------------------------------- error feedback
    def _residual(
        self, grad: torch.Tensor, state: dict, mode: str, maximize: bool, exponent: int = 0
    ):
        """a = ±g + e in the work dtype: the dense error buffer itself, or a scratch buffer;
        (±g + e)·2^-exponent when `exponent` > 0 (`range_exponent`), each term scaled before the
        sum so that it cannot overflow.

        "dense" accumulates into e (no copy); "q4"/"q8" decode e into a scratch buffer holding
        ±g; "none" returns the gradient itself when no sign flip or cast is needed (read-only).
        """
        sign = -1.0 if maximize else 1.0
        dtype = state["basis"].dtype
        if exponent:
            if mode == "dense":
                residual = state["error"]
            else:
                residual = self._scratch(grad.shape, dtype, grad.device).zero_()
                if mode in QUANT_BITS:
                    feedback = _quantized_feedback(state, mode, residual.numel())
                    feedback.add_to(array_view(residual.view(-1)))
            times_power_of_two(residual, -exponent)
            scaled = times_power_of_two(grad.to(dtype, copy=True), -exponent)
            return residual.add_(scaled, alpha=sign)
        if mode == "dense":
            return state["error"].add_(grad, alpha=sign)
        if mode == "none" and not maximize and grad.dtype == dtype:
            return grad
        residual = self._scratch(grad.shape, dtype, grad.device)
        torch.mul(grad, sign, out=residual)
        if mode in QUANT_BITS:
            _quantized_feedback(state, mode, residual.numel()).add_to(array_view(residual.view(-1)))
        return residual
