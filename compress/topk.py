"""Block top-k sparsification and its sparse helpers (ALGORITHMS.md §2.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _validate
from ._backend import kernels, namespace

VALUES_DTYPES = ("float32", "float64", "bfloat16")


class BlockCounts(NamedTuple):
    """Sizes of a block top-k: per full block, in the tail block, blocks, entries in all."""

    k_full: int
    k_tail: int
    n_blocks: int
    total_k: int


def block_counts(length: int, *, density: float, block_size: int = 16384) -> BlockCounts:
    """k_full = ceil(block_size·density); the tail block keeps ceil(tail_len·density) >= 1."""
    _validate.density(density)
    block_size = _validate.block_size(block_size)
    length = _validate.integer(length, "length", 1)
    return counts_of(length, density, block_size)


def counts_of(length: int, density: float, block_size: int) -> BlockCounts:
    """`block_counts` without the argument checks, for arguments already validated."""
    n_blocks = -(-length // block_size)
    tail_len = length - (n_blocks - 1) * block_size
    k_full = min(block_size, math.ceil(block_size * density))
    k_tail = max(1, min(tail_len, math.ceil(tail_len * density)))
    return BlockCounts(k_full, k_tail, n_blocks, (n_blocks - 1) * k_full + k_tail)


@dataclass
class SparseBlocks:
    """A block-sparse vector: values (float32/float64, or uint16 bf16 bits) and int16 indices
    relative to their block, block after block: block b owns [b·k_full, b·k_full + k_b)."""

    values: object
    indices: object
    length: int
    block_size: int
    k_full: int

    @property
    def n_blocks(self) -> int:
        return -(-self.length // self.block_size)

    @property
    def k_tail(self) -> int:
        return self.values.shape[-1] - (self.n_blocks - 1) * self.k_full

    @property
    def values_kind(self) -> int:
        """Storage kind of the values for the kernels (bf16 bits or native float)."""
        return _validate.storage(self.values)[1]

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.indices.nbytes)

    @classmethod
    def empty(
        cls,
        length: int,
        *,
        density: float,
        block_size: int = 16384,
        values_dtype="float32",
        like=None,
    ) -> SparseBlocks:
        """Uninitialised storage for a block top-k of a vector of `length`."""
        _validate.dtype_name(values_dtype, "values_dtype", VALUES_DTYPES)
        counts = block_counts(length, density=density, block_size=block_size)
        xp = np if like is None else namespace(like)
        return cls(
            values=xp.zeros(counts.total_k, _validate.DTYPE_NAMES[values_dtype]),
            indices=xp.zeros(counts.total_k, np.int16),
            length=int(length),
            block_size=block_size,
            k_full=counts.k_full,
        )

    def check(self, name: str = "sparse", *, indices: bool = True) -> None:
        """Validate the format: sizes, dtypes, and (with `indices`) every index in [0, its
        block's length), which costs one O(k) read of the indices. Kernels trust checked indices:
        an index out of range would read or write outside the arrays."""
        _validate.integer(self.length, f"{name}.length", 1)
        _validate.block_size(self.block_size)
        _validate.integer(self.k_full, f"{name}.k_full", 1, self.block_size)
        _validate.vector(self.values, f"{name}.values", (np.float32, np.float64, np.uint16))
        _validate.vector(self.indices, f"{name}.indices", (np.int16,))
        if self.indices.size != self.values.size or not 1 <= self.k_tail <= self.k_full:
            raise ValueError(
                f"{name}: values/indices sizes {self.values.size}/{self.indices.size} do not fit "
                f"length {self.length}, block_size {self.block_size}, k_full {self.k_full}"
            )
        if indices:
            _validate.block_indices(
                self.indices, self.block_size, self.length, self.k_full, f"{name}.indices"
            )


def key_format(dtype):
    """(unsigned key dtype, magnitude mask, magnitude width in bits) of float32 or float64."""
    if np.dtype(dtype) == np.float32:
        return np.uint32, np.uint32(0x7FFFFFFF), 31
    return np.uint64, np.uint64(0x7FFFFFFFFFFFFFFF), 63


def _key_view(x):
    """x's bits as unsigned ints, the sign mask and the magnitude width in bits."""
    key_dtype, abs_mask, key_bits = key_format(x.dtype)
    return x.view(key_dtype), abs_mask, key_bits


def topk_blocks(
    x,
    *,
    density: float,
    block_size: int = 16384,
    values_dtype: str = "float32",
    out: SparseBlocks | None = None,
    check_finite: bool = True,
) -> SparseBlocks:
    """Per block of `block_size`, the k_b entries of largest |x| (exactly k_b; ties go to the
    lowest index), as signed values and block-relative int16 indices in ascending order.

    Algorithm: radix select of the k-th largest magnitude on its float bits (histograms of at
    most 2048 bins fitted to the range of the ~2-4·k sampled-floor candidates, a sort of the
    last <= 64), then one index-ordered gather pass. Cost per block: 2 reads of the block + a few
    passes over the candidates; O(d) total, no O(d log d).
    x: float32 or float64. check_finite adds one read pass (NaN would rank above everything).
    """
    _validate.vector(x, "x", (np.float32, np.float64))
    if check_finite:
        _validate.finite(x, "x")
    if out is None:
        out = SparseBlocks.empty(
            x.size, density=density, block_size=block_size, values_dtype=values_dtype, like=x
        )
    else:
        _validate.instance(out, SparseBlocks, "out")
        out.check("out", indices=False)
        expected = block_counts(x.size, density=density, block_size=block_size)
        if (out.length, out.block_size, out.k_full, out.k_tail) != (
            x.size,
            block_size,
            expected.k_full,
            expected.k_tail,
        ):
            raise ValueError("out does not match x's length, block_size and density")
    x_bits, abs_mask, key_bits = _key_view(x)
    backend = kernels(x)
    backend.topk_blocks(
        x,
        x_bits,
        abs_mask,
        key_bits,
        out.block_size,
        out.k_full,
        out.k_tail,
        out.values,
        out.values_kind,
        out.indices,
        backend.n_workers(out.n_blocks),
    )
    return out


def _check_pair(sparse: SparseBlocks, x, name: str) -> None:
    _validate.instance(sparse, SparseBlocks, "sparse")
    sparse.check("sparse")
    _validate.vector(x, name, (np.float32, np.float64))
    if x.size != sparse.length:
        raise ValueError(f"{name} must have length {sparse.length}, got {x.size}")


def scatter_add(sparse: SparseBlocks, out, *, scale: float = 1.0):
    """out[block start + index] += scale·value for every entry, in place. Cost O(total_k)."""
    _check_pair(sparse, out, "out")
    scale = _validate.finite_real(scale, "scale")
    kernels(out).scatter_add(
        sparse.values,
        sparse.values_kind,
        sparse.indices,
        sparse.block_size,
        sparse.k_full,
        sparse.k_tail,
        scale,
        out,
    )
    return out


def gather(x, sparse: SparseBlocks) -> SparseBlocks:
    """sparse.values = x at sparse's positions (in sparse's value dtype), in place; returns it."""
    _check_pair(sparse, x, "x")
    kernels(x).gather(
        x,
        sparse.indices,
        sparse.block_size,
        sparse.k_full,
        sparse.k_tail,
        sparse.values,
        sparse.values_kind,
    )
    return sparse


def zero_selected(x, sparse: SparseBlocks):
    """x = 0 at sparse's positions, in place. Cost O(total_k)."""
    _check_pair(sparse, x, "x")
    kernels(x).zero_selected(x, sparse.indices, sparse.block_size, sparse.k_full, sparse.k_tail)
    return x
