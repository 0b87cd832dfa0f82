"""DDP training of each named optimizer on 2 ranks, plus the single-process references on rank 0.

For each optimizer: 50 DDP steps, then `replica_mismatches` (parameters and optimizer state)
across ranks. Rank 0 also trains two single-process references on the same global batches:
"split" (`split_reference`) and "full" (the whole global batch back-propagated at once).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from common import (
    finish,
    flat_state,
    global_batch,
    join,
    local_batch,
    make_model,
    params,
    split_reference,
    train,
)
from torch.nn.parallel import DistributedDataParallel

import optimizers
from optimizers.distributed.replicas import replica_mismatches

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from contract.cases import DenseOnly  # noqa: E402

LR = 1e-2
FACTORIES = {
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=LR),
    "DenseOnly": lambda ps: DenseOnly(ps, lr=LR),
    "MicroAdam": lambda ps: optimizers.MicroAdam(ps, lr=LR, density=0.25, block_size=256, window=4),
    "LDAdam": lambda ps: optimizers.LDAdam(ps, lr=LR, rank=4),
    "Adapprox": lambda ps: optimizers.Adapprox(ps, lr=LR, k_max=8),
}


def main() -> None:
    rank, world, out_dir, names = join()
    results: dict = {}
    for name in names:
        ddp = DistributedDataParallel(make_model())
        optimizer = FACTORIES[name](ddp.parameters())
        train(ddp, optimizer, lambda step: local_batch(step, rank, world))
        entry = {
            "params": params(ddp),
            "state": flat_state(optimizer),
            "mismatches": replica_mismatches(ddp, optimizer),
            "paths": [r.path for r in optimizer.describe()]
            if hasattr(optimizer, "describe")
            else [],
        }
        if name == "AdamW":
            with torch.no_grad():
                if rank == 1:
                    p = ddp.module[0].weight
                    p.view(-1)[7] = torch.nextafter(p.view(-1)[7], torch.tensor(2.0))
            entry["mismatches_after_perturbing"] = replica_mismatches(ddp, optimizer)
        if rank == 0:
            split_model, split_opt = split_reference(FACTORIES[name], world)
            entry["split_params"] = params(split_model)
            entry["split_state"] = flat_state(split_opt)
            full_model = make_model()
            train(full_model, FACTORIES[name](full_model.parameters()), global_batch)
            entry["full_params"] = params(full_model)
        results[name] = entry
    finish(rank, out_dir, results)


if __name__ == "__main__":
    main()
