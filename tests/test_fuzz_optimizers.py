"""Property-based fuzzing of the three optimizers: hyperparameters, shapes, dtypes and values.

- Construction with random hyperparameters (valid and invalid values of every option): accepted
  exactly when each lies in its documented range, else ValueError/TypeError naming the option.
- Steps on random shapes (0-d, 1-element, 1×n, n×1, ≥3-D, wide, tall), dtypes (float32/64,
  bfloat16, float16) and gradient magnitudes 1e-30..1e8 with ±0 and denormals sprinkled in: the
  step works, the parameter keeps its dtype and stays finite, no NaN enters the state, and the
  state's keys/dtypes/shapes never change after the first step. torch.optim.AdamW is the oracle
  for magnitude: where AdamW's parameter stays finite, ours must too.
Regression tests of fixed bugs are at the bottom; each asserts one behaviour.
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optimizers

# Fixed examples by default (a stable suite); SMALLSTATE_FUZZ_EXAMPLES=N explores N fresh ones.
DEEP = os.environ.get("SMALLSTATE_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(DEEP or 20),
    derandomize=DEEP is None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SMALL = {
    "MicroAdam": dict(density=0.25, block_size=64, quant_bucket=16, window=3),
    "LDAdam": dict(rank=3),
    "Adapprox": dict(k_max=4, sweeps=2),
}
NAMES = sorted(SMALL)
INVALID_NUMBERS = [-1.0, float("nan"), float("inf"), "x", None, True]

# option -> (valid samples, predicate on a value deciding validity)
COMMON = {
    "lr": ([0.0, 1e-3, 10.0, torch.tensor(1e-2)], lambda v: _real(v) and 0 <= float(v) < math.inf),
    "betas": (
        [(0.9, 0.999), (0.0, 0.0), [0.5, 0.5]],
        lambda v: (
            isinstance(v, tuple | list) and len(v) == 2 and all(_real(b) and 0 <= b < 1 for b in v)
        ),
    ),
    "eps": ([1e-8, 0.5], lambda v: _real(v) and 0 < v < math.inf),
    "weight_decay": ([0.0, 0.1], lambda v: _real(v) and 0 <= v < math.inf),
}
SPECIFIC = {
    "MicroAdam": {
        "window": ([1, 2, 7], lambda v: _int(v) and v >= 1),
        "density": ([1.0, 0.01, 0.5], lambda v: _real(v) and 0 < v <= 1),
        "values_dtype": (["bfloat16", "float32", "param"], lambda v: v in SMALL_STRINGS),
    },
    "LDAdam": {
        "rank": ([1, 3, 100], lambda v: _int(v) and v >= 1),
        "error_feedback": (
            ["dense", "q4", "q8", "none"],
            lambda v: v in {"dense", "q4", "q8", "none"},
        ),
        "side": (["auto", "left", "right"], lambda v: v in {"auto", "left", "right"}),
    },
    "Adapprox": {
        "k_max": ([4, 9], lambda v: _int(v) and v >= 1),
        "tol": ([1e-3, 0.5, 1.0], lambda v: _real(v) and 0 < v <= 1),
        "sweeps": ([1, 3], lambda v: _int(v) and v >= 1),
        "clip_threshold": ([1.0, 0.1], lambda v: _real(v) and 0 < v < math.inf),
        "rank_strategy": (["step", "prefix"], lambda v: v in {"step", "prefix"}),
    },
}
SMALL_STRINGS = {"bfloat16", "float32", "param"}


def _real(v) -> bool:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else None
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@st.composite
def hyperparameters(draw):
    name = draw(st.sampled_from(NAMES))
    table = {**COMMON, **SPECIFIC[name]}
    chosen = {}
    for option, (valid, _) in table.items():
        if draw(st.booleans()):
            chosen[option] = draw(
                st.sampled_from(valid + INVALID_NUMBERS + [0, 2, 1.5, (1.0, 0.9), "bogus"])
            )
    return name, chosen, table


@FUZZ
@given(hyperparameters())
def test_construction_accepts_exactly_the_valid_hyperparameters(case):
    name, chosen, table = case
    invalid = [option for option, value in chosen.items() if not table[option][1](value)]
    params = [torch.nn.Parameter(torch.zeros(8, 8))]
    build = lambda: getattr(optimizers, name)(params, **{**SMALL[name], **chosen})  # noqa: E731
    if not invalid:
        opt = build()
        for option, value in chosen.items():
            assert opt.param_groups[0][option] is value
        return
    with pytest.raises((ValueError, TypeError)) as caught:
        build()
    assert any(option in str(caught.value) for option in invalid), (chosen, str(caught.value))


SHAPES = [(), (1,), (1, 1), (7,), (1, 300), (300, 1), (2, 200), (40, 30), (6, 5, 4), (3, 2, 2, 5)]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def float_state(opt, param):
    return {k: v for k, v in opt.state[param].items() if torch.is_tensor(v)}


def layout(opt, param):
    return {k: (v.dtype, tuple(v.shape)) for k, v in float_state(opt, param).items()}


def run_adamw(shape, dtype, grads):
    p = torch.nn.Parameter(torch.ones(shape, dtype=dtype))
    opt = torch.optim.AdamW([p], lr=1e-2)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return bool(torch.isfinite(p).all())


@FUZZ
@given(
    st.sampled_from(NAMES),
    st.sampled_from(SHAPES),
    st.sampled_from(DTYPES),
    st.integers(-30, 8),
    st.lists(st.sampled_from([0.0, -0.0, 1e-45, 1e-310]), max_size=3),
    st.integers(1, 3),
    st.integers(0, 2**31),
)
def test_steps_on_random_shapes_dtypes_and_values_stay_finite(
    name, shape, dtype, exponent, specials, steps, seed
):
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.float16:
        exponent = min(exponent, 3)  # float16 overflows at 65504: that is the non-finite path
    grads = []
    for _ in range(steps):
        g = torch.randn(shape, generator=generator, dtype=torch.float64) * 10.0**exponent
        flat = g.view(-1)
        for i, value in enumerate(specials):
            flat[(i * 7919) % flat.numel()] = value
        grads.append(g.to(dtype))
    param = torch.nn.Parameter(torch.ones(shape, dtype=dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = getattr(optimizers, name)([param], lr=1e-2, **SMALL[name])
        first_layout = None
        for g in grads:
            param.grad = g.clone()
            opt.step()
            assert torch.equal(param.grad, g)  # the gradient is never modified
            first_layout = first_layout or layout(opt, param)
            assert layout(opt, param) == first_layout
    assert param.dtype == dtype and tuple(param.shape) == shape
    for key, value in float_state(opt, param).items():
        if value.is_floating_point():
            assert not torch.isnan(value).any(), key
    if run_adamw(shape, dtype, grads):
        assert torch.isfinite(param).all()
    report = opt.describe()
    assert report[0].state_bytes == opt.state_nbytes() > 0


# --------------------------------------------------------------- regression tests of fixed bugs
def one_step(name, param, **options):
    opt = getattr(optimizers, name)([param], **{**SMALL[name], **options})
    opt.step()
    return opt


def test_microadam_steps_an_empty_parameter_like_adamw():
    param = torch.nn.Parameter(torch.zeros(0, 5))
    param.grad = torch.zeros(0, 5)
    one_step("MicroAdam", param)


@pytest.mark.parametrize("name", NAMES)
def test_eps_zero_is_refused_at_construction_by_every_optimizer(name):
    """One rule (docs/reliability.md): eps in (0, inf). With eps = 0 a zero gradient would make
    0/0 in the update; every optimizer refuses it before any state exists."""
    param = torch.nn.Parameter(torch.ones(8, 8))
    param.grad = torch.zeros(8, 8)
    with pytest.raises(ValueError, match=r"eps must be in \(0\.0, inf\), got 0\.0"):
        one_step(name, param, eps=0.0)


@pytest.mark.parametrize("name", ["LDAdam", "Adapprox"])
def test_integer_parameters_are_refused(name):
    param = torch.nn.Parameter(torch.zeros(4, dtype=torch.int32), requires_grad=False)
    param.grad = torch.ones(4, dtype=torch.int32)
    with pytest.raises(TypeError, match="int32"):
        one_step(name, param)
