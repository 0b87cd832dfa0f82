"""Finite float64 values beyond float32's range (up to float64's largest): no Inf or NaN enters
the state or the weights, and no step raises.

- bf16 rounding of a finite float64 value beyond float32's largest saturates at bf16's largest,
  as a float32 one does (±Inf and NaN stay as they are), so MicroAdam's default bf16 window on a
  float64 parameter keeps a gradient of 1e39 or 1e300 finite;
- LDAdam's overflow guard (`range_exponent`) works out its bound without overflowing the host
  float for peaks near float64's largest.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compress._scalar import f32_to_bf16_bits
from optimizers import MicroAdam
from optimizers._ldadam_step import range_exponent

F64_MAX = float(np.finfo(np.float64).max)


def test_bf16_rounding_of_float64_values_beyond_float32_saturates():
    for value, expected in [
        (1e39, 0x7F7F),
        (-1e39, 0xFF7F),
        (F64_MAX, 0x7F7F),
        (-F64_MAX, 0xFF7F),
        (math.inf, 0x7F80),
        (-math.inf, 0xFF80),
        (1.0, 0x3F80),
    ]:
        assert int(f32_to_bf16_bits(np.float64(value))) == expected, value
    assert int(f32_to_bf16_bits(np.float64(math.nan))) & 0x7FFF > 0x7F80


@pytest.mark.parametrize("spike", [1e39, -1e300])
def test_microadam_bf16_window_on_float64_keeps_a_spike_beyond_float32_finite(spike):
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(256, dtype=torch.float64))
    opt = MicroAdam([param], lr=1e-3)  # values_dtype="bfloat16" (the default)
    for step in range(3):
        param.grad = torch.randn(256, dtype=torch.float64)
        if step == 1:
            param.grad[3] = spike
        opt.step()
    assert torch.isfinite(param).all()
    window = opt.state[param]["window_values"].view(torch.bfloat16)
    assert torch.isfinite(window).all()
    assert window.double().abs().max().item() == float(torch.finfo(torch.bfloat16).max)


def test_ldadam_range_exponent_takes_peaks_near_float64_largest():
    options = dict(shape=(64, 48), rank=4, beta1=0.9, beta2=0.999, dtype=torch.float64)
    exponent = range_exponent((F64_MAX, F64_MAX, F64_MAX, 0.0), fold_gap=10.0, **options)
    assert 1 <= exponent <= 1024
    assert range_exponent((1.0, 1.0, 1.0, 1.0), fold_gap=10.0, **options) == 0
