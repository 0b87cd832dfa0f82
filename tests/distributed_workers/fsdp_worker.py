"""FSDP2 (fully_shard, gloo, CPU) training through `sharded_optimizer`, checkpoints through DCP.

Scenarios (all ranks): AdamW and MicroAdam on local shards, LDAdam and Adapprox with owner-rank
full matrices; each trains 20 steps on this rank's half of the global batch. Rank 0 adds the
single-process reference with the same gradient arithmetic (`split_reference`) for each.
MicroAdam also checkpoints at step 10 with torch.distributed.checkpoint and resumes into fresh
objects; both continuations must agree. Ours then meet a NaN gradient on rank 0 only.
"""

from __future__ import annotations

import torch
import torch.distributed.checkpoint as dcp
from common import finish, join, local_batch, make_model, split_reference, train
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import optimizers
from optimizers.distributed.sharded import (
    empty_sharded_state_dict,
    load_sharded_state_dict,
    sharded_optimizer,
    sharded_state_dict,
)

LR = 1e-2
STEPS = 20  # FSDP2 on CPU costs ~10 ms of collectives per step; 20 keep the file near 20 s
SETTINGS = {
    "AdamW": (torch.optim.AdamW, {}),
    # blocks and buckets of 8 divide every shard, so shard-local top-k picks what one process does
    "MicroAdam": ("MicroAdam", dict(density=0.25, block_size=8, quant_bucket=8, window=4)),
    "LDAdam": ("LDAdam", dict(rank=4)),
    "Adapprox": ("Adapprox", dict(k_max=8)),
}


def optimizer_class(name: str):
    cls, options = SETTINGS[name]
    return (getattr(optimizers, cls) if isinstance(cls, str) else cls), {"lr": LR, **options}


def sharded_model(mesh) -> torch.nn.Module:
    model = make_model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def full_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.full_tensor().detach().clone() for name, p in model.named_parameters()}


def checkpoint_round_trip(name: str, mesh, rank: int, world: int, out_dir) -> dict:
    """Train STEPS/2 steps, save, train STEPS/2 more; reload into fresh objects, redo those."""
    cls, options = optimizer_class(name)
    batch = lambda step: local_batch(step, rank, world)  # noqa: E731
    model = sharded_model(mesh)
    optimizer = sharded_optimizer(cls, model.parameters(), **options)
    train(model, optimizer, batch, steps=STEPS // 2)
    path = out_dir / f"ckpt-{name}"
    dcp.save(
        {"model": model.state_dict(), "optim": sharded_state_dict(optimizer)}, checkpoint_id=path
    )
    train(model, optimizer, lambda step: batch(step + STEPS // 2), steps=STEPS // 2)
    fresh = sharded_model(mesh)
    fresh_optimizer = sharded_optimizer(cls, fresh.parameters(), **options)
    loaded = {"model": fresh.state_dict(), "optim": empty_sharded_state_dict()}
    dcp.load(loaded, checkpoint_id=path)
    fresh.load_state_dict(loaded["model"])
    load_sharded_state_dict(fresh_optimizer, loaded["optim"])
    train(fresh, fresh_optimizer, lambda step: batch(step + STEPS // 2), steps=STEPS // 2)
    return {"continued": full_params(model), "resumed": full_params(fresh)}


def state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [
        value.clone()
        for entry in optimizer.state.values()
        for value in entry.values()
        if torch.is_tensor(value)
    ]


def nonfinite_gradient_on_one_rank(model, optimizer, rank: int, world: int) -> dict:
    """Rank 0's shard of the first matrix gets a NaN gradient (nonfinite="raise"): every rank
    must raise before anything changed, keep its gradients, and train on afterwards."""
    x, y = local_batch(STEPS, rank, world)
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(x), y).backward()
    first = next(p for p in model.parameters() if p.ndim >= 2)
    if rank == 0:
        first.grad.to_local().view(-1)[0] = float("nan")
    params, state = full_params(model), state_tensors(optimizer)
    try:
        optimizer.step()
        error = None
    except (FloatingPointError, RuntimeError) as raised:
        error = type(raised).__name__
    params_after, state_after = full_params(model), state_tensors(optimizer)
    unchanged = len(state) == len(state_after) and all(
        torch.equal(a, b)
        for a, b in zip(
            state + list(params.values()), state_after + list(params_after.values()), strict=True
        )
    )
    result = {"error": error, "unchanged": unchanged, "grad_kept": first.grad is not None}
    train(model, optimizer, lambda step: local_batch(step, rank, world), steps=1)
    return result


def main() -> None:
    rank, world, out_dir, names = join()
    mesh = init_device_mesh("cpu", (world,))
    results = {}
    for name in names:
        cls, options = optimizer_class(name)
        model = sharded_model(mesh)
        optimizer = sharded_optimizer(cls, model.parameters(), **options)
        train(model, optimizer, lambda step: local_batch(step, rank, world), steps=STEPS)
        entry = {
            "params": full_params(model),
            "paths": [r.path for r in optimizer.describe()]
            if hasattr(optimizer, "describe")
            else [],
            "state_nbytes": optimizer.state_nbytes() if hasattr(optimizer, "state_nbytes") else 0,
        }
        if rank == 0:
            reference, reference_optimizer = split_reference(
                lambda ps: cls(ps, **options),  # noqa: B023
                world,
                steps=STEPS,
            )
            entry["split_params"] = {n: p.detach().clone() for n, p in reference.named_parameters()}
            if hasattr(reference_optimizer, "state_nbytes"):
                entry["reference_state_nbytes"] = reference_optimizer.state_nbytes()
        if name == "MicroAdam":
            entry.update(checkpoint_round_trip(name, mesh, rank, world, out_dir))
        if name != "AdamW":
            entry["nonfinite"] = nonfinite_gradient_on_one_rank(model, optimizer, rank, world)
        results[name] = entry
    finish(rank, out_dir, results)


if __name__ == "__main__":
    main()
