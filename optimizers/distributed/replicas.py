"""Check that data-parallel replicas hold bit-identical parameters and optimizer state."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist


def _digest(value: Any) -> str:
    if torch.is_tensor(value):
        raw = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        header = f"{value.dtype}{tuple(value.shape)}".encode()
        return hashlib.sha256(header + raw.numpy().tobytes()).hexdigest()
    return repr(value)


def replica_fingerprints(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, str]:
    """A SHA-256 per parameter ('param:<name>') and per optimizer state entry
    ('state:<index>.<key>', in checkpoint numbering), over the exact bytes, dtype and shape."""
    prints = {
        f"param:{name.removeprefix('module.')}": _digest(p) for name, p in module.named_parameters()
    }
    if optimizer is not None:
        for index, entry in optimizer.state_dict()["state"].items():
            for key, value in entry.items():
                prints[f"state:{index}.{key}"] = _digest(value)
    return prints


def replica_mismatches(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    group: dist.ProcessGroup | None = None,
) -> list[str]:
    """Names of parameters and optimizer state entries whose bytes differ between ranks.

    Collective (every rank of `group` must call it). Cost: one read of the parameters and state
    for hashing, and an all-gather of 64 hex digits per entry, never of the tensors themselves.
    """
    mine = replica_fingerprints(module, optimizer)
    everyone: list[dict[str, str] | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    names = set().union(*(prints.keys() for prints in everyone))
    return sorted(name for name in names if len({prints.get(name) for prints in everyone}) > 1)
