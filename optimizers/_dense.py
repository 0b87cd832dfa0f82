"""The dense AdamW path for parameters a compressed method does not take (vectors, small matrices).

Standard AdamW (Loshchilov & Hutter, 2019): bias-corrected moments, ε outside the square root,
decoupled weight decay. State: two buffers of the parameter's shape in float32 (or float64 for
float64 parameters), 8 bytes per parameter. Low-precision parameters are updated in float32 and
rounded once.
"""

from __future__ import annotations

import torch


def dense_state_dtype(param: torch.Tensor) -> torch.dtype:
    """float64 parameters keep float64 moments; everything else float32."""
    return torch.float64 if param.dtype == torch.float64 else torch.float32


def init_dense_state(param: torch.Tensor) -> dict[str, torch.Tensor]:
    """Zero moments and a zero step count."""
    dtype = dense_state_dtype(param)
    return {
        "step": torch.zeros((), dtype=torch.int64),  # host memory, as torch.optim's
        "exp_avg": torch.zeros(param.shape, dtype=dtype, device=param.device),
        "exp_avg_sq": torch.zeros(param.shape, dtype=dtype, device=param.device),
    }


def dense_adamw_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: dict[str, torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """One AdamW step in place: 3 reads and 3 writes of the parameter's size."""
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    state["step"] += 1
    step = int(state["step"])
    work = param if param.dtype == exp_avg.dtype else param.to(exp_avg.dtype)
    grad = grad.to(exp_avg.dtype)
    if maximize:
        grad = -grad
    if weight_decay:
        work.mul_(1.0 - lr * weight_decay)
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    denom = (exp_avg_sq / bias2).sqrt_().add_(eps)
    work.addcdiv_(exp_avg, denom, value=-lr / bias1)
    if work is not param:
        param.copy_(work)
