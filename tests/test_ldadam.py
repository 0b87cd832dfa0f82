"""LDAdam (ALGORITHMS.md §3.2): options, path decision, state layout, oracles and invariants."""

from __future__ import annotations

import io

import pytest
import torch

from optimizers import LDAdam, _ldadam_step
from optimizers.ldadam import lowrank_layout

BETA1, BETA2 = 0.908, 0.99


@pytest.fixture(autouse=True)
def one_thread():
    """These matrices are tiny: on a loaded machine OpenMP barriers dominate, so use one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def matrix_param(rows: int, cols: int, *, dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(rows, cols, generator=generator, dtype=dtype))


def gradients(shape, steps: int, *, dtype=torch.float64, seed: int = 1):
    """Random gradients whose scale varies over time (so the basis keeps moving)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (1.0 + 0.5 * (i % 3)) * torch.randn(shape, generator=generator, dtype=dtype)
        for i in range(steps)
    ]


def quadratic_grad(weight, target, noise):
    """Gradient of ½‖W − T‖² plus noise: W's own errors feed back into later gradients."""
    return (weight.detach() - target) + noise


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "option, value, error",
    [
        ("rank", 0, ValueError),
        ("rank", 2.5, TypeError),
        ("rho", 1.5, ValueError),
        ("rho", -0.1, ValueError),
        ("error_feedback", "q2", ValueError),
        ("error_feedback", True, ValueError),
        ("side", "top", ValueError),
        ("min_dim", 0, ValueError),
        ("min_dim", 8.0, TypeError),
        ("compressed", "yes", TypeError),
        ("seed", -1, ValueError),
    ],
)
def test_bad_options_are_refused_with_their_name(option, value, error):
    params = [matrix_param(8, 8), matrix_param(4, 4)]
    with pytest.raises(error, match=option):
        LDAdam(params, **{option: value})
    opt = LDAdam(params[:1])
    with pytest.raises(error, match=option):
        opt.add_param_group({"params": params[1:], option: value})


def test_options_are_in_defaults_and_per_group():
    opt = LDAdam([matrix_param(8, 8)], rank=2, rho=0.5, error_feedback="none", side="left")
    assert {"rank", "rho", "error_feedback", "side", "min_dim", "compressed", "seed"} <= set(
        opt.defaults
    )
    opt.add_param_group({"params": [matrix_param(6, 6)], "rank": 3})
    assert [g["rank"] for g in opt.param_groups] == [2, 3]


# ---------------------------------------------------------------------------- path decision
def group(**options):
    base = dict(rank=16, min_dim=None, compressed=None, side="auto")
    return {**base, **options}


@pytest.mark.parametrize(
    "shape, options, expected",
    [
        ((64, 128), {}, ("left", 16)),
        ((128, 64), {}, ("right", 16)),
        ((31, 512), {}, None),  # smaller side below max(2·16, 32)
        ((32, 512), {}, ("left", 16)),
        ((48, 512), {"rank": 24}, ("left", 24)),  # default min_dim = 2·rank = 48
        ((47, 512), {"rank": 24}, None),
        ((64, 3, 3, 3), {}, None),  # conv weight viewed as 64×27: 27 < 32
        ((64, 8, 3, 3), {}, ("left", 16)),  # 64×72
        ((512,), {"compressed": True}, None),  # vectors are always dense
        ((64, 128), {"compressed": False}, None),
        ((8, 128), {"compressed": True}, ("left", 8)),  # forced: rank clipped to the side
        ((8, 128), {"min_dim": 4}, ("left", 8)),
        ((64, 128), {"side": "right"}, ("right", 16)),
        ((128, 64), {"side": "left"}, ("left", 16)),
    ],
)
def test_lowrank_layout_follows_the_size_rule_and_overrides(shape, options, expected):
    assert lowrank_layout(shape, group(**options)) == expected


def test_describe_reports_the_path_of_each_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.Linear(48, 128))
    opt = LDAdam(model.parameters(), rank=4)
    model(torch.randn(5, 64)).sum().backward()
    opt.step()
    paths = [r.path for r in opt.describe()]
    assert paths == ["ldadam(rank=4, side=left)", "dense", "ldadam(rank=4, side=right)", "dense"]


# ---------------------------------------------------------------------------- state layout
@pytest.mark.parametrize(
    "mode, keys",
    [
        ("dense", {"error", "error_fold"}),
        ("q4", {"error_codes", "error_lo", "error_hi"}),
        ("q8", {"error_codes", "error_lo", "error_hi"}),
        ("none", set()),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_state_layout_and_bytes_on_the_meta_device(mode, keys, dtype):
    rows, cols, rank = 96, 160, 8
    opt = LDAdam([matrix_param(rows, cols, dtype=dtype)], rank=rank, error_feedback=mode)
    meta = torch.empty(rows, cols, dtype=dtype, device="meta")
    state = opt._init_state(meta, opt.param_groups[0], key=0)
    assert set(state) == {"step", "side", "basis", "exp_avg", "exp_avg_sq"} | keys
    work = torch.float64 if dtype == torch.float64 else torch.float32
    assert state["step"].dtype == torch.int64 and state["side"] == "left"
    assert state["basis"].shape == (rows, rank) and state["basis"].dtype == work
    assert state["exp_avg"].shape == state["exp_avg_sq"].shape == (rank, cols)
    # integer bookkeeping (and the error fold) lives in host memory whatever the device
    assert all(
        v.device.type == ("cpu" if k in opt._host_state_keys else "meta")
        for k, v in state.items()
        if torch.is_tensor(v)
    )
    extra = sum(state[k].numel() * state[k].element_size() for k in keys) / (rows * cols)
    expected = {
        "dense": torch.finfo(work).bits / 8 + 8 / (rows * cols),  # e and the float64 fold
        "q4": 0.5 + 4 / 64,
        "q8": 1.0 + 4 / 64,
        "none": 0.0,
    }[mode]
    assert extra == pytest.approx(expected)


# ---------------------------------------------------------------------------- invariants
def work_orientation(state, tensor):
    """The matrix the step works on: as is for a left projection, transposed for a right one."""
    return tensor.t() if state["side"] == "right" else tensor


def unfolded_error(state):
    """e in the work orientation from the dense buffer, which holds e + κ·P·m."""
    folded = work_orientation(state, state["error"])
    return folded - float(state["error_fold"]) * state["basis"] @ state["exp_avg"]


@pytest.mark.parametrize("shape", [(40, 70), (70, 40)])
def test_orthonormal_basis_nonnegative_v_and_error_feedback_identity(shape):
    """P_new m_new + (1−β1) e_new = β1 P_old m_old + (1−β1)(g + e_old) at every step."""
    param = matrix_param(*shape)
    opt = LDAdam([param], lr=1e-2, rank=6, weight_decay=0.1)
    for step, grad in enumerate(gradients(shape, 30)):
        param.grad = grad
        state = opt.state[param]
        if step:
            before = {k: state[k].clone() for k in ("basis", "exp_avg")}
            before["error"] = unfolded_error(state)
        opt.step()
        state = opt.state[param]
        basis = state["basis"]
        eye = torch.eye(basis.shape[1], dtype=basis.dtype)
        assert torch.linalg.matrix_norm(basis.t() @ basis - eye) < 1e-12
        assert (state["exp_avg_sq"] >= 0).all()
        left = basis @ state["exp_avg"] + (1 - BETA1) * unfolded_error(state)
        if step:
            old = before["basis"] @ before["exp_avg"]
            right = BETA1 * old + (1 - BETA1) * (work_orientation(state, grad) + before["error"])
        else:
            right = (1 - BETA1) * work_orientation(state, grad)
        assert torch.linalg.matrix_norm(left - right) <= 1e-10 * torch.linalg.matrix_norm(right)


def test_a_change_of_beta1_refolds_the_error_buffer():
    """The dense buffer holds e + κ·P·m with κ = β1/(1−β1) of the step that wrote it; after β1
    changes, the identity above holds with the new β1 and κ follows it."""
    shape = (40, 70)
    param = matrix_param(*shape)
    opt = LDAdam([param], lr=1e-2, rank=6)
    for step, grad in enumerate(gradients(shape, 12)):
        beta1 = BETA1 if step < 6 else 0.8
        opt.param_groups[0]["betas"] = (beta1, BETA2)
        param.grad = grad
        state = opt.state[param]
        if step:
            old = state["basis"] @ state["exp_avg"]
            error = unfolded_error(state)
        opt.step()
        assert float(state["error_fold"]) == beta1 / (1 - beta1)
        if step:
            left = state["basis"] @ state["exp_avg"] + (1 - beta1) * unfolded_error(state)
            right = beta1 * old + (1 - beta1) * (grad + error)
            assert torch.linalg.matrix_norm(left - right) <= 1e-10 * torch.linalg.matrix_norm(right)


@pytest.mark.parametrize("shape", [(40, 70), (70, 40)])
def test_a_checkpoint_with_an_unfolded_error_buffer_resumes_the_same_run(shape):
    """A state saved before the buffer was folded (e itself, no "error_fold") loads as κ = 0 and
    continues the run the folded state continues."""
    param = matrix_param(*shape)
    grads = gradients(shape, 10)
    opt = LDAdam([param], lr=1e-2, rank=6)
    for grad in grads[:5]:
        param.grad = grad
        opt.step()
    saved = opt.state_dict()
    unfolded = {**saved, "state": {}}
    live = opt.state[param]  # the state dict holds "side" as UTF-8 bytes, the live state as text
    for pid, state in saved["state"].items():
        error = unfolded_error(live)
        state = {k: v for k, v in state.items() if k != "error_fold"}
        unfolded["state"][pid] = {**state, "error": work_orientation(live, error).clone()}
    start = param.detach().clone()
    finals = []
    for checkpoint in (saved, unfolded):
        with torch.no_grad():
            param.copy_(start)
        resumed = LDAdam([param], lr=1e-2, rank=6)
        resumed.load_state_dict(checkpoint)
        for grad in grads[5:]:
            param.grad = grad
            resumed.step()
        finals.append(param.detach().clone())
    assert torch.linalg.matrix_norm(finals[0] - finals[1]) <= 1e-12 * torch.linalg.matrix_norm(
        finals[0]
    )


@pytest.mark.parametrize("fold", [float("nan"), float("inf"), -1.0])
def test_a_checkpoint_with_an_invalid_error_fold_is_refused(fold):
    param = matrix_param(40, 70)
    opt = LDAdam([param], rank=6)
    param.grad = gradients((40, 70), 1)[0]
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["error_fold"] = torch.tensor(fold, dtype=torch.float64)
    with pytest.raises(ValueError, match="'error_fold' of .* must be finite and >= 0"):
        LDAdam([param], rank=6).load_state_dict(saved)


@pytest.mark.parametrize("lo", [float("nan"), float("inf"), 1e30])
def test_a_checkpoint_with_quantized_error_bounds_out_of_order_is_refused(lo):
    """The step decodes its quantized error without reading the bounds (a GPU wait per
    parameter), so a loaded store's bounds are checked once, on load."""
    param = matrix_param(40, 70)
    opt = LDAdam([param], rank=6, error_feedback="q4")
    param.grad = gradients((40, 70), 1)[0]
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["error_lo"][1] = lo
    with pytest.raises(ValueError, match="bounds must be finite with lo <= hi.*bucket 1"):
        LDAdam([param], rank=6, error_feedback="q4").load_state_dict(saved)


def test_the_step_refuses_a_fold_without_an_error_buffer_to_rewrite():
    state = torch.zeros(8, 2), torch.zeros(2, 10), torch.zeros(2, 10)
    with pytest.raises(ValueError, match="error_fold needs keep_error=True"):
        _ldadam_step.ldadam_matrix_step(
            torch.zeros(8, 10),
            torch.ones(8, 10),
            *state,
            torch.zeros((), dtype=torch.int64),
            beta1=0.9,
            beta2=0.99,
            rho=0.9,
            eps=1e-8,
            lr=1e-3,
            weight_decay=0.0,
            keep_error=False,
            error_fold=torch.zeros((), dtype=torch.float64),
            rng=None,
        )


def test_full_rank_projection_is_lossless():
    """rank = the smaller side: P is square orthogonal, nothing is dropped, e stays at rounding."""
    shape = (12, 30)
    param = matrix_param(*shape)
    opt = LDAdam([param], rank=12, compressed=True)
    for grad in gradients(shape, 20):
        param.grad = grad
        opt.step()
        error = unfolded_error(opt.state[param])
        assert torch.linalg.matrix_norm(error) <= 1e-12 * torch.linalg.matrix_norm(grad)


# ---------------------------------------------------------------------------- oracle
def transcription(weight, grads_of, steps, *, rank, lr, weight_decay, rho, eps=1e-8):
    """ALGORITHMS.md §3.2 transcribed literally in float64, left projection (B formed, QR of
    B Bᵀ P_old by torch.linalg.qr, first basis from torch.linalg.svd)."""
    rows, cols = weight.shape
    basis = torch.zeros(rows, rank, dtype=torch.float64)
    m = torch.zeros(rank, cols, dtype=torch.float64)
    v = torch.zeros(rank, cols, dtype=torch.float64)
    e = torch.zeros(rows, cols, dtype=torch.float64)
    k = BETA1 / (1 - BETA1)
    for t in range(steps):
        a = grads_of(t, weight) + e
        if t == 0:
            new = torch.linalg.svd(a, full_matrices=False).U[:, :rank]
        else:
            b = rho * basis @ m / (1 - BETA1**t) + (1 - rho) * a
            new = torch.linalg.qr(b @ (b.t() @ basis)).Q
        g_low = new.t() @ a
        c = new.t() @ basis
        m_moved = c @ m
        if t >= 1:
            m_hat, v_hat = m / (1 - BETA1**t), v / (1 - BETA2**t)
            v = (1 - BETA2**t) * ((c * c) @ (v_hat - m_hat**2) + (c @ m_hat) ** 2).abs()
        e = a - new @ g_low + k * (basis @ m - new @ m_moved)
        m = BETA1 * m_moved + (1 - BETA1) * g_low
        v = BETA2 * v + (1 - BETA2) * g_low**2
        direction = (m / (1 - BETA1 ** (t + 1))) / ((v / (1 - BETA2 ** (t + 1))).sqrt() + eps)
        weight = weight * (1 - lr * weight_decay) - lr * new @ direction
        basis = new
    return weight, basis, m, v, e


@pytest.mark.parametrize("shape", [(24, 80), (80, 24)])
@pytest.mark.parametrize("rho", [None, 0.5])
@pytest.mark.parametrize("moments", ["numba-moments", "torch-moments"])
def test_matches_a_float64_transcription_of_the_algorithm(shape, rho, moments, monkeypatch):
    """50 steps on a noisy quadratic, wide and tall, against the literal transcription.

    Tolerance 1e-9 relative (float64). Singular vectors and QR factors are defined up to the
    signs of their columns, and the two sides use different routines (randla's QR vs
    torch.linalg.qr, a factored subspace iteration vs the formed B). That cannot matter: the
    update is invariant to P → P·diag(±1) (m's rows flip with P's columns, C∘C and (C m̂)² are
    unchanged, and W, e only see the products P m, P g̃, P u). So we compare sign-free
    quantities: W, e, P Pᵀ, P m and v. With "torch-moments" the r×n moment arithmetic takes the
    torch operations CUDA tensors take instead of `_ldadam_kernels`.
    """
    if moments == "torch-moments":
        monkeypatch.setattr(_ldadam_step, "fused_moments", lambda *tensors: False)
    rank, lr, wd, steps = 5, 3e-2, 0.05, 50
    generator = torch.Generator().manual_seed(7)
    target = torch.randn(shape, generator=generator, dtype=torch.float64)
    noise = [
        0.3 * torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(steps)
    ]
    param = matrix_param(*shape, seed=3)
    start = param.detach().clone()
    opt = LDAdam([param], lr=lr, weight_decay=wd, rank=rank, rho=rho, compressed=True)
    for t in range(steps):
        param.grad = quadratic_grad(param, target, noise[t])
        opt.step()

    transposed = shape[0] > shape[1]
    flip = (lambda x: x.t()) if transposed else (lambda x: x)
    weight, basis, m, v, e = transcription(
        flip(start),
        lambda t, w: flip(quadratic_grad(flip(w), target, noise[t])),
        steps,
        rank=rank,
        lr=lr,
        weight_decay=wd,
        rho=BETA1 if rho is None else rho,
    )
    state = opt.state[param]

    def close(ours, theirs):
        scale = torch.linalg.matrix_norm(theirs)
        assert torch.linalg.matrix_norm(ours - theirs) <= 1e-9 * scale

    close(flip(param.detach()), weight)
    close(unfolded_error(state), e)
    close(state["basis"] @ state["basis"].t(), basis @ basis.t())
    close(state["basis"] @ state["exp_avg"], basis @ m)
    close(state["exp_avg_sq"], v)
    assert int(state["step"]) == steps


@pytest.mark.parametrize("beta2", [0.999, 0.999999, 1 - 1e-8])
def test_float32_moment_kernels_agree_with_the_torch_operations(beta2, monkeypatch):
    """The Numba moment loops take 1 − β from float64 as the torch operations do: a float32
    1 − β2 taken from a rounded β2 would be 0 at β2 = 1 − 1e-8."""
    grads = gradients((64, 96), 4, dtype=torch.float32)
    weights = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(_ldadam_step, "fused_moments", lambda *tensors: False)
        param = matrix_param(64, 96, dtype=torch.float32)
        opt = LDAdam([param], lr=1e-2, betas=(0.9, beta2), rank=8, compressed=True)
        for g in grads:
            param.grad = g.clone()
            opt.step()
        weights.append(param.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- error feedback modes
def small_regression(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(48, 96),
        torch.nn.Tanh(),
        torch.nn.Linear(96, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 1),
    )
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(256, 48, generator=generator)
    y = torch.sin(x[:, :4].sum(dim=1, keepdim=True)) + 0.1 * x[:, 4:5]
    return model, x, y


def classification_loss(mode: str, steps: int = 100) -> float:
    """A 64-128-128-10 tanh MLP learning a random teacher's labels (1024 points), rank 8."""
    generator = torch.Generator().manual_seed(1)
    teacher_in = torch.randn(128, 64, generator=generator) / 8
    teacher_out = torch.randn(10, 128, generator=generator) / 128**0.5
    x = torch.randn(1024, 64, generator=generator)
    labels = (torch.tanh(x @ teacher_in.t()) @ teacher_out.t()).argmax(dim=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128),
        torch.nn.Tanh(),
        torch.nn.Linear(128, 128),
        torch.nn.Tanh(),
        torch.nn.Linear(128, 10),
    )
    opt = LDAdam(model.parameters(), lr=1e-3, rank=8, error_feedback=mode)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x), labels).item()


def test_quantized_error_feedback_trains_as_well_as_dense():
    """q4 within 5% of dense after 100 steps (measured: +2.4%), q8 within 1% (measured: 0.0%)."""
    dense, q8, q4 = (classification_loss(mode) for mode in ("dense", "q8", "q4"))
    assert dense < 0.8  # it trains (the loss starts at ln 10 ≈ 2.3)
    assert abs(q4 - dense) <= 0.05 * dense
    assert abs(q8 - dense) <= 0.01 * dense


@pytest.mark.parametrize("mode", ["q4", "q8", "none"])
def test_other_error_feedback_modes_resume_bit_identically(mode):
    def run(model, opt, x, y, steps):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    model, x, y = small_regression()
    reference = LDAdam(model.parameters(), lr=5e-3, rank=4, error_feedback=mode)
    run(model, reference, x, y, 6)

    resumed_model, _, _ = small_regression()
    opt = LDAdam(resumed_model.parameters(), lr=5e-3, rank=4, error_feedback=mode)
    run(resumed_model, opt, x, y, 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    fresh = LDAdam(resumed_model.parameters(), lr=5e-3, rank=4, error_feedback=mode)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    run(resumed_model, fresh, x, y, 3)
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_low_precision_parameter_keeps_float32_state_and_trains():
    model, x, y = small_regression()
    model = model.to(torch.bfloat16)
    opt = LDAdam(model.parameters(), lr=5e-3, rank=4)
    losses = []
    for _ in range(40):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x.bfloat16()).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    state = opt.state[model[0].weight]
    assert state["error"].dtype == state["basis"].dtype == torch.float32
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("mode", ["q4", "q8"])
def test_quantized_error_feedback_on_float64_parameters(mode):
    """compress quantizes float32: the float64 residual is rounded to float32 before storing.
    On ½‖W‖² the quantized run ends within 5% of the dense-feedback run."""

    def final_norm(error_feedback):
        param = matrix_param(40, 70)
        opt = LDAdam([param], lr=3e-2, rank=6, error_feedback=error_feedback)
        for _ in range(30):
            param.grad = param.detach().clone()
            opt.step()
        assert param.dtype == torch.float64
        return torch.linalg.matrix_norm(param.detach()).item()

    start = torch.linalg.matrix_norm(matrix_param(40, 70).detach()).item()
    dense, quantized = final_norm("dense"), final_norm(mode)
    assert dense < 0.95 * start
    assert abs(quantized - dense) <= 0.05 * dense


def test_gradients_that_would_overflow_the_subspace_iteration_train_without_inf_or_nan():
    # Finite gradients of 3e35: g·gᵀ·P would overflow float32 in the second step's iteration;
    # the step runs on exactly scaled inputs instead (tests/test_reliability_spikes.py).
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(48, 64))
    opt = LDAdam([param], rank=8)
    param.grad = torch.full((48, 64), 3e35) + torch.randn(48, 64) * 1e34
    for _ in range(3):
        opt.step()
    assert torch.isfinite(param).all()
    for value in opt.state[param].values():
        if torch.is_tensor(value) and value.is_floating_point():
            assert torch.isfinite(value).all()
