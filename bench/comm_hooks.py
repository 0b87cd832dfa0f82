"""Compare DDP communication hooks on 2 local gloo processes: bytes, loss, time per step.

    python bench/comm_hooks.py [--width 512] [--steps 50] [--hooks allreduce topk@0.01 ...]

Trains a 3-layer MLP (64 → width → width → 1; width 512 ≈ 296k parameters) with AdamW for
`steps` steps under each hook (tests/distributed_workers/hooks_worker.py) and prints, per hook:
bytes one rank sends per step (ring model, counted by CollectiveByteMeter for every hook alike),
the ratio to dense allreduce (the portable figure), the held-out loss after the step budget, and
wall time per step relative to allreduce. All hooks use one DDP bucket (PowerSGD needs it on
gloo). Loopback on a shared machine: the time ratio mostly measures encode/decode compute, not
what a real network would show.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "distributed_workers"))
from harness import run_workers  # noqa: E402

DEFAULT_HOOKS = ["allreduce", "topk@0.01", "topk@0.1", "q4", "q8", "powersgd@1", "powersgd@4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--hooks", nargs="+", default=DEFAULT_HOOKS)
    args = parser.parse_args()
    hooks = ["allreduce", *[h for h in args.hooks if h != "allreduce"]]
    with tempfile.TemporaryDirectory() as out:
        ranks = run_workers(
            "hooks_worker.py",
            Path(out),
            str(args.width),
            str(args.steps),
            "1024",
            *hooks,
            timeout=590,
        )
    dense = ranks[0]["allreduce"]
    print(f"{dense['n_params']} parameters, {args.steps} steps, 2 ranks (gloo, loopback)")
    print(f"{'hook':<12} {'bytes/step':>12} {'ratio':>8} {'loss':>8} {'time ratio':>10}")
    for hook in hooks:
        entry = ranks[0][hook]
        seconds = max(entry["seconds_per_step"], ranks[1][hook]["seconds_per_step"])
        dense_seconds = max(dense["seconds_per_step"], ranks[1]["allreduce"]["seconds_per_step"])
        print(
            f"{hook:<12} {entry['meter_bytes_per_step']:>12.0f} "
            f"{entry['meter_bytes_per_step'] / dense['meter_bytes_per_step']:>8.4f} "
            f"{entry['final_loss']:>8.4f} {seconds / dense_seconds:>10.2f}"
        )


if __name__ == "__main__":
    main()
