"""MicroAdam's opt-in variants: the reference's densifying `alpha` and the window-normalized bias
correction, each against a plain numpy oracle; alpha = 0 and bias_correction="step" stay the
published algorithm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import compress
import optimizers.microadam as microadam_module
from compress.fused import densify_from_error
from optimizers import MicroAdam
from optimizers._views import array_view

LENGTH, BLOCK, BUCKET, DENSITY, WINDOW = 1000, 256, 64, 0.05, 3
BETAS, EPS = (0.8, 0.95), 1e-8


def quantized(state, length=LENGTH, bucket=BUCKET):
    return compress.Quantized(
        array_view(state["error_codes"]),
        array_view(state["error_lo"]).view(np.uint16),
        array_view(state["error_hi"]).view(np.uint16),
        length,
        4,
        bucket,
    )


def decoded(state) -> np.ndarray:
    return compress.dequantize(quantized(state)).astype(np.float64)


def half_steps(state) -> np.ndarray:
    """Half a quantization step of each element's bucket (bf16 bounds)."""
    lo = state["error_lo"].view(torch.bfloat16).double().numpy()
    hi = state["error_hi"].view(torch.bfloat16).double().numpy()
    return np.repeat((hi - lo) / 15 / 2, BUCKET)[:LENGTH]


def gradients(steps, seed=0):
    rng = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 1, LENGTH, dtype=torch.float64)
    return [torch.randn(LENGTH, generator=rng, dtype=torch.float64) * scale for _ in range(steps)]


def window_update(values, indices, cursor, t, bias_t):
    """Adam's direction from the window's rows (newest = cursor - 1), dense, numpy float64."""
    b1, b2 = BETAS
    first, second = np.zeros(LENGTH), np.zeros(LENGTH)
    starts = np.repeat(np.arange(0, LENGTH, BLOCK), math.ceil(BLOCK * DENSITY))[: values.shape[1]]
    support = np.zeros(LENGTH, bool)
    for age in range(min(t, WINDOW)):
        row = (cursor - 1 - age) % WINDOW
        positions = starts + indices[row]
        np.add.at(first, positions, b1**age * values[row])
        np.add.at(second, positions, b2**age * values[row] ** 2)
        support[positions] = True
    c1, c2 = (1 - b1) / (1 - b1**bias_t), (1 - b2) / (1 - b2**bias_t)
    u = c1 * first / (np.sqrt(c2 * second) + EPS)
    return np.where(support, u, 0.0)


def make(param, **options):
    return MicroAdam(
        [param],
        lr=1e-2,
        betas=BETAS,
        eps=EPS,
        window=WINDOW,
        density=DENSITY,
        block_size=BLOCK,
        quant_bucket=BUCKET,
        values_dtype="float32",
        **options,
    )


@pytest.mark.parametrize("alpha, weight_decay", [(0.3, 0.0), (0.7, 0.1)])
def test_alpha_moves_part_of_the_error_into_the_parameter_as_the_reference_does(
    alpha, weight_decay
):
    """Per step, from the state before it: a = g + Q⁻¹(e); the window row takes the top-k of
    |a|; r = a off the selection; p ← p(1 − lrλ) − lr(u + α·Q⁻¹(Q(r))); e ← Q((1 − α)·Q⁻¹(Q(r)))."""
    lr = 1e-2
    param = torch.nn.Parameter(torch.zeros(LENGTH, dtype=torch.float64))
    opt = make(param, alpha=alpha, weight_decay=weight_decay)
    densified = 0.0
    for t, grad in enumerate(gradients(6), start=1):
        state = opt.state[param]
        before_error = decoded(state) if state else np.zeros(LENGTH)
        before = param.detach().numpy().copy()
        param.grad = grad
        opt.step()
        state = opt.state[param]
        cursor = int(state["cursor"])
        values = state["window_values"].double().numpy()
        indices = state["window_indices"].long().numpy()
        a = grad.numpy() + before_error
        starts = np.repeat(np.arange(0, LENGTH, BLOCK), math.ceil(BLOCK * DENSITY))
        positions = starts[: values.shape[1]] + indices[(cursor - 1) % WINDOW]
        remainder = a.copy()
        remainder[positions] = 0.0
        np.testing.assert_allclose(values[(cursor - 1) % WINDOW], a[positions], rtol=1e-6)
        u = window_update(values, indices, cursor, t, t)
        expected = before * (1 - lr * weight_decay) - lr * (u + alpha * remainder)
        # the densified term is the quantized remainder: within half a step of r (plus rounding)
        slack = lr * alpha * (2 * half_steps(state) / (1 - alpha) + 1e-6 * np.abs(remainder))
        assert np.all(np.abs(param.detach().numpy() - expected) <= slack + 1e-12)
        kept = decoded(state)
        # Q((1 − α)·Q⁻¹(Q(r))): two quantizations, each within half a step of its bucket
        tolerance = half_steps(state) * (1 + 1 / (1 - alpha)) + 1e-6 * np.abs(remainder)
        assert np.all(np.abs(kept - (1 - alpha) * remainder) <= tolerance * 1.001)
        densified = max(densified, float(np.abs(alpha * remainder).max()))
    assert densified > 0.1  # the densified term is far above the tolerances used


def test_densify_equals_decode_update_and_requantize_composed():
    rng = np.random.default_rng(3)
    values = rng.standard_normal(700).astype(np.float32)
    for param_dtype in (np.float32, np.float64, np.float16, "bf16"):
        error = compress.quantize(values, bits=4, bucket=64)
        q = compress.dequantize(error)
        if param_dtype == "bf16":
            start = torch.from_numpy(rng.standard_normal(700).astype(np.float32))
            param = start.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
            expected = (
                (start.to(torch.bfloat16).float() - np.float32(0.02) * torch.from_numpy(q))
                .to(torch.bfloat16)
                .view(torch.int16)
                .numpy()
                .view(np.uint16)
            )
        else:
            param = rng.standard_normal(700).astype(param_dtype)
            step = param.dtype.type(0.1 * 0.2)
            if param_dtype == np.float16:
                expected = (param.astype(np.float32) - np.float32(0.02) * q).astype(np.float16)
            else:
                expected = param - step * q.astype(param.dtype)
        param_before = param.copy()
        densify_from_error(error, param, alpha=0.2, lr=0.1)
        np.testing.assert_array_equal(param, expected)
        assert not np.array_equal(param, param_before)
        again = compress.quantize(np.float32(0.8) * q, bits=4, bucket=64)
        for got, want in ((error.codes, again.codes), (error.lo, again.lo), (error.hi, again.hi)):
            np.testing.assert_array_equal(got, want)


def test_densify_refuses_bad_arguments_by_name():
    error = compress.quantize(np.ones(64, np.float32), bits=4, bucket=64)
    with pytest.raises(ValueError, match="alpha must be in"):
        densify_from_error(error, np.zeros(64, np.float32), alpha=1.0, lr=0.1)
    with pytest.raises(ValueError, match="lengths must agree"):
        densify_from_error(error, np.zeros(63, np.float32), alpha=0.5, lr=0.1)
    with pytest.raises(ValueError, match="lr must be"):
        densify_from_error(error, np.zeros(64, np.float32), alpha=0.5, lr=-1.0)


def test_alpha_zero_takes_exactly_the_published_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("alpha = 0 must not densify")

    monkeypatch.setattr(microadam_module, "densify_from_error", refuse)
    trajectories = []
    for options in ({}, {"alpha": 0.0}):
        param = torch.nn.Parameter(torch.zeros(LENGTH))
        opt = make(param, **options)
        for grad in gradients(4):
            param.grad = grad.float()
            opt.step()
        trajectories.append(param.detach().clone())
    assert torch.equal(*trajectories)
    assert trajectories[0].abs().max() > 0


@pytest.mark.parametrize("bias_correction", ["step", "window"])
def test_bias_correction_matches_its_oracle(bias_correction):
    """density 1, float64 values, no error: u is Adam over the last m gradients, normalized by
    1 − β^t ("step") or 1 − β^min(t, m) ("window")."""
    lr, steps = 1e-2, 7
    param = torch.nn.Parameter(torch.zeros(LENGTH, dtype=torch.float64))
    opt = MicroAdam(
        [param],
        lr=lr,
        betas=BETAS,
        eps=EPS,
        window=WINDOW,
        density=1.0,
        block_size=BLOCK,
        quant_bucket=BUCKET,
        values_dtype="param",
        error_feedback="none",
        bias_correction=bias_correction,
    )
    b1, b2 = BETAS
    history, expected = [], np.zeros(LENGTH)
    other = np.zeros(LENGTH)  # the other correction, to show the two differ
    for t, grad in enumerate(gradients(steps, seed=5), start=1):
        history.insert(0, grad.numpy())
        recent = history[:WINDOW]
        first = sum(b1**age * g for age, g in enumerate(recent))
        second = sum(b2**age * g**2 for age, g in enumerate(recent))
        updates = {}
        for name, bias_t in (("step", t), ("window", min(t, WINDOW))):
            c1, c2 = (1 - b1) / (1 - b1**bias_t), (1 - b2) / (1 - b2**bias_t)
            updates[name] = c1 * first / (np.sqrt(c2 * second) + EPS)
        expected -= lr * updates[bias_correction]
        other -= lr * updates["window" if bias_correction == "step" else "step"]
        param.grad = grad
        opt.step()
        np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-10, atol=1e-14)
    assert np.abs(expected - other).max() > 1e-3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"alpha": 1.0}, "alpha must be in"),
        ({"alpha": -0.1}, "alpha must be in"),
        ({"alpha": 0.5, "error_feedback": "none"}, "alpha must be 0 with error_feedback"),
        ({"bias_correction": "adam"}, "bias_correction must be one of"),
    ],
)
def test_bad_variant_options_are_refused_with_their_name(options, message):
    with pytest.raises(ValueError, match=message):
        MicroAdam([torch.nn.Parameter(torch.zeros(4))], **options)


def test_variant_options_are_in_the_defaults():
    opt = MicroAdam([torch.nn.Parameter(torch.zeros(4))], alpha=0.1, bias_correction="window")
    assert opt.defaults["alpha"] == 0.1 and opt.defaults["bias_correction"] == "window"
    assert MicroAdam([torch.nn.Parameter(torch.zeros(4))]).defaults["alpha"] == 0.0
