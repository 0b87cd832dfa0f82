"""The factored result A ≈ Q Uᵀ and the cumulative-norm identity for its prefix errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from randla import _backend


def identity_floor(dtype: Any) -> float:
    """Smallest relative error the cumulative-norm identity resolves: sqrt(100·eps(dtype)).

    The identity works on squared norms, so its 100·eps floor applies to e²: about 3.5e-3 in
    float32 and 1.5e-7 in float64. `dtype`: a numpy dtype (or its name) or a torch float dtype.
    """
    if type(dtype).__module__.startswith("torch"):
        dtype = str(dtype).removeprefix("torch.")
    if np.dtype(dtype) not in _backend.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return math.sqrt(100.0 * _backend.eps(dtype))


@dataclass(frozen=True)
class LowRank:
    """A rank-k factorization A ≈ Q Uᵀ, Q (m×k) with orthonormal columns, U = AᵀQ (n×k).

    ``prefix_errors[j-1]`` is the relative Frobenius error ‖A − Q_j U_jᵀ‖_F / ‖A‖_F of the first
    j columns, from the identity ‖A − Q_j U_jᵀ‖_F² = ‖A‖_F² − Σ_{i≤j} ‖u_i‖² (valid because Q is
    orthonormal and U = AᵀQ) accumulated in float64. The identity cancels catastrophically below
    ``identity_floor(dtype)``; such values (negative ones included) are reported as that floor with
    ``resolved[j-1] = False`` — certify them with :func:`randla.estimate_error`. Q and U are
    arrays of the caller's kind (numpy, CuPy or torch); the error arrays are numpy float64/bool.

    Storage: (m + n)·k numbers. Reference: Halko, Martinsson, Tropp, SIAM Review 2011, §4–5.
    """

    Q: Any
    U: Any
    prefix_errors: np.ndarray
    resolved: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.Q.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes held by the two factors."""
        return int(self.Q.nbytes + self.U.nbytes)

    def to_dense(self) -> Any:
        """Q Uᵀ as a dense m×n array of the factors' kind (2·m·n·k flops)."""
        return self.Q @ self.U.T

    def truncate(self, j: int) -> LowRank:
        """The first j columns (views, no copy): the nested rank-j approximation."""
        if isinstance(j, bool) or not isinstance(j, int | np.integer) or not 1 <= j <= self.rank:
            raise ValueError(f"j must be an int in [1, {self.rank}], got {j!r}")
        return LowRank(self.Q[:, :j], self.U[:, :j], self.prefix_errors[:j], self.resolved[:j])


def identity_prefix_errors(total_squares: float, u: Any) -> tuple[np.ndarray, np.ndarray]:
    """Relative error of every prefix of (Q, U) and whether the identity resolves it.

    Cost: one pass over U (n·k), squared and summed in float64 (no float32 overflow for
    |u| > 1.8e19), plus a length-k cumulative sum.
    """
    xp = _backend.namespace(u)
    column_squares = xp.sum(xp.square(u.astype(xp.float64)), axis=0)
    captured = np.cumsum(_backend.to_host(column_squares))
    floor = identity_floor(u.dtype)
    if total_squares <= 0.0:
        return np.full(captured.shape, floor), np.zeros(captured.shape, dtype=bool)
    relative_squares = 1.0 - captured / total_squares
    resolved = relative_squares > floor * floor
    errors = np.sqrt(np.where(resolved, relative_squares, floor * floor))
    return errors, resolved
