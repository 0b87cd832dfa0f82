"""Non-finite gradients beyond the contract suite: repeated skips, a skip on the very first step,
raise leaving every byte alone, overflowing-but-finite gradients, and torch.amp.GradScaler on CPU
(float16 and bfloat16 autocast) skipping inf iterations without touching our state.

"Byte for byte" compares the raw bytes of every state tensor (so -0.0 vs 0.0 and NaN payloads
would show), plus Python numbers by equality.
"""

from __future__ import annotations

import math

import pytest
import torch
from contract.cases import CASES, tiny_batch, tiny_model

import optimizers

NAMES = ["microadam", "ldadam", "adapprox"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def make(name, params, **options):
    return CASES[name](params, **options)


def raw(state: dict) -> dict:
    return {
        k: (v.detach().cpu().contiguous().view(-1).view(torch.uint8).clone(), v.dtype)
        if torch.is_tensor(v)
        else v
        for k, v in state.items()
    }


def assert_bytes_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], tuple):
            assert a[key][1] == b[key][1], key
            assert torch.equal(a[key][0], b[key][0]), key
        else:
            assert a[key] == b[key], key


def loss_of(model):
    x, y = tiny_batch()
    return torch.nn.functional.mse_loss(model(x), y)


def backward(model, opt):
    opt.zero_grad(set_to_none=True)
    loss_of(model).backward()


def test_all_three_optimizers_exist():
    for name in ("MicroAdam", "LDAdam", "Adapprox"):
        assert getattr(optimizers, name, None) is not None, name


@pytest.mark.parametrize("name", NAMES)
def test_skip_on_the_first_step_creates_no_state(name):
    model = tiny_model()
    opt = make(name, model.parameters(), nonfinite="skip")
    bad = model[2].weight
    before = bad.detach().clone()
    backward(model, opt)
    bad.grad[1, 2] = float("inf")
    opt.step()
    assert len(opt.state[bad]) == 0
    assert torch.equal(bad, before)
    assert all(len(opt.state[p]) > 0 for p in model.parameters() if p is not bad)
    assert opt.describe()[2].path == "no state yet"


@pytest.mark.parametrize("name", NAMES)
def test_repeated_skips_are_byte_identical_and_equal_having_no_gradient(name):
    """Skipping a parameter k times equals those steps having no gradient for it, bit for bit."""
    runs = {}
    for mode in ("nan", "none"):
        model = tiny_model()
        opt = make(name, model.parameters(), nonfinite="skip", lr=1e-2)
        bad = model[0].weight
        for step in range(7):
            backward(model, opt)
            if 2 <= step < 5:
                if mode == "nan":
                    bad.grad[step, 0] = float("nan")
                    bad.grad[0, step] = -float("inf")
                else:
                    bad.grad = None
                snapshot = raw(opt.state[bad])
                value = bad.detach().clone()
            opt.step()
            if 2 <= step < 5:
                assert_bytes_equal(snapshot, raw(opt.state[bad]))
                assert torch.equal(value, bad)
        runs[mode] = (model, opt)
    (a_model, a_opt), (b_model, b_opt) = runs["nan"], runs["none"]
    for pa, pb in zip(a_model.parameters(), b_model.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert_bytes_equal(raw(a_opt.state[pa]), raw(b_opt.state[pb]))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_raise_changes_no_byte_in_low_precision_and_training_resumes(name, dtype):
    param = torch.nn.Parameter(torch.randn(48, 64).to(dtype))
    opt = make(name, [param], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    param.grad = torch.randn(48, 64, generator=generator).to(dtype)
    opt.step()
    snapshot, value = raw(opt.state[param]), param.detach().clone()
    for bad in (float("nan"), float("inf"), -float("inf")):
        param.grad[5, 7] = bad
        with pytest.raises(FloatingPointError, match="non-finite"):
            opt.step()
        assert_bytes_equal(snapshot, raw(opt.state[param]))
        assert torch.equal(value, param)
    param.grad = torch.randn(48, 64, generator=generator).to(dtype)
    opt.step()
    assert torch.isfinite(param).all() and not torch.equal(value, param)


@pytest.mark.parametrize("name", NAMES)
def test_finite_gradient_whose_sum_overflows_is_not_called_non_finite(name):
    param = torch.nn.Parameter(torch.zeros(48, 64))
    param.grad = torch.full((48, 64), 3e35)  # sum ≈ 9e38 overflows float32; every entry finite
    opt = make(name, [param])
    opt.step()  # must not raise
    assert opt.state[param]
    assert not any(torch.isnan(v).any() for v in opt.state[param].values() if torch.is_tensor(v))


@pytest.mark.parametrize("shape", [(48, 64), (64, 48)])  # tall matrices factorize Vᵀ
def test_adapprox_large_finite_gradient_puts_no_nan_in_state(shape):
    param = torch.nn.Parameter(torch.zeros(shape))
    opt = make("adapprox", [param])
    for value in (1.0, 1e19, 1.0):
        param.grad = torch.full(shape, value)
        opt.step()
    assert not any(torch.isnan(v).any() for v in opt.state[param].values() if torch.is_tensor(v))
    assert torch.isfinite(param).all()


def test_adapprox_gradient_whose_square_overflows_float32_at_beta2_near_one():
    """G² overflows float32 at |G| = 2^66 while (1 − β2)·G² = 2^98 does not (β2 = 1 − 2^-34):
    V must be built without forming G² in float32."""
    param = torch.nn.Parameter(torch.zeros(64, 64))
    opt = make("adapprox", [param], betas=(0.9, 1 - 2**-34))
    param.grad = torch.full((64, 64), 2.0**66)
    opt.step()
    assert torch.isfinite(param).all()
    assert all(torch.isfinite(v).all() for v in opt.state[param].values() if torch.is_tensor(v))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
def test_grad_scaler_skips_inf_iterations_without_touching_state(name, amp_dtype):
    """fp32 parameters, CPU autocast, torch.amp.GradScaler("cpu"): an iteration whose scaled
    gradients overflow is skipped by the scaler (our step is never called), every byte of our
    state is unchanged, the scale halves, and training goes on to lower the loss."""
    model = tiny_model()
    opt = make(name, model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1000)
    steps_called = []
    opt.register_step_post_hook(lambda *_: steps_called.append(1))
    x, y = tiny_batch()
    losses = []
    for iteration in range(12):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=amp_dtype):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        scaled = scaler.scale(loss * (math.inf if iteration in (3, 4) else 1.0))
        scaled.backward()
        if iteration in (3, 4):
            snapshot = [raw(opt.state[p]) for p in model.parameters()]
            values = [p.detach().clone() for p in model.parameters()]
            scale_before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if iteration in (3, 4):
            for p, saved, value in zip(model.parameters(), snapshot, values, strict=True):
                assert_bytes_equal(saved, raw(opt.state[p]))
                assert torch.equal(value, p)
            assert scaler.get_scale() == scale_before / 2
        losses.append(loss.item())
    assert len(steps_called) == 10
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("orthonormal", ["Q", "U"])
def test_adapprox_bounds_a_saturated_moment_whichever_factor_is_orthonormal(orthonormal):
    """A tall matrix's orthonormal factor is U, but a checkpoint from before tall matrices were
    factorized as Vᵀ holds it in Q: the overflow guard must bound V = Q Uᵀ either way (here the
    other factor sits at 2^125.9 and the Hadamard rows add coherently, so V overflows float32
    unless the step scales it)."""
    import math

    from scipy.linalg import hadamard

    m, n, k = 512, 128, 32
    param = torch.nn.Parameter(torch.zeros(m, n))
    opt = make("adapprox", [param], k_max=k, betas=(0.0, 0.999))
    generator = torch.Generator().manual_seed(0)
    param.grad = torch.randn(m, n, generator=generator)
    opt.step()
    state = opt.state[param]
    rows = torch.tensor(hadamard(k), dtype=torch.float32) / math.sqrt(k)
    with torch.no_grad():
        small, big = (state["Q"], state["U"]) if orthonormal == "Q" else (state["U"], state["Q"])
        small.zero_()
        small[:k, :k] = rows
        big.fill_(2.0**125.9)
        state["rank"].fill_(k)
        state["next_rank"].fill_(k)
    param.grad = torch.randn(m, n, generator=generator)
    opt.step()
    assert all(torch.isfinite(state[name]).all() for name in ("Q", "U"))
    assert torch.isfinite(param).all()
