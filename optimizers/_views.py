"""Zero-copy views of torch tensors as numpy (CPU) or CuPy (CUDA) arrays, and the stream they use.

CUDA tensors cross through DLPack; CPU tensors through `Tensor.numpy()`, the same zero-copy view
without DLPack's capsule round trip (an LDAdam step takes a few hundred views, so their cost
shows in small steps). numpy has no bfloat16 and DLPack refuses it, so bf16 tensors are viewed
as their uint16 bit patterns; the core kernels convert bits to float32 themselves.

Streams: inside `kernel_stream(device)` CuPy's current stream is torch's current stream of that
device (a `cupy.cuda.ExternalStream` on the same handle), so CuPy calls and the numba.cuda
launches of `compress._gpu` (which follow CuPy's current stream) are ordered with the forward and
backward, inside `torch.cuda.stream(...)` blocks and FSDP's streams alike. DLPack exports then
name the stream they are consumed on, which is the producer's: torch adds no wait.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch.autograd.graph import increment_version


def array_view(tensor: torch.Tensor):
    """The tensor's memory as a numpy or CuPy array (no copy; writes go to the tensor)."""
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
        return _core_view(tensor).view(np.uint16)
    return _core_view(tensor)


def _core_view(tensor: torch.Tensor):
    if tensor.device.type == "cuda":
        import cupy

        return cupy.from_dlpack(tensor)
    if tensor.device.type != "cpu":
        raise TypeError(f"tensors on {tensor.device.type!r} are not supported (cpu or cuda)")
    return tensor.numpy()


@contextlib.contextmanager
def kernel_stream(device: torch.device) -> Iterator[None]:
    """Run CuPy work (and compress's numba.cuda launches) on torch's current stream of `device`.

    Nothing to do for a CPU device, or when CuPy is not installed (then no CuPy work can run;
    code that needs it raises its own ImportError). Costs a few µs per entry; the optimizers
    enter it once per device and step. Thread-local, as both libraries' current streams are.
    """
    if device.type != "cuda":
        yield
        return
    try:
        import cupy
    except ImportError:
        yield
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    handle = torch.cuda.current_stream(index).cuda_stream
    with cupy.cuda.Device(index), cupy.cuda.ExternalStream(handle, index):
        yield


def mark_written(tensor: torch.Tensor) -> None:
    """Record an in-place change made through `array_view` in the tensor's autograd version.

    Writes through a numpy/CuPy view bypass torch's version counter, so a backward through a graph
    that saved the tensor before the change would silently use the new values; after this call
    it raises, as it does after torch's own in-place updates.
    """
    increment_version(tensor)
