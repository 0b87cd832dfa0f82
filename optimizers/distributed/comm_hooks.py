"""A DDP communication hook that sends compressed gradients, with error feedback per bucket.

    state = CommState(TopK(density=0.01))          # or Quantize(bits=4)
    ddp_model.register_comm_hook(state, compressed_allgather_hook)

Per bucket of gradients g on each rank (n elements):
    a = g + e_bucket                    error compensation (float32)
    message, e_bucket = encode(a)       e_bucket = a − decode(message)       (the codec)
    messages = all_gather(message)      one collective of one byte buffer per rank
    g = (1/W) · Σ_ranks decode(message_r), summed in rank order on every rank
so replicas receive bit-identical averaged gradients. Cost per rank and bucket: the codec's
encode (O(n)), W decodes (O(n) each for quantization, O(k) for top-k), one float32 error buffer
of n elements kept between steps. Error feedback is the EF-SGD scheme (Karimireddy et al., 2019);
the all-gather replaces allreduce because compressed messages cannot be summed in the network.
"""

# No `from __future__ import annotations`: DDP compares the hook's annotations with the real
# dist.GradBucket and Future types.
from typing import Any, Protocol

import torch
import torch.distributed as dist

from .._views import array_view
from ._message import MessageLayout


class Codec(Protocol):
    def layout(self, length: int) -> MessageLayout: ...
    def encode(self, compensated, fields: list, scratch) -> None: ...
    def decode_add(self, fields: list, total) -> None: ...


def ring_bytes_sent(collective: str, nbytes: int, world: int) -> float:
    """Bytes one rank sends in a ring collective whose per-rank tensor has `nbytes` bytes.

    all_reduce: 2(W−1)/W·nbytes (reduce-scatter then all-gather); all_gather: (W−1)·nbytes;
    broadcast (from the root, pipelined): nbytes. For W = 2 all three equal nbytes.
    """
    factor = {"all_reduce": 2 * (world - 1) / world, "all_gather": world - 1, "broadcast": 1}
    return factor[collective] * nbytes


class CommState:
    """State of `compressed_allgather_hook`: the codec, error feedback per bucket and byte counts.

    `errors[bucket_index]` is the float32 residual of that bucket (reset when DDP rebuilds its
    buckets and the bucket's parameters change). Counters, for this rank: `steps` (backward
    passes, counted at the last bucket), `bytes_sent` and `dense_bytes_sent` (what the default
    float allreduce of the same buckets would send), both under the ring model of
    `ring_bytes_sent`; `message_bytes` is the sum of this rank's own message sizes.
    """

    def __init__(self, codec: "Codec", *, process_group: dist.ProcessGroup | None = None) -> None:
        if not all(hasattr(codec, name) for name in ("layout", "encode", "decode_add")):
            raise TypeError(f"codec must provide layout, encode and decode_add, got {codec!r}")
        self.codec = codec
        self.process_group = process_group
        self.errors: dict[int, torch.Tensor] = {}
        self._bucket_params: dict[int, tuple[int, ...]] = {}
        self.steps = 0
        self.message_bytes = 0
        self.bytes_sent = 0.0
        self.dense_bytes_sent = 0.0

    @property
    def group(self) -> dist.ProcessGroup:
        return self.process_group if self.process_group is not None else dist.group.WORLD

    def error_for(self, bucket: dist.GradBucket) -> torch.Tensor:
        """The bucket's float32 residual (zeros the first time or after a bucket rebuild)."""
        buffer, index = bucket.buffer(), bucket.index()
        params = tuple(id(p) for p in bucket.parameters())
        error = self.errors.get(index)
        known = self._bucket_params.get(index, params)
        if error is None or error.numel() != buffer.numel() or known != params:
            error = torch.zeros(buffer.numel(), dtype=torch.float32, device=buffer.device)
            self.errors[index] = error
        self._bucket_params[index] = params
        return error

    def record(self, bucket: dist.GradBucket, message_nbytes: int) -> None:
        world = dist.get_world_size(self.group)
        buffer = bucket.buffer()
        self.message_bytes += message_nbytes
        self.bytes_sent += ring_bytes_sent("all_gather", message_nbytes, world)
        self.dense_bytes_sent += ring_bytes_sent(
            "all_reduce", buffer.numel() * buffer.element_size(), world
        )
        self.steps += int(bucket.is_last())

    @property
    def bytes_per_step(self) -> float:
        """Mean bytes this rank sent per step (ring model)."""
        return self.bytes_sent / max(1, self.steps)

    @property
    def ratio_to_dense(self) -> float:
        """bytes_sent / dense_bytes_sent: the portable compression figure."""
        return self.bytes_sent / max(1.0, self.dense_bytes_sent)

    def state_dict(self) -> dict[str, Any]:
        """Error buffers and counters (tensors and numbers only), for checkpoints."""
        return {
            "errors": {str(index): error.clone() for index, error in self.errors.items()},
            "steps": self.steps,
            "message_bytes": self.message_bytes,
            "bytes_sent": self.bytes_sent,
            "dense_bytes_sent": self.dense_bytes_sent,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (bucket layouts are re-learned at the next step)."""
        self.errors = {int(index): error.clone() for index, error in saved["errors"].items()}
        self._bucket_params = {}
        self.steps = saved["steps"]
        self.message_bytes = saved["message_bytes"]
        self.bytes_sent = saved["bytes_sent"]
        self.dense_bytes_sent = saved["dense_bytes_sent"]


def compressed_allgather_hook(
    state: CommState, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: error-compensated compression, all-gather, rank-ordered decode and mean."""
    buffer = bucket.buffer()
    group = state.group
    world = dist.get_world_size(group)
    error = state.error_for(bucket)
    error.add_(buffer)
    total = buffer if buffer.dtype == torch.float32 else torch.empty_like(error)
    layout = state.codec.layout(error.numel())
    message = torch.empty(layout.nbytes, dtype=torch.uint8, device=buffer.device)
    state.codec.encode(array_view(error), layout.split(array_view(message)), array_view(total))
    gathered = torch.empty(world * layout.nbytes, dtype=torch.uint8, device=buffer.device)
    state.record(bucket, layout.nbytes)

    def decode_mean(fut: torch.futures.Future) -> torch.Tensor:
        fut.wait()
        total.zero_()
        total_view = array_view(total)
        for rank_message in array_view(gathered).reshape(world, layout.nbytes):
            state.codec.decode_add(layout.split(rank_message), total_view)
        total.div_(world)
        if total is not buffer:
            buffer.copy_(total)
        return buffer

    work = dist.all_gather_into_tensor(gathered, message, group=group, async_op=True)
    return work.get_future().then(decode_mean)
