"""Products of a large CPU matrix with thin factors for the optimizers, on randla's kernels.

`thin_product` (op(A)·B for B of few columns) and `add_product` (a rank-K update of a large
matrix) take torch tensors and run randla's Numba kernels (`randla/_tiles.py`, `randla/_thin.py`)
on zero-copy views where they pay, torch.mm/addmm_ elsewhere (GPU tensors, small matrices).
"""

from __future__ import annotations

import torch

from randla import _backend

from ._views import array_view, mark_written

MIN_THIN_ELEMENTS = 1 << 18
"""Smaller matrices keep torch.mm in `thin_product`: there the fixed cost of the views and the
kernel launch (tens of µs) is as large as the product. Measured on the training comparison's
model (4 layers of width 128, rank 16, 2 threads, best of 3 × 20 steps):
4.87 ms per step with this limit (all of its matrices on torch.mm), 5.16 ms with randla's own
limit of 32768."""


def thin_product(a: torch.Tensor, b: torch.Tensor, *, transpose_a: bool = False) -> torch.Tensor:
    """op(a)·b for a large matrix a and a block b of few columns (both float32 or float64).

    On CPU, for a of at least MIN_THIN_ELEMENTS entries, it runs randla's kernels on zero-copy
    views (`randla/_tiles.py`, `randla/_thin.py`: up to 288 columns 1.5-3x faster than MKL's
    sgemm on the development machine, which runs these shapes far below its square-matrix rate);
    elsewhere torch.mm. The result is a new tensor, in either memory order.
    """
    if a.device.type != "cpu" or a.numel() < MIN_THIN_ELEMENTS:
        return torch.mm(a.t() if transpose_a else a, b)
    product = _backend.matmul(array_view(a), array_view(b), transpose_a=transpose_a, fortran=False)
    return torch.from_numpy(product)


def add_product(
    target: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    beta: float = 1.0,
    alpha: float = 1.0,
) -> None:
    """target ← beta·target + alpha·left·right in place (a rank-K update, K = left's columns).

    On CPU, for a target of at least randla's THIN_MIN_ELEMENTS (32768) entries, it runs
    randla's register-tiled kernel (`randla/_tiles.py`; faster than torch's addmm_ on the
    benchmark's shapes, see `randla._backend.add_product`, as was the blocked loop it replaced
    from 32768 entries on: 128×512 with K = 32, 37 against 57 µs), with alpha folded into the
    small `right`; elsewhere addmm_.
    """
    if target.device.type == "cpu" and target.numel() >= _backend.THIN_MIN_ELEMENTS:
        scaled = right if alpha == 1.0 else right * alpha
        if _backend.add_product(
            array_view(target), array_view(left), array_view(scaled), beta=beta
        ):
            mark_written(target)
            return
    target.addmm_(left, right, beta=beta, alpha=alpha)


def rank_product(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """left·right as a new tensor, for a product of small inner dimension (`add_product` with
    beta = 0 into a fresh buffer)."""
    out = torch.empty(left.shape[0], right.shape[1], dtype=right.dtype, device=right.device)
    add_product(out, left, right, beta=0.0)
    return out
