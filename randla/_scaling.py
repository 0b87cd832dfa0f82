"""Power-of-two rescaling that keeps S-RSI's and subspace iteration's products in range.

S-RSI never normalizes U = AᵀQ, so its next product A·U scales like ‖A‖²; subspace iteration
forms A(AᵀQ) likewise. In float32 that overflows for ‖A‖ ≳ 1e19 and underflows for ‖A‖ ≲ 1e-19.
Multiplying A by 2^-e moves ‖A‖_F near 1 exactly (only the exponent changes, barring denormals)
and Q is unchanged by the scaling; U is multiplied back by 2^e at the end.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from randla import _backend

# Below this, a float64 Σa² may be denormal or zero by underflow (float64 inputs only): the
# scale is then taken from max|a| instead.
_SMALLEST_RELIABLE_SQUARES = 2.0**-900


def safe_exponent_limit(dtype: Any) -> int:
    """Largest |log2 ‖A‖_F| left unscaled: squared products then sit 2^32 inside the range.

    float32: 48 (‖A‖_F in [3.6e-15, 2.8e14]); float64: 496.
    """
    return (np.finfo(dtype).maxexp - 32) // 2


def to_unit_scale(a: Any, total_squares: float) -> tuple[Any, float, int]:
    """(a·2^-e, Σ(a·2^-e)², e): e = 0 and `a` itself (no copy, no pass) when ‖A‖_F is in range.

    `total_squares` is Σa² in float64 as :func:`randla._checks.matrix` returns it, which gives
    ‖A‖_F without another pass. Out of range: one pass to scale (a new array) and one for its
    Σ; float64 inputs whose Σa² overflowed or underflowed add one pass for max|a|.
    """
    if math.isfinite(total_squares) and total_squares >= _SMALLEST_RELIABLE_SQUARES:
        exponent = round(0.5 * math.log2(total_squares))
    else:
        xp = _backend.namespace(a)
        peak = float(xp.max(xp.abs(a)))
        if peak == 0.0:
            return a, total_squares, 0
        exponent = math.frexp(peak)[1]
    if abs(exponent) <= safe_exponent_limit(a.dtype):
        return a, total_squares, 0
    scaled = scaled_down(a, exponent)
    return scaled, _backend.sum_squares(scaled), exponent


def scaled_down(x: Any, exponent: int) -> Any:
    """x·2^-exponent as a new array of x's dtype (exact barring denormals)."""
    return _backend.namespace(x).ldexp(x, -exponent).astype(x.dtype, copy=False)


def restore_scale(u: Any, exponent: int) -> None:
    """u ← u·2^exponent in place (nothing when exponent is 0)."""
    if exponent:
        _backend.namespace(u).ldexp(u, exponent, out=u)
