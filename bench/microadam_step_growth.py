"""MicroAdam's update size under stationary noise, at density 1, against Adam's.

Usage: python bench/microadam_step_growth.py [STEPS] [SIZE]   (defaults 2000, 16384)

One parameter of SIZE elements (zeros), a fresh N(0, 1) gradient every step (stationary noise:
nothing to learn, so only the optimizer sets the step size), constant lr 1e-3, no weight decay,
betas (0.9, 0.999), eps 1e-8. Prints RMS(Δθ)/lr at t = 1, 10, 100, 1000, 2000 for
torch.optim.Adam and MicroAdam with density 1 (every coordinate kept, so top-k and the error
store drop nothing), window m = 10 and float32 window values, with the published bias correction
(1 − β^t) and, where the option exists, the window-normalized one (1 − β^min(t, m)).

Why it grows: MicroAdam's second moment sums only the last m squared gradients,
S = Σ_{age<m} β2^age g², about (1 − β2^m)/(1 − β2)·σ² = 9.96·σ² for m = 10, while its correction
divides by (1 − β2^t)/(1 − β2), which keeps growing with t (to 1000 at t → ∞). So c2·S shrinks
as (1 − β2^m)/(1 − β2^t) once t > m, and u = c1·M/sqrt(c2·S) grows as its inverse square root,
to sqrt((1 − β2^t)/(1 − β2^m)) ≈ 10 times the size at t = m for large t. Adam's S keeps all
past squares, so its update is flat (about sqrt((1 − β1)/(1 + β1)) = 0.23 for pure noise).
"""

from __future__ import annotations

import inspect
import sys

import torch

from optimizers import MicroAdam

MARKS = (1, 10, 100, 1000, 2000)
LR = 1e-3


def step_sizes(make, steps: int, size: int) -> dict[int, float]:
    """RMS(Δθ)/lr at each mark ≤ steps, for the optimizer `make(params)` builds."""
    param = torch.nn.Parameter(torch.zeros(size))
    opt = make([param])
    noise = torch.Generator().manual_seed(0)
    sizes = {}
    for t in range(1, steps + 1):
        param.grad = torch.randn(size, generator=noise)
        before = param.detach().clone()
        opt.step()
        if t in MARKS:
            change = param.detach() - before
            sizes[t] = float(change.square().mean().sqrt()) / LR
    return sizes


def main(argv: list[str]) -> None:
    steps = int(argv[0]) if argv else 2000
    size = int(argv[1]) if len(argv) > 1 else 16384
    torch.set_num_threads(1)
    micro = dict(lr=LR, density=1.0, window=10, block_size=16384, values_dtype="float32")
    runs = {
        "Adam": lambda p: torch.optim.Adam(p, lr=LR),
        "MicroAdam (1 - beta^t)": lambda p: MicroAdam(p, **micro),
    }
    if "bias_correction" in inspect.signature(MicroAdam).parameters:
        runs["MicroAdam (1 - beta^min(t, m))"] = lambda p: MicroAdam(
            p, bias_correction="window", **micro
        )
    marks = [t for t in MARKS if t <= steps]
    print(f"RMS(step)/lr under N(0, 1) gradient noise, {size} elements, lr {LR}, m = 10")
    print(f"{'t':>32}" + "".join(f"{t:>8}" for t in marks))
    for name, make in runs.items():
        sizes = step_sizes(make, steps, size)
        print(f"{name:>32}" + "".join(f"{sizes[t]:>8.3f}" for t in marks))


if __name__ == "__main__":
    main(sys.argv[1:])
