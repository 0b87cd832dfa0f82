"""Error feedback: keep what compression dropped, add it back next time (ALGORITHMS.md §2.3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate
from ._backend import kernels
from .quantization import Quantized, decode_checked_store, quantize


@dataclass
class ErrorFeedback:
    """An error store: dense (float32, float64, or uint16 bf16 bits) or a Quantized 4/8-bit one
    (whose own quantization error is dropped, as in MicroAdam). Exactly one of the two is set."""

    dense_store: object = None
    quantized_store: Quantized | None = None

    @classmethod
    def dense(cls, array) -> ErrorFeedback:
        _validate.vector(array, "array", (np.float32, np.float64, np.uint16))
        return cls(dense_store=array)

    @classmethod
    def quantized(cls, q: Quantized) -> ErrorFeedback:
        """A store over q, whose bounds are checked here once (finite, lo <= hi per bucket):
        `add_to` then decodes without reading them again, and `store` writes ordered ones."""
        _validate.instance(q, Quantized, "q")
        q.check("q")
        _validate.ordered_bounds(q.lo, q.hi, "q")
        return cls(quantized_store=q)

    @property
    def length(self) -> int:
        if self.quantized_store is not None:
            return self.quantized_store.length
        return int(self.dense_store.size)

    @property
    def nbytes(self) -> int:
        if self.quantized_store is not None:
            return self.quantized_store.nbytes
        return int(self.dense_store.nbytes)

    def _check(self, buf, name: str) -> None:
        _validate.vector(buf, name, (np.float32, np.float64))
        if buf.size != self.length:
            raise ValueError(f"{name} must have length {self.length}, got {buf.size}")

    def add_to(self, buf):
        """buf += stored error, in place (no temporary). Cost: one read of the store and buf."""
        self._check(buf, "buf")
        q = self.quantized_store
        if q is not None:
            return decode_checked_store(q, out=buf, add=True)
        if self.dense_store.dtype == np.uint16:
            kernels(buf).add_bf16(self.dense_store, buf)
        else:
            buf += self.dense_store
        return buf

    def store(self, residual, *, check_finite: bool = True) -> None:
        """Replace the stored error with residual (quantized for a quantized store; bf16 rounds
        to nearest even). A float64 residual is rounded to float32 before a quantized store
        (one temporary; that rounding is ~1e6 times below a 4- or 8-bit step).

        A residual holding NaN or ±Inf is refused (ValueError, the store unchanged), as
        `quantize` refuses it: a quantized store would decode it as finite garbage. The check is
        one read pass; check_finite=False skips it for a residual known to be finite.
        """
        self._check(residual, "residual")
        if check_finite:
            _validate.finite(residual, "residual")
        q = self.quantized_store
        if q is not None:
            if residual.dtype == np.float64:
                residual = residual.astype(np.float32)
            quantize(residual, bits=q.bits, bucket=q.bucket, out=q, check_finite=False)
        elif self.dense_store.dtype == np.uint16:
            kernels(residual).round_to_bf16(residual, self.dense_store)
        else:
            self.dense_store[...] = residual
