"""Step times that hold on a shared machine: a separate phase that alternates the optimizers.

Every optimizer gets its own copy of the same model (same weights) and all use one fixed batch.
After a few untimed warm-up steps each, the phase runs ``rounds`` rounds; a round times one
training step of every optimizer in turn (A B C ... A B C ...), so a burst of load from another
process hits all of them alike instead of whichever ran during it. Per optimizer it reports the
median over rounds of ``optimizer.step()`` alone and of the whole step (forward + backward +
step), and their spread: the interquartile range, also relative to the median. It warns when a
relative spread exceeds ``SPREAD_WARNING`` or the 1-minute load average exceeds the cores this
process may use.
"""

from __future__ import annotations

import os
import statistics
import warnings

import torch

from .corpus import random_batch
from .registry import OptimizerSettings, build_optimizer
from .runner import TrainConfig, build_model, timed_step

WARMUP_STEPS = 3
SPREAD_WARNING = 0.25  # interquartile range over median
LOAD_SLACK = 0.5
"""Load average above the usable cores tolerated before warning: the phase's own threads count
toward the load (two threads on two cores read about 2.0 alone), and the 1-minute average lags,
so a run that merely fills its cores must not warn; half a core more means others competed."""


def usable_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def spread(samples: list[float]) -> tuple[float, float]:
    """(median, interquartile range) of ``samples`` (at least one)."""
    if len(samples) < 2:
        return samples[0], 0.0
    quartiles = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), quartiles[2] - quartiles[0]


def alternating_timings(
    names: list[str],
    *,
    lrs: dict[str, float],
    config: TrainConfig,
    train_data: torch.Tensor,
    init: dict[str, torch.Tensor],
    rounds: int,
) -> tuple[dict[str, dict], list[str]]:
    """Time every optimizer in ``names`` in alternation; returns ({name: stats}, warnings).

    stats: opt_step_median_ms, opt_step_iqr_ms, opt_step_spread (IQR / median), the same three
    for full_step, rounds, and load_average before and after the phase. Cost: (rounds +
    WARMUP_STEPS) training steps per optimizer.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    generator = torch.Generator().manual_seed(config.seed)
    x, y = random_batch(
        train_data.to(config.device),
        batch_size=config.batch_size,
        seq_len=config.model.seq_len,
        generator=generator,
    )
    runners = {}
    for name in names:
        model = build_model(config, init)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer = build_optimizer(
                name,
                model.parameters(),
                lr=lrs[name],
                settings=OptimizerSettings(weight_decay=config.weight_decay),
            )
        runners[name] = (model, optimizer)
    for model, optimizer in runners.values():
        for _ in range(WARMUP_STEPS):
            timed_step(model, optimizer, x, y, device=config.device)
    load_before = load_average()
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    for _ in range(rounds):
        for name, (model, optimizer) in runners.items():
            _, step_s, full_s = timed_step(model, optimizer, x, y, device=config.device)
            samples[name][0].append(1e3 * step_s)
            samples[name][1].append(1e3 * full_s)
    load_after = load_average()
    stats, messages, noisy = {}, [], []
    for name, (step_ms, full_ms) in samples.items():
        record = {"rounds": rounds, "load_average": [load_before, load_after]}
        for key, values in (("opt_step", step_ms), ("full_step", full_ms)):
            median, iqr = spread(values)
            record[f"{key}_median_ms"] = median
            record[f"{key}_iqr_ms"] = iqr
            record[f"{key}_spread"] = iqr / median if median > 0 else 0.0
        worst = max(record["opt_step_spread"], record["full_step_spread"])
        if worst > SPREAD_WARNING:
            noisy.append(f"{name} {100 * worst:.0f}%")
        stats[name] = record
    if noisy:
        messages.append(
            f"step times spread (interquartile range over {rounds} rounds) by more than "
            f"{100 * SPREAD_WARNING:.0f}% of their median for {', '.join(noisy)}: treat those "
            "timing ratios as rough"
        )
    cores = usable_cores()
    loads = [load for load in (load_before, load_after) if load is not None]
    if loads and max(loads) > cores + LOAD_SLACK:
        messages.append(
            f"load average {max(loads):.1f} exceeded the {cores} usable cores during the timing "
            "phase: other processes competed for the CPU, so absolute times are inflated"
        )
    return stats, messages
