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

`tiled_update(c, left, right, beta, rows, vectors, lanes, one)` runs it over c: row blocks in
parallel, each across c's columns in blocks of vectors·lanes, then one vector at a time, then the
last columns (fewer than one vector) in a scalar loop; rows left over from the blocks take tiles
of one row. c's rows and right's rows must be contiguous (unit stride along a row); left may have
any strides, so one kernel computes all three products the optimizers need:

- a rank-K update c ← β·c + L·R (K small), `_backend.add_product`;
- A·X as C = A·X (left = A, right = X, β = 0);
- Aᵀ·Y as C = Aᵀ·Y (left = A.T, a strided view: its broadcasts read consecutive elements of a
  row of A; right = Y, β = 0).

Measured on the development machine (float32, two threads, best of 15; tile 6 rows × 4 vectors
of 16): the rank-64 update of a 768×768 / 768×3072 / 3072×768 matrix 0.16 / 0.75 / 0.65 ms
against 0.32 / 1.49 / 1.25 ms with the blocked loop it replaced (`_thin`'s former rows_update;
about 470, 405, 470 against 235, 205, 240 GFLOP/s); A·X and Aᵀ·Y with 64 columns 1.2-1.7x
faster than `rows_dot` and `rows_axpy`.

`tile_shape` sizes the block to the register file: 24 accumulators of 64 bytes with AVX-512
(32 vector registers), 12 of 32 bytes otherwise (16). `lanes` is an argument (not read from the
host inside the kernel) so that Numba's cache, keyed by the argument types, never serves a kernel
built for another vector width; the tests run the AVX2 shapes on an AVX-512 machine.
Arguments are not checked beyond their types (one float dtype, 2-D): c must not overlap left or
right (`_backend.add_product` declines such calls).
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
def _tile(typingctx, c, left, right, i, j, beta, rows, vectors, lanes):
    """C[i:i+rows, j:j+vectors·lanes] ← β·C + L[i:i+rows, :]·R[:, j:j+vectors·lanes] (β = 0:
    C is not read), all in registers; rows, vectors and lanes are `count_token`s."""
    shape = (_counted(rows, "rows"), _counted(vectors, "vectors"), _counted(lanes, "lanes"))
    for name, array in (("c", c), ("left", left), ("right", right)):
        if not (isinstance(array, types.Array) and array.ndim == 2 and array.dtype == c.dtype):
            raise numba.errors.TypingError(f"{name} must be a 2-D array of c's dtype, got {array}")
    if c.dtype not in (types.float32, types.float64):
        raise numba.errors.TypingError(f"c must be float32 or float64, got {c.dtype}")
    signature = types.void(c, left, right, i, j, beta, rows, vectors, lanes)

    def codegen(context, builder, sig, args):
        tile_rows, tile_vectors, tile_lanes = shape
        c_value, left_value, right_value, row0, column0, scale = args[:6]
        scale = context.cast(builder, scale, sig.args[5], sig.args[0].dtype)
        element = context.get_value_type(sig.args[0].dtype)
        itemsize = context.get_abi_sizeof(element)
        vector = ir.VectorType(element, tile_lanes)
        index = context.get_value_type(types.intp)
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
        depth = cgutils.unpack_tuple(builder, right_array.shape)[0]
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
        with cgutils.for_range(builder, depth) as loop:
            k = loop.index
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


@njit(parallel=True, cache=True)
def tiled_update(c, left, right, beta, rows, vectors, lanes, one):
    """c (m×n) ← beta·c + left·right for left (m×K, any strides) and right (K×n); c's and
    right's rows contiguous; beta = 0 overwrites c. rows, vectors, lanes: `count_token`s of the
    tile (`_tile`, `tile_shape`); one: count_token(1)."""
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
                _tile(c, left, right, i, j, beta, rows, vectors, lanes)
            else:
                _tile(c, left, right, i, j, beta, one, vectors, lanes)
        for j in range(tiled_columns, vector_columns, tile_lanes):
            if height == tile_rows:
                _tile(c, left, right, i, j, beta, rows, one, lanes)
            else:
                _tile(c, left, right, i, j, beta, one, one, lanes)
        for row in range(i, i + height):  # the last columns, fewer than one vector
            for column in range(vector_columns, n):
                total = c.dtype.type(0.0)
                for k in range(depth):
                    total += left[row, k] * right[k, column]
                if beta != 0.0:
                    total += beta * c[row, column]
                c[row, column] = total
