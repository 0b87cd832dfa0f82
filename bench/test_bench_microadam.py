"""MicroAdam against torch's fused AdamW on a GPT-2-small-shaped parameter set: state and step time.

Run: pytest bench/test_bench_microadam.py --benchmark-only --benchmark-min-rounds=3
(SMALLSTATE_BENCH_BLOCKS=4 for the smaller set). Both optimizers see the same parameters and the
same gradients every round; each is warmed up by one step so its state exists. extra_info records
state bytes per parameter, the step's bytes moved and the fraction of the triad bandwidth that
represents: of the run's ceiling and of a triad measured right after the step's rounds.
"""

from __future__ import annotations

import os

import numba
import pytest
import torch
from threadpoolctl import threadpool_limits

from bench.param_sets import count, transformer_params
from bench.triad import triad_bandwidth_now
from optimizers import MicroAdam

BLOCKS = int(os.environ.get("SMALLSTATE_BENCH_BLOCKS", "12"))
WEIGHT_DECAY = 0.01  # AdamW's default; MicroAdam then pays its decay pass too
_medians: dict[str, float] = {}  # step medians of this run, for the ratio to AdamW


def adamw_bytes_moved(n: int) -> int:
    """Fused AdamW on float32: read param, grad, m, v; write param, m, v."""
    return 28 * n


def microadam_bytes_moved(n: int, opt: MicroAdam) -> int:
    """Floor of MicroAdam's traffic per step on float32 parameters (defaults, weight decay on).

    The base class's finite check reads the gradient (4 B), the fused compression pass reads the
    gradient (4 B) and reads and writes the 4-bit error (1 B), the decay reads and writes the
    parameter (8 B); the window update touches the ring (m·k entries of 4 B) and 2·m·k random
    parameter elements (one cache line each at worst, counted as 8 B).
    """
    ring = sum(s["window_values"].numel() for s in opt.state.values())
    return 17 * n + 4 * ring + 8 * ring


@pytest.fixture(scope="module")
def params():
    torch.set_num_threads(2)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    return transformer_params(blocks=BLOCKS)


def _timed_step(benchmark, opt, ceilings, bytes_moved):
    with threadpool_limits(2):
        opt.step()  # warm-up: state exists, kernels compiled
        benchmark.pedantic(opt.step, rounds=5, warmup_rounds=1)
    seconds = benchmark.stats.stats.median
    _medians[type(opt).__name__] = seconds
    alongside = triad_bandwidth_now()
    benchmark.extra_info.update(
        step_gbs=bytes_moved / seconds / 1e9,
        fraction_of_triad=bytes_moved / seconds / 1e9 / ceilings.bandwidth_gbs,
        triad_alongside_gbs=alongside,
        fraction_of_triad_alongside=bytes_moved / seconds / 1e9 / alongside,
    )


@pytest.mark.benchmark(group="microadam-step")
def test_fused_adamw_step(benchmark, params, ceilings):
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=WEIGHT_DECAY, fused=True)
    n = count(params)
    _timed_step(benchmark, opt, ceilings, adamw_bytes_moved(n))
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    benchmark.extra_info.update(parameters=n, state_bytes_per_param=state / n)


@pytest.mark.benchmark(group="microadam-step")
def test_microadam_step(benchmark, params, ceilings):
    opt = MicroAdam(params, lr=1e-3, weight_decay=WEIGHT_DECAY)
    n = count(params)
    opt.step()
    _timed_step(benchmark, opt, ceilings, microadam_bytes_moved(n, opt))
    benchmark.extra_info.update(parameters=n, state_bytes_per_param=opt.state_nbytes() / n)
    if "AdamW" in _medians:
        benchmark.extra_info["step_time_vs_fused_adamw"] = _medians["MicroAdam"] / _medians["AdamW"]
    assert opt.state_nbytes() / n < 1.0
