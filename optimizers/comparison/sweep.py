"""Learning-rate grids that bracket their best value.

Grid values lie on the ladder 1, 3, 10, 30, ... x 10^k (``ladder_value``: neighbours about a
factor 3 apart, values a reader can type). Each optimizer starts from a small grid around its
centre lr (``initial_grid``). When the best
value sits at an edge of the values tried, the grid grows by one value past that edge
(``next_lr``), at most a preset's ``max_extensions`` times, so the chosen lr is bracketed by
worse values on both sides unless the bound was reached (``is_bracketed`` says which).
A run that diverged (non-finite loss) counts as worse than any finite one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def ladder_index(lr: float) -> int:
    """Position of the ladder value nearest to lr in log scale (1e-3 -> -6, 3e-3 -> -5)."""
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    decade = math.floor(math.log10(lr))
    mantissa = lr / 10.0**decade
    return 2 * decade + (0 if mantissa < math.sqrt(3) else 1 if mantissa < math.sqrt(30) else 2)


def ladder_value(index: int) -> float:
    """The ladder's value at ``index``: 10^(index//2), times 3 for odd indices."""
    return float(f"{(1 if index % 2 == 0 else 3)}e{index // 2}")


def initial_grid(centre: float, *, points: int) -> list[float]:
    """``points`` ladder values around ``centre`` (snapped to the ladder), ascending.

    Odd counts are centred on it (3 around 3e-3 -> 1e-3, 3e-3, 1e-2); even counts put the
    extra value above (2 -> 3e-3, 1e-2).
    """
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    middle = ladder_index(centre)
    low = middle - (points - 1) // 2
    return [ladder_value(i) for i in range(low, low + points)]


def best_lr(losses: Mapping[float, float]) -> float:
    """The lr with the lowest loss (non-finite losses rank last; ties go to the smaller lr)."""
    if not losses:
        raise ValueError("losses must hold at least one lr")
    return min(sorted(losses), key=lambda lr: _rank(losses[lr]))


def next_lr(losses: Mapping[float, float]) -> float | None:
    """The value to try next, or None when the best lr is bracketed.

    Best at the smallest lr tried (every run diverged included): the ladder value below it;
    best at the largest: the one above; otherwise None. A single value tried is both edges
    and extends downwards.
    """
    best = best_lr(losses)
    tried = sorted(losses)
    if best == tried[0]:
        return ladder_value(ladder_index(best) - 1)
    if best == tried[-1]:
        return ladder_value(ladder_index(best) + 1)
    return None


def is_bracketed(losses: Mapping[float, float]) -> bool:
    """Whether the best lr has a tried value on each side (so the grid's edges are worse)."""
    tried = sorted(losses)
    return tried[0] < best_lr(losses) < tried[-1]


def _rank(loss: float) -> float:
    return loss if math.isfinite(loss) else math.inf
