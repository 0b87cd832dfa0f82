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
- `_step_statistics(param, grad, state)`: values on the gradient's device (0-d tensors, or one
  1-D tensor) that are all finite only if every element of `grad` is (the gradient's sum by
  default); a subclass adds the values its step must know on the host (Adapprox: the extremes
  its overflow guard needs), so the check costs no pass of its own and `_update` finds them in
  `_host_statistics()`.

The step reads device values once per step (`read_host`: one transfer per device), never per
parameter: the integer bookkeeping (`_host_state_keys`) lives in host memory whatever the
parameter's device, as torch.optim keeps `step`, and the finite checks of all parameters travel
in one small tensor. On CUDA the kernels run on torch's current stream (`_views.kernel_stream`).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ._checkpoint_format import (
    TAG_KEY,
    check_tags,
    decode_text,
    encode_text,
    group_tag,
    top_level_tag,
)
from ._validation import COMMON_CHECKS, Check
from ._views import kernel_stream


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
    #: State entries kept in host memory whatever the parameter's device (0-d CPU tensors, as
    #: torch.optim keeps `step`): the step reads them as Python numbers without waiting for a GPU.
    _host_state_keys: ClassVar[frozenset[str]] = frozenset(
        {"step", "cursor", "rank", "next_rank", "key", "error_fold"}
    )

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._validate(defaults)
        # Every group carries the checkpoint tag (_checkpoint_format): torch keeps group entries.
        super().__init__(params, {**defaults, TAG_KEY: group_tag(type(self).__name__)})

    # ----------------------------------------------------------------- hooks for subclasses
    def _init_state(self, param: torch.Tensor, group: dict[str, Any], key: int) -> dict:
        raise NotImplementedError

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError

    def _path(self, state: dict) -> str:
        return "dense"

    def _step_statistics(
        self, param: torch.Tensor, grad: torch.Tensor, state: dict | None
    ) -> torch.Tensor | Sequence[torch.Tensor]:
        """Values of this step computed on the gradient's device and read on the host once per
        step with every other parameter's (`read_host`): 0-d floating tensors (or one 1-D
        tensor), all finite only if every element of `grad` is. Here: the gradient's sum (one
        pass, no read). A non-finite value may also be overflow of finite values; the caller
        then looks closer. `state` is the parameter's state (None before its first step)."""
        dtype = torch.float64 if grad.dtype == torch.float64 else torch.float32
        return (grad.sum(dtype=dtype),)

    def _host_statistics(self) -> dict[torch.Tensor, list[float]]:
        """Per parameter stepped now, the host values of its `_step_statistics` (never saved)."""
        return self.__dict__.setdefault("_host_statistics_records", {})

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
        tag = group_tag(type(self).__name__)
        if param_group.get(TAG_KEY, tag) != tag:
            raise ValueError(
                f"param group entry {TAG_KEY!r} is reserved for the checkpoint tag {tag!r}, "
                f"got {param_group[TAG_KEY]!r}"
            )
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

    def _check_grad_type(self, param: torch.Tensor, grad: torch.Tensor) -> None:
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
        # The kernels size every pass by the parameter: a gradient left from before `p.data` was
        # replaced would be read out of bounds.
        if grad.shape != param.shape or grad.device != param.device:
            raise ValueError(
                f"the gradient of {self._param_name(param)} is {tuple(grad.shape)} on "
                f"{grad.device}, but the parameter is {tuple(param.shape)} on {param.device} "
                "(p.data replaced while p.grad was kept?); no state was changed. Set p.grad to "
                "None or to a gradient of the parameter's shape"
            )

    def _usable_grad(self, param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor | None:
        """One parameter's gradient after the step's checks (None: skipped, nonfinite="skip")."""
        kept = self._screen([(param, param.grad, group)])
        return kept[0][1] if kept else None

    def _screen(self, work: list[tuple[torch.Tensor, torch.Tensor, dict]]) -> list[tuple]:
        """The (param, grad, group) entries whose gradients are finite, after the type checks.

        Raises FloatingPointError for a non-finite gradient of a group with nonfinite="raise"
        before anything changed; drops those of groups with "skip". One host read of every
        parameter's `_step_statistics`; a second, of the suspects' elementwise checks, only when
        a witness is not finite. Records the host values for `_update` (`_host_statistics`).
        """
        for param, grad, _ in work:
            self._check_grad_type(param, grad)
        statistics = read_host(
            [self._step_statistics(param, grad, self.state.get(param)) for param, grad, _ in work]
        )
        suspects = [i for i, found in enumerate(statistics) if not all(map(math.isfinite, found))]
        finite = read_host([(torch.isfinite(work[i][1]).all(),) for i in suspects])
        bad = {i for i, verdict in zip(suspects, finite, strict=True) if not verdict[0]}
        for i in sorted(bad):
            param, _, group = work[i]
            if group["nonfinite"] != "skip":
                raise FloatingPointError(
                    f"non-finite gradient for {self._param_name(param)} (shape "
                    f"{tuple(param.shape)}); no state was changed. Pass nonfinite='skip' to "
                    "skip such steps per parameter."
                )
        records = self._host_statistics()
        kept = []
        for i, entry in enumerate(work):
            if i not in bad:
                records[entry[0]] = statistics[i]
                kept.append(entry)
        return kept

    @torch.compiler.disable
    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One optimization step; runs `closure` (with grad enabled) first when given.

        Host reads of device values: one transfer per device and step (`_screen`), none per
        parameter. CUDA kernels run on torch's current stream.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every option, gradient and layout is checked before any parameter moves, so a step
        # that raises has changed nothing (options again here: a user or scheduler may have
        # written any value into a group since it was added).
        groups = [(group, plain_options(group)) for group in self.param_groups]
        work = [
            (param, param.grad, options)
            for group, options in groups
            for param in group["params"]
            if param.grad is not None
        ]
        # Meta-device parameters (deferred init) get their state's shapes, as torch's optimizers
        # do there: no check reads a value and no kernel runs.
        meta = [entry for entry in work if entry[0].is_meta]
        try:
            try:
                for _, options in groups:
                    self._validate(options)
                work = self._screen([entry for entry in work if not entry[0].is_meta])
                for param, _, options in work + meta:
                    if self.state.get(param):
                        self._check_layout(param, options)
                        self._check_fits(param, options)
                for param, grad, _ in meta:
                    self._check_grad_type(param, grad)
            except Exception:
                self._agree_to_update(False)
                raise
            self._agree_to_update(True)
            for param, _, group in meta:
                self._ensure_state(param, group)
            for device, entries in itertools.groupby(work, key=lambda entry: entry[0].device):
                with kernel_stream(device):
                    for param, grad, group in entries:
                        self._update(param, grad, self._ensure_state(param, group), group)
        finally:
            self._host_statistics().clear()
        return loss

    def _agree_to_update(self, ready: bool) -> None:
        """Called once per step after every check, before anything changes, with whether this
        process's checks passed (they raise right after a False). A no-op here; an optimizer
        whose ranks step together (`distributed.sharded`) agrees across them, so that every rank
        raises, with nothing changed, when one does."""

    def _ensure_state(self, param: torch.Tensor, group: dict[str, Any]) -> dict:
        """The parameter's state, created (with its layout and fit records) if it has none."""
        state = self.state[param]
        if not state:
            key = self._param_key(param, group)
            state.update(self._init_state(param, group, key))
            self._layouts()[param] = self._layout(group)
            self._fits()[param] = _fit(param)
        return state

    def _fits(self) -> dict[torch.Tensor, tuple]:
        """Per parameter with state, the shape, dtype and device its state was built or loaded
        for (`_fit`; never saved, set again on load)."""
        return self.__dict__.setdefault("_fit_records", {})

    def _check_fits(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        """Refuse (ValueError) a parameter whose shape, dtype or device is no longer the one its
        state was built for (`p.data` replaced by another size, `model.to(dtype)`): the kernels
        would run on the old state's sizes. A state that came without a record (unpickled, set
        by hand) is compared once with a fresh state for the parameter, as a loaded one is."""
        built = self._fits().get(param)
        now = _fit(param)
        if built is None:
            try:
                self._check_loaded_state(param, group, self.state[param])
            except ValueError as error:
                raise ValueError(
                    f"the optimizer state of {self._param_name(param)} does not fit it: {error}"
                ) from None
            self._fits()[param] = built = now
        if built != now:
            raise ValueError(
                f"{self._param_name(param)} is now {_shown(now)}, but its optimizer state was "
                f"built for {_shown(built)}; no state was changed. After resizing, casting or "
                "moving a parameter, save the optimizer's state_dict and load it into a new "
                "optimizer (loading converts the state to a new dtype; a new shape needs fresh "
                "state)"
            )

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
        """torch's state dict plus a tag naming the optimizer and the state format.

        The tag is at the top level and in every param group (torch.distributed.checkpoint's
        state-dict API keeps only the latter); string state values are saved as uint8 bytes
        (`_checkpoint_format`).
        """
        saved = super().state_dict()
        saved["state"] = {pid: encode_text(entry) for pid, entry in saved["state"].items()}
        saved[TAG_KEY] = top_level_tag(type(self).__name__)
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
        check_tags(state_dict, type(self).__name__)
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
        # An empty entry is a parameter without state (torch's set_optimizer_state_dict makes
        # one); string values come back from the bytes `state_dict` saved them as.
        loaded_states = {
            pid: self._upgrade_loaded_state(
                self._decoded_text(*owners[pid], param_state) if pid in owners else param_state
            )
            for pid, param_state in state_dict["state"].items()
            if param_state
        }
        for pid, param_state in loaded_states.items():
            if pid not in owners:
                raise ValueError(f"state for unknown parameter id {pid}")
            param, options = owners[pid]
            param_state = self._retype_loaded_state(param, options, param_state)
            loaded_states[pid] = param_state
            self._check_loaded_state(param, options, param_state)
        state: defaultdict[torch.Tensor, dict[Any, Any]] = defaultdict(dict)
        layouts = {}
        for pid, param_state in loaded_states.items():
            param, options = owners[pid]
            state[param] = {
                k: v.to(device=self._state_device(k, param), copy=True) if torch.is_tensor(v) else v
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
        self.__dict__["_fit_records"] = {p: _fit(p) for p in state}
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _retype_loaded_state(self, param: torch.Tensor, group: dict, loaded: dict) -> dict:
        """The loaded state with each floating tensor cast to the dtype a fresh state of `param`
        has (shapes unchanged): a checkpoint saved before `model.to(dtype)` loads into the cast
        model (float32 → float64 exact, float64 → float32 rounded to nearest). A copy; the state
        dict passed in is not changed. Other mismatches are left for `_check_loaded_state`."""
        expected = self._init_state(torch.empty_like(param, device="meta"), group, 0)
        retyped = dict(loaded)
        for key, want in expected.items():
            got = loaded.get(key)
            if (
                torch.is_tensor(want)
                and torch.is_tensor(got)
                and got.shape == want.shape
                and got.dtype != want.dtype
            ):
                converted = self._retype_loaded_tensor(key, got, want.dtype)
                if converted is not None:
                    retyped[key] = converted
        return retyped

    def _retype_loaded_tensor(
        self, key: str, got: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """`got` as `dtype` when both are floating (None: not convertible here). Values beyond
        the new dtype's range saturate at its largest finite magnitude, never become Inf."""
        if not (got.is_floating_point() and dtype.is_floating_point):
            return None
        return saturating_cast(got, dtype)

    def _decoded_text(self, param: torch.Tensor, group: dict, loaded: dict) -> dict:
        """`loaded` with its string values back from the uint8 bytes `state_dict` saves."""
        like = torch.empty_like(param, device="meta")
        return decode_text(loaded, self._init_state(like, group, 0))

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

    def _state_device(self, key: str, param: torch.Tensor) -> torch.device:
        """Where state entry `key` of `param` lives: host memory for `_host_state_keys`."""
        return torch.device("cpu") if key in self._host_state_keys else param.device

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


def saturating_cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`t` cast to `dtype`, finite values beyond its range clamped to ±its largest finite value
    first (NaN and ±Inf as they are)."""
    largest = torch.finfo(dtype).max
    if torch.finfo(t.dtype).max > largest:
        t = torch.where(torch.isfinite(t), t.clamp(-largest, largest), t)
    return t.to(dtype)


def _fit(param: torch.Tensor) -> tuple:
    """What a parameter's state depends on: (shape, dtype, device)."""
    return (param.shape, param.dtype, param.device)


def _shown(fit: tuple) -> str:
    """A `_fit` as errors show it: "(48, 64) torch.float32 on cpu"."""
    return f"{tuple(fit[0])} {fit[1]} on {fit[2]}"


def _state_bytes(state: dict) -> int:
    return sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))


def read_host(values: Sequence[torch.Tensor | Sequence[torch.Tensor]]) -> list[list]:
    """Per item (a 1-D tensor, or a sequence of 0-d tensors of one device), its values as Python
    numbers, with one device-to-host transfer per device (all of a device's values stacked or
    concatenated, types promoted: bool, integer and floating values come back as floats when
    mixed with floats).

    A CUDA device's values are copied into pinned host memory on its current stream and waited
    for through an event: the one intended wait of a step (torch's sync debug mode flags the
    implicit ones, as `.item()`). CPU values are read in place (no wait, nothing to copy).
    """
    out: list[list] = [[] for _ in values]
    by_device: dict[torch.device, list[tuple[int, list[torch.Tensor]]]] = {}
    for i, value in enumerate(values):
        parts = [value] if torch.is_tensor(value) else list(value)
        if parts:
            by_device.setdefault(parts[0].device, []).append((i, parts))
    for entries in by_device.values():
        tensors = [t for _, parts in entries for t in parts]
        if all(t.dim() == 0 for t in tensors):
            flat = torch.stack(tensors)  # 0-d values: no reshape per value
        else:
            flat = torch.cat([t.reshape(-1) for t in tensors])
        numbers = _to_host(flat).tolist()
        start = 0
        for i, parts in entries:
            end = start + sum(t.numel() for t in parts)
            out[i] = numbers[start:end]
            start = end
    return out


def _to_host(flat: torch.Tensor) -> torch.Tensor:
    if flat.device.type != "cuda":
        return flat.cpu()
    host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
    host.copy_(flat, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(flat.device))
    done.synchronize()
    return host
