"""Ring buffer of the last m block-sparse vectors and its Adam statistics (ALGORITHMS.md §2.4)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import _validate
from ._backend import kernels, namespace
from .topk import VALUES_DTYPES, SparseBlocks, block_counts


@dataclass
class SparseWindow:
    """values (m, total_k) float32/float64/uint16-bf16 and int16 block-relative indices (m,
    total_k); row r is a SparseBlocks; `cursor` is the row written NEXT."""

    values: object
    indices: object
    length: int
    block_size: int
    k_full: int
    cursor: int

    @property
    def m(self) -> int:
        return int(self.values.shape[0])

    @property
    def values_kind(self) -> int:
        """Storage kind of the values for the kernels (bf16 bits or native float)."""
        return _validate.storage(self.values)[1]

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.indices.nbytes)

    def row(self, i: int) -> SparseBlocks:
        """Row i as a SparseBlocks view (writes go to the window)."""
        return SparseBlocks(
            self.values[i], self.indices[i], self.length, self.block_size, self.k_full
        )

    def advance(self) -> None:
        """cursor = (cursor + 1) mod m."""
        self.cursor = (int(self.cursor) + 1) % self.m

    @classmethod
    def empty(
        cls,
        length: int,
        *,
        m: int,
        density: float,
        block_size: int = 16384,
        values_dtype: str = "bfloat16",
        like=None,
    ) -> SparseWindow:
        """A zeroed window of m rows for vectors of `length`, cursor 0."""
        m = _validate.integer(m, "m", 1)
        _validate.dtype_name(values_dtype, "values_dtype", VALUES_DTYPES)
        length = _validate.integer(length, "length", 1)
        block_size = _validate.block_size(block_size)
        counts = block_counts(length, density=density, block_size=block_size)
        xp = np if like is None else namespace(like)
        shape = (m, counts.total_k)
        return cls(
            values=xp.zeros(shape, _validate.DTYPE_NAMES[values_dtype]),
            indices=xp.zeros(shape, np.int16),
            length=length,
            block_size=block_size,
            k_full=counts.k_full,
            cursor=0,
        )

    def check(self, name: str = "window", *, indices: bool = True) -> None:
        """Validate the format: shapes, dtypes, cursor in [0, m), and (with `indices`) every index
        in [0, its block's length), one O(m·k) read of the indices (see `SparseBlocks.check`)."""
        self.row(0).check(f"{name} row", indices=False)
        shape = tuple(self.values.shape)
        _validate.matrix(self.values, f"{name}.values", shape, (np.float32, np.float64, np.uint16))
        _validate.matrix(self.indices, f"{name}.indices", shape, (np.int16,))
        _validate.integer(self.cursor, f"{name}.cursor", 0, self.m - 1)
        if indices:
            _validate.block_indices(
                self.indices, self.block_size, self.length, self.k_full, f"{name}.indices"
            )


def _statistics_args(
    window: SparseWindow,
    t: int,
    beta1: float,
    beta2: float,
    eps: float,
    check_indices: bool,
    validate: bool = True,
):
    """Rows by age (newest first), β^age weights, bias corrections and eps, all float64 (the
    statistics' type for every window dtype), after checking every argument (unless
    `validate` is False)."""
    if validate:
        _validate.instance(window, SparseWindow, "window")
        window.check(indices=check_indices)
        if _validate.integer(t, "t") < 1:
            raise ValueError(f"t must be >= 1 (rows ever written), got {t}")
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= _validate.real(beta, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
        if not 0.0 < _validate.real(eps, "eps") < math.inf:
            raise ValueError(f"eps must be finite and > 0, got {eps}")
    # Host arrays for every kernel set: the GPU one uploads them as one cached table
    # (compress._gpu), not three copies per call.
    cached = _host_weights(min(int(t), window.m), int(window.cursor), window.m, beta1, beta2)
    rows, w1, w2 = (array.copy() for array in cached)
    c1 = np.float64((1.0 - beta1) / (1.0 - beta1**t))
    c2 = np.float64((1.0 - beta2) / (1.0 - beta2**t))
    return rows, w1, w2, c1, c2, np.float64(eps)


@functools.lru_cache(maxsize=64)
def _host_weights(valid_rows: int, cursor: int, m: int, beta1: float, beta2: float):
    """(rows by age, β1^age, β2^age) as numpy arrays, cached: every parameter of an optimizer
    step asks for the same ones (callers get copies, so nothing can change the cache)."""
    ages = np.arange(valid_rows)
    return (cursor - 1 - ages) % m, np.float64(beta1) ** ages, np.float64(beta2) ** ages


def window_adam(
    window: SparseWindow,
    t: int,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    out,
):
    """u = c1·M / (sqrt(c2·S) + eps) on the window's support, written into dense `out`.

    M, S = β1^age- and β2^age-weighted sums of the values and their squares over the valid rows
    (min(t, m); newest row = cursor - 1), c1 = (1-β1)/(1-β1^t), c2 = (1-β2)/(1-β2^t); eps > 0.
    Entries of `out` off the support are left untouched (pass a zeroed buffer for the dense u).
    Accumulation per block in a block-local float64 scratch (M, S, c1, c2, eps and u are float64
    for every window dtype, so no finite value overflows); cost O(m·k), not O(d), including the
    O(m·k) range check of the window's indices (`SparseWindow.check`) that keeps every read in
    bounds.
    """
    rows, w1, w2, c1, c2, eps_typed = _statistics_args(window, t, beta1, beta2, eps, True)
    _validate.vector(out, "out", (np.float32, np.float64))
    if out.size != window.length:
        raise ValueError(f"out must have length {window.length}, got {out.size}")
    backend = kernels(out)
    backend.window_adam(
        window.values,
        window.values_kind,
        window.indices,
        rows,
        w1,
        w2,
        window.block_size,
        window.k_full,
        window.row(0).k_tail,
        c1,
        c2,
        eps_typed,
        out,
        backend.n_workers(window.row(0).n_blocks),
    )
    return out


def window_adam_apply(
    window: SparseWindow,
    t: int,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    lr: float,
    param,
    decay: float = 1.0,
):
    """param *= decay, then param -= lr·u on the window's support only (u as in `window_adam`),
    once per coordinate.

    decay is AdamW's decoupled weight decay factor 1 − lr·weight_decay (1.0: none); the product
    is taken in the parameter's float type, as torch's `param.mul_(decay)`. param: float32,
    float64, float16, or uint16 bf16 bits. u (float64) is rounded to the parameter's float type
    and the update runs in it (float16/bf16 bits: in float32, then rounded to nearest even).
    lr must be finite and >= 0, decay finite. Every argument is checked before param changes.
    Cost: O(m·k) for the statistics (the block-local scratch is touched only at selected
    indices) plus, on CPU, one sequential read-and-write pass over each block of param, with or
    without decay: the scattered updates then hit cache lines already written instead of
    waiting on memory one by one (see `_cpu_window.window_adam_apply_kernel`). The window's
    indices are range-checked as in `window_adam`.
    """
    return _window_adam_apply(
        window, t, beta1, beta2, eps, lr, param, decay, check_indices=True, validate=True
    )


def unchecked_window_adam_apply(
    window: SparseWindow,
    t: int,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    lr: float,
    param,
    decay: float = 1.0,
):
    """`window_adam_apply` without any argument check (the index range check included):
    private to the MicroAdam optimizer, whose window was written by the kernels or checked on
    load and whose parameter sizes are checked against it before each step. Not exported: wrong
    arguments here write outside the arrays."""
    return _window_adam_apply(
        window, t, beta1, beta2, eps, lr, param, decay, check_indices=False, validate=False
    )


def _window_adam_apply(window, t, beta1, beta2, eps, lr, param, decay, check_indices, validate):
    """`window_adam_apply`, its argument checks run only with `validate`."""
    rows, w1, w2, c1, c2, eps_typed = _statistics_args(
        window, t, beta1, beta2, eps, check_indices, validate
    )
    if validate:
        if not 0.0 <= _validate.real(lr, "lr") < math.inf:
            raise ValueError(f"lr must be finite and >= 0, got {lr}")
        if not math.isfinite(_validate.real(decay, "decay")):
            raise ValueError(f"decay must be finite, got {decay}")
        _validate.vector(param, "param", (np.float32, np.float64, np.float16, np.uint16))
        if param.size != window.length:
            raise ValueError(f"param must have length {window.length}, got {param.size}")
    lr_typed = np.float64(lr) if param.dtype == np.float64 else np.float32(lr)
    param_view, param_kind = _validate.storage(param)
    backend = kernels(param)
    backend.window_adam_apply(
        window.values,
        window.values_kind,
        window.indices,
        rows,
        w1,
        w2,
        window.block_size,
        window.k_full,
        window.row(0).k_tail,
        c1,
        c2,
        eps_typed,
        lr_typed,
        param_view,
        param_kind,
        np.float64(decay),
        backend.n_workers(window.row(0).n_blocks),
    )
    return param
