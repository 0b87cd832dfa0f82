"""Argument validation shared by every public randla function.

Every error names the argument, the bad value and the accepted range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from randla import _backend

ORTH_METHODS = ("qr", "cholqr2", "lu")
PRECISIONS = ("full", "mixed")


def matrix(a: Any, name: str = "A", total_squares: Any = None) -> float:
    """Check a float32/float64, 2-D, non-empty, finite matrix; return Σ a_ij² (float64).

    `total_squares`: the caller's Σ a_ij², trusted when it is a finite real ≥ 0 (then `a` is not
    read: a finite sum of squares proves every entry finite); None, NaN or Inf: computed here.
    """
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got {a.ndim}-D with shape {tuple(a.shape)}")
    if 0 in a.shape:
        raise ValueError(f"{name} must have non-empty dimensions, got shape {tuple(a.shape)}")
    float_dtype(a, name)
    if total_squares is not None:
        if (
            isinstance(total_squares, bool)
            or not isinstance(total_squares, numbers.Real)
            or total_squares < 0
        ):
            raise ValueError(f"total_squares must be a float >= 0 or None, got {total_squares!r}")
        if math.isfinite(total_squares):
            return float(total_squares)
    total = _backend.sum_squares(a)
    if not np.isfinite(total):
        finite(a, name)
    return total


def blas_layout(a: Any) -> Any:
    """`a` itself when it is C- or F-contiguous, else a C-contiguous copy: what the products
    take (a view with negative or gapped strides, as ``a[::-1]`` or ``a[:, ::2]``, is copied
    once, as `rsvd` does, instead of reaching torch's zero-copy bridge, which refuses it)."""
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return a
    return _backend.namespace(a).ascontiguousarray(a)


def finite(a: Any, name: str) -> None:
    """Refuse NaN or Inf entries (one pass over `a`)."""
    if not bool(_backend.namespace(a).isfinite(a).all()):
        raise ValueError(f"{name} must be finite, got NaN or Inf entries")


def positive_real(value: Any, name: str) -> float:
    """A real number > 0 (Python or numpy int/float, not bool) as a Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a float > 0, got {value!r}")
    return float(value)


def float_dtype(a: Any, name: str) -> None:
    if np.dtype(a.dtype) not in _backend.FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")


def integer(value: Any, name: str, low: int, high: int | None = None) -> int:
    """An int in [low, high] (high None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def orth(method: Any, name: str = "orth") -> str:
    if method not in ORTH_METHODS:
        raise ValueError(f"{name} must be one of {ORTH_METHODS}, got {method!r}")
    return method


def precision(value: Any, a: Any) -> bool:
    """Check ``precision`` for matrix `a`; True for "mixed" (bfloat16 intermediate products),
    which needs a float32 CPU array."""
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
    if value == "full":
        return False
    if _backend.is_cupy(a):
        raise ValueError("precision='mixed' runs on CPU arrays only; use 'full' for CuPy/CUDA")
    if a.dtype != np.float32:
        raise ValueError(f"precision='mixed' needs a float32 A, got {a.dtype}; use 'full'")
    return True


def generator(rng: Any) -> Any:
    """A numpy or CuPy Generator from None, a seed >= 0, a sequence of seeds or a Generator."""
    if isinstance(rng, np.random.Generator) or type(rng).__module__.startswith("cupy"):
        return rng
    if rng is None:
        return np.random.default_rng()
    if _is_int(rng):
        seed: int | list[int] = int(rng)
        seeds = [seed]
    elif (
        (isinstance(rng, Sequence) and not isinstance(rng, str))
        or (isinstance(rng, np.ndarray) and rng.ndim == 1)
    ) and all(map(_is_int, rng)):
        seed = seeds = [int(v) for v in rng]
    else:
        raise TypeError(
            "rng must be None, an int, a sequence of ints or a numpy/CuPy Generator, "
            f"got {type(rng).__name__}"
        )
    if any(value < 0 for value in seeds):
        raise ValueError(f"rng must be a seed >= 0 or a sequence of them, got {rng!r}")
    return np.random.default_rng(seed)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
