"""Adapprox at k_max ∈ {1, 16, 64} against Adafactor, CAME and fused AdamW: step time and state.

Run: pytest bench/test_bench_adapprox.py --benchmark-only --benchmark-min-rounds=3
(SMALLSTATE_BENCH_BLOCKS sets the number of transformer blocks of width 768; default 2 here,
because an Adapprox step at k_max = 64 on all 12 blocks takes many seconds on a shared 2-core
machine; SMALLSTATE_BENCH_THREADS the thread count of torch, Numba and BLAS, as for the
ceilings). Every optimizer sees the same parameters and gradients every round and is warmed up by
one step so its state exists. With Gaussian gradients no rank meets the tolerance, so Adapprox
stays at k_max: the timings are those of its largest rank.

extra_info of an Adapprox run: state bytes per parameter, the step's floor and the ratio of the
median step to it. The floor is the S-RSI products' flops (rebuilding V at the previous rank,
then `sweeps` pairs of products with k + oversample columns) at the measured GEMM rate plus the
bytes of the elementwise passes a fused step cannot avoid, at the measured triad bandwidth; a
second, roofline floor charges each thin product at least one read of V at that bandwidth.
With ``precision="mixed"`` the products of all sweeps but the last are charged at the measured
bfloat16 GEMM rate instead (and a read of V in bfloat16, 2 bytes per element, in the roofline).
"""

from __future__ import annotations

import importlib.util
import os

import numba
import pytest
import torch
from threadpoolctl import threadpool_limits

from bench.param_sets import count, transformer_params
from optimizers import Adapprox

BLOCKS = int(os.environ.get("SMALLSTATE_BENCH_BLOCKS", "2"))
#: The thread count bench/conftest.py measures the ceilings with (torch, Numba and BLAS pools).
THREADS = int(os.environ.get("SMALLSTATE_BENCH_THREADS", os.cpu_count() or 1))
WEIGHT_DECAY = 0.01
SWEEPS, OVERSAMPLE = 5, 5
#: Unavoidable float32 traffic per element of a factored matrix: the base class's finite check
#: reads G (4 B); building V reads G and writes V (8 B); Û reads G and V and writes Û (12 B);
#: the moment and parameter update reads Û, M, W and writes M, W (20 B).
FACTORED_BYTES = 44
#: The dense AdamW path: finite check (4 B) + read param, grad, m, v and write param, m, v (28 B).
DENSE_BYTES = 32
_medians: dict[str, float] = {}


def adapprox_floor(opt: Adapprox, ceilings, mixed: bool = False) -> tuple[float, float]:
    """(floor, roofline floor) in seconds for one step at the ranks the state now holds."""
    product_s = elementwise_bytes = roofline = 0.0
    rate, bandwidth = ceilings.gemm_gflops * 1e9, ceilings.bandwidth_gbs * 1e9
    low_rate = ceilings.bfloat16_gemm_gflops * 1e9
    low_products = 2 * (SWEEPS - 1) if mixed else 0
    for param, state in opt.state.items():
        if "Q" not in state:
            elementwise_bytes += DENSE_BYTES * param.numel()
            continue
        m, n = state["Q"].shape[0], state["U"].shape[0]
        rank = int(state["rank"])
        columns = min(int(state["next_rank"]) + OVERSAMPLE, m, n)
        sweep_flops = 2 * m * n * columns
        # (flops, rate, bytes of V read): the rebuild, bfloat16 sweeps, float32 sweeps
        products = [(2 * m * n * rank, rate, 4 * m * n)]
        products += [(sweep_flops, low_rate, 2 * m * n)] * low_products
        products += [(sweep_flops, rate, 4 * m * n)] * (2 * SWEEPS - low_products)
        product_s += sum(f / r for f, r, _ in products)
        elementwise_bytes += FACTORED_BYTES * m * n
        roofline += sum(max(f / r, b / bandwidth) for f, r, b in products)
    dense_s = elementwise_bytes / bandwidth
    return product_s + dense_s, roofline + dense_s


@pytest.fixture(scope="module")
def params():
    torch.set_num_threads(THREADS)
    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    return transformer_params(blocks=BLOCKS)


def _timed_step(benchmark, name: str, opt, n: int, state_bytes: int) -> float:
    with threadpool_limits(THREADS):
        opt.step()
        benchmark.pedantic(opt.step, rounds=3, warmup_rounds=1)
    seconds = benchmark.stats.stats.median
    _medians[name] = seconds
    benchmark.extra_info.update(blocks=BLOCKS, parameters=n, state_bytes_per_param=state_bytes / n)
    if "adamw" in _medians and name != "adamw":
        benchmark.extra_info["step_time_vs_fused_adamw"] = seconds / _medians["adamw"]
    return seconds


def _torch_state_bytes(opt) -> int:
    return sum(
        t.numel() * t.element_size()
        for s in opt.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    )


@pytest.mark.benchmark(group="adapprox-step")
def test_fused_adamw_step(benchmark, params):
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=WEIGHT_DECAY, fused=True)
    opt.step()
    _timed_step(benchmark, "adamw", opt, count(params), _torch_state_bytes(opt))


@pytest.mark.benchmark(group="adapprox-step")
def test_adafactor_step(benchmark, params):
    opt = torch.optim.Adafactor(params, lr=1e-2, weight_decay=WEIGHT_DECAY)
    opt.step()
    _timed_step(benchmark, "adafactor", opt, count(params), _torch_state_bytes(opt))


@pytest.mark.benchmark(group="adapprox-step")
def test_came_step(benchmark, params):
    if importlib.util.find_spec("came_pytorch") is None:
        pytest.skip("came_pytorch is not installed (pip install came-pytorch)")
    from came_pytorch import CAME

    opt = CAME(params, lr=2e-4, weight_decay=WEIGHT_DECAY)
    opt.step()
    _timed_step(benchmark, "came", opt, count(params), _torch_state_bytes(opt))


@pytest.mark.benchmark(group="adapprox-step")
@pytest.mark.parametrize("precision", ["full", "mixed"])
@pytest.mark.parametrize("k_max", [1, 16, 64])
def test_adapprox_step(benchmark, params, ceilings, k_max, precision):
    opt = Adapprox(
        params,
        lr=1e-3,
        weight_decay=WEIGHT_DECAY,
        k_max=k_max,
        sweeps=SWEEPS,
        oversample=OVERSAMPLE,
        precision=precision,
    )
    opt.step()
    n = count(params)
    floor, roofline = adapprox_floor(opt, ceilings, mixed=precision == "mixed")
    name = f"adapprox-k{k_max}" + ("-mixed" if precision == "mixed" else "")
    seconds = _timed_step(benchmark, name, opt, n, opt.state_nbytes())
    benchmark.extra_info.update(
        floor_s=floor,
        roofline_floor_s=roofline,
        time_over_floor=seconds / floor,
        time_over_roofline_floor=seconds / roofline,
        paths=sorted({r.path for r in opt.describe()}),
    )
    assert opt.state_nbytes() / n < 8.0
