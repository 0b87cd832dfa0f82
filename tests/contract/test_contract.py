"""OPTIMIZER_CONTRACT.md, item by item, for every smallstate optimizer (see cases.py)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from .cases import CASES, tiny_batch, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(params=sorted(CASES))
def make(request):
    return CASES[request.param]


def loss_of(model, dtype=torch.float32):
    x, y = tiny_batch(dtype)
    return torch.nn.functional.mse_loss(model(x).float(), y.float())


def train(model, opt, steps, dtype=torch.float32, sign=1.0):
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model, dtype)
        (sign * loss).backward()
        opt.step()
        losses.append(loss.item())
    return losses


def state_snapshot(opt):
    return [
        {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
        for g in opt.param_groups
        for p in g["params"]
    ]


def assert_same_state(a, b):
    assert len(a) == len(b)
    for sa, sb in zip(a, b, strict=True):
        assert sa.keys() == sb.keys()
        for key in sa:
            if torch.is_tensor(sa[key]):
                assert sa[key].dtype == sb[key].dtype, key
                assert torch.equal(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key], key


# 1. construction ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option, value, message",
    [
        ("lr", -1.0, "lr"),
        ("betas", (1.0, 0.9), "betas"),
        ("betas", (0.9,), "betas"),
        ("eps", -1e-8, "eps"),
        ("weight_decay", -0.1, "weight_decay"),
        ("nonfinite", "ignore", "nonfinite"),
        ("lr", float("nan"), "lr"),
    ],
)
def test_bad_hyperparameters_are_refused_with_their_name(make, option, value, message):
    model = tiny_model()
    with pytest.raises(ValueError, match=message):
        make(model.parameters(), **{option: value})
    opt = make(list(model.parameters())[:1])
    with pytest.raises(ValueError, match=message):
        opt.add_param_group({"params": list(model.parameters())[1:], option: value})


def test_every_hyperparameter_is_in_defaults_including_betas(make):
    opt = make(tiny_model().parameters())
    assert {"lr", "betas", "eps", "weight_decay", "maximize", "nonfinite"} <= set(opt.defaults)


# 2. groups and schedulers ------------------------------------------------------------------
def test_one_cycle_lr_drives_lr_and_betas(make):
    model = tiny_model()
    opt = make(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=20)
    seen = set()
    for _ in range(20):
        train(model, opt, 1)
        sched.step()
        seen.add((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
    assert len(seen) > 10
    assert math.isfinite(loss_of(model).item())


def test_lr_as_zero_dim_tensor_and_zero_lr_group(make):
    model = tiny_model()
    first, rest = list(model.parameters())[:2], list(model.parameters())[2:]
    opt = make([{"params": first, "lr": torch.tensor(0.0)}, {"params": rest, "lr": 1e-2}])
    before = [p.detach().clone() for p in model.parameters()]
    train(model, opt, 3)
    after = list(model.parameters())
    assert all(torch.equal(b, a) for b, a in zip(before[:2], after[:2], strict=True))
    assert any(not torch.equal(b, a) for b, a in zip(before[2:], after[2:], strict=True))


def test_lr_scales_the_first_update(make):
    deltas = []
    for lr in (1e-3, 2e-3):
        model = tiny_model()
        opt = make(model.parameters(), lr=lr)
        before = [p.detach().clone() for p in model.parameters()]
        train(model, opt, 1)
        deltas.append(
            sum((p - b).abs().sum() for p, b in zip(model.parameters(), before, strict=True)).item()
        )
    assert deltas[1] == pytest.approx(2 * deltas[0], rel=1e-3)


# 3. state ------------------------------------------------------------------------------------
def test_state_is_lazy_and_on_the_parameter_device(make):
    model = tiny_model()
    opt = make(model.parameters())
    assert len(opt.state) == 0
    train(model, opt, 1)
    for p in model.parameters():
        for key, value in opt.state[p].items():
            if torch.is_tensor(value):
                # integer bookkeeping stays in host memory (as torch.optim keeps `step`)
                expected = torch.device("cpu") if key in opt._host_state_keys else p.device
                assert value.device == expected


# 4. checkpoints ------------------------------------------------------------------------------
def test_resume_is_bit_identical_and_weights_only_loadable(make):
    reference_model = tiny_model()
    reference = make(reference_model.parameters(), lr=1e-2)
    train(reference_model, reference, 10)

    model = tiny_model()
    opt = make(model.parameters(), lr=1e-2)
    train(model, opt, 5)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    dtypes = [
        {k: v.dtype for k, v in opt.state[p].items() if torch.is_tensor(v)}
        for p in model.parameters()
    ]

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = tiny_model(seed=123)
    resumed_model.load_state_dict(saved["model"])
    resumed = make(resumed_model.parameters(), lr=1e-2)
    resumed.load_state_dict(saved["opt"])
    assert dtypes == [
        {k: v.dtype for k, v in resumed.state[p].items() if torch.is_tensor(v)}
        for p in resumed_model.parameters()
    ]
    train(resumed_model, resumed, 5)
    for a, b in zip(reference_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert_same_state(state_snapshot(reference), state_snapshot(resumed))


def test_foreign_and_mismatched_state_dicts_are_refused(make):
    model = tiny_model()
    opt = make(model.parameters())
    adamw = torch.optim.AdamW(model.parameters())
    train(model, adamw, 1)
    with pytest.raises(ValueError, match="saved by"):
        opt.load_state_dict(adamw.state_dict())

    train(model, opt, 1)
    saved = opt.state_dict()
    first = next(iter(saved["state"]))
    key = next(k for k, v in saved["state"][first].items() if torch.is_tensor(v) and v.ndim)
    saved["state"][first][key] = torch.zeros(3, dtype=saved["state"][first][key].dtype)
    with pytest.raises(ValueError, match=key):
        make(model.parameters()).load_state_dict(saved)

    saved = opt.state_dict()
    saved["state"][first].pop(key)
    with pytest.raises(ValueError, match="keys"):
        make(model.parameters()).load_state_dict(saved)


# 5. step ---------------------------------------------------------------------------------------
def test_closure_runs_with_grad_enabled_and_its_loss_is_returned(make):
    model = tiny_model()
    opt = make(model.parameters())

    def closure():
        opt.zero_grad()
        loss = loss_of(model)
        loss.backward()
        return loss

    with torch.no_grad():
        returned = opt.step(closure)
    assert torch.is_tensor(returned) and math.isfinite(returned.item())


def test_parameters_without_gradient_are_skipped(make):
    model = tiny_model()
    frozen = model[0].weight
    frozen.requires_grad_(False)
    opt = make(model.parameters())
    before = frozen.detach().clone()
    train(model, opt, 3)
    assert torch.equal(frozen, before)
    assert len(opt.state[frozen]) == 0


def test_sparse_gradients_and_complex_parameters_raise(make):
    embedding = torch.nn.Embedding(10, 4, sparse=True)
    opt = make(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    z = torch.nn.Parameter(torch.zeros(4, dtype=torch.complex64))
    z.grad = torch.ones_like(z)
    with pytest.raises(TypeError, match="complex"):
        make([z]).step()


def test_maximize_is_minimizing_the_negation(make):
    a_model, b_model = tiny_model(), tiny_model()
    a = make(a_model.parameters(), lr=1e-2)
    b = make(b_model.parameters(), lr=1e-2, maximize=True)
    train(a_model, a, 4)
    train(b_model, b, 4, sign=-1.0)
    for pa, pb in zip(a_model.parameters(), b_model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_gradients_are_left_untouched_and_zero_grad_works(make):
    model = tiny_model()
    opt = make(model.parameters())
    loss_of(model).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
    opt.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in model.parameters())


def test_a_step_counts_as_an_in_place_change_for_autograd(make):
    # As after torch's own in-place updates: a graph that saved the parameters before the step
    # refuses to backpropagate after it (the numpy/Numba write paths bump the version counter).
    model = tiny_model()
    opt = make(model.parameters())
    loss_of(model).backward()
    stale = sum((p * p).sum() for p in model.parameters())
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        stale.backward()


def test_step_hooks_run(make):
    model = tiny_model()
    opt = make(model.parameters())
    calls = []
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.register_step_post_hook(lambda *_: calls.append("post"))
    train(model, opt, 1)
    assert calls == ["pre", "post"]


# 6. dtypes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_parameters_train(make, dtype):
    model = tiny_model(dtype)
    opt = make(model.parameters(), lr=1e-2)
    losses = train(model, opt, 30, dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


# 7. non-finite gradients ------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_raise_names_the_parameter_and_changes_nothing(make, bad):
    model = tiny_model()
    opt = make(model.parameters())
    train(model, opt, 2)
    before_state = state_snapshot(opt)
    before_params = [p.detach().clone() for p in model.parameters()]
    loss_of(model).backward()
    model[2].weight.grad[3, 4] = bad
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step()
    # Every gradient is checked before any parameter moves: nothing changed, not even the
    # parameters that come before the bad one.
    assert all(torch.equal(a, b) for a, b in zip(before_params, model.parameters(), strict=True))
    assert_same_state(before_state, state_snapshot(opt))


def test_nonfinite_skip_leaves_that_parameter_alone(make):
    model = tiny_model()
    opt = make(model.parameters(), nonfinite="skip")
    train(model, opt, 2)
    index = [i for i, p in enumerate(model.parameters()) if p is model[2].weight][0]
    before_state = state_snapshot(opt)
    before_params = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    loss_of(model).backward()
    model[2].weight.grad[0, 0] = float("nan")
    opt.step()
    after_state = state_snapshot(opt)
    assert torch.equal(before_params[index], model[2].weight)
    assert_same_state([before_state[index]], [after_state[index]])
    moved = [not torch.equal(b, p) for b, p in zip(before_params, model.parameters(), strict=True)]
    assert sum(moved) == len(moved) - 1


# 9. accounting -----------------------------------------------------------------------------------
def test_numeric_options_may_be_tensors_or_numpy_scalars(make):
    # As torch allows a tensor lr: every numeric option as a 1-element tensor or numpy scalar
    # trains, checkpoints and resumes like its float.
    model = tiny_model()
    probe = make(model.parameters())
    numeric = [
        k for k, v in probe.defaults.items() if isinstance(v, float) and not isinstance(v, bool)
    ]
    for wrap in (torch.tensor, np.float32):
        model = tiny_model()
        options = {k: wrap(probe.defaults[k]) for k in numeric}
        opt = make(model.parameters(), **options)
        train(model, opt, 2)
        opt.load_state_dict(opt.state_dict())
        train(model, opt, 1)


def test_load_state_dict_validates_every_group_and_runs_torch_hooks(make):
    model = tiny_model()
    opt = make(model.parameters())
    saved = opt.state_dict()  # no state yet: groups only
    saved["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        make(model.parameters()).load_state_dict(saved)
    train(model, opt, 1)
    fresh = make(model.parameters())
    seen = []

    def pre_hook(optimizer, state_dict):
        seen.append("pre")
        state_dict = {**state_dict, "param_groups": [dict(g) for g in state_dict["param_groups"]]}
        state_dict["param_groups"][0]["lr"] = 0.125
        return state_dict

    fresh.register_load_state_dict_pre_hook(pre_hook)
    fresh.register_load_state_dict_post_hook(lambda optimizer: seen.append("post"))
    fresh.load_state_dict(opt.state_dict())
    assert seen == ["pre", "post"] and fresh.param_groups[0]["lr"] == 0.125


def test_state_nbytes_and_describe_cover_every_parameter(make):
    model = tiny_model()
    opt = make(model.parameters())
    train(model, opt, 1)
    expected = sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if torch.is_tensor(v)
    )
    assert opt.state_nbytes() == expected
    report = opt.describe()
    assert [r.shape for r in report] == [tuple(p.shape) for p in model.parameters()]
    assert sum(r.state_bytes for r in report) == expected
    assert all(r.path != "no state yet" for r in report)


# 10. compile-friendliness ----------------------------------------------------------------------
def test_compiled_training_step_matches_eager(make):
    eager_model, compiled_model = tiny_model(), tiny_model()
    eager = make(eager_model.parameters(), lr=1e-2)
    compiled = make(compiled_model.parameters(), lr=1e-2)
    train(eager_model, eager, 3)

    @torch.compile(backend="eager")
    def training_step():
        compiled.zero_grad()
        loss = loss_of(compiled_model)
        loss.backward()
        compiled.step()
        return loss

    for _ in range(3):
        training_step()
    for a, b in zip(eager_model.parameters(), compiled_model.parameters(), strict=True):
        assert torch.equal(a, b)
