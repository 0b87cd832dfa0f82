"""MicroAdam-specific behaviour (ALGORITHMS.md §3.1); the generic contract is in tests/contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import compress
from bench.param_sets import count, transformer_params
from optimizers import MicroAdam
from optimizers._views import array_view

STATE_KEYS = {
    "step",
    "cursor",
    "error_codes",
    "error_lo",
    "error_hi",
    "window_values",
    "window_indices",
}


def small_model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(12, 20), torch.nn.Tanh(), torch.nn.Linear(20, 3), torch.nn.Tanh()
    )
    return model.to(dtype)


def regression_batch(dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 12, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :3] * 1.5) + 0.1 * x[:, 3:6]
    return x.to(dtype), y.to(dtype)


def run(model, opt, steps, batch):
    x, y = batch
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).float(), y.float())
        loss.backward()
        opt.step()
        trajectory.append([p.detach().clone() for p in model.parameters()])
    return trajectory, loss.item()


# --------------------------------------------------------------------------- oracle: Adam
@pytest.mark.parametrize("weight_decay, peer", [(0.0, torch.optim.Adam), (0.1, torch.optim.AdamW)])
@pytest.mark.parametrize("error_feedback", ["q4", "none"])
def test_full_density_and_long_window_is_exactly_adam(weight_decay, peer, error_feedback):
    steps = 12
    batch = regression_batch(torch.float64)
    options = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-7, weight_decay=weight_decay)
    ours_model, peer_model = small_model(), small_model()
    ours = MicroAdam(
        ours_model.parameters(),
        density=1.0,
        window=steps,
        values_dtype="param",
        error_feedback=error_feedback,
        **options,
    )
    ours_trajectory, _ = run(ours_model, ours, steps, batch)
    peer_trajectory, _ = run(peer_model, peer(peer_model.parameters(), **options), steps, batch)
    for ours_params, peer_params in zip(ours_trajectory, peer_trajectory, strict=True):
        for a, b in zip(ours_params, peer_params, strict=True):
            scale = b.abs().max().item()
            assert (a - b).abs().max().item() <= 1e-10 * scale
    for state in ours.state.values():
        # everything selected: the remainder is zero, so the quantized error is exactly zero
        if error_feedback == "q4":
            assert not state["error_codes"].any()
            assert not state["error_lo"].any() and not state["error_hi"].any()
        else:
            assert "error_codes" not in state
        assert state["window_values"].dtype == torch.float64
        assert int(state["step"]) == steps and int(state["cursor"]) == 0


def test_a_window_shorter_than_the_run_forgets_old_gradients():
    batch = regression_batch(torch.float64)
    a_model, b_model = small_model(), small_model()
    short = MicroAdam(a_model.parameters(), lr=3e-2, density=1.0, window=2, values_dtype="param")
    adam = torch.optim.Adam(b_model.parameters(), lr=3e-2)
    ours, _ = run(a_model, short, 3, batch)
    peer, _ = run(b_model, adam, 3, batch)
    for step, agrees in enumerate((True, True, False)):
        close = all(
            torch.allclose(a, b, rtol=1e-10, atol=0)
            for a, b in zip(ours[step], peer[step], strict=True)
        )
        assert close == agrees, step


# --------------------------------------------------------------------------- compression identity
def decode(codes, lo, hi, length, bucket):
    q = compress.Quantized(
        array_view(codes),
        array_view(lo).view(np.uint16),
        array_view(hi).view(np.uint16),
        length,
        4,
        bucket,
    )
    return compress.dequantize(q).astype(np.float64)


def bf16_bits_to_float(bits: torch.Tensor) -> np.ndarray:
    return bits.view(torch.bfloat16).to(torch.float64).numpy()


def test_selected_plus_new_error_plus_quantization_error_is_the_corrected_gradient():
    length, block, bucket, density, window = 1000, 256, 64, 0.05, 3
    k_full = math.ceil(block * density)
    param = torch.nn.Parameter(torch.zeros(length))
    opt = MicroAdam(
        [param],
        lr=1e-3,
        density=density,
        window=window,
        block_size=block,
        quant_bucket=bucket,
        values_dtype="float32",
    )
    rng = torch.Generator().manual_seed(0)
    for _ in range(7):
        param.grad = torch.randn(length, generator=rng) * torch.logspace(-2, 1, length)
        state = opt.state[param]
        if state:
            before = decode(
                state["error_codes"], state["error_lo"], state["error_hi"], length, bucket
            )
            row = int(state["cursor"])
        else:
            before, row = np.zeros(length), 0
        opt.step()
        state = opt.state[param]
        corrected = param.grad.double().numpy() + before
        values = state["window_values"][row].double().numpy()
        indices = state["window_indices"][row].long().numpy()
        starts = np.repeat(np.arange(0, length, block), k_full)[: values.size]
        # the tail block keeps ceil(232 · 0.05) = 12 < 13: the row is laid out block after block
        tail = math.ceil((length % block) * density)
        assert values.size == (length // block) * k_full + tail
        positions = starts + indices
        sent = np.zeros(length)
        sent[positions] = values
        assert np.unique(positions).size == positions.size
        np.testing.assert_allclose(values, corrected[positions], rtol=1e-6, atol=1e-6)
        remainder = corrected - sent
        remainder[positions] = 0.0
        new_error = decode(
            state["error_codes"], state["error_lo"], state["error_hi"], length, bucket
        )
        lo = np.repeat(bf16_bits_to_float(state["error_lo"]), bucket)[:length]
        hi = np.repeat(bf16_bits_to_float(state["error_hi"]), bucket)[:length]
        # corrected = selected + new error + quantization error, where the dropped
        # quantization error is at most half a step of its bucket (plus float32 rounding)
        half_step = (hi - lo) / 15 / 2
        quantization_error = corrected - sent - new_error
        assert np.all(np.abs(quantization_error) <= half_step * (1 + 1e-5) + 1e-6)
        slack = 1e-6 * np.maximum(np.abs(lo), np.abs(hi))
        assert np.all((lo - slack <= remainder) & (remainder <= hi + slack))
        # top-k per block: every sent magnitude is at least every remaining one of its block
        block_of = positions // block
        for b in range(math.ceil(length / block)):
            kept = np.abs(values[block_of == b])
            assert kept.min() >= np.abs(remainder[b * block : (b + 1) * block]).max()


# --------------------------------------------------------------------------- training
def teacher_task(dtype, seed=0):
    """An 84k-parameter MLP learning a noisy random teacher from fresh batches.

    The largest weight (256×256) spans 4 blocks of the default 16384, each keeping 164 entries
    per step; the other parameters form one (tail) block each. Noise 0.2 puts the floor at 0.04.
    """
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(64, 8, generator=g) / 4
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.GELU(),
        torch.nn.Linear(256, 256),
        torch.nn.GELU(),
        torch.nn.Linear(256, 8),
    ).to(dtype)

    def batch(n):
        x = torch.randn(n, 64, generator=g)
        y = torch.tanh(x @ teacher) + 0.2 * torch.randn(n, 8, generator=g)
        return x.to(dtype), y.to(dtype)

    return model, batch


def held_out_loss(make, dtype, steps):
    model, batch = teacher_task(dtype)
    x_test, y_test = batch(1024)
    opt = make(model.parameters())
    for _ in range(steps):
        x, y = batch(64)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x).float(), y.float()).backward()
        opt.step()
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(x_test).float(), y_test.float()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_microadam_trains_as_well_as_adamw(dtype):
    # AdamW at torch's default lr, MicroAdam at 3x that (every other option its default): at 1%
    # density a coordinate enters the window about once per hundred steps, so on a model this
    # small MicroAdam needs the larger lr to keep up. At equal lr (3e-3 both) it reaches about
    # twice AdamW's loss here after 400 steps, and at both defaults (1e-3) about 1.25x; this
    # test pins the tuned comparison.
    steps = 400
    initial = held_out_loss(lambda p: torch.optim.SGD(p, lr=0.0), dtype, 0)
    adamw = held_out_loss(lambda p: torch.optim.AdamW(p, lr=1e-3), dtype, steps)
    micro = held_out_loss(lambda p: MicroAdam(p, lr=3e-3), dtype, steps)
    assert adamw < 0.5 * initial
    assert micro <= 1.1 * adamw


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "option, value, error",
    [
        ("window", 0, ValueError),
        ("window", 2.0, TypeError),
        ("density", 0.0, ValueError),
        ("density", 1.5, ValueError),
        ("density", float("nan"), ValueError),
        ("block_size", 0, ValueError),
        ("block_size", 32768, ValueError),
        ("quant_bucket", 1, ValueError),
        ("quant_bucket", 96, ValueError),  # does not divide the default block size 16384
        ("values_dtype", "float16", ValueError),
        ("error_feedback", "q8", ValueError),
    ],
)
def test_bad_microadam_options_are_refused_with_their_name(option, value, error):
    params = list(small_model().parameters())
    with pytest.raises(error, match=option):
        MicroAdam(params, **{option: value})
    opt = MicroAdam(params[:1])
    with pytest.raises(error, match=option):
        opt.add_param_group({"params": params[1:], option: value})


def test_block_size_and_bucket_are_checked_together_per_group():
    params = list(small_model().parameters())
    opt = MicroAdam(params[:1], block_size=20864)  # the published A100 runs: 326 buckets of 64
    opt.add_param_group({"params": params[1:2], "block_size": 96, "quant_bucket": 32})
    with pytest.raises(ValueError, match="multiple of quant_bucket"):
        opt.add_param_group({"params": params[2:], "block_size": 100})
    with pytest.raises(ValueError, match="even multiple"):
        opt.add_param_group({"params": params[2:], "block_size": 33, "quant_bucket": 3})


# --------------------------------------------------------------------------- state layout
@pytest.mark.parametrize(
    "param_dtype, values_dtype, stored",
    [
        (torch.float32, "bfloat16", torch.int16),
        (torch.float32, "float32", torch.float32),
        (torch.float32, "param", torch.float32),
        (torch.float64, "param", torch.float64),
        (torch.bfloat16, "param", torch.int16),
        (torch.float16, "param", torch.float32),
    ],
)
def test_state_layout_has_no_dense_float_buffer(param_dtype, values_dtype, stored):
    shape, block, bucket, density, window = (37, 5, 3), 128, 32, 0.1, 4
    d = math.prod(shape)  # 555 = 4 full blocks of 128 (13 kept each) + a tail of 43 (5 kept)
    param = torch.nn.Parameter(torch.randn(shape).to(param_dtype))
    param.grad = torch.randn(shape).to(param_dtype)
    opt = MicroAdam(
        [param],
        window=window,
        density=density,
        block_size=block,
        quant_bucket=bucket,
        values_dtype=values_dtype,
    )
    opt.step()
    state = opt.state[param]
    assert set(state) == STATE_KEYS
    total_k = 4 * 13 + 5
    expected = {
        "step": ((), torch.int64),
        "cursor": ((), torch.int64),
        "error_codes": ((278,), torch.uint8),
        "error_lo": ((18,), torch.int16),
        "error_hi": ((18,), torch.int16),
        "window_values": ((window, total_k), stored),
        "window_indices": ((window, total_k), torch.int16),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in state.items()} == expected
    assert int(state["step"]) == 1 and int(state["cursor"]) == 1
    assert not any(v.is_floating_point() and v.numel() >= d for v in state.values())
    assert [r.path for r in opt.describe()] == ["microadam"]


def test_state_bytes_follow_the_formula_on_a_transformer():
    params = transformer_params(blocks=2)
    opt = MicroAdam(params)
    opt.step()
    window, density, bucket = 10, 0.01, 64
    formula = 0.5 + 4 * window * density + 4 / bucket
    assert opt.state_nbytes() / count(params) == pytest.approx(formula, rel=0.02)
    per_param = {r.name: r.bytes_per_param for r in opt.describe()}
    assert max(per_param.values()) < 1.1  # a 768-vector: 8 of 768 kept and 16 B of scalars


def test_without_error_feedback_each_row_is_the_top_k_of_that_gradient(tmp_path):
    """error_feedback="none": no error in the state (4·m·density B/param on a transformer), the
    row written at each step is exactly the block top-k of that step's gradient, and a resumed
    run (weights_only checkpoint) continues bit for bit."""
    params = transformer_params(blocks=1)
    opt = MicroAdam(params, error_feedback="none")
    opt.step()
    assert opt.state_nbytes() / count(params) == pytest.approx(4 * 10 * 0.01, rel=0.03)
    assert all("error_codes" not in state for state in opt.state.values())

    model = small_model(torch.float32)
    opt = MicroAdam(model.parameters(), lr=1e-2, density=0.1, block_size=64, error_feedback="none")
    x, y = regression_batch(torch.float32)

    def step(optimizer):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()

    for _ in range(3):
        step(opt)
        for p in model.parameters():
            state = opt.state[p]
            row = (int(state["cursor"]) - 1) % 10
            expected = compress.topk_blocks(
                p.grad.detach().reshape(-1).numpy(),
                density=0.1,
                block_size=64,
                values_dtype="bfloat16",
            )
            np.testing.assert_array_equal(state["window_indices"][row].numpy(), expected.indices)
            np.testing.assert_array_equal(
                state["window_values"][row].numpy().view(np.uint16), expected.values
            )
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    for _ in range(3):
        step(opt)
    continued = [p.detach().clone() for p in model.parameters()]
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model.load_state_dict(saved["model"])
    resumed = MicroAdam(model.parameters(), error_feedback="none")
    resumed.load_state_dict(saved["opt"])
    for _ in range(3):
        step(resumed)
    for a, b in zip(continued, model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoints_do_not_cross_error_feedback_settings():
    model = small_model(torch.float32)
    x, y = regression_batch(torch.float32)
    opt = MicroAdam(model.parameters())
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    with pytest.raises(ValueError, match="error_codes"):
        MicroAdam(model.parameters(), error_feedback="none").load_state_dict(
            {
                **opt.state_dict(),
                "param_groups": [
                    {**g, "error_feedback": "none"} for g in opt.state_dict()["param_groups"]
                ],
            }
        )


def test_non_contiguous_parameters_and_gradients_are_flattened_like_contiguous_ones():
    base = torch.randn(40, 30, dtype=torch.float64)
    grads = [torch.randn(30, 40, dtype=torch.float64) for _ in range(3)]
    strided = torch.nn.Parameter(base.t())
    dense = torch.nn.Parameter(base.t().contiguous())
    options = dict(lr=1e-2, density=0.1, block_size=64, quant_bucket=16, weight_decay=0.1)
    a, b = MicroAdam([strided], **options), MicroAdam([dense], **options)
    for g in grads:
        strided.grad, dense.grad = g.t().contiguous().t(), g
        a.step()
        b.step()
    assert not strided.is_contiguous()
    assert torch.equal(strided, dense)
