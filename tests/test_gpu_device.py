"""Real-device tests (marker `gpu`): skipped unless a CUDA device and CuPy are present.

bench/gpu_check.py runs them with `pytest -m gpu`. Each optimizer's CUDA step is compared with its
CPU step on the same inputs (three steps, gradients drawn on the host). Stated tolerances:
- Adapprox at full rank (k_max = min(m, n): the factorization is exact) and LDAdam: float32
  rounding of different BLAS/LAPACK and reduction orders, weights within rtol 1e-4, atol 1e-6
  (LDAdam's 4-bit error feedback: atol 1e-4 = 0.1·lr, a code may round the other way);
- MicroAdam: the CUDA kernels compute as the CPU kernels, but the window sums run in another
  (atomic) order and the compiler may contract a multiply-add; a rounding difference can flip a
  near-tie of the top-k or a 4-bit code, which moves that coordinate by at most about lr. So:
  at least 99% of weights within 1e-6 of the CPU's, all within 3·lr; at least 99% of window
  indices and error codes equal.
Beyond parity: steps under torch.cuda.set_sync_debug_mode("error") (the one per-step transfer,
`_base.read_host`, allowed explicitly), inside a non-default stream (same result as the default
stream), scratch that does not grow after the first steps, and compress / randla on CuPy arrays
against their numpy results.
"""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest
import torch

from bench.gpu_check import sync_debug_errors
from optimizers import Adapprox, LDAdam, MicroAdam

HAS_GPU = torch.cuda.is_available() and importlib.util.find_spec("cupy") is not None
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and CuPy"),
]

LR = 1e-3
SHAPES = [(64, 96), (96,), (48, 64), (300,)]
OPTIMIZERS = {
    "microadam": lambda p: MicroAdam(
        p, lr=LR, weight_decay=0.1, window=3, density=0.1, block_size=256, quant_bucket=64
    ),
    "microadam float32 values, no error feedback": lambda p: MicroAdam(
        p,
        lr=LR,
        window=3,
        density=0.1,
        block_size=256,
        values_dtype="float32",
        error_feedback="none",
    ),
    "ldadam dense": lambda p: LDAdam(p, lr=LR, weight_decay=0.1, rank=4, min_dim=8),
    "ldadam q4": lambda p: LDAdam(p, lr=LR, rank=4, min_dim=8, error_feedback="q4"),
    # k_min = k_max: the rank stays full (capped at min(m, n)), so the factorization is exact
    # whatever random draws CuPy and numpy make
    "adapprox": lambda p: Adapprox(p, lr=LR, k_max=64, k_min=64, min_dim=8),
    "adapprox beta1=0": lambda p: Adapprox(
        p, lr=LR, betas=(0.0, 0.999), k_max=64, k_min=64, min_dim=8
    ),
}
SYNC_CASES = sorted(OPTIMIZERS)


def run(make, device, *, steps: int = 3, stream: torch.cuda.Stream | None = None):
    """Parameters and optimizer after `steps` steps on `device` from fixed starts and gradients."""
    generator = torch.Generator().manual_seed(0)
    starts = [torch.randn(shape, generator=generator) for shape in SHAPES]
    params = [torch.nn.Parameter(start.to(device)) for start in starts]
    if device == "cuda":
        torch.cuda.synchronize()  # made on the default stream: ready before a side stream reads
    opt = make(params)
    context = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
    with context:
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator).to(device)
            opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return params, opt


def assert_host_bookkeeping(opt):
    for state in opt.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and key in opt._host_state_keys:
                assert value.device.type == "cpu", key


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_cuda_step_matches_the_cpu_step(name):
    cpu_params, cpu = run(OPTIMIZERS[name], "cpu")
    gpu_params, gpu = run(OPTIMIZERS[name], "cuda")
    assert_host_bookkeeping(gpu)
    for a, b in zip(cpu_params, gpu_params, strict=True):
        moved = b.detach().cpu()
        if name.startswith("microadam"):
            difference = (a.detach() - moved).abs()
            assert float((difference <= 1e-6).float().mean()) >= 0.99
            assert float(difference.max()) <= 3 * LR
        else:
            atol = 1e-4 if "q4" in name else 1e-6  # a 4-bit code may round the other way
            torch.testing.assert_close(moved, a.detach(), rtol=1e-4, atol=atol)
        for key, value in cpu.state[a].items():
            other = gpu.state[b][key]
            if not torch.is_tensor(value):
                assert value == other, key
            elif key in ("window_indices", "error_codes"):
                assert float((value == other.cpu()).float().mean()) >= 0.99, key
            elif key in cpu._host_state_keys:
                assert torch.equal(value, other), key


@pytest.mark.parametrize("name", SYNC_CASES)
def test_steps_make_no_hidden_synchronization(name):
    """torch's syncs only: CuPy's (randla's rank control reads its errors) are not seen here;
    bench/gpu_check.py reports whether the GPU is still busy when a step returns."""
    params, opt = run(OPTIMIZERS[name], "cuda", steps=1)  # kernels compiled, state created
    generator = torch.Generator(device="cuda").manual_seed(2)
    grads = [torch.randn(p.shape, generator=generator, device="cuda") for p in params]
    with sync_debug_errors():
        for _ in range(2):
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
    torch.cuda.synchronize()
    assert all(bool(torch.isfinite(p).all()) for p in params)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_non_default_stream_gives_the_default_streams_result(name):
    reference, _ = run(OPTIMIZERS[name], "cuda")
    side, _ = run(OPTIMIZERS[name], "cuda", stream=torch.cuda.Stream())
    for a, b in zip(reference, side, strict=True):
        # equal up to the rounding of atomics and of library reductions
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_microadam_scratch_is_reused_across_steps():
    from compress import _gpu

    params, opt = run(OPTIMIZERS["microadam"], "cuda", steps=2)
    sizes = {key: buffer.size for key, buffer in _gpu._scratch_buffers.items()}
    tables = len(_gpu._weight_tables)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    assert {key: buffer.size for key, buffer in _gpu._scratch_buffers.items()} == sizes
    assert len(_gpu._weight_tables) <= tables + 1  # one upload per step, not per parameter


def test_compress_kernels_on_cupy_match_numpy():
    import cupy

    import compress

    rng = np.random.default_rng(0)
    x = rng.standard_normal(5000).astype(np.float32)
    host = compress.quantize(x, bits=4, bucket=64, bounds_dtype="bfloat16")
    device = compress.quantize(cupy.asarray(x), bits=4, bucket=64, bounds_dtype="bfloat16")
    agree = float((cupy.asnumpy(device.codes) == host.codes).mean())
    assert agree >= 0.99  # a contracted multiply-add may move a code at a rounding boundary
    np.testing.assert_array_equal(cupy.asnumpy(device.lo), host.lo)
    np.testing.assert_allclose(
        cupy.asnumpy(compress.dequantize(device)), compress.dequantize(host), atol=0.2
    )
    top_host = compress.topk_blocks(x, density=0.05, block_size=1024)
    top_device = compress.topk_blocks(cupy.asarray(x), density=0.05, block_size=1024)
    np.testing.assert_array_equal(cupy.asnumpy(top_device.indices), top_host.indices)
    np.testing.assert_array_equal(cupy.asnumpy(top_device.values), top_host.values)


def test_randla_on_cupy_matches_numpy():
    import cupy

    import randla

    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((300, 8)))
    v, _ = np.linalg.qr(rng.standard_normal((200, 8)))
    s = np.geomspace(10.0, 1.0, 8)
    a = (u * s) @ v.T  # rank 8: the randomized SVD is exact up to rounding
    _, s_host, _ = randla.rsvd(a, 8, rng=0)
    _, s_device, _ = randla.rsvd(cupy.asarray(a), 8, rng=0)
    np.testing.assert_allclose(cupy.asnumpy(s_device), s_host, rtol=1e-8)
    np.testing.assert_allclose(s_host, s, rtol=1e-8)
