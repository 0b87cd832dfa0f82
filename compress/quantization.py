"""Block quantization to 4 or 8 bits with per-bucket bounds (ALGORITHMS.md §2.2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate
from ._backend import kernels, namespace

BOUNDS_DTYPES = ("float32", "bfloat16")


@dataclass
class Quantized:
    """A quantized vector: codes (uint8; 4-bit packed two per byte, even element in the high
    nibble), per-bucket lo and hi (float32, or uint16 bfloat16 bits), and its format."""

    codes: object
    lo: object
    hi: object
    length: int
    bits: int
    bucket: int

    @property
    def n_buckets(self) -> int:
        return -(-self.length // self.bucket)

    @property
    def bounds_dtype(self) -> str:
        return "bfloat16" if self.lo.dtype == np.uint16 else "float32"

    @property
    def nbytes(self) -> int:
        """Bytes held: codes plus bounds."""
        return int(self.codes.nbytes + self.lo.nbytes + self.hi.nbytes)

    @classmethod
    def empty(
        cls,
        length: int,
        *,
        bits: int = 4,
        bucket: int = 64,
        bounds_dtype: str = "bfloat16",
        like=None,
    ) -> Quantized:
        """Uninitialised storage for a vector of `length` (numpy, or like's namespace)."""
        length = _validate.integer(length, "length", 0)
        bits = _validate.bits(bits)
        bucket = _validate.bucket(bucket)
        _validate.dtype_name(bounds_dtype, "bounds_dtype", BOUNDS_DTYPES)
        xp = np if like is None else namespace(like)
        n_codes = length if bits == 8 else -(-length // 2)
        n_buckets = -(-length // bucket)
        bounds = _validate.DTYPE_NAMES[bounds_dtype]
        return cls(
            codes=xp.zeros(n_codes, np.uint8),
            lo=xp.zeros(n_buckets, bounds),
            hi=xp.zeros(n_buckets, bounds),
            length=length,
            bits=bits,
            bucket=bucket,
        )

    def check(self, name: str = "q") -> None:
        """Validate shapes and dtypes of the arrays against the format."""
        _validate.integer(self.length, f"{name}.length", 0)
        _validate.bits(self.bits)
        _validate.bucket(self.bucket)
        n_codes = self.length if self.bits == 8 else -(-self.length // 2)
        _validate.vector(self.codes, f"{name}.codes", (np.uint8,))
        _validate.vector(self.lo, f"{name}.lo", (np.float32, np.uint16))
        _validate.vector(self.hi, f"{name}.hi", (self.lo.dtype,))
        if (
            self.codes.size != n_codes
            or self.n_buckets != self.lo.size
            or self.n_buckets != self.hi.size
        ):
            raise ValueError(
                f"{name} arrays do not fit length {self.length}: expected {n_codes} codes and "
                f"{self.n_buckets} bounds, got {self.codes.size} and {self.lo.size}/{self.hi.size}"
            )


def seed_from(rng) -> int:
    """A 63-bit seed from an int, a numpy Generator, or None (fresh entropy)."""
    if rng is None:
        rng = np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**63 - 1))
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise TypeError(f"rng must be None, an int in [0, 2**64) or a numpy Generator, got {rng!r}")
    if not 0 <= rng < 2**64:
        raise ValueError(f"rng must be None, an int in [0, 2**64) or a numpy Generator, got {rng}")
    return int(rng)


def quantize(
    x,
    *,
    bits: int = 4,
    bucket: int = 64,
    bounds_dtype: str | None = None,
    stochastic: bool = False,
    rng=None,
    out: Quantized | None = None,
    check_finite: bool = True,
) -> Quantized:
    """Asymmetric uniform quantization of float32 x per bucket of `bucket` elements.

    lo/hi = bucket min/max (bf16 bounds: rounded outward to bf16 first), step = (hi-lo)/(2^bits-1),
    code = round_half_up((x - lo)/step) clamped; hi == lo gives codes 0. With `stochastic`, the
    0.5 offset becomes a uniform from a counter-based hash of (seed, element index), so results
    are reproducible for an int seed or Generator `rng` and identical on CPU and GPU.
    bounds_dtype: "float32" or "bfloat16"; None takes out's, else float32.
    Cost: reads 4 B/elem (+ one finite-check read pass when check_finite), writes bits/8 B/elem.
    """
    _validate.vector(x, "x", (np.float32,))
    if check_finite:
        _validate.finite(x, "x")
    if out is None:
        bounds = "float32" if bounds_dtype is None else bounds_dtype
        out = Quantized.empty(x.size, bits=bits, bucket=bucket, bounds_dtype=bounds, like=x)
    else:
        _validate.instance(out, Quantized, "out")
        out.check("out")
        if (out.length, out.bits, out.bucket) != (x.size, bits, bucket):
            raise ValueError(
                f"out has (length, bits, bucket) = {(out.length, out.bits, out.bucket)}, "
                f"expected {(x.size, bits, bucket)}"
            )
        if bounds_dtype is not None and bounds_dtype != out.bounds_dtype:
            _validate.dtype_name(bounds_dtype, "bounds_dtype", BOUNDS_DTYPES)
            raise ValueError(
                f"bounds_dtype {bounds_dtype!r} differs from out's {out.bounds_dtype!r} "
                "(pass None to use out's)"
            )
    seed = seed_from(rng) if stochastic else 0
    kernels(x).quantize(
        x,
        out.codes,
        out.lo,
        out.hi,
        out.bits,
        out.bucket,
        out.lo.dtype == np.uint16,
        bool(stochastic),
        np.uint64(seed),
    )
    return out


def dequantize(q: Quantized, *, out=None, add: bool = False):
    """Decode q: x̂ = code·step + lo per bucket (hi == lo decodes to lo exactly; -0.0 as +0.0).
    Bounds that are not finite or have lo > hi in some bucket are refused (ValueError).

    With add=True, out += x̂ in place (error feedback without a temporary). out: float32 or
    float64 (float32 by default). Cost: reads bits/8 B/elem, writes (and with add reads) out.
    """
    _validate.instance(q, Quantized, "q")
    q.check("q")
    _validate.ordered_bounds(q.lo, q.hi, "q")
    return decode_checked_store(q, out=out, add=add)


def decode_checked_store(q: Quantized, *, out=None, add: bool = False):
    """`dequantize` without the read of every bucket's bounds, for a store whose bounds are
    known to be ordered (written by `quantize`, or checked once when it was taken in, as
    `ErrorFeedback.quantized` does): on a GPU that read would wait for the device. Shapes and
    `out` are still checked, so no call reads or writes out of bounds."""
    q.check("q")
    if out is None:
        if add:
            raise ValueError("add=True needs an out array to add into")
        out = namespace(q.codes).empty(q.length, np.float32)
    _validate.vector(out, "out", (np.float32, np.float64))
    if out.size != q.length:
        raise ValueError(f"out must have length {q.length}, got {out.size}")
    kernels(out).dequantize(
        q.codes, q.lo, q.hi, q.bits, q.bucket, q.lo.dtype == np.uint16, out, bool(add)
    )
    return out
