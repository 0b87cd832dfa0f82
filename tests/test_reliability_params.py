"""Parameters that change under the optimizer, or are not there yet, and the eps rule.

- A parameter resized, reshaped or cast after its state exists (weight surgery, `p.data = ...`,
  `model.to(dtype)`): every optimizer refuses the step with a ValueError naming the parameter,
  what it is now and what its state was built for, before any parameter or state changes (the
  changed parameter comes third, after two that would be stepped first). Run in a child process
  (tests/workers/resized_param.py): before the fix, MicroAdam's kernels wrote outside the new
  tensor and the process died of heap corruption.
- Loading an optimizer's own state dict after `model.to(dtype)` converts the state to the dtypes
  a fresh state of the cast parameter has, and training continues.
- A step on meta-device parameters (deferred initialization) creates the state's shapes on the
  meta device without reading any value or running a kernel, as torch.optim.AdamW's does.
- eps: one rule for the three optimizers, eps in (0, inf), refused at construction otherwise.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from contract.cases import CASES, tiny_batch, tiny_model

import compress

NAMES = ["microadam", "ldadam", "adapprox"]
WORKERS = Path(__file__).resolve().parent / "workers"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def train(model, opt, steps=2, dtype=torch.float32):
    x, y = tiny_batch(dtype)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


CHANGES = ["bigger", "smaller", "reshaped", "dtype"]


@pytest.fixture(scope="module")
def changed_parameter_steps():
    """The worker's line per (optimizer, change), from one child process (stderr on a crash)."""
    pairs = [f"{name}:{change}" for name in NAMES for change in CHANGES]
    done = subprocess.run(
        [sys.executable, str(WORKERS / "resized_param.py"), *pairs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    return lines, f"exit status {done.returncode}, stderr: {done.stderr[-2000:]}"


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("name", NAMES)
def test_a_parameter_changed_after_its_state_exists_is_refused_before_any_change(
    name, change, changed_parameter_steps
):
    lines, crash = changed_parameter_steps
    assert f"{name}:{change}" in lines, crash
    line = lines[f"{name}:{change}"]
    assert line.startswith("refused (unchanged): "), line
    now, built = {
        "bigger": ("(64, 96) torch.float32", "(64, 48) torch.float32"),
        "smaller": ("(16, 8) torch.float32", "(64, 48) torch.float32"),
        "reshaped": ("(48, 64) torch.float32", "(64, 48) torch.float32"),
        "dtype": ("(48, 64) torch.float64", "(48, 64) torch.float32"),
    }[change]
    changed = "[0]" if change == "dtype" else "[2]"  # model.to casts the first weight first
    assert f"param_groups[0]['params']{changed} is now {now}" in line
    assert f"built for {built}" in line


@pytest.mark.parametrize("name", NAMES)
def test_a_state_without_its_record_is_still_compared_with_the_parameter(name):
    """A state set without a step or a load (here: the optimizer's __setstate__ after pickling
    drops the records) is checked against a fresh state once, and a mismatch is refused."""
    model = tiny_model()
    opt = CASES[name](model.parameters(), lr=1e-2)
    train(model, opt)
    opt.__dict__.pop("_fit_records")
    model[2].weight.data = torch.randn(16, 8)
    model[2].weight.grad = torch.randn(16, 8)
    with pytest.raises(ValueError, match=r"state of param_groups\[0\]\['params'\]\[2\] does not"):
        opt.step()


def test_public_compress_functions_have_no_switch_that_skips_their_checks():
    """Only the optimizer's private variants skip the checks; every public entry point checks
    its arguments, so none can be made to write outside its arrays."""
    for function in (
        compress.ef_topk_requantize,
        compress.window_topk,
        compress.window_adam_apply,
        compress.window_adam,
        compress.quantize,
        compress.dequantize,
    ):
        switches = {"validate", "check_indices"} & set(inspect.signature(function).parameters)
        assert not switches, (function.__name__, switches)
    window = compress.SparseWindow.empty(1000, m=2, density=0.01, values_dtype="float32")
    with pytest.raises(ValueError, match="param must have length 1000"):
        compress.window_adam_apply(
            window, 1, beta1=0.9, beta2=0.999, eps=1e-8, lr=1.0, param=torch.ones(10).numpy()
        )


LOAD_CASES = [
    (name, options, dtype)
    for name in NAMES
    for options in ([{}, {"values_dtype": "param"}] if name == "microadam" else [{}])
    for dtype in (torch.float64, torch.bfloat16, torch.float16)
]


@pytest.mark.parametrize("name, options, dtype", LOAD_CASES)
def test_own_state_loads_after_model_to_dtype_and_training_continues(name, options, dtype):
    model = tiny_model()
    opt = CASES[name](model.parameters(), lr=1e-2, **options)
    train(model, opt)
    saved = opt.state_dict()
    model.to(dtype)
    resumed = CASES[name](model.parameters(), lr=1e-2, **options)
    resumed.load_state_dict(saved)
    for param in model.parameters():
        fresh = resumed._init_state(torch.empty_like(param, device="meta"), resumed.defaults, 0)
        for key, want in fresh.items():
            if torch.is_tensor(want):
                assert resumed.state[param][key].dtype == want.dtype, key
    if dtype == torch.float64:  # float32 → float64 is exact
        for pid, param in enumerate(model.parameters()):
            for key, value in saved["state"][pid].items():
                if torch.is_tensor(value) and value.is_floating_point():
                    assert torch.equal(resumed.state[param][key].to(value.dtype), value), key
    before = [p.detach().clone() for p in model.parameters()]
    train(model, resumed, steps=2, dtype=dtype)
    for param, old in zip(model.parameters(), before, strict=True):
        assert param.dtype == dtype and torch.isfinite(param).all()
        assert not torch.equal(param, old)


@pytest.mark.parametrize("name", [*NAMES, "adamw"])
def test_a_step_on_meta_parameters_creates_state_shapes_and_reads_nothing(name):
    model = tiny_model()
    meta = tiny_model().to("meta")
    if name == "adamw":
        opt = torch.optim.AdamW(meta.parameters())
    else:
        opt = CASES[name](meta.parameters(), lr=1e-2)
    for param in meta.parameters():
        param.grad = torch.empty_like(param)
    opt.step()
    if name == "adamw":
        return  # the reference: torch's optimizer steps on meta tensors without error
    real = CASES[name](model.parameters(), lr=1e-2)
    train(model, real, steps=1)
    for param, reference in zip(meta.parameters(), model.parameters(), strict=True):
        state, expected = opt.state[param], real.state[reference]
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            if not torch.is_tensor(value):
                assert state[key] == value, key
                continue
            assert state[key].shape == value.shape and state[key].dtype == value.dtype, key
            if value.dim():  # the arrays, on the meta device; 0-d counters may live on the host
                assert state[key].is_meta, key


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("eps", [0.0, -1e-8, float("inf"), float("nan")])
def test_eps_outside_zero_to_inf_is_refused_by_every_optimizer(name, eps):
    with pytest.raises(ValueError, match=r"eps must (be in \(0\.0, inf\)|be finite)"):
        CASES[name](tiny_model().parameters(), eps=eps)
    opt = CASES[name](tiny_model().parameters())
    with pytest.raises(ValueError, match="eps"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3))], "eps": eps})
