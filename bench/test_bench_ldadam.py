"""LDAdam at ranks 16 and 64 against fused AdamW, GaLore's AdamW and the reference LDAdamW.

Run: pytest bench/test_bench_ldadam.py --benchmark-only
(SMALLSTATE_BENCH_BLOCKS sets the number of transformer blocks of width 768; default 2 here, to
keep a run short on a shared 2-core machine. SMALLSTATE_LDADAM_REF points at a checkout of
IST-DASLab/LDAdam to time its LDAdamW too; skipped otherwise. GaLore needs `pip install
galore-torch`; skipped otherwise.)

Every optimizer sees the same parameters and gradients every round and is warmed up by one step,
so its state exists and the first-step SVDs are out of the way. GaLore recomputes its projector
by a full SVD only every `update_proj_gap` = 200 steps: "galore" times the 199 ordinary steps,
"galore-svd-step" the step that refreshes the projector (amortized: ordinary + refresh/200).
The reference keeps its error in p.grad, so its gradients drift across rounds (timing only).

extra_info: state bytes per parameter, the step's ratio to fused AdamW measured in the same run,
and for LDAdam the floor = the step's matrix-product flops (per low-rank matrix 10·m·n·r with the
dense error buffer, 12 with a quantized one, 8 without) at the measured GEMM rate, and the ratio
of the median step to it.

`test_ldadam_against_reference_alternating` gives the ratio to the reference a second way: the
two optimizers step in turn, each on its own copy of the parameters, so both medians come from
the same minutes of the shared machine (whose speed drifts: the reference's rank-64 step alone
read 86 to 134 ms on different occasions).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numba
import pytest
import torch
from threadpoolctl import threadpool_limits

from bench.param_sets import count, transformer_params
from optimizers import LDAdam

BLOCKS = int(os.environ.get("SMALLSTATE_BENCH_BLOCKS", "2"))
REFERENCE = os.environ.get("SMALLSTATE_LDADAM_REF")
RANKS = (16, 64)
STEP_ROUNDS = 7
"""Steps timed per optimizer, after the warm-up; the median is reported. With 3, one slow step
on the shared machine moved the median (the reference's rank-64 step read 86-107 ms across runs)."""
_medians: dict[str, float] = {}


@pytest.fixture(scope="module")
def params():
    torch.set_num_threads(2)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    return transformer_params(blocks=BLOCKS)


def matrices_and_rest(params):
    return [p for p in params if p.ndim == 2], [p for p in params if p.ndim != 2]


def state_bytes(opt) -> int:
    return sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if torch.is_tensor(v)
    )


def timed_step(benchmark, name: str, opt, params, *, group_median: str | None = None) -> float:
    with threadpool_limits(2):
        opt.step()
        benchmark.pedantic(opt.step, rounds=STEP_ROUNDS, warmup_rounds=1)
    seconds = benchmark.stats.stats.median
    _medians[name] = seconds
    n = count(params)
    benchmark.extra_info.update(
        blocks=BLOCKS, parameters=n, state_bytes_per_param=state_bytes(opt) / n
    )
    if "adamw" in _medians and name != "adamw":
        benchmark.extra_info["step_time_vs_fused_adamw"] = seconds / _medians["adamw"]
    return seconds


PRODUCT_FLOPS = {"dense": 10.0, "q4": 12.0, "q8": 12.0, "none": 8.0}
"""Matrix-product flops of an LDAdam step (t ≥ 1) per m·n·r, by error feedback mode: the three
thin products and the weight update, plus the error update (inner dimension r for the folded
dense buffer, 2r for a quantized one; see optimizers/_ldadam_step.py)."""


def lowrank_flops(opt: LDAdam) -> float:
    """Matrix-product flops of one LDAdam step (t ≥ 1), summed over its low-rank matrices."""
    return sum(
        PRODUCT_FLOPS[group["error_feedback"]] * p.numel() * opt.state[p]["basis"].shape[1]
        for group in opt.param_groups
        for p in group["params"]
        if "basis" in opt.state.get(p, {})
    )


@pytest.mark.benchmark(group="ldadam-step")
def test_fused_adamw(benchmark, params):
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True)
    timed_step(benchmark, "adamw", opt, params)


def galore_module():
    """galore_torch, or a skip: called before any timing starts, since a skip raised inside
    `benchmark.pedantic` leaves an empty timing behind and pytest-benchmark then fails to write
    its JSON for the whole session."""
    return pytest.importorskip("galore_torch", reason="pip install galore-torch to compare")


def galore_optimizer(params, rank):
    galore = galore_module()
    matrices, rest = matrices_and_rest(params)
    groups = [
        {
            "params": matrices,
            "rank": rank,
            "update_proj_gap": 200,
            "scale": 0.25,
            "proj_type": "std",
        },
        {"params": rest},
    ]
    return galore.GaLoreAdamW(groups, lr=1e-3, weight_decay=0.01)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.benchmark(group="ldadam-step")
def test_galore_ordinary_step(benchmark, params, rank):
    timed_step(benchmark, f"galore-{rank}", galore_optimizer(params, rank), params)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.benchmark(group="ldadam-step")
def test_galore_svd_step(benchmark, params, rank):
    """The step that recomputes GaLore's projectors (first step of a fresh optimizer)."""
    galore_module()
    with threadpool_limits(2):
        benchmark.pedantic(
            lambda opt: opt.step(),
            setup=lambda: ((galore_optimizer(params, rank),), {}),
            rounds=2,
        )


def reference_optimizer(params, rank):
    if not REFERENCE or not os.path.isdir(os.path.join(REFERENCE, "ldadamw_torch")):
        pytest.skip("set SMALLSTATE_LDADAM_REF to a checkout of IST-DASLab/LDAdam to compare")
    sys.path.insert(0, REFERENCE)
    try:
        from ldadamw_torch import LDAdamW
    finally:
        sys.path.remove(REFERENCE)
    matrices, rest = matrices_and_rest(params)
    groups = [
        {"params": matrices, "enable_lowrank": True},
        {"params": rest, "enable_lowrank": False},
    ]
    return LDAdamW(groups, lr=1e-3, weight_decay=0.01, rank=rank)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.benchmark(group="ldadam-step")
def test_reference_ldadamw(benchmark, params, rank):
    saved = [p.grad.clone() for p in params]
    try:
        timed_step(benchmark, f"reference-{rank}", reference_optimizer(params, rank), params)
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g


@pytest.mark.parametrize("mode", ["dense", "q4", "q8", "none"])
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.benchmark(group="ldadam-step")
def test_ldadam(benchmark, params, ceilings, rank, mode):
    opt = LDAdam(params, lr=1e-3, weight_decay=0.01, rank=rank, error_feedback=mode)
    seconds = timed_step(benchmark, f"ldadam-{rank}-{mode}", opt, params)
    floor = lowrank_flops(opt) / (ceilings.gemm_gflops * 1e9)
    benchmark.extra_info.update(floor_s=floor, step_vs_floor=seconds / floor)
    if f"reference-{rank}" in _medians:
        benchmark.extra_info["step_vs_reference"] = seconds / _medians[f"reference-{rank}"]


ALTERNATING_ROUNDS = 9


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.benchmark(group="ldadam-vs-reference-alternating")
def test_ldadam_against_reference_alternating(benchmark, rank):
    """Default LDAdam ("dense") and the reference, one step each per round, on separate copies of
    the same parameters and gradients; extra_info holds both medians and their ratio."""
    reference = reference_optimizer(transformer_params(blocks=BLOCKS), rank)
    ours = LDAdam(transformer_params(blocks=BLOCKS), lr=1e-3, weight_decay=0.01, rank=rank)
    seconds: dict[str, list[float]] = {"reference": [], "ldadam": []}

    def one_step_each():
        for name, opt in (("reference", reference), ("ldadam", ours)):
            start = time.perf_counter()
            opt.step()
            seconds[name].append(time.perf_counter() - start)

    with threadpool_limits(2):
        reference.step()
        ours.step()
        benchmark.pedantic(one_step_each, rounds=ALTERNATING_ROUNDS, warmup_rounds=1)
    warmed = {name: times[1:] for name, times in seconds.items()}  # drop the warm-up round
    medians = {name: statistics.median(times) for name, times in warmed.items()}
    benchmark.extra_info.update(
        blocks=BLOCKS,
        reference_median_s=medians["reference"],
        ldadam_median_s=medians["ldadam"],
        step_vs_reference=medians["ldadam"] / medians["reference"],
    )
