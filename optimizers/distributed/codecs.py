"""Gradient codecs for the all-gather comm hook: block top-k and block quantization.

A codec turns an error-compensated float32 gradient `a` into one byte message (leaving the
residual a − decode(message) in `a`, which becomes the error feedback) and adds a decoded message
into a float32 sum. Messages from different ranks cannot be summed in compressed form (top-k
supports differ across ranks; quantized codes have per-rank bounds), hence the all-gather.
Kernels come from `compress` (ALGORITHMS.md §2.1, §2.2), called on zero-copy views.
"""

from __future__ import annotations

import numpy as np

import compress

from .._validation import in_range, integer, one_of
from ._message import MessageLayout

_VALUES_DTYPES = {"float32": np.float32, "bfloat16": np.uint16}


class TopK:
    """Block top-k (§2.1): per block of `block_size`, the ceil(block_size·density) entries of
    largest magnitude, sent as values (float32 or bf16) and int16 block-relative indices.

    Message: total_k·(4 or 2) + total_k·2 bytes, i.e. about 6·density (or 4·density) bytes per
    gradient element against 4 for float32 allreduce. Encode: one top-k selection (O(n)) and a
    zeroing of the selected entries (O(k)); decode: a scatter-add, O(k) per rank.
    """

    def __init__(
        self, *, density: float = 0.01, block_size: int = 16384, values_dtype: str = "float32"
    ) -> None:
        in_range(0.0, 1.0, low_open=True)("density", density)
        integer(1, 32767)("block_size", block_size)
        one_of(*_VALUES_DTYPES)("values_dtype", values_dtype)
        self.density, self.block_size, self.values_dtype = density, block_size, values_dtype

    def _counts(self, length: int) -> compress.BlockCounts:
        return compress.block_counts(length, density=self.density, block_size=self.block_size)

    def layout(self, length: int) -> MessageLayout:
        total_k = self._counts(length).total_k
        return MessageLayout([(_VALUES_DTYPES[self.values_dtype], total_k), (np.int16, total_k)])

    def _sparse(self, fields: list, length: int) -> compress.SparseBlocks:
        values, indices = fields
        k_full = self._counts(length).k_full
        return compress.SparseBlocks(values, indices, length, self.block_size, k_full)

    def encode(self, compensated, fields: list, scratch) -> None:
        """Top-k of `compensated` into the message; the selected entries become zero there."""
        sparse = self._sparse(fields, compensated.size)
        compress.topk_blocks(
            compensated,
            density=self.density,
            block_size=self.block_size,
            values_dtype=self.values_dtype,
            out=sparse,
        )
        compress.zero_selected(compensated, sparse)

    def decode_add(self, fields: list, total) -> None:
        """total += the sparse vector held by one rank's message."""
        compress.scatter_add(self._sparse(fields, total.size), total)

    def __repr__(self) -> str:
        return (
            f"TopK(density={self.density}, block_size={self.block_size}, "
            f"values_dtype={self.values_dtype!r})"
        )


class Quantize:
    """Block quantization (§2.2): `bits` (4 or 8) per element with min/max bounds per `bucket`
    elements (float32 or bf16), deterministic round-half-up.

    Message: n·bits/8 + 2·(n/bucket)·(4 or 2) bytes (4-bit, bucket 64, float32 bounds: 0.625 bytes
    per element). Encode: quantize, then decode once to form the residual (2 passes over n);
    decode: one dequantize-add pass over n per rank.
    """

    def __init__(self, *, bits: int = 4, bucket: int = 64, bounds_dtype: str = "float32") -> None:
        one_of(4, 8)("bits", bits)
        integer(1)("bucket", bucket)
        one_of("float32", "bfloat16")("bounds_dtype", bounds_dtype)
        self.bits, self.bucket, self.bounds_dtype = bits, bucket, bounds_dtype

    def layout(self, length: int) -> MessageLayout:
        bounds = np.float32 if self.bounds_dtype == "float32" else np.uint16
        n_buckets = -(-length // self.bucket)
        n_codes = length if self.bits == 8 else -(-length // 2)
        return MessageLayout([(bounds, n_buckets), (bounds, n_buckets), (np.uint8, n_codes)])

    def _quantized(self, fields: list, length: int) -> compress.Quantized:
        lo, hi, codes = fields
        return compress.Quantized(codes, lo, hi, length, self.bits, self.bucket)

    def encode(self, compensated, fields: list, scratch) -> None:
        """Quantize `compensated` into the message; leave compensated − decoded in place."""
        quantized = self._quantized(fields, compensated.size)
        compress.quantize(
            compensated,
            bits=self.bits,
            bucket=self.bucket,
            bounds_dtype=self.bounds_dtype,
            out=quantized,
        )
        compress.dequantize(quantized, out=scratch)
        compensated -= scratch

    def decode_add(self, fields: list, total) -> None:
        """total += the dequantized vector held by one rank's message."""
        compress.dequantize(self._quantized(fields, total.size), out=total, add=True)

    def __repr__(self) -> str:
        return f"Quantize(bits={self.bits}, bucket={self.bucket}, bounds={self.bounds_dtype!r})"
