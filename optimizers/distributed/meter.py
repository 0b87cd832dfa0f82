"""Count the bytes any DDP comm hook (ours, PowerSGD, plain allreduce) sends, hook-agnostically.

Inside `with CollectiveByteMeter() as meter:` the torch.distributed functions all_reduce,
all_gather, all_gather_into_tensor and broadcast of this process are wrapped so each call adds
the ring-model bytes this rank sends (`ring_bytes_sent`) to `meter.bytes_sent`. Hooks that call
collectives through `torch.distributed.<name>` (the stock hooks and ours do) are all counted by
the same rule; DDP's built-in C++ allreduce (no hook registered) is not visible here: register
`default_hooks.allreduce_hook` to measure the dense baseline.
"""

from __future__ import annotations

import functools

import torch.distributed as dist

from .comm_hooks import ring_bytes_sent

_COUNTED = {
    "all_reduce": "all_reduce",
    "all_gather": "all_gather",
    "all_gather_into_tensor": "all_gather",
    "broadcast": "broadcast",
}


def _input_nbytes(name: str, args: tuple) -> int:
    tensor = args[1] if name in ("all_gather", "all_gather_into_tensor") else args[0]
    return tensor.numel() * tensor.element_size()


class CollectiveByteMeter:
    """Bytes sent by this rank through torch.distributed collectives while the meter is active.

    `bytes_sent` (ring model, see `ring_bytes_sent`) and `calls` per collective name.
    """

    def __init__(self, *, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.bytes_sent = 0.0
        self.calls: dict[str, int] = {}
        self._saved: dict[str, object] = {}

    def _wrap(self, name: str, function):
        @functools.wraps(function)
        def counted(*args, **kwargs):
            group = kwargs.get("group") or self.group
            world = dist.get_world_size(group)
            nbytes = _input_nbytes(name, args)
            self.bytes_sent += ring_bytes_sent(_COUNTED[name], nbytes, world)
            self.calls[name] = self.calls.get(name, 0) + 1
            return function(*args, **kwargs)

        return counted

    def __enter__(self) -> CollectiveByteMeter:
        for name in _COUNTED:
            self._saved[name] = getattr(dist, name)
            setattr(dist, name, self._wrap(name, self._saved[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, function in self._saved.items():
            setattr(dist, name, function)
        self._saved.clear()
