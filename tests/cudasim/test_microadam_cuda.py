"""MicroAdam's step on the CUDA kernels (under the simulator) against the same step on the CPU.

There is no CuPy under the simulator, so the GPU path is exercised by pointing compress's kernel
choice for numpy arrays at the numba.cuda kernel set (which the simulator runs on host arrays):
the optimizer, its state handling and the functional step are the code a CUDA tensor runs.
Gradients are fixed per step (not taken from the model) so that both runs see identical inputs.
"""

import pytest
import torch

from compress import _backend, _gpu
from optimizers import MicroAdam

STEPS = 3


def tiny_params(dtype):
    torch.manual_seed(0)
    shapes = [(16, 24), (24,), (3, 16), (3,)]
    return [torch.nn.Parameter(torch.randn(shape).to(dtype)) for shape in shapes]


def run(params, maximize):
    opt = MicroAdam(
        params,
        lr=1e-2,
        weight_decay=0.1,
        window=3,
        density=0.1,
        block_size=128,
        quant_bucket=32,
        maximize=maximize,
    )
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)
        opt.step()
    return opt


@pytest.mark.parametrize(("dtype", "maximize"), [(torch.float32, False), (torch.bfloat16, True)])
def test_microadam_on_cuda_kernels_matches_the_cpu_kernels(monkeypatch, dtype, maximize):
    cpu_params = tiny_params(dtype)
    cpu = run(cpu_params, maximize)
    monkeypatch.setitem(_backend._KERNELS, "cpu", _gpu.kernel_set())
    gpu_params = tiny_params(dtype)
    gpu = run(gpu_params, maximize)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2
    for a, b, start in zip(cpu_params, gpu_params, tiny_params(dtype), strict=True):
        assert not torch.equal(a, start)
        # window statistics are summed with atomics in another order: equal to rounding
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)
        for key, value in cpu.state[a].items():
            assert torch.equal(value, gpu.state[b][key]), key
