"""Finite gradient spikes: a finite gradient never makes a step raise, and no Inf or NaN enters the
state or the weights, for every optimizer and mode.

- One gradient entry of 1e20 or 3e38 (finite in float32) on a compressed-path weight, in the first
  step or a later one, nonfinite "raise" or "skip", each LDAdam error-feedback mode, MicroAdam
  with and without error feedback and with each window dtype: the step runs, moves the weights by
  an Adam-sized amount (not by the spike), every state tensor stays finite, and four more steps of
  ordinary gradients train on.
- LDAdam's guard is exact where it can be: a step on gradients scaled by 2^60 (which would
  overflow float32 in the subspace iteration) moves the weights as the step on the unscaled
  gradients does, up to rounding (LDAdam's update is scale-free but for ε), in every mode.
- bf16 window values: a finite float32 value beyond bf16's largest (3.3895e38) is stored as that
  largest value, never as Inf (compress's rounding saturates; MicroAdam's weights stay finite).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from contract.cases import CASES, tiny_batch, tiny_model

import compress
from compress._scalar import f32_to_bf16_bits
from optimizers import LDAdam
from optimizers import ldadam as ldadam_module
from optimizers._ldadam_step import range_exponent

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
BF16_MAX = float(torch.finfo(torch.bfloat16).max)

VARIANTS = [
    ("ldadam", {"error_feedback": "dense"}),
    ("ldadam", {"error_feedback": "q4"}),
    ("ldadam", {"error_feedback": "q8"}),
    ("ldadam", {"error_feedback": "none"}),
    ("adapprox", {}),
    ("microadam", {}),
    ("microadam", {"error_feedback": "none", "values_dtype": "float32"}),
]


def state_values(opt):
    """Every floating state tensor as float64 (MicroAdam's int16 window values as their bf16)."""
    for state in opt.state.values():
        for key, value in state.items():
            if key == "window_values" and value.dtype == torch.int16:
                value = value.view(torch.bfloat16)
            if key in ("error_lo", "error_hi") and value.dtype == torch.int16:
                value = value.view(torch.bfloat16)
            if torch.is_tensor(value) and value.is_floating_point():
                yield key, value.double()


def loss_step(model, opt, spike=None):
    x, y = tiny_batch()
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    if spike is not None:
        model[0].weight.grad[3, 5] = spike
    opt.step()
    return float(loss)


@pytest.mark.parametrize(
    "spike, at, nonfinite", [(1e20, 0, "raise"), (-3e38, 2, "raise"), (3e38, 0, "skip")]
)
@pytest.mark.parametrize("name, options", VARIANTS)
def test_a_finite_spike_neither_raises_nor_poisons_the_state(name, options, spike, at, nonfinite):
    model = tiny_model()
    lr = 1e-2
    opt = CASES[name](model.parameters(), lr=lr, nonfinite=nonfinite, **options)
    for _ in range(at):
        loss_step(model, opt)
    before = model[0].weight.detach().clone()
    loss_step(model, opt, spike=spike)
    moved = (model[0].weight - before).abs().max().item()
    assert moved <= 100 * lr, moved  # an Adam-sized step, not one scaled by the spike
    losses = [loss_step(model, opt) for _ in range(4)]
    assert all(math.isfinite(loss) for loss in losses)
    for param in model.parameters():
        assert torch.isfinite(param).all()
    for key, value in state_values(opt):
        assert torch.isfinite(value).all(), key
    assert all(opt.state[p]["step"].item() == at + 5 for p in model.parameters())


@pytest.mark.parametrize("mode", ["dense", "q4", "q8", "none"])
def test_ldadam_on_gradients_scaled_by_2_to_60_moves_as_on_the_unscaled_ones(mode, monkeypatch):
    """Power-of-two scaling is exact: the guarded step on G·2^60 (scaled, because its products
    could overflow float32) equals the ordinary step on G up to rounding and ε's share."""
    scalings = []
    original = ldadam_module.times_power_of_two
    monkeypatch.setattr(
        ldadam_module,
        "times_power_of_two",
        lambda t, exponent: scalings.append(exponent) or original(t, exponent),
    )
    torch.manual_seed(0)
    grads = [torch.randn(48, 64) for _ in range(4)]
    moves = []
    for scale in (1.0, 2.0**60):
        param = torch.nn.Parameter(torch.randn(48, 64, generator=torch.Generator().manual_seed(1)))
        start = param.detach().clone()
        opt = LDAdam([param], lr=1e-2, rank=4, error_feedback=mode)
        for grad in grads:
            param.grad = grad * scale
            opt.step()
        moves.append(param.detach() - start)
        assert (scale > 1) == bool(scalings)  # the guard ran exactly for the scaled gradients
    assert moves[0].abs().max() > 1e-3
    # rounding only (measured 1e-5 to 5e-5: LAPACK's norms are not exactly scale-free, and q8
    # codes next to a rounding boundary then differ by one step)
    assert torch.linalg.norm(moves[1] - moves[0]) <= 2e-4 * torch.linalg.norm(moves[0])


def test_ldadam_range_exponent_is_zero_for_ordinary_values_and_scales_spikes():
    options = dict(shape=(4096, 4096), rank=64, beta1=0.9, beta2=0.999, fold_gap=0.0)
    assert range_exponent((1e3, 1e3, 1e3, 1e6), dtype=torch.float32, **options) == 0
    assert range_exponent((1e20, 0.0, 0.0, 0.0), dtype=torch.float32, **options) > 0
    assert range_exponent((1e20, 0.0, 0.0, 0.0), dtype=torch.float64, **options) == 0
    assert range_exponent((0.0, 0.0, 0.0, 3e38), dtype=torch.float32, **options) > 0


def test_bf16_rounding_saturates_finite_values_and_keeps_inf_and_nan():
    largest = np.float32(BF16_MAX)
    for value, expected in [
        (np.float32(3.39e38), 0x7F7F),
        (np.float32(3.3962e38), 0x7F7F),  # rounds past bf16's largest: saturates
        (np.float32(np.finfo(np.float32).max), 0x7F7F),
        (-np.float32(np.finfo(np.float32).max), 0xFF7F),
        (largest, 0x7F7F),
        (np.float32(np.inf), 0x7F80),
        (np.float32(-np.inf), 0xFF80),
        (np.float32(1.0), 0x3F80),
    ]:
        assert int(f32_to_bf16_bits(value)) == expected, value
    assert int(f32_to_bf16_bits(np.float32(np.nan))) & 0x7FFF > 0x7F80


def test_a_bf16_window_keeps_values_beyond_bf16_at_its_largest():
    grad = np.zeros(64, np.float32)
    grad[3], grad[40] = 3.4e38, -3.4e38
    window = compress.SparseWindow.empty(64, m=2, density=0.25, block_size=64)
    compress.window_topk(grad, window, density=0.25)
    values = torch.from_numpy(window.values[0].view(np.int16)).view(torch.bfloat16).double()
    indices = torch.from_numpy(window.indices[0])
    assert torch.isfinite(values).all()
    assert values[indices == 3].tolist() == [BF16_MAX]
    assert values[indices == 40].tolist() == [-BF16_MAX]
    store = compress.ErrorFeedback.dense(np.zeros(64, np.uint16))
    store.store(grad)
    decoded = np.zeros(64, np.float32)
    store.add_to(decoded)
    assert decoded[3] == BF16_MAX and decoded[40] == -BF16_MAX


@pytest.mark.parametrize("values_dtype", ["bfloat16", "param"])
def test_microadam_with_a_bf16_window_trains_through_a_spike_beyond_bf16(values_dtype):
    model = tiny_model(torch.bfloat16 if values_dtype == "param" else torch.float32)
    opt = CASES["microadam"](model.parameters(), lr=1e-2, values_dtype=values_dtype)
    x, y = tiny_batch(model[0].weight.dtype)
    for step in range(4):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if step == 1:
            model[0].weight.grad[3, 5] = 3.39e38 if values_dtype == "param" else 3.4e38
        opt.step()
    for param in model.parameters():
        assert torch.isfinite(param).all()
    for key, value in state_values(opt):
        assert torch.isfinite(value).all(), key
