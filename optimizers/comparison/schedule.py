"""The learning-rate schedule every optimizer shares: linear warmup, then cosine decay."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(
    step: int, *, warmup_steps: int, total_steps: int, final_ratio: float
) -> float:
    """Multiplier of the peak lr after ``step`` scheduler steps.

    Rises linearly from 1/warmup_steps to 1 over the first ``warmup_steps`` steps, then follows a
    half cosine from 1 down to ``final_ratio`` at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    final_ratio: float = 0.1,
) -> LambdaLR:
    """A LambdaLR applying :func:`warmup_cosine_factor` to every param group's lr."""
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be in [0, {total_steps}), got {warmup_steps}")
    if not 0.0 <= final_ratio <= 1.0:
        raise ValueError(f"final_ratio must be in [0, 1], got {final_ratio}")
    return LambdaLR(
        optimizer,
        lambda step: warmup_cosine_factor(
            step,
            warmup_steps=max(1, warmup_steps),
            total_steps=total_steps,
            final_ratio=final_ratio,
        ),
    )
