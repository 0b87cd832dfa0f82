"""MicroAdam against torch's fused AdamW on a GPT-2-small-shaped parameter set: state and step time.

Run: pytest bench/test_bench_microadam.py --benchmark-only --benchmark-min-rounds=3
(SMALLSTATE_BENCH_BLOCKS=4 for the smaller set). Both optimizers see the same parameters and the
same gradients every round; each is warmed up by one step so its state exists. extra_info records
state bytes per parameter, the step's bytes moved and the fraction of the triad bandwidth that
represents: of the run's ceiling and of a triad measured right after the step's rounds.

Where MicroAdam's step time goes: `test_microadam_step_breakdown` runs the step's three passes
in the step's order (the base class's finite check of every gradient, then per parameter the
fused error feedback / top-k / requantize pass and the window update with the decay pass; torch
and Numba keep separate thread pools, and alternating them per parameter would cost extra) and
reports each pass's median time, the fraction of the triad bandwidth its bytes represent, and
the time outside the three (Python, state views and per-parameter calls). The machine's memory
speed drifts within a run, so compare the passes with each other rather than with the step's
own benchmark. A pass far below the bandwidth is compute-bound: moving fewer bytes would not
make it faster.
"""

from __future__ import annotations

import os
import time

import numba
import pytest
import torch
from threadpoolctl import threadpool_limits

from bench.param_sets import count, transformer_params
from bench.triad import triad_bandwidth_now
from compress.fused import unchecked_select_into_window
from compress.window import unchecked_window_adam_apply
from optimizers import MicroAdam
from optimizers._views import array_view
from optimizers.microadam import core_state

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


def _timed_parts(opt: MicroAdam, totals: dict[str, list[float]]) -> None:
    """The step's three passes in the step's order, with the seconds of each appended to
    `totals`: the base class's finite check of every gradient first (as `step` does), then per
    parameter the fused error feedback / top-k / requantize pass and the window's Adam update
    with the decay pass (the step count held at 20)."""
    spent = dict.fromkeys(_PARTS, 0.0)
    start = time.perf_counter()
    for group in opt.param_groups:
        for param in group["params"]:
            opt._usable_grad(param, group)
    spent["finite check"] = time.perf_counter() - start
    for group in opt.param_groups:
        decay = 1.0 - group["lr"] * group["weight_decay"]
        for param in group["params"]:
            start = time.perf_counter()
            error, window = core_state(opt.state[param], group, param.numel())
            unchecked_select_into_window(
                array_view(param.grad.view(-1)),
                error,
                window,
                density=group["density"],
                scale=1.0,
            )
            compressed = time.perf_counter()
            unchecked_window_adam_apply(
                window,
                20,
                beta1=0.9,
                beta2=0.999,
                eps=1e-8,
                lr=group["lr"],
                param=array_view(param.detach().view(-1)),
                decay=decay,
            )
            spent["compress"] += compressed - start
            spent["window"] += time.perf_counter() - compressed
    for name, seconds in spent.items():
        totals[name].append(seconds)


#: Bytes each pass must move per parameter (float32, defaults; see `microadam_bytes_moved`);
#: the window's 12 bytes per ring entry are added below.
_PARTS = {"finite check": 4, "compress": 5, "window": 8}


@pytest.mark.benchmark(group="microadam-step")
def test_microadam_step_breakdown(benchmark, params, ceilings):
    """Where the step's time goes: the median time of each pass over all parameters (extra_info),
    the fraction of the triad bandwidth each pass's bytes represent, and the time outside them."""
    opt = MicroAdam(params, lr=1e-3, weight_decay=WEIGHT_DECAY)
    n = count(params)
    totals: dict[str, list[float]] = {name: [] for name in _PARTS}
    with threadpool_limits(2):
        opt.step()
        ring = sum(s["window_values"].numel() for s in opt.state.values())
        benchmark.pedantic(_timed_parts, args=(opt, totals), rounds=5, warmup_rounds=1)
    for name, per_param in _PARTS.items():
        rounds = totals[name][1:] or totals[name]  # the warm-up round dropped, if any
        seconds = sorted(rounds)[len(rounds) // 2]
        moved = per_param * n + (12 * ring if name == "window" else 0)
        key = name.replace(" ", "_")
        benchmark.extra_info[f"{key}_ms"] = seconds * 1e3
        benchmark.extra_info[f"{key}_fraction_of_triad"] = (
            moved / seconds / 1e9 / ceilings.bandwidth_gbs
        )
    passes = sum(benchmark.extra_info[f"{name.replace(' ', '_')}_ms"] for name in _PARTS)
    benchmark.extra_info["outside_passes_ms"] = benchmark.stats.stats.median * 1e3 - passes
