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
- `_finite_witness(param, grad)`: a number that is finite only if every element of `grad` is
  (the gradient's sum by default); a subclass may return a statistic its step needs anyway
  (Adapprox: max|G|), so the check costs no pass of its own.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from randla._backend import one_busy_pool

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


def plain_options(group: dict[str, Any]) -> dict[str, Any]:
    """The group with every 1-element tensor and numpy scalar (alone or in a tuple, as betas)
    replaced by its Python number: hyperparameters reach the kernels as plain floats and ints
    (a scheduler may have put a tensor there, as torch allows for lr)."""

    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return value.item()
        if isinstance(value, (np.integer, np.floating)):
            return value.item()
        if isinstance(value, tuple):
            return tuple(plain(v) for v in value)
        return value

    return {k: (v if k in ("params", "param_names") else plain(v)) for k, v in group.items()}


def mix_seed(seed: int, index: int) -> int:
    """A 63-bit key from (seed, index): splitmix64 finalizer, so nearby inputs decorrelate."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


class SmallStateOptimizer(torch.optim.Optimizer):
    """Base class: groups, lazy state, checkpoints, non-finite policy, accounting."""

    _checks: ClassVar[dict[str, Check]] = COMMON_CHECKS
    #: Group options that decide the shapes and keys of a parameter's state: fixed once it exists.
    _layout_options: ClassVar[tuple[str, ...]] = ()

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

    def _finite_witness(self, param: torch.Tensor, grad: torch.Tensor) -> float:
        """A number that is finite only if every element of `grad` is: its sum (one pass). A
        non-finite sum may also be overflow of finite values; the caller then looks closer."""
        dtype = torch.float64 if grad.dtype == torch.float64 else torch.float32
        return float(grad.sum(dtype=dtype))

    def _check_loaded_values(self, param: torch.Tensor, group: dict, loaded: dict) -> None:
        """Refuse (ValueError) loaded state values this optimizer cannot step from; no-op here."""

    def _upgrade_loaded_state(self, loaded: dict) -> dict:
        """A loaded parameter state as this version stores it (before any check); as is here."""
        return loaded

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
        # A finite witness proves every element finite; a non-finite one may be overflow, so look.
        if not math.isfinite(self._finite_witness(param, grad)) and not torch.isfinite(grad).all():
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
        # Every gradient and layout is checked before any parameter moves, so a step that raises
        # has changed nothing.
        work = []
        for group in self.param_groups:
            options = plain_options(group)
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = self._usable_grad(param, group)
                if grad is None:
                    continue
                if self.state.get(param):
                    self._check_layout(param, options)
                work.append((param, grad, options))
        with one_busy_pool():
            for param, grad, group in work:
                state = self.state[param]
                if not state:
                    key = self._param_key(param, group)
                    state.update(self._init_state(param, group, key))
                    self._layouts()[param] = self._layout(group)
                self._update(param, grad, state, group)
        return loss

    def _layouts(self) -> dict[torch.Tensor, dict[str, Any]]:
        """Per parameter with state, the `_layout_options` values its state was built with: kept
        beside the state (never saved; rebuilt from the saved groups on load)."""
        return self.__dict__.setdefault("_layout_records", {})

    def _layout(self, group: dict[str, Any]) -> dict[str, Any]:
        return {name: group[name] for name in self._layout_options}

    def _check_layout(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        """Refuse (ValueError) a group option that would change this parameter's state layout."""
        built = self._layouts().setdefault(param, self._layout(group))
        for name, value in built.items():
            if group[name] != value:
                raise ValueError(
                    f"{name} of {self._param_name(param)} cannot change once its state exists "
                    f"(state built with {name}={value!r}, the group now has {group[name]!r}); "
                    "set it before the first step, or start a new optimizer"
                )

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """torch's state dict plus a tag naming the optimizer and the state format."""
        saved = super().state_dict()
        saved["smallstate"] = {"optimizer": type(self).__name__, "format": STATE_FORMAT}
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict made by this optimizer class, keeping every tensor's dtype.

        Refuses (ValueError, naming the parameter and key) a state dict from another optimizer,
        from another state format, with an invalid hyperparameter in any group, or whose state
        does not match what its parameter needs. Runs torch's load_state_dict pre- and post-hooks
        as torch does (pre-hooks before any check). Unlike torch, floating state is not cast to
        the parameter's dtype (float32 moments of a bf16 parameter stay float32), only moved to
        its device.
        """
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
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
        saved_groups = copy.deepcopy(state_dict["param_groups"])  # no aliasing, as in torch
        if len(saved_groups) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"])
            for s, g in zip(saved_groups, self.param_groups, strict=True)
        ):
            raise ValueError(
                "the state dict's param groups do not match this optimizer's "
                "(number of groups or of parameters per group)"
            )
        # Groups saved before an option existed get today's default for it, as torch does.
        merged = [{**self.defaults, **saved} for saved in saved_groups]
        for group in merged:
            self._validate(group)
        owners = {
            pid: (param, plain_options(options))
            for saved, options, group in zip(saved_groups, merged, self.param_groups, strict=True)
            for pid, param in zip(saved["params"], group["params"], strict=True)
        }
        loaded_states = {
            pid: self._upgrade_loaded_state(param_state)
            for pid, param_state in state_dict["state"].items()
        }
        for pid, param_state in loaded_states.items():
            if pid not in owners:
                raise ValueError(f"state for unknown parameter id {pid}")
            param, options = owners[pid]
            self._check_loaded_state(param, options, param_state)
        state: defaultdict[torch.Tensor, dict[Any, Any]] = defaultdict(dict)
        layouts = {}
        for pid, param_state in loaded_states.items():
            param, options = owners[pid]
            state[param] = {
                k: v.to(device=param.device, copy=True) if torch.is_tensor(v) else v
                for k, v in param_state.items()
            }
            layouts[param] = self._layout(options)
        groups = []
        for options, group in zip(merged, self.param_groups, strict=True):
            options = {**options, "params": group["params"]}
            if "param_names" in group and "param_names" not in options:
                options["param_names"] = group["param_names"]
            groups.append(options)
        self.__setstate__({"state": state, "param_groups": groups})
        self.__dict__["_layout_records"] = layouts
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

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
        step = loaded.get("step")
        if torch.is_tensor(step) and step.numel() == 1 and not float(step) >= 0:
            raise ValueError(f"state 'step' of {where} must be >= 0, got {float(step)}")
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
