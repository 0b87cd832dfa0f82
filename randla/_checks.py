"""Argument validation shared by every public randla function.

Every error names the argument, the bad value and the accepted range.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from randla import _backend

ORTH_METHODS = ("qr", "cholqr2", "lu")


def matrix(a: Any, name: str = "A") -> float:
    """Check a float32/float64, 2-D, non-empty, finite matrix; return Σ a_ij² (float64)."""
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got {a.ndim}-D with shape {tuple(a.shape)}")
    if 0 in a.shape:
        raise ValueError(f"{name} must have non-empty dimensions, got shape {tuple(a.shape)}")
    float_dtype(a, name)
    total = _backend.sum_squares(a)
    if not np.isfinite(total):
        xp = _backend.namespace(a)
        if not bool(xp.isfinite(a).all()):
            raise ValueError(f"{name} must be finite, got NaN or Inf entries")
    return total


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


def generator(rng: Any) -> Any:
    """A numpy or CuPy Generator from None, an int seed, a sequence of ints or a Generator."""
    if isinstance(rng, np.random.Generator) or type(rng).__module__.startswith("cupy"):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    if isinstance(rng, Sequence) and not isinstance(rng, str):
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in rng):
            return np.random.default_rng([int(v) for v in rng])
    raise TypeError(
        "rng must be None, an int, a sequence of ints or a numpy/CuPy Generator, "
        f"got {type(rng).__name__}"
    )
