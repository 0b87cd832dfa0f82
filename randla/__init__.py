"""randla: randomized low-rank approximation on numpy (CPU) or CuPy (GPU) arrays.

Public API (torch tensors are accepted too and returned as torch, on their device):
:func:`srsi`, :func:`adaptive_srsi`, :func:`rsvd`, :func:`subspace_iteration`,
:func:`orthonormalize`, :func:`estimate_error`, and the :class:`LowRank` result. See
docs/randla.md and ALGORITHMS.md §1.
"""

from randla.estimate import estimate_error
from randla.lowrank import LowRank, identity_floor
from randla.orth import orthonormalize
from randla.srsi import AdaptiveResult, adaptive_srsi, srsi
from randla.svd import rsvd, subspace_iteration

__all__ = [
    "AdaptiveResult",
    "LowRank",
    "adaptive_srsi",
    "estimate_error",
    "identity_floor",
    "orthonormalize",
    "rsvd",
    "srsi",
    "subspace_iteration",
]
