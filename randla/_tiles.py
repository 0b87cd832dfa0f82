"""Register-tiled CPU products C ← β·C + L·R, with the micro-kernel written in LLVM IR.

The loops of `_thin` are plain Numba: LLVM vectorizes them over a row of C, so every few products
each element of C (or of a per-thread accumulator) is loaded and stored again, and on the 2-core
AMD EPYC (Zen 5) development machine they reach 200-320 GFLOP/s in float32, about half of the
two cores' FMA peak. A BLAS micro-kernel instead keeps a block of C in registers for the whole
inner dimension: per step k it loads a few vectors of row k of R, broadcasts one element of L per
row of the block, and issues rows·vectors fused multiply-adds, so loads are a small fraction of
the arithmetic and C is read and written once. Numba has no vector type to write that in, so
`_tile` is a Numba intrinsic that emits it as LLVM IR: `rows` × `vectors` accumulators of
`lanes` elements (<lanes x float> / <lanes x double>), llvm.fmuladd on each (one FMA where the
target has them; `_backend` only uses the tile there, TILES_APPLY), loads of any alignment.

Two parallel drivers run it over c (c's rows and right's rows contiguous, unit stride along a
row; left of any strides):

- `tiled_update(c, left, right, beta, rows, vectors, lanes, one)`: row blocks in parallel, each
  across c's columns in blocks of vectors·lanes, then one vector at a time, then the last
  columns (fewer than one vector) in a scalar loop, over the whole inner dimension; rows left
  over from the blocks take tiles of one row. It prefetches c PREFETCH_TILES tiles ahead. For
  a rank-K update c ← β·c + L·R (K small, `_backend.add_product`) and A·X (left = A, right =
  X, β = 0; at most DOT_TILE_ROWS rows, each a stream of broadcasts through A).
- `tiled_wide(c, left, right, beta, rows, vectors, lanes, one, item_columns, pass_depth)`: for a
  c of few rows and many columns, Aᵀ·Y computed as its transpose Yᵀ·A (left = Yᵀ, right = A):
  items of all rows by a share of the columns in parallel, the inner dimension in passes, and
  every row block per width of columns so that the panel of A it reads is reused from cache.
  Written this way A's rows are the vectors and Y's elements the broadcasts, which with 8×3
  tiles (`wide_tile_shape`) takes 11 loads per 24 FMAs, where Aᵀ·Y through a transposed
  left (one vector of Y's row, 24 broadcasts from A) took 25.

Measured on the development machine (float32, two threads, best of 15; tile 6 rows × 4 vectors
of 16): the rank-64 update of a 768×768 / 768×3072 / 3072×768 matrix 0.16 / 0.75 / 0.65 ms
against 0.32 / 1.49 / 1.25 ms with the blocked loop it replaced (`_thin`'s former rows_update;
about 470, 405, 470 against 235, 205, 240 GFLOP/s); A·X and Aᵀ·Y with 64 columns 1.2-1.7x
faster than `rows_dot` and `rows_axpy`. `tiled_wide` against `tiled_update` through a
transposed left, Aᵀ·Y on the same matrices with 16 columns, matrix in cache: 0.05 / 0.17 /
0.17 ms against 0.09 / 0.35 / 0.33 ms; with 64 columns 0.16 / 0.68 / 0.62 against 0.21 / 0.81
/ 1.24 ms; with 74 columns (padded to 80) 1.1-1.7x faster than `rows_axpy` (also on 4096×1024).

`tile_shape` sizes the block to the register file: 24 accumulators of 64 bytes with AVX-512
(32 vector registers), 12 of 32 bytes otherwise (16). `lanes` is an argument (not read from the
host inside the kernel) so that Numba's cache, keyed by the argument types, never serves a kernel
built for another vector width; the tests run the AVX2 shapes on an AVX-512 machine.
`tiled_update`'s arguments are not checked beyond their types (one float dtype, 2-D), while
`tiled_wide` also checks its shapes and split; c must not overlap left or right (`_backend`
declines or buffers such calls).
"""

from __future__ import annotations

import functools

import numba
import numba.core.codegen
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic


def _target_features() -> set[str]:
    """The CPU features Numba compiles for (NUMBA_CPU_FEATURES, else the host's as Numba sees
    them, AVX off with NUMBA_ENABLE_AVX=0)."""
    features = numba.core.config.CPU_FEATURES
    if features is None:
        features = numba.core.codegen.get_host_cpu_features()
    return {name[1:] for name in features.split(",") if name.startswith("+")}


_FEATURES = _target_features()

TILES_APPLY = "fma" in _FEATURES
"""Whether `_backend` uses the tile: only on a target with fused multiply-add (without it the
kernel stays correct, llvm.fmuladd becoming a multiply and an add, but it no longer pays)."""

VECTOR_BYTES = 64 if "avx512f" in _FEATURES else 32
"""Bytes per vector of the micro-kernel: a zmm register with AVX-512, a ymm register otherwise."""


def tile_shape(columns: int, itemsize: int, vector_bytes: int = VECTOR_BYTES) -> tuple[int, int]:
    """(rows, vectors) of the tile for a C with `columns` columns: as many vectors as the columns
    fill (at most 4 with 64-byte vectors, 2 with 32-byte ones), rows filling the accumulators:
    24 vectors with 64-byte vectors, 12 otherwise, which with the vectors of R and the broadcast
    stay within the 32 (16) registers and give enough independent FMA chains to cover their
    latency."""
    lanes = vector_bytes // itemsize
    accumulators = 24 if vector_bytes == 64 else 12
    vectors = max(1, min(4 if vector_bytes == 64 else 2, columns // lanes))
    return accumulators // vectors, vectors


def wide_tile_shape(vector_bytes: int = VECTOR_BYTES) -> tuple[int, int]:
    """(rows, vectors) of the tile for a wide product (few rows of C, many columns): 8 rows by 3
    vectors with 64-byte vectors, 4 by 3 otherwise, so that 8 (4) broadcasts and 3 loads feed
    24 (12) FMAs, and rank 16, 32, 64 split into whole tiles."""
    return (8, 3) if vector_bytes == 64 else (4, 3)


DOT_TILE_ROWS = 12
"""Most rows per tile when left is the large matrix itself (A·X): each row is a separate stream
of broadcasts through the whole inner dimension. With 16 columns (one vector) on the
development machine, 24 rows ran up to 2x slower than `_thin.rows_dot`; 12 rows 1.15-1.3x
faster (8 rows, oddly, slower again)."""

WIDE_ITEM_COLUMNS = 384
"""Most columns per parallel item of a wide product."""

WIDE_PASS_DEPTH = 384
"""Inner dimension per pass of a wide product: the panel of R a tile's width reads (384 rows
of 192 bytes, 72 KiB) stays in the core's L2 for every row block."""


@functools.cache
def count_token(count: int) -> np.ndarray:
    """An empty array with `count` dimensions: an integer carried in its Numba type (the array's
    ndim), so a kernel is compiled, and cached, per value, and its parallel loop can take it
    (Numba passes arrays, not tuples, into a prange body). Dispatch costs what any array
    argument costs; numba.literally would take 15 ms a call."""
    token = np.empty((0,) * count, dtype=np.int8)
    token.flags.writeable = False
    return token


def _counted(token: types.Type, name: str) -> int:
    if isinstance(token, types.Array) and token.dtype == types.int8:
        return token.ndim
    raise numba.errors.TypingError(f"{name} must be a count_token, got {token}")


@intrinsic
def _tile(typingctx, c, left, right, i, j, k0, k1, beta, rows, vectors, lanes):
    """C[i:i+rows, j:j+vectors·lanes] ← β·C + L[i:i+rows, k0:k1]·R[k0:k1, j:j+vectors·lanes]
    (β = 0: C is not read), all in registers; rows, vectors and lanes are `count_token`s."""
    shape = (_counted(rows, "rows"), _counted(vectors, "vectors"), _counted(lanes, "lanes"))
    for name, array in (("c", c), ("left", left), ("right", right)):
        if not (isinstance(array, types.Array) and array.ndim == 2 and array.dtype == c.dtype):
            raise numba.errors.TypingError(f"{name} must be a 2-D array of c's dtype, got {array}")
    if c.dtype not in (types.float32, types.float64):
        raise numba.errors.TypingError(f"c must be float32 or float64, got {c.dtype}")
    signature = types.void(c, left, right, i, j, k0, k1, beta, rows, vectors, lanes)

    def codegen(context, builder, sig, args):
        tile_rows, tile_vectors, tile_lanes = shape
        c_value, left_value, right_value, row0, column0, first, end, scale = args[:8]
        scale = context.cast(builder, scale, sig.args[7], sig.args[0].dtype)
        index = context.get_value_type(types.intp)
        first = context.cast(builder, first, sig.args[5], types.intp)
        end = context.cast(builder, end, sig.args[6], types.intp)
        element = context.get_value_type(sig.args[0].dtype)
        itemsize = context.get_abi_sizeof(element)
        vector = ir.VectorType(element, tile_lanes)
        multiply_add = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vector, [vector, vector, vector]),
            f"llvm.fmuladd.v{tile_lanes}f{8 * itemsize}",
        )
        c_array = context.make_array(sig.args[0])(context, builder, c_value)
        left_array = context.make_array(sig.args[1])(context, builder, left_value)
        right_array = context.make_array(sig.args[2])(context, builder, right_value)
        c_row_stride = cgutils.unpack_tuple(builder, c_array.strides)[0]
        left_row_stride, left_column_stride = cgutils.unpack_tuple(builder, left_array.strides)
        right_row_stride = cgutils.unpack_tuple(builder, right_array.strides)[0]
        byte_pointer = ir.IntType(8).as_pointer()
        c_bytes = builder.bitcast(c_array.data, byte_pointer)
        left_bytes = builder.bitcast(left_array.data, byte_pointer)
        right_bytes = builder.bitcast(right_array.data, byte_pointer)
        column_offset = builder.mul(column0, ir.Constant(index, itemsize))
        vector_bytes = tile_lanes * itemsize

        def constant(value):
            return ir.Constant(index, value)

        def vector_at(base, offset):
            return builder.bitcast(builder.gep(base, [offset]), vector.as_pointer())

        def broadcast(value):
            lane0 = builder.insert_element(
                ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0)
            )
            zeros = ir.Constant(ir.VectorType(ir.IntType(32), tile_lanes), [0] * tile_lanes)
            return builder.shuffle_vector(lane0, ir.Constant(vector, ir.Undefined), zeros)

        keep = builder.fcmp_unordered("!=", scale, ir.Constant(element, 0.0))  # NaN: keep
        scale_vector = broadcast(scale)
        zero = ir.Constant(vector, [0.0] * tile_lanes)
        accumulators = []  # (stack slot, byte offset in C); mem2reg keeps them in registers
        for r in range(tile_rows):
            row_offset = builder.add(
                builder.mul(builder.add(row0, constant(r)), c_row_stride), column_offset
            )
            for v in range(tile_vectors):
                offset = builder.add(row_offset, constant(v * vector_bytes))
                slot = cgutils.alloca_once(builder, vector)
                builder.store(zero, slot)
                with builder.if_then(keep):  # β = 0 overwrites C, NaN included
                    loaded = builder.load(vector_at(c_bytes, offset), align=itemsize)
                    builder.store(builder.fmul(scale_vector, loaded), slot)
                accumulators.append((slot, offset))
        with cgutils.for_range_slice(builder, first, end, constant(1)) as (k, _):
            right_offset = builder.add(builder.mul(k, right_row_stride), column_offset)
            right_vectors = [
                builder.load(
                    vector_at(right_bytes, builder.add(right_offset, constant(v * vector_bytes))),
                    align=itemsize,
                )
                for v in range(tile_vectors)
            ]
            left_offset = builder.mul(k, left_column_stride)
            for r in range(tile_rows):
                offset = builder.add(
                    builder.mul(builder.add(row0, constant(r)), left_row_stride), left_offset
                )
                pointer = builder.bitcast(builder.gep(left_bytes, [offset]), element.as_pointer())
                weight = broadcast(builder.load(pointer, align=itemsize))
                for v in range(tile_vectors):
                    slot = accumulators[r * tile_vectors + v][0]
                    operands = [weight, right_vectors[v], builder.load(slot)]
                    builder.store(builder.call(multiply_add, operands), slot)
        for slot, offset in accumulators:
            builder.store(builder.load(slot), vector_at(c_bytes, offset), align=itemsize)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def _prefetch_block(typingctx, c, i, j, rows, vectors, lanes):
    """Prefetch, for writing, the cache lines of c's block of rows × vectors·lanes at (i, j)
    (llvm.prefetch: a hint, never a fault, so a block past the end is harmless)."""
    shape = (_counted(rows, "rows"), _counted(vectors, "vectors"), _counted(lanes, "lanes"))
    signature = types.void(c, i, j, rows, vectors, lanes)

    def codegen(context, builder, sig, args):
        tile_rows, tile_vectors, tile_lanes = shape
        index = context.get_value_type(types.intp)
        itemsize = context.get_abi_sizeof(context.get_value_type(sig.args[0].dtype))
        array = context.make_array(sig.args[0])(context, builder, args[0])
        row_stride = cgutils.unpack_tuple(builder, array.strides)[0]
        byte_pointer = ir.IntType(8).as_pointer()
        base = builder.bitcast(array.data, byte_pointer)
        flag = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_pointer, flag, flag, flag]),
            "llvm.prefetch.p0i8",
        )
        row0 = context.cast(builder, args[1], sig.args[1], types.intp)
        column_offset = builder.mul(
            context.cast(builder, args[2], sig.args[2], types.intp), ir.Constant(index, itemsize)
        )
        write, keep, data = (ir.Constant(flag, value) for value in (1, 3, 1))
        for r in range(tile_rows):
            row = builder.mul(builder.add(row0, ir.Constant(index, r)), row_stride)
            for line in range(0, tile_vectors * tile_lanes * itemsize, 64):
                offset = builder.add(builder.add(row, column_offset), ir.Constant(index, line))
                builder.call(prefetch, [builder.gep(base, [offset]), write, keep, data])
        return context.get_dummy_value()

    return signature, codegen


PREFETCH_TILES = 2
"""How many tiles ahead along a row block `tiled_update` prefetches c: the hardware prefetcher
alone left the rank updates of matrices not in cache at 33-45 GB/s on the development machine
(read + write), two tiles ahead 43-61 GB/s."""


@njit(parallel=True, cache=True)
def tiled_update(c, left, right, beta, rows, vectors, lanes, one):
    """c (m×n) ← beta·c + left·right for left (m×K, any strides) and right (K×n); c's and
    right's rows contiguous; beta = 0 overwrites c. rows, vectors, lanes: `count_token`s of the
    tile (`_tile`, `tile_shape`); one: count_token(1). Row blocks in parallel, each across all
    columns over the whole inner dimension: for rank-K updates (K small) and A·X."""
    m, n = c.shape
    depth = right.shape[0]
    tile_rows, tile_lanes = rows.ndim, lanes.ndim
    width = vectors.ndim * tile_lanes
    blocks = m // tile_rows
    tiled_columns = n - n % width
    vector_columns = n - n % tile_lanes
    for block in prange(blocks + m % tile_rows):
        if block < blocks:
            i, height = block * tile_rows, tile_rows
        else:  # the rows after the last full block, one at a time
            i, height = blocks * tile_rows + block - blocks, 1
        for j in range(0, tiled_columns, width):
            if height == tile_rows:
                _prefetch_block(c, i, j + PREFETCH_TILES * width, rows, vectors, lanes)
                _tile(c, left, right, i, j, 0, depth, beta, rows, vectors, lanes)
            else:
                _tile(c, left, right, i, j, 0, depth, beta, one, vectors, lanes)
        for j in range(tiled_columns, vector_columns, tile_lanes):
            if height == tile_rows:
                _tile(c, left, right, i, j, 0, depth, beta, rows, one, lanes)
            else:
                _tile(c, left, right, i, j, 0, depth, beta, one, one, lanes)
        for row in range(i, i + height):  # the last columns, fewer than one vector
            for column in range(vector_columns, n):
                total = c.dtype.type(0.0)
                for k in range(depth):
                    total += left[row, k] * right[k, column]
                if beta != 0.0:
                    total += beta * c[row, column]
                c[row, column] = total


@njit(parallel=True, cache=True)
def tiled_wide(c, left, right, beta, rows, vectors, lanes, one, item_columns, pass_depth):
    """c (m×n) ← beta·c + left·right as `tiled_update`, for a c of few rows and many columns, n a
    whole number of vectors (ValueError otherwise, and for inconsistent shapes: the caller
    computes the last few columns, where a scalar loop through the whole inner dimension
    would cost more than the rest): parallel items of all rows by item_columns columns (a
    positive multiple of the vector length), each taking the inner dimension in passes of
    pass_depth (beta on the first, 1 after) and, per pass, sweeping its columns a tile's
    width at a time with every row block per width, so the panel of right that a width reads
    is reused from cache by all the blocks."""
    m, n = c.shape
    depth = right.shape[0]
    tile_rows, tile_lanes = rows.ndim, lanes.ndim
    if (
        left.shape != (m, depth)
        or right.shape[1] != n
        or n % tile_lanes
        or item_columns <= 0
        or item_columns % tile_lanes
        or pass_depth <= 0
    ):
        raise ValueError(
            "tiled_wide needs c (m×n) = left (m×K) · right (K×n), whole vectors of columns, "
            "item_columns a positive multiple of the vector length and pass_depth > 0"
        )
    width = vectors.ndim * tile_lanes
    blocked = m - m % tile_rows
    passes = max(1, -(-depth // pass_depth))
    for item in prange(-(-n // item_columns)):
        first = item * item_columns
        end = min(n, first + item_columns)
        for step in range(passes):
            k0 = step * pass_depth
            k1 = min(depth, k0 + pass_depth)
            scale = beta if step == 0 else c.dtype.type(1.0)
            j = first
            while j + width <= end:
                for i in range(0, blocked, tile_rows):
                    _tile(c, left, right, i, j, k0, k1, scale, rows, vectors, lanes)
                for i in range(blocked, m):
                    _tile(c, left, right, i, j, k0, k1, scale, one, vectors, lanes)
                j += width
            while j < end:
                for i in range(0, blocked, tile_rows):
                    _tile(c, left, right, i, j, k0, k1, scale, rows, one, lanes)
                for i in range(blocked, m):
                    _tile(c, left, right, i, j, k0, k1, scale, one, one, lanes)
                j += tile_lanes
