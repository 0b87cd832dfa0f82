"""The torch.optim plumbing every smallstate optimizer shares (OPTIMIZER_CONTRACT.md).

A subclass supplies the mathematics; this class supplies what users of `torch.optim.AdamW` rely
on: validated hyperparameters read from the param group at every step, lazily created state on
the parameter's device, the closure protocol, the non-finite-gradient policy, checkpoints that
`torch.load(weights_only=True)` accepts and that keep integer and bf16-bit state in its dtype,
refusal of a foreign or mismatched state dict, memory accounting and a per-parameter report.

Subclass hooks:
- `_checks`: hyperparameter name -> check (see `_validation`), applied to the defaults and to
  every param group (including those added later).
- `_init_state(param, group, key)`: the fresh state dict of one parameter; `key` is a stable
  per-parameter integer (the group's seed mixed with the parameter's position) for random draws.
- `_update(param, grad, state, group)`: one step for one parameter, in place.
- `_path(state)`: the name of the path the parameter took ("dense" by default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ._threads import one_busy_pool
from ._validation import COMMON_CHECKS, Check

STATE_FORMAT = 1


@dataclass(frozen=True)
class ParamReport:
    """Where one parameter went and what its optimizer state costs."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    path: str
    state_bytes: int

    @property
    def bytes_per_param(self) -> float:
        return self.state_bytes / max(1, math.prod(self.shape))


def mix_seed(seed: int, index: int) -> int:
    """A 63-bit key from (seed, index): splitmix64 finalizer, so nearby inputs decorrelate."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


class SmallStateOptimizer(torch.optim.Optimizer):
    """Base class: groups, lazy state, checkpoints, non-finite policy, accounting."""

    _checks: ClassVar[dict[str, Check]] = COMMON_CHECKS

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._validate(defaults)
        super().__init__(params, defaults)

    # ----------------------------------------------------------------- hooks for subclasses
    def _init_state(self, param: torch.Tensor, group: dict[str, Any], key: int) -> dict:
        raise NotImplementedError

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError

    def _path(self, state: dict) -> str:
        return "dense"

    def _check_loaded_values(self, param: torch.Tensor, group: dict, loaded: dict) -> None:
        """Refuse (ValueError) loaded state values this optimizer cannot step from; no-op here."""

    # ----------------------------------------------------------------- groups
    def _validate(self, options: dict[str, Any]) -> None:
        for name, check in self._checks.items():
            if name in options:
                check(name, options[name])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        merged = {**self.defaults, **param_group}
        self._validate(merged)
        super().add_param_group(param_group)

    # ----------------------------------------------------------------- step
    def _param_key(self, param: torch.Tensor, group: dict[str, Any]) -> int:
        index = 0
        for g in self.param_groups:
            for p in g["params"]:
                if p is param:
                    return mix_seed(int(group.get("seed", 0)), index)
                index += 1
        raise KeyError("parameter is not managed by this optimizer")

    def _param_name(self, param: torch.Tensor) -> str:
        for gi, g in enumerate(self.param_groups):
            for pi, p in enumerate(g["params"]):
                if p is param:
                    names = g.get("param_names")
                    return names[pi] if names else f"param_groups[{gi}]['params'][{pi}]"
        return "<unknown parameter>"

    def _usable_grad(self, param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor | None:
        grad = param.grad
        if not param.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} supports real floating-point parameters only; "
                f"{self._param_name(param)} is {param.dtype}"
            )
        if grad.is_sparse:
            raise RuntimeError(
                f"{type(self).__name__} does not support sparse gradients "
                f"({self._param_name(param)})"
            )
        total = grad.sum(dtype=torch.float64 if grad.dtype == torch.float64 else torch.float32)
        # A finite sum proves every element finite; a non-finite sum may be overflow, so look.
        if not torch.isfinite(total) and not torch.isfinite(grad).all():
            if group["nonfinite"] == "skip":
                return None
            raise FloatingPointError(
                f"non-finite gradient for {self._param_name(param)} (shape "
                f"{tuple(param.shape)}); no state was changed. Pass nonfinite='skip' to skip "
                "such steps per parameter."
            )
        return grad

    @torch.compiler.disable
    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One optimization step; runs `closure` (with grad enabled) first when given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with one_busy_pool():
            for group in self.param_groups:
                for param in group["params"]:
                    if param.grad is None:
                        continue
                    grad = self._usable_grad(param, group)
                    if grad is None:
                        continue
                    state = self.state[param]
                    if not state:
                        key = self._param_key(param, group)
                        state.update(self._init_state(param, group, key))
                    self._update(param, grad, state, group)
        return loss

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """torch's state dict plus a tag naming the optimizer and the state format."""
        saved = super().state_dict()
        saved["smallstate"] = {"optimizer": type(self).__name__, "format": STATE_FORMAT}
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict made by this optimizer class, keeping every tensor's dtype.

        Refuses (ValueError, naming the parameter and key) a state dict from another optimizer,
        from another state format, or whose state does not match what this parameter needs.
        """
        tag = state_dict.get("smallstate")
        name = type(self).__name__
        if not isinstance(tag, dict) or tag.get("optimizer") != name:
            found = tag.get("optimizer") if isinstance(tag, dict) else "a non-smallstate optimizer"
            raise ValueError(f"this state dict was saved by {found}, not by {name}")
        if tag.get("format") != STATE_FORMAT:
            raise ValueError(
                f"state format {tag.get('format')!r} is not supported "
                f"(this version reads format {STATE_FORMAT})"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"])
            for s, g in zip(saved_groups, self.param_groups, strict=True)
        ):
            raise ValueError(
                "the state dict's param groups do not match this optimizer's "
                "(number of groups or of parameters per group)"
            )
        owners = {
            pid: (param, saved)
            for saved, group in zip(saved_groups, self.param_groups, strict=True)
            for pid, param in zip(saved["params"], group["params"], strict=True)
        }
        for pid, param_state in state_dict["state"].items():
            if pid not in owners:
                raise ValueError(f"state for unknown parameter id {pid}")
            param, saved_group = owners[pid]
            group = {**self.defaults, **saved_group}
            self._validate(group)
            self._check_loaded_state(param, group, param_state)
        # Groups saved before an option existed get today's default for it, as torch does.
        plain = {k: v for k, v in state_dict.items() if k != "smallstate"}
        plain["param_groups"] = [{**self.defaults, **saved} for saved in saved_groups]
        super().load_state_dict(plain)
        # torch casts floating state to the parameter's dtype; put back the saved dtypes.
        for pid, param_state in state_dict["state"].items():
            param = owners[pid][0]
            self.state[param] = {
                k: v.to(device=param.device, copy=True) if torch.is_tensor(v) else v
                for k, v in param_state.items()
            }

    def _check_loaded_state(self, param: torch.Tensor, group: dict, loaded: dict) -> None:
        like = torch.empty_like(param, device="meta")
        expected = self._init_state(like, group, 0)
        where = self._param_name(param)
        if set(loaded) != set(expected):
            raise ValueError(
                f"state for {where} has keys {sorted(loaded)}, expected {sorted(expected)}"
            )
        for key, want in expected.items():
            got = loaded[key]
            if torch.is_tensor(want):
                if not torch.is_tensor(got) or got.shape != want.shape or got.dtype != want.dtype:
                    shown = (
                        f"{tuple(got.shape)} {got.dtype}"
                        if torch.is_tensor(got)
                        else type(got).__name__
                    )
                    raise ValueError(
                        f"state {key!r} of {where} is {shown}, expected "
                        f"{tuple(want.shape)} {want.dtype}"
                    )
            elif type(got) is not type(want):
                raise ValueError(
                    f"state {key!r} of {where} is a {type(got).__name__}, "
                    f"expected a {type(want).__name__}"
                )
        self._check_loaded_values(param, group, loaded)

    # ----------------------------------------------------------------- scratch
    def _scratch(self, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
        """A work buffer of `shape` from one growing buffer per (device, dtype).

        Scratch, not state: its contents never outlive one parameter's step, so it stays out of
        the checkpoint and is shared by every parameter.
        """
        buffers = self.__dict__.setdefault("_scratch_buffers", {})
        numel = math.prod(shape)
        buffer = buffers.get((device, dtype))
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=dtype, device=device)
            buffers[(device, dtype)] = buffer
        return buffer[:numel].view(shape)

    # ----------------------------------------------------------------- accounting
    def describe(self) -> list[ParamReport]:
        """Per parameter: name, shape, dtype, the path it took and its state bytes."""
        reports = []
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param, {})
                reports.append(
                    ParamReport(
                        name=self._param_name(param),
                        shape=tuple(param.shape),
                        dtype=param.dtype,
                        path=self._path(state) if state else "no state yet",
                        state_bytes=_state_bytes(state),
                    )
                )
        return reports

    def state_nbytes(self) -> int:
        """Real bytes of every tensor in the optimizer state (all parameters)."""
        return sum(_state_bytes(state) for state in self.state.values())


def _state_bytes(state: dict) -> int:
    return sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
