"""MicroAdam: Adam statistics from a sliding window of top-k gradients, 4-bit error feedback.

Modoranu et al., "MicroAdam: Accurate Adaptive Optimization with Low Space Overhead and Provable
Convergence", NeurIPS 2024 (arXiv 2405.15593); ALGORITHMS.md §3.1. Every parameter, whatever its
shape, is one flat vector of d elements. Per step: the gradient plus the dequantized error is split
into blocks of `block_size`; each block's `ceil(block_size·density)` largest magnitudes go into
the ring row under the cursor, the rest is re-quantized to 4 bits as the new error; the parameter
then decays (W ← W(1 − ηλ)) and moves by −η·u, where u is Adam's bias-corrected update computed
from the window's last `window` sparse gradients (only on their support).

State per parameter (the bytes formula, d elements, m = window, k ≈ density·d, q = quant_bucket):
4-bit error codes d/2 B, bf16 bucket bounds 4·d/q B, ring values 2·m·k B (bf16; 4 with float32),
int16 ring indices 2·m·k B, int64 step and cursor: ≈ 0.5 + 4·m·density + 4/q B/param
(0.9625 at the defaults). No dense buffer of the parameter's size is kept.

Cost of a step: one fused pass over the gradient and the error codes (read 4.5 B/param, write
0.5 B/param for float32 gradients) plus O(m·k) for the window update, which runs block by block
after one sequential read-and-write pass over the block's parameters (the decay W ← W(1 − ηλ),
a rewrite without weight decay on CPU), so its scattered updates hit cache.

The module shows the torch plumbing (`MicroAdam`) next to the functional step over array views
(`microadam_step`), which runs on numpy (Numba kernels) or CuPy (CUDA kernels) arrays alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch

import compress
from compress.fused import densify_from_error, unchecked_select_into_window
from compress.topk import counts_of
from compress.window import unchecked_window_adam_apply

from ._base import SmallStateOptimizer, saturating_cast
from ._validation import COMMON_CHECKS, Check, in_range, integer, one_of
from ._views import array_view, mark_written

VALUES_DTYPES = ("bfloat16", "float32", "param")
ERROR_FEEDBACK = ("q4", "none")
BIAS_CORRECTIONS = ("step", "window")
MAX_BLOCK_SIZE = 32767  # a block-relative index must fit in int16
ERROR_BITS = 4

# Storage of window values by values_dtype (and, for "param", by parameter dtype). bfloat16 is
# kept as its bit pattern in an int16 tensor (what the core reads as uint16 bits), so that
# checkpoint tools that cast floating state to the parameter's dtype cannot touch it. compress
# has no float16 window, so float16 parameters keep float32 values under "param".
_BF16_BITS = torch.int16
_PARAM_VALUES = {
    torch.float64: torch.float64,
    torch.float32: torch.float32,
    torch.bfloat16: _BF16_BITS,
    torch.float16: torch.float32,
}


def window_values_dtype(param_dtype: torch.dtype, values_dtype: str) -> torch.dtype:
    """The torch dtype holding the ring buffer's values (int16 means bfloat16 bits)."""
    if values_dtype == "bfloat16":
        return _BF16_BITS
    if values_dtype == "float32":
        return torch.float32
    if param_dtype not in _PARAM_VALUES:
        raise TypeError(f"MicroAdam does not support {param_dtype} parameters")
    return _PARAM_VALUES[param_dtype]


def init_microadam_state(
    param: torch.Tensor,
    *,
    window: int,
    density: float,
    block_size: int,
    quant_bucket: int,
    values_dtype: str,
    error_feedback: str = "q4",
) -> dict[str, torch.Tensor]:
    """Fresh state of one parameter (works on the meta device): zero error (none with
    error_feedback="none"), empty window.

    An empty parameter (numel 0) gets empty tensors; its steps only count (as AdamW's do).
    """
    length = param.numel()
    total_k = (
        compress.block_counts(length, density=density, block_size=block_size).total_k
        if length
        else 0
    )
    buckets = -(-length // quant_bucket)
    device = param.device
    error = (
        {
            "error_codes": torch.zeros((length + 1) // 2, dtype=torch.uint8, device=device),
            "error_lo": torch.zeros(buckets, dtype=_BF16_BITS, device=device),
            "error_hi": torch.zeros(buckets, dtype=_BF16_BITS, device=device),
        }
        if error_feedback == "q4"
        else {}
    )
    return {
        # integer bookkeeping in host memory (as torch.optim's step): read without a GPU wait
        "step": torch.zeros((), dtype=torch.int64),
        "cursor": torch.zeros((), dtype=torch.int64),
        **error,
        "window_values": torch.zeros(
            (window, total_k),
            dtype=window_values_dtype(param.dtype, values_dtype),
            device=device,
        ),
        "window_indices": torch.zeros((window, total_k), dtype=torch.int16, device=device),
    }


def _float_view(tensor: torch.Tensor):
    """Core view of a floating state tensor; int16 ones hold bfloat16 bits (seen as uint16)."""
    view = array_view(tensor)
    return view.view("uint16") if tensor.dtype == _BF16_BITS else view


def core_state(
    state: dict[str, torch.Tensor], group: dict[str, Any], length: int
) -> tuple[compress.Quantized | None, compress.SparseWindow]:
    """The error store (None without error feedback) and the window of one parameter's state,
    as core views (no copy)."""
    error = None
    if "error_codes" in state:
        error = compress.Quantized(
            array_view(state["error_codes"]),
            _float_view(state["error_lo"]),
            _float_view(state["error_hi"]),
            length,
            ERROR_BITS,
            group["quant_bucket"],
        )
    # the group's density and block size were validated when the group was set
    counts = counts_of(length, group["density"], group["block_size"])
    window = compress.SparseWindow(
        _float_view(state["window_values"]),
        array_view(state["window_indices"]),
        length,
        group["block_size"],
        counts.k_full,
        int(state["cursor"]),
    )
    return error, window


def microadam_step(
    param, grad, error: compress.Quantized | None, window: compress.SparseWindow, **options: Any
) -> None:
    """One MicroAdam step on flat core arrays, in place (`_step_arrays`, whose keyword options
    it takes: t, lr, beta1, beta2, eps, density, maximize, decay, alpha, bias_correction), every
    argument checked by `compress`'s public functions before anything is written."""
    _step_arrays(param, grad, error, window, checked=True, **options)


def _step_arrays(
    param,
    grad,
    error: compress.Quantized | None,
    window: compress.SparseWindow,
    *,
    checked: bool,
    t: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    density: float,
    maximize: bool,
    decay: float = 1.0,
    alpha: float = 0.0,
    bias_correction: str = "step",
) -> None:
    """One MicroAdam step on flat core arrays, in place; decay = 1 − lr·weight_decay is applied
    to param in the same pass as the window update.

    `param` and `grad` are numpy or CuPy vectors (float32/float64/float16 or uint16 bf16 bits);
    `error` and `window` wrap views of the state (error None: no error feedback); `t` is the
    step count including this step. Advances `window.cursor`; the caller stores it back.
    checked=False takes compress's unchecked private variants, skipping every argument check
    (the O(m·k) range check of the window's indices included, which runs every parameter and
    step): only for the optimizer, whose state was written by these kernels or checked on load
    and whose parameter's size is checked against it before each step (`_check_fits`).
    alpha > 0 (needs `error`) then moves α of the new error into the parameter
    (`compress.fused.densify_from_error`): param −= lr·α·Q⁻¹(e), e ← Q((1 − α)·Q⁻¹(e)).
    bias_correction="window" divides the moments by 1 − β^min(t, m), the weight the window
    actually holds, instead of Adam's 1 − β^t (the window statistics at step min(t, m)).
    """
    scale = -1.0 if maximize else 1.0
    if not checked:
        unchecked_select_into_window(grad, error, window, density=density, scale=scale)
    elif error is None:
        compress.window_topk(grad, window, density=density, scale=scale)
    else:
        compress.ef_topk_requantize(grad, error, window, density=density, scale=scale)
    window.advance()
    apply = compress.window_adam_apply if checked else unchecked_window_adam_apply
    apply(
        window,
        min(t, window.m) if bias_correction == "window" else t,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        lr=lr,
        param=param,
        decay=decay,
    )
    if alpha > 0.0:
        densify_from_error(error, param, alpha=alpha, lr=lr)


class MicroAdam(SmallStateOptimizer):
    """MicroAdam (NeurIPS 2024) as a drop-in `torch.optim` optimizer, ≈0.96 B of state/param.

    Args (all per param group; lr, betas, eps and weight_decay may be passed positionally as
    in torch.optim.AdamW, the others are keyword-only):
        lr, betas, eps: as in Adam (ε outside the square root, bias-corrected moments).
        weight_decay: decoupled, W ← W(1 − lr·weight_decay) before the update (as AdamW).
        window: m, the number of past sparse gradients the statistics are built from (≥ 1).
        density: fraction of each block kept per step, in (0, 1]; a block of D entries keeps
            ceil(D·density), the tail block at least 1.
        block_size: D, in [1, 32767] (indices are int16, block-relative), an even multiple
            of quant_bucket (two 4-bit codes share a byte). The reference derives D from the
            GPU model; here it is explicit so that a run is reproducible across machines.
            D = 20864 reproduces the published A100 runs.
        quant_bucket: q, elements sharing one (lo, hi) pair of the 4-bit error, ≥ 2.
        values_dtype: dtype of the window's values: "bfloat16" (the paper's; a finite value
            beyond bf16's largest is stored as that largest, never as Inf), "float32", or
            "param" (the parameter's dtype; float16 parameters use float32). float64
            parameters with "param" make density=1, window ≥ steps reproduce Adam exactly.
        error_feedback: "q4" (the paper's: what top-k leaves out is kept as a 4-bit error and
            added to the next gradient) or "none" (it is dropped: 0.5 + 4/q B/param less state,
            no error pass). "none" is not MicroAdam's published algorithm; on the training
            comparison's small from-scratch model it reached a clearly lower loss (see
            docs/microadam.md), which is why it is offered.
        alpha: α in [0, 1), the reference implementation's densifying option (labelled there
            for pre-training): after the sparse update, the parameter also moves by −lr·α·Q⁻¹(e)
            and the error keeps (1 − α)·Q⁻¹(e), re-quantized. 0 (default) is the published
            algorithm; α > 0 needs error_feedback="q4" and costs one more pass over the error
            codes and the parameter.
        bias_correction: "step" (default, the paper's: moments divided by 1 − β^t) or
            "window" (divided by 1 − β^min(t, m), the total weight the window holds; an opt-in
            variant, not the published algorithm).
        maximize: ascend instead of descend.
        nonfinite: "raise" (default) or "skip" a parameter whose gradient is not finite.
        seed: accepted for API uniformity; MicroAdam draws no random numbers.

    Cost per step and parameter of d elements: one fused pass over gradient and error
    (≈ 5 B/param moved for float32 gradients), O(m·density·d) for the window, and one pass over
    the parameter (read and written; on GPU only the support when weight_decay = 0). CPU tensors
    run on Numba kernels, CUDA tensors on numba.cuda kernels; every floating dtype trains (bf16 and
    float16 parameters are updated in float32 through their bits and rounded to nearest even,
    float64 in float64).
    """

    _layout_options = (
        "window",
        "density",
        "block_size",
        "values_dtype",
        "error_feedback",
        "quant_bucket",
    )
    _checks: ClassVar[dict[str, Check]] = {
        **COMMON_CHECKS,
        "window": integer(1),
        "density": in_range(0.0, 1.0, low_open=True),
        "block_size": integer(1, MAX_BLOCK_SIZE),
        "quant_bucket": integer(2),
        "values_dtype": one_of(*VALUES_DTYPES),
        "error_feedback": one_of(*ERROR_FEEDBACK),
        "alpha": in_range(0.0, 1.0, high_open=True),
        "bias_correction": one_of(*BIAS_CORRECTIONS),
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        window: int = 10,
        density: float = 0.01,
        block_size: int = 16384,
        quant_bucket: int = 64,
        values_dtype: str = "bfloat16",
        error_feedback: str = "q4",
        alpha: float = 0.0,
        bias_correction: str = "step",
        maximize: bool = False,
        nonfinite: str = "raise",
        seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            window=window,
            density=density,
            block_size=block_size,
            quant_bucket=quant_bucket,
            values_dtype=values_dtype,
            error_feedback=error_feedback,
            alpha=alpha,
            bias_correction=bias_correction,
            maximize=maximize,
            nonfinite=nonfinite,
            seed=seed,
        )
        super().__init__(params, defaults)

    def _validate(self, options: dict[str, Any]) -> None:
        super()._validate(options)
        block_size, bucket = options.get("block_size"), options.get("quant_bucket")
        if (
            block_size is not None
            and bucket is not None
            and (block_size % bucket or block_size % 2)
        ):
            raise ValueError(
                f"block_size must be an even multiple of quant_bucket (buckets and code bytes "
                f"may not straddle blocks), got block_size={block_size}, quant_bucket={bucket}"
            )
        alpha, feedback = options.get("alpha"), options.get("error_feedback")
        if alpha is not None and feedback is not None and alpha > 0 and feedback == "none":
            raise ValueError(
                f"alpha must be 0 with error_feedback='none' (there is no error to densify "
                f"from), got alpha={alpha}"
            )

    def _init_state(self, param: torch.Tensor, group: dict[str, Any], key: int) -> dict:
        return init_microadam_state(
            param,
            window=group["window"],
            density=group["density"],
            block_size=group["block_size"],
            quant_bucket=group["quant_bucket"],
            values_dtype=group["values_dtype"],
            error_feedback=group["error_feedback"],
        )

    def _path(self, state: dict) -> str:
        return "microadam"

    def _check_loaded_values(self, param: torch.Tensor, group: dict, loaded: dict) -> None:
        """Refuse a loaded state that would index outside the arrays: cursor in [0, window),
        every window index inside its block (one O(m·k) read of the indices). (The base class
        refuses a negative step.)"""
        where = self._param_name(param)
        cursor = int(loaded["cursor"])
        if not 0 <= cursor < group["window"]:
            raise ValueError(
                f"state 'cursor' of {where} must be in [0, {group['window'] - 1}], got {cursor}"
            )
        if param.numel():
            try:
                core_state(loaded, group, param.numel())[1].check("window_indices")
            except ValueError as error:
                raise ValueError(f"state 'window_indices' of {where} is invalid: {error}") from None

    def _retype_loaded_tensor(
        self, key: str, got: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """As the base class, and window values between bfloat16 bits (int16) and a float dtype
        (values_dtype="param" after `model.to(dtype)`): bf16 → float exact, float → bf16 rounded
        to nearest even and saturated at bf16's largest finite value."""
        if key == "window_values" and _BF16_BITS in (got.dtype, dtype):
            if got.dtype == _BF16_BITS and dtype.is_floating_point:
                return got.view(torch.bfloat16).to(dtype)
            if got.is_floating_point():
                return saturating_cast(got, torch.bfloat16).view(_BF16_BITS)
            return None
        return super()._retype_loaded_tensor(key, got, dtype)

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        if param.numel() == 0:
            state["step"] += 1
            return
        lr = float(group["lr"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        work = param if param.is_contiguous() else param.contiguous()
        flat_param = array_view(work.view(-1))
        flat_grad = array_view(grad.contiguous().view(-1))
        error, window = core_state(state, group, param.numel())
        # The state was built here or checked on load (indices included) and the parameter's size
        # checked against it before the step (`_check_fits`): no argument checks.
        _step_arrays(
            flat_param,
            flat_grad,
            error,
            window,
            t=int(state["step"]) + 1,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=float(group["eps"]),
            density=group["density"],
            maximize=group["maximize"],
            decay=1.0 - lr * group["weight_decay"],
            checked=False,
            alpha=float(group["alpha"]),
            bias_correction=group["bias_correction"],
        )
        state["step"] += 1
        state["cursor"].fill_(window.cursor)
        if work is param:
            mark_written(param)
        else:
            param.copy_(work)
