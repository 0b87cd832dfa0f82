"""What every worker shares: joining the process group, the test model and data, saving results.

argv: rank world init_method out_dir [scenario arguments...]
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

GLOBAL_BATCH = 64
STEPS = 50


def join() -> tuple[int, int, Path, list[str]]:
    """Join the gloo group named on the command line; return rank, world, out dir, extra args."""
    rank, world, init, out_dir, *extra = sys.argv[1:]
    faulthandler.dump_traceback_later(float(os.environ["WORKER_STACK_DUMP_AFTER"]), exit=True)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=init,
        rank=int(rank),
        world_size=int(world),
        timeout=timedelta(seconds=30),
    )
    return int(rank), int(world), Path(out_dir), extra


def finish(rank: int, out_dir: Path, results: dict) -> None:
    """Write this rank's results (tensors and primitives only) and leave the group; the worker
    then exits through the interpreter's ordinary teardown (docs/threads.md, "Exit")."""
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def make_model(seed: int = 0) -> torch.nn.Module:
    """A small MLP whose 48×64 and 64×48 weights take each method's compressed path."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 48),
        torch.nn.Tanh(),
        torch.nn.Linear(48, 64),
        torch.nn.Tanh(),
        torch.nn.Linear(64, 1),
    )


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same global batch on every rank for a given step (a smooth regression target)."""
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, 64, generator=generator)
    y = torch.sin(x[:, :3].sum(dim=1, keepdim=True)) + 0.5 * x[:, 3:4]
    return x, y


def local_batch(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous slice of the global batch."""
    x, y = global_batch(step)
    per_rank = GLOBAL_BATCH // world
    part = slice(rank * per_rank, (rank + 1) * per_rank)
    return x[part], y[part]


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int = STEPS,
) -> None:
    """`steps` steps of mean-squared-error training on `batch(step)`."""
    for step in range(steps):
        x, y = batch(step)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def split_reference(
    factory: Callable[[object], torch.optim.Optimizer], world: int, *, steps: int = STEPS
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Single process; gradient = Σ_r (grad of rank r's half) / world, in rank order: the
    arithmetic of DDP's allreduce and of FSDP's reduce-scatter for world = 2."""
    model = make_model()
    optimizer = factory(model.parameters())
    for step in range(steps):
        total = [torch.zeros_like(p) for p in model.parameters()]
        for rank in range(world):
            model.zero_grad(set_to_none=True)
            x, y = local_batch(step, rank, world)
            torch.nn.functional.mse_loss(model(x), y).backward()
            for acc, p in zip(total, model.parameters(), strict=True):
                acc.add_(p.grad / world)
        for acc, p in zip(total, model.parameters(), strict=True):
            p.grad = acc
        optimizer.step()
    return model, optimizer


def flat_state(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Every tensor of the optimizer state, keyed 'index.name' (the checkpoint's own ids)."""
    state = optimizer.state_dict()["state"]
    return {
        f"{pid}.{key}": value.clone()
        for pid, entry in state.items()
        for key, value in entry.items()
        if torch.is_tensor(value)
    }


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the parameters, unwrapping DDP's 'module.' prefix."""
    return {
        name.removeprefix("module."): p.detach().clone() for name, p in model.named_parameters()
    }
