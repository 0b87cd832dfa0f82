"""DDP + AdamW on 2 ranks under each communication hook; loss, bytes and time per step.

argv extra: width steps bucket_cap_mb hook... where a hook is allreduce, topk@<density>,
q4, q8 or powersgd@<rank>. Every hook runs inside a CollectiveByteMeter, so all of them
(PowerSGD and the stock allreduce hook included) are counted by the same rule.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from common import finish, global_batch, join, local_batch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel

from optimizers.distributed import CommState, Quantize, TopK, compressed_allgather_hook
from optimizers.distributed.meter import CollectiveByteMeter
from optimizers.distributed.replicas import replica_mismatches

LR = 1e-2


def wide_model(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, width),
        torch.nn.Tanh(),
        torch.nn.Linear(width, width),
        torch.nn.Tanh(),
        torch.nn.Linear(width, 1),
    )


def make_hook(spec: str):
    kind, _, arg = spec.partition("@")
    if kind == "allreduce":
        return None, default_hooks.allreduce_hook
    if kind == "topk":
        return CommState(TopK(density=float(arg))), compressed_allgather_hook
    if kind in ("q4", "q8"):
        return CommState(Quantize(bits=int(kind[1]))), compressed_allgather_hook
    if kind == "powersgd":
        state = powerSGD_hook.PowerSGDState(
            process_group=None, matrix_approximation_rank=int(arg), start_powerSGD_iter=2
        )
        return state, powerSGD_hook.powerSGD_hook
    raise ValueError(f"unknown hook {spec!r}")


@torch.no_grad()
def held_out_loss(model: torch.nn.Module) -> float:
    x, y = global_batch(99_999)
    return float(torch.nn.functional.mse_loss(model(x), y))


def bucket_cap(spec: str, bucket_cap_mb: str) -> float:
    """PowerSGD gets one bucket: its hook issues its second all_reduce from a future callback, so
    with several buckets in flight gloo ranks can issue collectives in different orders (observed:
    gloo EnforceNotMet "Received data size doesn't match expected size" at its first compressed
    step). Our hook issues its one collective from the hook itself, so any bucketing is safe."""
    return 1024.0 if spec.startswith("powersgd") else float(bucket_cap_mb)


def main() -> None:
    rank, world, out_dir, (width, steps, bucket_cap_mb, *specs) = join()
    results = {}
    for spec in specs:
        ddp = DistributedDataParallel(
            wide_model(int(width)), bucket_cap_mb=bucket_cap(spec, bucket_cap_mb)
        )
        state, hook = make_hook(spec)
        ddp.register_comm_hook(state, hook)
        optimizer = torch.optim.AdamW(ddp.parameters(), lr=LR)
        losses = []
        with CollectiveByteMeter() as meter:
            dist.barrier()
            start = time.perf_counter()
            for step in range(int(steps)):
                x, y = local_batch(step, rank, world)
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(ddp(x), y)
                loss.backward()
                optimizer.step()
                losses.append(float(loss))
            dist.barrier()
            seconds = time.perf_counter() - start
        entry = {
            "final_loss": held_out_loss(ddp),
            "train_losses": torch.tensor(losses),
            "meter_bytes_per_step": meter.bytes_sent / int(steps),
            "seconds_per_step": seconds / int(steps),
            "mismatches": replica_mismatches(ddp, optimizer),
            "n_params": sum(p.numel() for p in ddp.parameters()),
        }
        if isinstance(state, CommState):
            entry.update(
                hook_bytes_per_step=state.bytes_per_step,
                hook_steps=state.steps,
                ratio_to_dense=state.ratio_to_dense,
                buckets=len(state.errors),
            )
        results[spec] = entry
    finish(rank, out_dir, results)


if __name__ == "__main__":
    main()
