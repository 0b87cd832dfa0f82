"""A step reads device values on the host a fixed number of times, not once per parameter.

On CUDA every host read of a tensor value (`.item()`, `float(t)`, `bool(t)`, `int(t)`,
`.tolist()`) waits for the GPU. These tests count such reads during `step()` on CPU tensors, where
the same Python code runs: `aten._local_scalar_dense` calls (what `.item()`, `float`, `int` and
`bool` of a tensor dispatch to) seen by a TorchDispatchMode, plus `Tensor.tolist` calls. Reads of
the integer bookkeeping kept in host memory (`_host_state_keys`: step, cursor, rank, ...) cost no
wait and are not counted; every other read is, whatever its dtype. The count must be the same for
one and for several parameters, and at most `MAX_READS` per step (the step's one transfer, plus
one more only when a gradient's finite witness is not finite).

"Device paths" runs the branches CUDA tensors take (the torch passes instead of the CPU-only
Numba loops) on CPU tensors. What runs in
CuPy arrays (compress's kernels, randla's factorizations) is outside torch and not seen here;
docs/gpu.md lists those reads.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from optimizers import Adapprox, LDAdam, MicroAdam, _ldadam_step, adapprox

MAX_READS = 2
STEPS = 2

OPTIMIZERS = {
    "microadam q4": lambda p: MicroAdam(p, window=3, density=0.1, block_size=64, quant_bucket=32),
    "microadam no error feedback": lambda p: MicroAdam(
        p, window=3, density=0.1, block_size=64, quant_bucket=32, error_feedback="none"
    ),
    "ldadam dense error": lambda p: LDAdam(p, rank=2, min_dim=4),
    "ldadam q4 error": lambda p: LDAdam(p, rank=2, min_dim=4, error_feedback="q4"),
    "ldadam no error feedback": lambda p: LDAdam(p, rank=2, min_dim=4, error_feedback="none"),
    "adapprox": lambda p: Adapprox(p, k_max=4, min_dim=4),
    "adapprox beta1=0, bias correction": lambda p: Adapprox(
        p, betas=(0.0, 0.999), k_max=4, min_dim=4, bias_correction=True
    ),
}


class CountHostReads(TorchDispatchMode):
    """Records every tensor whose value is read on the host inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.read.append(args[0])
        return func(*args, **(kwargs or {}))


def make_params(pairs: int, dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    """`pairs` × (a 16×40 matrix, a 40-vector): the compressed path and the dense one."""
    generator = torch.Generator().manual_seed(0)
    params = []
    for _ in range(pairs):
        params.append(torch.nn.Parameter(torch.randn(16, 40, generator=generator).to(dtype)))
        params.append(torch.nn.Parameter(torch.randn(40, generator=generator).to(dtype)))
    return params


def reads_per_step(make, pairs: int, monkeypatch, *, nan_in=None) -> list[int]:
    """Counted host reads of each of STEPS steps (`nan_in`: index of a parameter whose gradient
    holds a NaN at every step)."""
    params = make_params(pairs)
    opt = make(params)
    generator = torch.Generator().manual_seed(1)
    original_tolist = torch.Tensor.tolist
    counts = []
    for _ in range(STEPS):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        if nan_in is not None:
            params[nan_in].grad[0] = float("nan")
        listed: list[torch.Tensor] = []

        def tolist(tensor, _listed=listed):
            _listed.append(tensor)
            return original_tolist(tensor)

        monkeypatch.setattr(torch.Tensor, "tolist", tolist)
        mode = CountHostReads()
        with mode:
            opt.step()
        monkeypatch.setattr(torch.Tensor, "tolist", original_tolist)
        host_kept = [
            value
            for state in opt.state.values()
            for key, value in state.items()
            if key in opt._host_state_keys
        ]
        device_reads = [t for t in mode.read if not any(t is kept for kept in host_kept)]
        counts.append(len(device_reads) + len(listed))
    return counts


def device_paths(monkeypatch) -> None:
    """Make CPU tensors take the code CUDA tensors take."""
    monkeypatch.setattr(_ldadam_step, "fused_moments", lambda *args: False)
    monkeypatch.setattr(adapprox, "_fused_passes", lambda *args: None)


CASES = [(name, "cpu paths") for name in sorted(OPTIMIZERS)] + [
    (name, "device paths") for name in sorted(OPTIMIZERS)
]


@pytest.mark.parametrize(("name", "paths"), CASES)
def test_host_reads_per_step_do_not_grow_with_the_number_of_parameters(name, paths, monkeypatch):
    if paths == "device paths":
        device_paths(monkeypatch)
    one = reads_per_step(OPTIMIZERS[name], 1, monkeypatch)
    many = reads_per_step(OPTIMIZERS[name], 3, monkeypatch)
    assert one == many, (one, many)
    assert max(many) <= MAX_READS, many
    assert min(many) >= 1  # the finite check's transfer is seen: the counter works


@pytest.mark.parametrize("name", ["microadam q4", "ldadam dense error", "adapprox"])
def test_a_skipped_non_finite_gradient_costs_one_more_read_not_one_per_parameter(name, monkeypatch):
    def make(params):
        opt = OPTIMIZERS[name](params)
        for group in opt.param_groups:
            group["nonfinite"] = "skip"
        return opt

    one = reads_per_step(make, 1, monkeypatch, nan_in=0)
    many = reads_per_step(make, 3, monkeypatch, nan_in=0)
    assert one == many == [MAX_READS] * STEPS, (one, many)


def test_the_counter_sees_a_read_per_parameter(monkeypatch):
    """The method's own check: a step that reads each gradient's sum is counted per parameter."""

    def make(params):
        opt = OPTIMIZERS["microadam q4"](params)
        original = opt._update

        def reading_update(param, grad, state, group):
            float(grad.sum())
            original(param, grad, state, group)

        opt._update = reading_update
        return opt

    assert reads_per_step(make, 1, monkeypatch)[-1] < reads_per_step(make, 3, monkeypatch)[-1]


def test_read_host_returns_each_items_values_in_one_read(monkeypatch):
    from optimizers._base import read_host

    items = [
        (torch.tensor(1.5), torch.tensor(-2.0, dtype=torch.float64)),
        torch.tensor([3.0, float("inf")]),
        (),
        (torch.tensor(True),),
    ]
    mode = CountHostReads()
    listed = []
    original = torch.Tensor.tolist

    def tolist(tensor):
        listed.append(tensor)
        return original(tensor)

    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    with mode:
        values = read_host(items)
    assert values == [[1.5, -2.0], [3.0, float("inf")], [], [1.0]]
    assert len(listed) == 1 and not mode.read
    assert read_host([]) == []


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_step_runs_no_compress_check_that_reads_values(name, monkeypatch):
    """compress's checks of array values (finite inputs, ordered quantization bounds) read the
    data on the host: with CuPy arrays a wait per parameter. A step has screened its gradients
    and writes or loads-and-checks its own stores, so it runs none of them."""
    from compress import _validate

    called = []
    for check in ("finite", "ordered_bounds"):
        original = getattr(_validate, check)

        def record(*args, _check=check, _original=original, **kwargs):
            called.append(_check)
            return _original(*args, **kwargs)

        monkeypatch.setattr(_validate, check, record)
    reads_per_step(OPTIMIZERS[name], 2, monkeypatch)
    assert called == []
