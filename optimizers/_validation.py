"""Hyperparameter checks that name the argument, the bad value and the accepted range."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

Check = Callable[[str, Any], None]


def _number(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a number or a 1-element tensor, got shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """A check that a number lies in the interval written like `[low, high)`."""
    shown = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def check(name: str, value: Any) -> None:
        x = _number(name, value)
        too_low = x <= low if low_open else x < low
        too_high = x >= high if high_open else x > high
        if too_low or too_high:
            raise ValueError(f"{name} must be in {shown}, got {value}")

    return check


def integer(low: int, high: float = math.inf) -> Check:
    """A check for an int in [low, high] (bool refused)."""

    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be an int in [{low}, {high}], got {value}")

    return check


def optional(check: Check) -> Check:
    """Accept None, otherwise apply `check`."""

    def wrapped(name: str, value: Any) -> None:
        if value is not None:
            check(name, value)

    return wrapped


def one_of(*choices: Any) -> Check:
    """A check that the value is one of `choices`."""

    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")

    return check


def flag(name: str, value: Any) -> None:
    """A check for a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def betas(count: int = 2) -> Check:
    """A check for a tuple of `count` coefficients, each in [0, 1)."""
    coefficient = in_range(0.0, 1.0, high_open=True)

    def check(name: str, value: Any) -> None:
        if not isinstance(value, Sequence) or len(value) != count:
            raise ValueError(
                f"{name} must be a sequence of {count} numbers in [0, 1), got {value!r}"
            )
        for i, beta in enumerate(value):
            coefficient(f"{name}[{i}]", beta)

    return check


COMMON_CHECKS: dict[str, Check] = {
    "lr": in_range(0.0, math.inf),
    "betas": betas(),
    # eps > 0 for every optimizer: with eps = 0 a zero second moment divides 0 by 0 (a parameter
    # whose gradient is zero on a coordinate, a zero MicroAdam window entry, a zero LDAdam row).
    "eps": in_range(0.0, math.inf, low_open=True, high_open=True),
    "weight_decay": in_range(0.0, math.inf),
    "maximize": flag,
    "nonfinite": one_of("raise", "skip"),
    "seed": integer(0, 2**63 - 1),
}
