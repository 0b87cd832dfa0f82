"""What limiting the BLAS pools inside a step would buy: steps alternating in one process.

"old" re-creates, from outside, what the optimizers used to do inside every step (OpenBLAS at
one thread through threadpoolctl, LDAdam's QR on one torch thread), which changed process-wide
settings that other threads could see; "new" is the step as it is. The two alternate step by
step on the same optimizer (one transformer block of width 768); the medians and their ratio
are printed. docs/threads.md quotes a run.

Run: python -m bench.step_thread_limits adapprox|ldadam|microadam [--steps 6]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from threadpoolctl import threadpool_limits

import optimizers
from bench.param_sets import transformer_params
from optimizers import _ldadam_step

FACTORIES = {
    "adapprox": lambda ps: optimizers.Adapprox(ps, lr=1e-3, k_max=16),
    "ldadam": lambda ps: optimizers.LDAdam(ps, lr=1e-3, rank=64),
    "microadam": lambda ps: optimizers.MicroAdam(ps, lr=1e-3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("optimizer", choices=list(FACTORIES))
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    optimizer = FACTORIES[args.optimizer](transformer_params(blocks=1))
    plain_q = _ldadam_step.householder_q

    def one_thread_q(y: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return plain_q(y)
        finally:
            torch.set_num_threads(threads)

    for _ in range(2):
        optimizer.step()
    times: dict[str, list[float]] = {"old": [], "new": []}
    for round_ in range(args.steps):
        for mode in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
            _ldadam_step.householder_q = one_thread_q if mode == "old" else plain_q
            limits = (
                threadpool_limits(1, user_api="blas") if mode == "old" else contextlib.nullcontext()
            )
            with limits:
                start = time.perf_counter()
                optimizer.step()
                times[mode].append(time.perf_counter() - start)
    _ldadam_step.householder_q = plain_q
    old, new = (statistics.median(times[mode]) * 1e3 for mode in ("old", "new"))
    print(f"{args.optimizer}: old {old:.1f} ms, new {new:.1f} ms, new/old {new / old:.2f}")


if __name__ == "__main__":
    main()
