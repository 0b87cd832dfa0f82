"""Run a smallstate optimizer on FSDP2-sharded parameters (torch.distributed.fsdp.fully_shard).

FSDP2 turns parameters into DTensors: each rank holds a Shard(0) slice. torch's own optimizers
step DTensors through tensor-subclass dispatch (elementwise ops stay local, `zeros_like(p)`
state is itself a DTensor). Our optimizers hand raw memory to Numba/CUDA kernels through DLPack,
which a DTensor does not expose, so `sharded_optimizer` builds the optimizer over plain proxy
tensors and moves gradients onto them before each step:

- "local" (elementwise methods: MicroAdam, and the dense AdamW path of vectors): the proxy is
  `p.to_local()`, an alias of this rank's shard; state covers the shard only (1/W of the
  memory), no extra communication. Every shard is a flat elementwise problem, so this is exact
  up to MicroAdam's top-k blocks being cut at shard boundaries.
- "owner" (matrix methods: LDAdam, Adapprox need the whole matrix for its projection or
  factorization): each ≥2-D sharded parameter has an owner rank (round-robin over those
  parameters). Per step the gradient and the parameter are all-gathered, the owner steps a
  full-size proxy, and the new values are scattered back to the shards. Cost per such parameter
  and step: ≈ 3×its bytes of traffic and one full-size copy on its owner; its optimizer state
  lives on the owner only (not replicated). Non-owners hold a meta-device placeholder.

After `step()` the sharded parameters' `.grad` are None (the proxies took them), so FSDP's next
backward never accumulates into a consumed gradient. Proxies keep their position in the
optimizer, so per-parameter random keys match single-process training.
Checkpoints: `sharded_state_dict` / `load_sharded_state_dict` give each rank its own entry for
torch.distributed.checkpoint (state layouts depend on the shard, so resuming needs the same
world size and sharding).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor

ELEMENTWISE = frozenset({"MicroAdam", "AdamW", "Adam", "SGD"})


class _Binding:
    """One parameter, its proxy inside the optimizer and how the two are kept in step."""

    def __init__(self, param: torch.Tensor, owned_so_far: int, full_matrices: bool) -> None:
        self.param = param
        self.mode = "replicated"
        self.proxy = param
        if isinstance(param, DTensor):
            if full_matrices and param.ndim >= 2:
                mesh = param.device_mesh
                if mesh.ndim != 1:
                    raise ValueError(
                        f"full_matrices needs a 1-D device mesh, got {mesh.ndim}-D for a "
                        f"parameter of shape {tuple(param.shape)}"
                    )
                self.mode = "owner"
                self.owner = int(mesh.mesh.flatten()[owned_so_far % mesh.size()])
                device = "meta" if dist.get_rank() != self.owner else param.to_local().device
                self.proxy = torch.empty(param.shape, dtype=param.dtype, device=device)
            else:
                self.mode = "local"
                self.proxy = param.to_local().detach()  # a leaf aliasing the shard

    @property
    def owns(self) -> bool:
        return self.mode == "owner" and dist.get_rank() == self.owner

    @torch.no_grad()
    def before_step(self) -> None:
        grad, self.param.grad = self.param.grad, None
        if grad is None or self.mode == "replicated":
            self.proxy.grad = grad
            return
        if self.mode == "local":
            local = grad.to_local()
            self.proxy.grad = local if local.numel() else None
            return
        full_grad, full_param = grad.full_tensor(), self.param.full_tensor()
        if self.owns:
            self.proxy.copy_(full_param)
            self.proxy.grad = full_grad

    @torch.no_grad()
    def after_step(self) -> None:
        if self.mode != "owner":
            return
        local = self.param.to_local()
        source = (
            self.proxy
            if self.owns
            else torch.empty(self.param.shape, dtype=local.dtype, device=local.device)
        )
        shards = distribute_tensor(
            source, self.param.device_mesh, self.param.placements, src_data_rank=self.owner
        )
        local.copy_(shards.to_local())
        self.proxy.grad = None


def sharded_optimizer(
    optimizer_class: type[torch.optim.Optimizer],
    params: Iterable[Any],
    *,
    full_matrices: bool | None = None,
    **options: Any,
) -> torch.optim.Optimizer:
    """`optimizer_class(proxies, **options)` wired to FSDP2-sharded (DTensor) parameters.

    params: parameters or param-group dicts, as for any torch optimizer; plain tensors pass
    through unchanged. full_matrices: step ≥2-D sharded parameters on an owner rank with the
    whole matrix ("owner" mode above); default True unless the class is elementwise
    (MicroAdam, Adam, AdamW, SGD). The returned object is a genuine `optimizer_class`
    instance (schedulers, `state_dict`, `describe()` work); collective: call `step()` on every
    rank.
    """
    if full_matrices is None:
        full_matrices = optimizer_class.__name__ not in ELEMENTWISE
    groups = list(params)
    if not groups or not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    bindings: list[_Binding] = []
    proxy_groups = []
    for group in groups:
        members = []
        for param in group["params"]:
            owned_so_far = sum(b.mode == "owner" for b in bindings)
            bindings.append(_Binding(param, owned_so_far, full_matrices))
            members.append(bindings[-1].proxy)
        proxy_groups.append({**group, "params": members})
    optimizer = optimizer_class(proxy_groups, **options)

    def before(*_: Any) -> None:
        for binding in bindings:
            binding.before_step()

    def after(*_: Any) -> None:
        for binding in bindings:
            binding.after_step()

    optimizer.register_step_pre_hook(before)
    optimizer.register_step_post_hook(after)
    return optimizer


def sharded_state_dict(optimizer: torch.optim.Optimizer) -> dict[str, io.BytesIO]:
    """This rank's optimizer state as {'rank<r>': serialized state_dict}, for dcp.save."""
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    return {f"rank{dist.get_rank()}": buffer}


def empty_sharded_state_dict() -> dict[str, io.BytesIO]:
    """The placeholder dcp.load fills with this rank's entry."""
    return {f"rank{dist.get_rank()}": io.BytesIO()}


def load_sharded_state_dict(
    optimizer: torch.optim.Optimizer, loaded: dict[str, io.BytesIO]
) -> None:
    """Load this rank's entry (as filled by dcp.load) into the optimizer."""
    buffer = loaded[f"rank{dist.get_rank()}"]
    buffer.seek(0)
    optimizer.load_state_dict(torch.load(buffer, weights_only=True))
