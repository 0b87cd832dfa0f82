"""GPU kernel set: launchers with the CPU kernels' names and signatures (imported lazily).

Arrays are CuPy arrays on a real GPU (or numpy arrays under the CUDA simulator, which tests use
to compare every kernel with its CPU twin).

On a GPU every launch (`launch`):
- runs on CuPy's current stream (`cuda.external_stream` on its handle); the optimizers make that
  torch's current stream (`optimizers._views.kernel_stream`), so kernels are ordered with the
  forward and backward and work inside `torch.cuda.stream(...)` blocks;
- takes its arrays as numba device views built with `sync=False`: numba otherwise synchronizes
  the stream named in each argument's `__cuda_array_interface__` before the launch, one wait of
  the host per array argument;
- reads no device value and allocates nothing per call: the statistics' scratch and the fused
  step's block rows come from `_scratch` (one CuPy buffer per device, stream and use, grown on
  demand), the window's weights (rows by age, β1^age, β2^age) from one cached device table.

Host cost per launch is numba's dispatch, which grows with the number of array arguments
(bench/gpu_check.py measures it; docs/gpu.md): the window kernels take six arrays, the fused step
eight.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
from numba import cuda

from . import _cuda_kernels as K
from ._backend import is_gpu_array
from ._launch import elementwise_grid, per_block_grid

# Device tables of window weights, keyed by (device, stream, contents); a step's parameters share
# one (same cursor, t and betas), so a handful is plenty.
WEIGHT_TABLES = 32
_weight_tables: OrderedDict = OrderedDict()
# numba views of device arrays by description (`device_view`): a few per parameter.
DEVICE_VIEWS = 4096
_device_views: OrderedDict = OrderedDict()
_scratch_buffers: dict = {}
_streams: dict = {}
# One lock for the caches above: optimizers may step from several threads.
_cache_lock = threading.Lock()


def _stream_key() -> tuple[int, int]:
    import cupy

    return cupy.cuda.Device().id, cupy.cuda.get_current_stream().ptr


def current_stream():
    """numba's handle on CuPy's current stream of the current device (cached per handle)."""
    key = _stream_key()
    with _cache_lock:
        stream = _streams.get(key)
        if stream is None:
            stream = _streams[key] = cuda.external_stream(key[1])
    return stream


def device_view(x):
    """A device array (CuPy's, or anything with `__cuda_array_interface__`) as a numba device
    array that names no stream, so numba waits for none; scalars as they are.

    Views are cached by their description (pointer, shape, strides, dtype): a view owns no
    memory (the tensor or buffer behind it does, and is alive while its launch is enqueued), so
    the same description always means the same view, and the state's arrays, which keep their
    memory from step to step, are described once."""
    interface = getattr(x, "__cuda_array_interface__", None)
    if interface is None:
        return x
    key = (interface["data"], interface["shape"], interface["strides"], interface["typestr"])
    with _cache_lock:
        view = _device_views.get(key)
        if view is None:
            view = cuda.from_cuda_array_interface(interface, owner=None, sync=False)
            _device_views[key] = view
            if len(_device_views) > DEVICE_VIEWS:
                _device_views.popitem(last=False)
        else:
            _device_views.move_to_end(key)
    return view


def launch(kernel, blocks: int, threads: int, *args) -> None:
    """kernel[blocks, threads](*args). The first argument is always an array and decides: on a
    GPU the launch goes to the current stream with every array as a `device_view`; under the
    simulator (numpy arrays) the arguments go as given."""
    if is_gpu_array(args[0]):
        kernel[blocks, threads, current_stream()](*(device_view(a) for a in args))
    else:
        kernel[blocks, threads](*args)


def _scratch(name: str, like, shape: tuple[int, ...], dtype):
    """A work array of `shape` whose contents never outlive the launch it is passed to.

    GPU: a view of one CuPy buffer per (device, stream, name, dtype), reallocated only to grow.
    Launches on one stream run in order, so reusing it is safe; CuPy's pool hands a freed buffer
    to later work on the same stream only. Simulator: a fresh numba device array (a numpy array
    passed to a simulated kernel is copied in and out, so views sharing memory need this)."""
    if not is_gpu_array(like):
        return cuda.device_array(shape, dtype)
    import cupy

    size = int(np.prod(shape))
    key = (*_stream_key(), name, np.dtype(dtype).str)
    with _cache_lock:
        buffer = _scratch_buffers.get(key)
        if buffer is None or buffer.size < size:
            buffer = _scratch_buffers[key] = cupy.empty(max(size, 1), dtype)
    return buffer[:size].reshape(shape)


def _weights_table(like, rows, w1, w2):
    """(3, valid rows) in the weights' float type (float64 from the window functions): rows by
    age, β1^age, β2^age, from host (numpy) arrays. GPU: uploaded once per distinct table, device
    and stream (LRU cache); simulator: stacked in host memory."""
    dtype = w1.dtype
    host = np.stack([rows.astype(dtype), w1, w2.astype(dtype)])
    if not is_gpu_array(like):
        return host
    import cupy

    key = (*_stream_key(), host.shape[1], host.tobytes())
    with _cache_lock:
        table = _weight_tables.get(key)
        if table is None:
            table = _weight_tables[key] = cupy.asarray(host)
            if len(_weight_tables) > WEIGHT_TABLES:
                _weight_tables.popitem(last=False)
        else:
            _weight_tables.move_to_end(key)
    return table


def quantize(x, codes, lo, hi, bits, bucket, bf16_bounds, stochastic, seed):
    per_chunk = 1 if (bits == 8 or bucket % 2 == 0) else 2
    blocks, threads = elementwise_grid(-(-lo.size // per_chunk))
    launch(
        K.quantize_kernel,
        blocks,
        threads,
        x,
        codes,
        lo,
        hi,
        bits,
        bucket,
        bf16_bounds,
        stochastic,
        seed,
    )


def dequantize(codes, lo, hi, bits, bucket, bf16_bounds, out, add):
    blocks, threads = elementwise_grid(out.size)
    launch(K.dequantize_kernel, blocks, threads, codes, lo, hi, bits, bucket, bf16_bounds, out, add)


def topk_blocks(
    x,
    x_bits,
    abs_mask,
    key_bits,
    block_size,
    k_full,
    k_tail,
    values,
    values_kind,
    indices,
    n_workers,
):
    launch(
        K.topk_blocks_kernel,
        n_workers,
        per_block_grid(n_workers)[1],
        x,
        x_bits,
        abs_mask,
        key_bits,
        block_size,
        k_full,
        k_tail,
        values,
        values_kind,
        indices,
    )


def scatter_add(values, values_kind, indices, block_size, k_full, k_tail, scale, out):
    blocks, threads = elementwise_grid(values.size)
    launch(
        K.scatter_add_kernel,
        blocks,
        threads,
        values,
        values_kind,
        indices,
        block_size,
        k_full,
        k_tail,
        scale,
        out,
    )


def gather(x, indices, block_size, k_full, k_tail, values, values_kind):
    blocks, threads = elementwise_grid(values.size)
    launch(
        K.gather_kernel,
        blocks,
        threads,
        x,
        indices,
        block_size,
        k_full,
        k_tail,
        values,
        values_kind,
    )


def zero_selected(x, indices, block_size, k_full, k_tail):
    blocks, threads = elementwise_grid(indices.size)
    launch(K.zero_selected_kernel, blocks, threads, x, indices, block_size, k_full, k_tail)


def _window_scratch(like, n_workers, block_size, dtype):
    """Per-thread-block rows: (M, S) as one (2, workers, block_size) array in the statistics'
    float type, and the int32 flags."""
    if not is_gpu_array(like):  # the simulator copies these in and out: plain numpy will do
        return (
            np.empty((2, n_workers, block_size), dtype),
            np.empty((n_workers, block_size), np.int32),
        )
    return (
        _scratch("window moments", like, (2, n_workers, block_size), dtype),
        _scratch("window flags", like, (n_workers, block_size), np.int32),
    )


def window_adam(
    values,
    values_kind,
    indices,
    rows,
    w1,
    w2,
    block_size,
    k_full,
    k_tail,
    c1,
    c2,
    eps,
    out,
    n_workers,
):
    moments, flags = _window_scratch(out, n_workers, block_size, w1.dtype)
    launch(
        K.window_adam_kernel,
        n_workers,
        per_block_grid(n_workers)[1],
        values,
        values_kind,
        indices,
        _weights_table(out, rows, w1, w2),
        block_size,
        k_full,
        k_tail,
        c1,
        c2,
        eps,
        out,
        moments,
        flags,
    )


def window_adam_apply(
    values,
    values_kind,
    indices,
    rows,
    w1,
    w2,
    block_size,
    k_full,
    k_tail,
    c1,
    c2,
    eps,
    lr,
    param,
    param_kind,
    decay,
    n_workers,
):
    moments, flags = _window_scratch(param, n_workers, block_size, w1.dtype)
    launch(
        K.window_adam_apply_kernel,
        n_workers,
        per_block_grid(n_workers)[1],
        values,
        values_kind,
        indices,
        _weights_table(param, rows, w1, w2),
        block_size,
        k_full,
        k_tail,
        c1,
        c2,
        eps,
        lr,
        param,
        param_kind,
        decay,
        moments,
        flags,
    )


def ef_topk_requantize(
    grad,
    grad_kind,
    scale,
    abs_mask,
    key_bits,
    codes,
    lo,
    hi,
    bits,
    bucket,
    bounds_bf16,
    block_size,
    k_full,
    k_tail,
    row_values,
    values_kind,
    row_indices,
    feedback,
    n_workers,
):
    work = _scratch("fused rows", grad, (n_workers * block_size,), np.asarray(scale).dtype)
    launch(
        K.ef_topk_requantize_kernel,
        n_workers,
        per_block_grid(n_workers)[1],
        grad,
        grad_kind,
        scale,
        abs_mask,
        key_bits,
        codes,
        lo,
        hi,
        bits,
        bucket,
        bounds_bf16,
        block_size,
        k_full,
        k_tail,
        row_values,
        values_kind,
        row_indices,
        feedback,
        work,
        work.view(np.asarray(abs_mask).dtype),
    )


def densify_from_error(
    codes, lo, hi, bits, bucket, bounds_bf16, step, keep, param, kind, n_workers
):
    blocks, threads = elementwise_grid(lo.size)
    launch(
        K.densify_from_error_kernel,
        blocks,
        threads,
        codes,
        lo,
        hi,
        bits,
        bucket,
        bounds_bf16,
        step,
        keep,
        param,
        kind,
    )


def add_bf16(bits, out):
    blocks, threads = elementwise_grid(out.size)
    launch(K.add_bf16_kernel, blocks, threads, bits, out)


def round_to_bf16(src, bits):
    blocks, threads = elementwise_grid(src.size)
    launch(K.round_to_bf16_kernel, blocks, threads, src, bits)


def kernel_set() -> SimpleNamespace:
    """The GPU kernel set, same names and signatures as the CPU one (`_backend`)."""
    return SimpleNamespace(
        quantize=quantize,
        dequantize=dequantize,
        topk_blocks=topk_blocks,
        scatter_add=scatter_add,
        gather=gather,
        zero_selected=zero_selected,
        window_adam=window_adam,
        window_adam_apply=window_adam_apply,
        ef_topk_requantize=ef_topk_requantize,
        densify_from_error=densify_from_error,
        add_bf16=add_bf16,
        round_to_bf16=round_to_bf16,
        n_workers=lambda n_blocks: per_block_grid(n_blocks)[0],
    )
