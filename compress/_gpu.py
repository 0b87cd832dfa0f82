"""GPU kernel set: launchers with the CPU kernels' names and signatures (imported lazily).

Arrays are CuPy arrays on a real GPU (or numpy arrays under the CUDA simulator, which tests use
to compare every kernel with its CPU twin); scratch is allocated in the arrays' namespace,
except the fused step's scratch, a numba device array read through two views (float and key
bits) that must share memory on a GPU and under the simulator alike.
"""

from types import SimpleNamespace

import numpy as np
from numba import cuda

from . import _cuda_kernels as K
from ._backend import namespace
from ._launch import elementwise_grid, per_block_grid


def quantize(x, codes, lo, hi, bits, bucket, bf16_bounds, stochastic, seed):
    per_chunk = 1 if (bits == 8 or bucket % 2 == 0) else 2
    blocks, threads = elementwise_grid(-(-lo.size // per_chunk))
    K.quantize_kernel[blocks, threads](
        x, codes, lo, hi, bits, bucket, bf16_bounds, stochastic, seed
    )


def dequantize(codes, lo, hi, bits, bucket, bf16_bounds, out, add):
    blocks, threads = elementwise_grid(out.size)
    K.dequantize_kernel[blocks, threads](codes, lo, hi, bits, bucket, bf16_bounds, out, add)


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
    K.topk_blocks_kernel[n_workers, per_block_grid(n_workers)[1]](
        x, x_bits, abs_mask, key_bits, block_size, k_full, k_tail, values, values_kind, indices
    )


def scatter_add(values, values_kind, indices, block_size, k_full, k_tail, scale, out):
    blocks, threads = elementwise_grid(values.size)
    K.scatter_add_kernel[blocks, threads](
        values, values_kind, indices, block_size, k_full, k_tail, scale, out
    )


def gather(x, indices, block_size, k_full, k_tail, values, values_kind):
    blocks, threads = elementwise_grid(values.size)
    K.gather_kernel[blocks, threads](x, indices, block_size, k_full, k_tail, values, values_kind)


def zero_selected(x, indices, block_size, k_full, k_tail):
    blocks, threads = elementwise_grid(indices.size)
    K.zero_selected_kernel[blocks, threads](x, indices, block_size, k_full, k_tail)


def _window_scratch(like, n_workers, block_size, dtype):
    """Per-thread-block (M, S, flags) rows; M and S in the statistics' float type."""
    xp = namespace(like)
    shape = (n_workers, block_size)
    return xp.empty(shape, dtype), xp.empty(shape, dtype), xp.empty(shape, np.int32)


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
    scratch = _window_scratch(out, n_workers, block_size, w1.dtype)
    K.window_adam_kernel[n_workers, per_block_grid(n_workers)[1]](
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
        *scratch,
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
    scratch = _window_scratch(param, n_workers, block_size, w1.dtype)
    K.window_adam_apply_kernel[n_workers, per_block_grid(n_workers)[1]](
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
        *scratch,
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
    work = cuda.device_array(n_workers * block_size, np.asarray(scale).dtype)
    K.ef_topk_requantize_kernel[n_workers, per_block_grid(n_workers)[1]](
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


def add_bf16(bits, out):
    blocks, threads = elementwise_grid(out.size)
    K.add_bf16_kernel[blocks, threads](bits, out)


def round_to_bf16(src, bits):
    blocks, threads = elementwise_grid(src.size)
    K.round_to_bf16_kernel[blocks, threads](src, bits)


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
        add_bf16=add_bf16,
        round_to_bf16=round_to_bf16,
        n_workers=lambda n_blocks: per_block_grid(n_blocks)[0],
    )
