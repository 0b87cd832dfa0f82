"""Parameter sets shaped like real models, with gradients, for optimizer step benchmarks.

`transformer_params(blocks, width)` mirrors a GPT-2-style decoder: per block the fused q/k/v and
output projections as four width×width matrices, the MLP's width×4width and 4width×width
matrices, and four width-vectors (layer-norm scales/shifts and biases); plus the final norm.
12 blocks of width 768 give ≈ 85M parameters (the GPT-2 small body without embeddings).
"""

from __future__ import annotations

import torch


def transformer_shapes(blocks: int = 12, width: int = 768) -> list[tuple[int, ...]]:
    """The parameter shapes of `transformer_params`, in order."""
    shapes: list[tuple[int, ...]] = []
    for _ in range(blocks):
        shapes += [(width, width)] * 4 + [(4 * width, width), (width, 4 * width)]
        shapes += [(width,)] * 4 + [(4 * width,)]
    shapes += [(width,)] * 2
    return shapes


def transformer_params(
    blocks: int = 12, width: int = 768, *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> list[torch.nn.Parameter]:
    """Parameters with random gradients attached (fixed seed)."""
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in transformer_shapes(blocks, width):
        p = torch.nn.Parameter((0.02 * torch.randn(shape, generator=generator)).to(dtype))
        p.grad = (1e-3 * torch.randn(shape, generator=generator)).to(dtype)
        params.append(p)
    return params


def count(params: list[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params)
