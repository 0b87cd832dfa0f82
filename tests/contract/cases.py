"""The optimizers every contract test runs against, each configured for the tiny test model.

A case is a factory `(params, **options) -> optimizer`. The tiny model (see `tiny_model`) has a
48×64 weight (large enough for each method's compressed path at these settings), a 64×48 weight
(a tall matrix), a 1×64 weight and bias vectors (dense path for the matrix methods).
"""

from __future__ import annotations

from typing import Any

import torch

import optimizers
from optimizers._base import SmallStateOptimizer
from optimizers._dense import dense_adamw_step, init_dense_state


class DenseOnly(SmallStateOptimizer):
    """The base class with only the dense AdamW path: checks the plumbing on its own."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        maximize=False,
        nonfinite="raise",
        seed=0,
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                maximize=maximize,
                nonfinite=nonfinite,
                seed=seed,
            ),
        )

    def _init_state(self, param, group, key):
        return init_dense_state(param)

    def _update(self, param, grad, state, group):
        beta1, beta2 = group["betas"]
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


def _smallstate(name: str, **settings: Any):
    def factory(params, **options):
        return getattr(optimizers, name)(params, **{**settings, **options})

    return factory


def _dense(params, **options):
    return DenseOnly(params, **options)


CASES = {
    "dense": _dense,
    "microadam": _smallstate("MicroAdam", density=0.25, block_size=256, window=4),
    "ldadam": _smallstate("LDAdam", rank=4),
    "adapprox": _smallstate("Adapprox", k_max=8),
}


def tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 48),
        torch.nn.Tanh(),
        torch.nn.Linear(48, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 1),
    )
    return model.to(dtype)


def tiny_batch(dtype: torch.dtype = torch.float32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 64, generator=g)
    y = torch.sin(x[:, :3].sum(dim=1, keepdim=True))
    return x.to(dtype), y.to(dtype)
