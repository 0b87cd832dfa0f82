"""Adapprox (ALGORITHMS.md §3.3): the dense-reference oracle, state layout, path choice, options."""

from __future__ import annotations

import io

import pytest
import torch

from optimizers.adapprox import Adapprox, matrix_shape, takes_factored_path


def reference_adapprox(w0, grads, *, lr, beta1, beta2, eps, weight_decay, clip, bias_correction):
    """§3.3 with V kept dense, in float64: the exact-factorization limit of Adapprox."""
    w = w0.double().clone()
    v = torch.zeros_like(w)
    m = torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g.double().reshape(w.shape)
        v = beta2 * v.clamp_min(0) + (1 - beta2) * g * g
        v_hat = v / (1 - beta2**t) if bias_correction else v
        u = g / (v_hat.sqrt() + eps)
        rms = u.norm() / u.numel() ** 0.5
        u = u / max(1.0, (rms / clip).item())
        m = beta1 * m + (1 - beta1) * u if beta1 > 0 else u
        m_hat = m / (1 - beta1**t) if bias_correction and beta1 > 0 else m
        w = w * (1 - lr * weight_decay) - lr * m_hat
    return w


@pytest.mark.parametrize(
    "shape, beta1, bias_correction, clip",
    [
        ((24, 40), 0.9, False, 1.0),
        ((24, 40), 0.0, False, 0.5),
        ((30, 4, 5), 0.9, True, 0.8),
        ((40, 24), 0.8, False, 1.0),
    ],
)
def test_full_rank_factorization_equals_the_dense_float64_reference(
    shape, beta1, bias_correction, clip
):
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    grads = [
        torch.randn(shape, generator=gen, dtype=torch.float64) * (1 + t % 3) for t in range(50)
    ]
    full = min(matrix_shape(shape))
    settings = dict(
        lr=1e-2,
        beta1=beta1,
        beta2=0.99,
        eps=1e-8,
        weight_decay=0.1,
        clip=clip,
        bias_correction=bias_correction,
    )
    param = torch.nn.Parameter(w0.clone())
    opt = Adapprox(
        [param],
        lr=1e-2,
        betas=(beta1, 0.99),
        eps=1e-8,
        weight_decay=0.1,
        clip_threshold=clip,
        k_max=full,
        k_min=full,
        sweeps=3,
        bias_correction=bias_correction,
        compressed=True,
    )
    for g in grads:
        param.grad = g.clone()
        opt.step()
    expected = reference_adapprox(w0, grads, **settings)
    assert opt.describe()[0].path == f"adapprox(k={full}/{full})"
    error = (param.detach() - expected).norm() / expected.norm()
    assert error < 1e-8


def test_a_tall_matrix_steps_as_its_transpose_with_the_orthonormal_factor_on_the_short_side():
    """A tall matrix is factorized as Vᵀ (the QRs run on its n rows): its trajectory is the
    transpose of the wide matrix's, with the roles of Q and U exchanged."""
    gen = torch.Generator().manual_seed(5)
    w0 = torch.randn(72, 40, generator=gen, dtype=torch.float64)
    grads = [torch.randn(72, 40, generator=gen, dtype=torch.float64) for _ in range(20)]
    tall, wide = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.T.clone())
    options = dict(lr=1e-2, weight_decay=0.1, k_max=8, sweeps=2, compressed=True, seed=3)
    opt_tall, opt_wide = Adapprox([tall], **options), Adapprox([wide], **options)
    for g in grads:
        tall.grad, wide.grad = g.clone(), g.T.clone()
        opt_tall.step()
        opt_wide.step()
    s_tall, s_wide = opt_tall.state[tall], opt_wide.state[wide]
    rank = int(s_tall["rank"])
    assert rank == int(s_wide["rank"])
    assert s_tall["Q"].shape == (72, 8) and s_tall["U"].shape == (40, 8)
    orthonormal = s_tall["U"][:, :rank]
    gram = orthonormal.T @ orthonormal
    assert (gram - torch.eye(rank, dtype=gram.dtype)).abs().max() < 1e-12
    assert torch.allclose(s_tall["U"][:, :rank], s_wide["Q"][:, :rank], rtol=0, atol=1e-9)
    assert torch.allclose(s_tall["Q"][:, :rank], s_wide["U"][:, :rank], rtol=1e-9, atol=1e-12)
    assert torch.allclose(tall.detach(), wide.detach().T, rtol=1e-10, atol=1e-12)
    assert not torch.equal(tall.detach(), w0)


def positive_rank_r(m, n, r, gen):
    """G = Σ u_i v_iᵀ with u_i on disjoint row blocks and positive entries: G² has rank r."""
    g = torch.zeros(m, n)
    for i, rows in enumerate(torch.arange(m).chunk(r)):
        g[rows] = (
            (torch.rand(len(rows), 1, generator=gen) + 0.5)
            * (torch.rand(1, n, generator=gen) + 0.5)
            * (i + 1)
        )
    return g


def ranks_over(opt, param, grads):
    seen = []
    for g in grads:
        param.grad = g
        opt.step()
        state = opt.state[param]
        seen.append((int(state["rank"]), int(state["next_rank"])))
    return seen


def test_step_strategy_moves_down_while_within_tol_and_up_otherwise():
    gen = torch.Generator().manual_seed(1)
    param = torch.nn.Parameter(torch.zeros(64, 48))
    opt = Adapprox([param], k_max=16, k_min=2, rank_step=3, betas=(0.9, 0.9), tol=1e-3)
    low = positive_rank_r(64, 48, 1, gen)
    down = ranks_over(opt, param, [low] * 7)
    # each step factorizes at the rank the last one chose; e <= tol on a rank-1 V: down by Δk
    assert down == [(16, 13), (13, 10), (10, 7), (7, 4), (4, 2), (2, 2), (2, 2)]
    up = ranks_over(opt, param, [torch.randn(64, 48, generator=gen) for _ in range(7)])
    assert up == [(2, 5), (5, 8), (8, 11), (11, 14), (14, 16), (16, 16), (16, 16)]


def test_prefix_strategy_keeps_the_smallest_prefix_within_tol():
    gen = torch.Generator().manual_seed(2)
    param = torch.nn.Parameter(torch.zeros(64, 48))
    opt = Adapprox(
        [param], k_max=16, k_min=1, rank_step=2, betas=(0.9, 0.9), rank_strategy="prefix"
    )
    low = positive_rank_r(64, 48, 3, gen)
    seen = ranks_over(opt, param, [low] * 3)
    assert [rank for rank, _ in seen] == [3, 3, 3]
    seen = ranks_over(opt, param, [torch.randn(64, 48, generator=gen) for _ in range(3)])
    assert all(rank == 16 for rank, _ in seen)
    assert all(1 <= nxt <= 16 for _, nxt in seen)


def test_rank_survives_a_checkpoint_and_the_run_continues_identically():
    gen = torch.Generator().manual_seed(3)
    low = positive_rank_r(64, 48, 1, gen)
    noise = [torch.randn(64, 48, generator=gen) for _ in range(3)]

    def build():
        param = torch.nn.Parameter(torch.ones(64, 48))
        return param, Adapprox([param], k_max=16, rank_step=4)

    param, opt = build()
    ranks_over(opt, param, [low] * 3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed_param, resumed = build()
    resumed_param.data.copy_(param.detach())
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert int(resumed.state[resumed_param]["rank"]) == 8
    assert resumed.describe()[0].path == "adapprox(k=8/16)"
    assert ranks_over(resumed, resumed_param, noise) == ranks_over(opt, param, noise)
    assert torch.equal(param, resumed_param)


def test_state_layout_bytes_and_paths():
    conv = torch.nn.Parameter(torch.randn(40, 8, 3, 3))
    wide = torch.nn.Parameter(torch.randn(48, 300).to(torch.bfloat16))
    small = torch.nn.Parameter(torch.randn(16, 16))
    bias = torch.nn.Parameter(torch.randn(40))
    params = [conv, wide, small, bias]
    opt = Adapprox(params, k_max=20)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    s = opt.state[conv]
    assert s["Q"].shape == (40, 20) and s["U"].shape == (72, 20)
    assert s["exp_avg"].shape == conv.shape
    w = opt.state[wide]
    assert w["Q"].dtype == w["U"].dtype == w["exp_avg"].dtype == torch.float32
    assert set(opt.state[small]) == {"step", "exp_avg", "exp_avg_sq"}
    paths = [r.path for r in opt.describe()]
    assert paths[2:] == ["dense", "dense"]
    assert all(p.startswith("adapprox(k=") and p.endswith("/20)") for p in paths[:2])
    factored = 4 * (20 * (40 + 72) + 40 * 72) + 4 * 8
    assert opt.describe()[0].state_bytes == factored


def test_first_moment_exists_only_while_beta1_is_positive():
    param = torch.nn.Parameter(torch.randn(48, 64))
    opt = Adapprox([param], k_max=8, betas=(0.0, 0.999))
    param.grad = torch.randn_like(param)
    opt.step()
    assert "exp_avg" not in opt.state[param]
    assert opt.describe()[0].state_bytes == 4 * 8 * (48 + 64) + 4 * 8
    opt.param_groups[0]["betas"] = (0.9, 0.999)
    opt.step()
    assert opt.state[param]["exp_avg"].shape == param.shape


@pytest.mark.parametrize(
    "shape, options, factored",
    [
        ((64, 64), {"k_max": 32}, False),
        ((64, 64), {"k_max": 31}, True),
        ((31, 500), {"k_max": 1}, False),
        ((31, 500), {"k_max": 1, "min_dim": 16}, True),
        ((8, 8), {"compressed": True}, True),
        ((512, 512), {"compressed": False}, False),
        ((64,), {"compressed": True}, False),
        ((40, 4, 4, 2), {"k_max": 4}, True),
        ((0, 64), {"compressed": True}, False),
    ],
)
def test_path_choice(shape, options, factored):
    group = {**Adapprox([torch.nn.Parameter(torch.zeros(1))]).defaults, **options}
    assert takes_factored_path(shape, group) is factored


def test_state_is_built_on_the_meta_device():
    param = torch.empty(96, 64, device="meta")
    opt = Adapprox([torch.nn.Parameter(torch.zeros(1))], k_max=16)
    state = opt._init_state(param, opt.param_groups[0], key=7)
    # integer bookkeeping lives in host memory whatever the parameter's device
    assert all(
        v.device.type == ("cpu" if k in opt._host_state_keys else "meta") for k, v in state.items()
    )
    assert state["Q"].shape == (96, 16) and state["U"].shape == (64, 16)
    assert state["Q"].dtype == torch.float32 and state["rank"].dtype == torch.int64


def test_workspace_is_shared_and_stays_out_of_the_checkpoint():
    params = [torch.nn.Parameter(torch.randn(s)) for s in ((48, 64), (96, 80), (40, 40))]
    opt = Adapprox(params, k_max=8)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    (buffer,) = opt._scratch_buffers.values()
    assert buffer.numel() == 96 * 80
    opt.step()
    assert next(iter(opt._scratch_buffers.values())) is buffer
    factored = {"step", "key", "rank", "next_rank", "Q", "U", "exp_avg"}
    assert all(set(st) == factored for st in opt.state_dict()["state"].values())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"k_min": 9, "k_max": 8}, "k_min"),
        ({"tol": 0.0}, "tol"),
        ({"tol": -1e-3}, "tol"),
        ({"tol": 1.5}, "tol"),
        ({"sweeps": 0}, "sweeps"),
        ({"clip_threshold": 0.0}, "clip"),
        ({"clip_threshold": -1.0}, "clip"),
        ({"rank_strategy": "greedy"}, "rank_strategy"),
        ({"precision": "bfloat16"}, "precision"),
        ({"k_init": 300}, "k_init"),
        ({"k_init": 0}, "k_init"),
        ({"k_max": 0}, "k_max"),
        ({"oversample": -1}, "oversample"),
        ({"rank_step": 0}, "rank_step"),
        ({"min_dim": 0}, "min_dim"),
    ],
)
def test_bad_options_are_refused_with_their_name(options, message):
    with pytest.raises(ValueError, match=message):
        Adapprox([torch.nn.Parameter(torch.zeros(4, 4))], **options)
    opt = Adapprox([torch.nn.Parameter(torch.zeros(4, 4))])
    with pytest.raises(ValueError, match=message):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(4))], **options})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"compressed": "yes"}, "compressed"),
        ({"bias_correction": 1}, "bias_correction"),
        ({"sweeps": 2.0}, "sweeps"),
        ({"k_max": True}, "k_max"),
    ],
)
def test_options_of_the_wrong_type_are_refused(options, message):
    with pytest.raises(TypeError, match=message):
        Adapprox([torch.nn.Parameter(torch.zeros(4, 4))], **options)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixed_precision_applies_to_float32_state_only(bfloat16_products, dtype):
    param = torch.nn.Parameter(torch.randn(96, 64, dtype=dtype))
    opt = Adapprox([param], k_max=8, sweeps=3, precision="mixed")
    for _ in range(2):
        param.grad = torch.randn_like(param)
        opt.step()
    assert torch.isfinite(param).all()
    expected = 2 * 2 * 2 if dtype == torch.float32 else 0  # 2 products × 2 of 3 sweeps × 2 steps
    assert len(bfloat16_products) == expected


def test_mix_pass_returns_the_squared_norm_srsi_needs():
    from optimizers import _adapprox_kernels

    gen = torch.Generator().manual_seed(3)
    v = torch.randn(5000, generator=gen)  # negative entries: the clamp must act
    g = torch.randn(5000, generator=gen)
    beta2 = 0.999
    expected = v.clamp_min(0) * torch.tensor(beta2) + torch.tensor(1 - beta2) * g * g
    total = _adapprox_kernels.mix_second_moment(
        v.numpy(), g.numpy(), v.numpy().dtype.type(beta2), v.numpy().dtype.type(1 - beta2)
    )
    torch.testing.assert_close(v, expected, rtol=1e-6, atol=0)
    assert total == pytest.approx(float((v.double() ** 2).sum()), rel=1e-12)


def test_peak_magnitude_sees_nan_inf_and_empty_tensors():
    from optimizers.adapprox import peak_magnitude

    assert peak_magnitude(torch.tensor([-3.0, 2.0])) == 3.0
    assert peak_magnitude(torch.empty(0)) == 0.0
    assert peak_magnitude(torch.tensor([1.0, -float("inf")])) == float("inf")
    nan = peak_magnitude(torch.tensor([1.0, float("nan"), 2.0]))
    assert nan != nan


def test_finite_check_and_overflow_guard_read_the_gradient_once(monkeypatch):
    weight = torch.nn.Parameter(torch.randn(48, 64))
    opt = Adapprox([weight], k_max=4)
    weight.grad = torch.randn(48, 64)
    opt.step()
    seen = []
    original = torch.aminmax

    def counting(t, *args, **kwargs):
        seen.append(t.numel())
        return original(t, *args, **kwargs)

    monkeypatch.setattr(torch, "aminmax", counting)
    opt.step()
    assert seen.count(weight.numel()) == 1
    weight.grad[3, 5] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        opt.step()
