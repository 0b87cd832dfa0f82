"""torch.distributed.checkpoint's state-dict API on FSDP2 (fully_shard, gloo, CPU), 2 ranks.

argv extra: the scenario names of `SCENARIOS` to run. Each scenario trains a sharded model with
`sharded_optimizer` for HALF steps, saves model and optimizer with `get_model_state_dict` /
`get_optimizer_state_dict` and `dcp.save`, trains HALF more ("continued"); then builds fresh
objects, fills them with `get_*_state_dict` + `dcp.load` + `set_*_state_dict` and trains the same
HALF steps ("resumed"); a third run loads the model only and starts a fresh optimizer
("control", which must differ, or the comparison could not fail). Per rank it also records this
rank's optimizer state right after the save and right after the load, and the message of loading
a state dict whose per-rank entries name another world size.
"""

from __future__ import annotations

import torch
import torch.distributed.checkpoint as dcp
from common import finish, join, local_batch, train
from fsdp_worker import full_params, sharded_model
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh

import optimizers
from optimizers.distributed.sharded import sharded_optimizer

LR = 1e-2
HALF = 3
MICROADAM = dict(density=0.25, block_size=8, quant_bucket=8, window=4)
#: name -> (optimizer class, options, flatten_optimizer_state_dict)
SCENARIOS = {
    "MicroAdam": ("MicroAdam", MICROADAM, True),  # int16 indices, uint8 codes, bf16-bit values
    "MicroAdam-nested": ("MicroAdam", MICROADAM, False),
    "MicroAdam-f32-noerror": (
        "MicroAdam",
        {**MICROADAM, "values_dtype": "float32", "error_feedback": "none"},
        True,
    ),
    "LDAdam-dense": ("LDAdam", dict(rank=4), True),  # side (a string), float64 error fold
    "LDAdam-q4": ("LDAdam", dict(rank=4, error_feedback="q4"), True),  # uint8 codes, bf16 bounds
    "LDAdam-none": ("LDAdam", dict(rank=4, error_feedback="none"), True),
    "Adapprox": ("Adapprox", dict(k_max=8), True),
    "Adapprox-nested": ("Adapprox", dict(k_max=8), False),
    "Adapprox-beta1-0": ("Adapprox", dict(k_max=8, betas=(0.0, 0.999)), True),
}


def state_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """This rank's state tensors from `optimizer.state_dict()`, keyed 'pid.key[.rank entry]'."""

    def walk(prefix: str, value, out: dict) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner, out)
        elif torch.is_tensor(value):
            out[prefix] = value.detach().clone()

    out: dict[str, torch.Tensor] = {}
    for pid, entry in optimizer.state_dict()["state"].items():
        walk(str(pid), entry, out)
    return out


def other_world(saved: dict) -> dict:
    """`saved` with every per-rank entry renamed to a world of 4 ranks."""
    return {
        **saved,
        "state": {
            pid: {
                key: {k.replace("_of_2", "_of_4"): v for k, v in per_rank.items()}
                for key, per_rank in entry.items()
            }
            for pid, entry in saved["state"].items()
        },
    }


def several_ranks(saved: dict, rank: int) -> dict:
    """`saved` with each per-rank entry also given to the other rank (as a merged dict)."""
    other = f"rank{1 - rank}_of_2"
    return {
        **saved,
        "state": {
            pid: {
                key: {**per_rank, other: next(iter(per_rank.values()))}
                for key, per_rank in entry.items()
            }
            for pid, entry in saved["state"].items()
        },
    }


def refusal(optimizer: torch.optim.Optimizer, state_dict: dict) -> str:
    """The ValueError message of loading `state_dict` ("" if it loads)."""
    try:
        optimizer.load_state_dict(state_dict)
    except ValueError as error:
        return str(error)
    return ""


def scenario(name: str, mesh, rank: int, world: int, out_dir) -> dict:
    class_name, options, flatten = SCENARIOS[name]
    cls = getattr(optimizers, class_name)
    io_options = StateDictOptions(flatten_optimizer_state_dict=flatten)
    later = lambda step: local_batch(step + HALF, rank, world)  # noqa: E731

    def fresh():
        model = sharded_model(mesh)
        return model, sharded_optimizer(cls, model.parameters(), lr=LR, **options)

    model, optimizer = fresh()
    train(model, optimizer, lambda step: local_batch(step, rank, world), steps=HALF)
    path = out_dir / f"ckpt-{name}"
    dcp.save(
        {
            "model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, optimizer, options=io_options),
        },
        checkpoint_id=path,
    )
    saved_state = state_tensors(optimizer)
    wrong_world = other_world(optimizer.state_dict())
    merged = several_ranks(optimizer.state_dict(), rank)
    train(model, optimizer, later, steps=HALF)

    resumed, resumed_optimizer = fresh()
    loaded = {
        "model": get_model_state_dict(resumed),
        "optim": get_optimizer_state_dict(resumed, resumed_optimizer, options=io_options),
    }
    dcp.load(loaded, checkpoint_id=path)
    set_model_state_dict(resumed, loaded["model"])
    set_optimizer_state_dict(resumed, resumed_optimizer, loaded["optim"], options=io_options)
    loaded_state = state_tensors(resumed_optimizer)
    wrong_world_error = refusal(resumed_optimizer, wrong_world)
    several_ranks_error = refusal(resumed_optimizer, merged)
    train(resumed, resumed_optimizer, later, steps=HALF)

    control, control_optimizer = fresh()
    model_only = {"model": get_model_state_dict(control)}
    dcp.load(model_only, checkpoint_id=path)
    set_model_state_dict(control, model_only["model"])
    train(control, control_optimizer, later, steps=HALF)
    return {
        "continued": full_params(model),
        "resumed": full_params(resumed),
        "control": full_params(control),
        "saved_state": saved_state,
        "loaded_state": loaded_state,
        "wrong_world_error": wrong_world_error,
        "several_ranks_error": several_ranks_error,
    }


def consolidated(mesh, rank: int, world: int) -> dict:
    """LDAdam through a consolidated state dict (full_state_dict=True, on rank 0 only) loaded
    with broadcast_from_rank0=True: rank 0 loads its entries, the other ranks must refuse."""
    model = sharded_model(mesh)
    optimizer = sharded_optimizer(optimizers.LDAdam, model.parameters(), lr=LR, rank=4)
    train(model, optimizer, lambda step: local_batch(step, rank, world), steps=HALF)
    full = get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    fresh = sharded_model(mesh)
    fresh_optimizer = sharded_optimizer(optimizers.LDAdam, fresh.parameters(), lr=LR, rank=4)
    try:
        set_optimizer_state_dict(
            fresh,
            fresh_optimizer,
            full,
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
        )
    except ValueError as error:
        return {"error": str(error), "entries": len(full.get("state", {}))}
    return {"error": "", "entries": len(full.get("state", {}))}


def main() -> None:
    rank, world, out_dir, names = join()
    mesh = init_device_mesh("cpu", (world,))
    results = {
        name: consolidated(mesh, rank, world)
        if name == "consolidated"
        else scenario(name, mesh, rank, world, out_dir)
        for name in names
    }
    finish(rank, out_dir, results)


if __name__ == "__main__":
    main()
