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

Outside `step()` and `load_state_dict()` the optimizer's param groups hold the model's own
(DTensor) parameters and its state is keyed by them, as for a torch optimizer on FSDP2; inside,
the proxies take their place. So torch.distributed.checkpoint's `get_optimizer_state_dict` /
`set_optimizer_state_dict`, which match optimizer parameters to the model's by identity, work.
A sharded parameter's state means something on its own rank only (MicroAdam's blocks follow
the shard, an owner's state covers the whole matrix): `state_dict()` stores each of its values
under this rank's key, `{"rank<r>_of_<W>": value}`, so `dcp.save` writes every rank's entries
(a plain tensor under one key on every rank would be saved once), and loading takes this rank's
back. Resuming therefore needs the same world size and sharding; a consolidated
(`full_state_dict=True`) optimizer state dict of sharded parameters is not supported (it holds
rank 0's entries only) and loading one is refused on the other ranks (`_Sharding`).

After `step()` the sharded parameters' `.grad` are None (the proxies took them, and give them up
after the step), so FSDP's next backward never accumulates into a consumed gradient. Proxies
keep their position in the optimizer, so per-parameter random keys match single-process
training.
"""

from __future__ import annotations

import io
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from types import MethodType
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
        self.taken_grad = grad
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

    def give_back_grad(self) -> None:
        """Undo `before_step` after a step that raised: the parameter has its gradient again."""
        if self.proxy is not self.param:
            self.proxy.grad = None
        self.param.grad = self.taken_grad

    @torch.no_grad()
    def after_step(self) -> None:
        if self.mode == "replicated":
            return
        self.proxy.grad = None
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


class _Sharding:
    """The bindings of one optimizer: which objects its groups and state hold, and the per-rank
    form of a sharded parameter's state in a state dict (module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, bindings: list[_Binding]) -> None:
        self.optimizer = optimizer
        self.bindings = bindings
        self.rank_key = f"rank{dist.get_rank()}_of_{dist.get_world_size()}"
        meshes = [b.param.device_mesh for b in bindings if isinstance(b.param, DTensor)]
        #: where and among whom the ranks agree that a step may change anything
        self.group = meshes[0].get_group() if meshes else None
        self.device = bindings[0].param.device if bindings else torch.device("cpu")
        #: id -> (weak reference, version) of each tensor the last `state_dict()` handed out
        self._handed_out: dict[int, tuple[weakref.ref, int]] = {}

    def _show(self, inside: bool) -> None:
        """Put the proxies (inside) or the model's parameters (outside) into the param groups
        and key the state by them; the state dict object itself is kept."""
        pairs = ((b.param, b.proxy) for b in self.bindings)
        swap = {id(a): b for a, b in ((p, q) if inside else (q, p) for p, q in pairs)}
        for group in self.optimizer.param_groups:
            group["params"] = [swap.get(id(p), p) for p in group["params"]]
        state = self.optimizer.state
        entries = [(swap.get(id(key), key), value) for key, value in state.items()]
        state.clear()
        state.update(entries)

    @contextmanager
    def proxies_inside(self) -> Iterator[None]:
        self._show(inside=True)
        try:
            yield
        finally:
            self._show(inside=False)

    def per_rank(self, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
        """state_dict post-hook: each sharded parameter's state values under this rank's key;
        an empty entry for one without state here (a non-owner, an empty shard), which
        torch's strict `set_optimizer_state_dict` expects for every trainable parameter."""
        handed_out = {}
        for pid, binding in enumerate(self.bindings):
            if binding.mode != "replicated":
                entry = saved["state"].get(pid, {})
                saved["state"][pid] = {key: {self.rank_key: v} for key, v in entry.items()}
                handed_out.update(
                    (id(v), (weakref.ref(v), v._version))
                    for v in entry.values()
                    if torch.is_tensor(v)
                )
        self._handed_out = handed_out

    def this_rank(self, optimizer: torch.optim.Optimizer, loaded: dict[str, Any]) -> dict:
        """load_state_dict pre-hook: this rank's values of each sharded parameter's state."""
        loaded = {**loaded, "state": dict(loaded["state"])}
        positions = chain.from_iterable(group["params"] for group in loaded["param_groups"])
        for position, pid in enumerate(positions):
            entry = loaded["state"].get(pid)
            if not entry or position >= len(self.bindings):
                continue  # no state, or a group mismatch the optimizer itself refuses
            if self.bindings[position].mode != "replicated":
                loaded["state"][pid] = {
                    key: self._value_of_this_rank(pid, key, value) for key, value in entry.items()
                }
                self._refuse_untouched(pid, loaded["state"][pid])
        return loaded

    def _refuse_untouched(self, pid: Any, entry: dict[str, Any]) -> None:
        """Refuse values that are the very tensors the last `state_dict()` handed out, never
        written since: what torch's consolidated load (full_state_dict=True,
        broadcast_from_rank0=True) leaves in place of a rank's missing entries. (A sharded
        optimizer given its own unchanged state back is refused too; that load would change
        nothing.) A `dcp.load` into a template writes every tensor, which bumps its version."""
        for key, value in entry.items():
            record = self._handed_out.get(id(value))
            untouched = record is not None and record[0]() is value
            if untouched and value.numel() and value._version == record[1]:
                raise ValueError(
                    f"state {key!r} of parameter {pid!r} was not loaded: the state dict still "
                    f"holds this optimizer's own unchanged tensor for {self.rank_key}. This is "
                    "what a consolidated optimizer state dict (full_state_dict=True) of sharded "
                    "parameters gives the ranks other than 0, and it is not supported; save and "
                    "load the default, sharded form with dcp.save/dcp.load"
                )

    def _value_of_this_rank(self, pid: Any, key: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(
                f"state {key!r} of parameter {pid!r} is not stored per rank: it was not saved "
                "from a sharded_optimizer (a sharded parameter's state needs its shard's entry)"
            )
        if self.rank_key not in value:
            raise ValueError(
                f"state {key!r} of parameter {pid!r} has entries {sorted(value)}, none for "
                f"{self.rank_key}: resuming needs the world size and sharding it was saved with"
            )
        if len(value) > 1:
            raise ValueError(
                f"state {key!r} of parameter {pid!r} holds the entries of several ranks "
                f"{sorted(value)}: a consolidated optimizer state dict (full_state_dict=True) of "
                "sharded parameters is not supported (each shard's state only means something "
                "on its rank); save and load the default, sharded form with dcp.save/dcp.load"
            )
        return value[self.rank_key]


def _sharded_step(optimizer: torch.optim.Optimizer, closure: Any = None) -> Any:
    """`step` of a sharded optimizer: closure, gradients onto the proxies, the class's step
    (with its hooks) on the proxies, new values back to the shards."""
    sharding: _Sharding = optimizer._smallstate_sharding
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    for binding in sharding.bindings:
        binding.before_step()
    try:
        with sharding.proxies_inside():
            type(optimizer).step(optimizer)
    except BaseException:
        for binding in sharding.bindings:
            binding.give_back_grad()
        raise
    for binding in sharding.bindings:
        binding.after_step()
    return loss


def _agree_across_ranks(optimizer: torch.optim.Optimizer, ready: bool) -> None:
    """`_agree_to_update` of a sharded optimizer: one all-reduce of the ranks' check results
    (before anything changed), so a check that raises on one rank (a non-finite gradient with
    nonfinite="raise", a resized parameter) makes every rank raise instead of leaving the others
    in the next collective. The owner of a parameter is then still the only rank that knows why;
    the others name it."""
    sharding: _Sharding = optimizer._smallstate_sharding
    flag = torch.tensor([int(ready)], dtype=torch.int32, device=sharding.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=sharding.group)
    if ready and not flag.item():
        raise RuntimeError(
            "the optimizer step raised on another rank (its error says why); no parameter or "
            "state was changed on any rank"
        )


def _sharded_load_state_dict(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """`load_state_dict` of a sharded optimizer: the class's, checked against the proxies."""
    with optimizer._smallstate_sharding.proxies_inside():
        type(optimizer).load_state_dict(optimizer, state_dict)


def _sharded_describe(optimizer: torch.optim.Optimizer) -> list:
    """`describe()` of a sharded optimizer: what each proxy holds (this rank's shard, or the
    whole matrix on its owner) with the state this rank keeps for it."""
    with optimizer._smallstate_sharding.proxies_inside():
        return type(optimizer).describe(optimizer)


def _refuse_new_group(optimizer: torch.optim.Optimizer, param_group: dict) -> None:
    raise NotImplementedError(
        "a sharded_optimizer cannot take param groups after it is built; pass every group to "
        "sharded_optimizer"
    )


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
    instance (schedulers, `state_dict`, `describe()`, torch.distributed.checkpoint's
    state-dict API work). Collective: call `step()` on every rank (and torch's
    `get_/set_optimizer_state_dict`, whose set-up step on a stateless optimizer is a step).
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
    sharding = _Sharding(optimizer, bindings)
    optimizer._smallstate_sharding = sharding
    sharding._show(inside=False)
    optimizer.register_state_dict_post_hook(sharding.per_rank)
    optimizer.register_load_state_dict_pre_hook(sharding.this_rank)
    optimizer.step = MethodType(_sharded_step, optimizer)
    optimizer._agree_to_update = MethodType(_agree_across_ranks, optimizer)
    optimizer.load_state_dict = MethodType(_sharded_load_state_dict, optimizer)
    optimizer.add_param_group = MethodType(_refuse_new_group, optimizer)
    if hasattr(optimizer, "describe"):
        optimizer.describe = MethodType(_sharded_describe, optimizer)
    return optimizer


def sharded_state_dict(optimizer: torch.optim.Optimizer) -> dict[str, io.BytesIO]:
    """This rank's optimizer state as {'rank<r>': serialized state_dict}, for dcp.save (the
    state-dict API of torch.distributed.checkpoint works too and needs no helper)."""
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
