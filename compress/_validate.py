"""Argument checks shared by the public functions; every message names the argument and range."""

import numpy as np

from ._backend import is_gpu_array, kernels, namespace
from ._scalar import BF16, F16, NATIVE

MAX_BLOCK_SIZE = 32767  # block-relative indices are int16
MAX_BUCKET = 2**31 - 1  # a bucket past the vector's length is one bucket; this keeps sizes in int64
DTYPE_NAMES = {"float32": np.float32, "float64": np.float64, "bfloat16": np.uint16}


def vector(x, name: str, dtypes: tuple) -> None:
    """x must be a 1-D contiguous numpy/CuPy array of one of `dtypes`."""
    if not (isinstance(x, np.ndarray) or is_gpu_array(x)):
        raise TypeError(f"{name} must be a numpy or CuPy array, got {type(x).__name__}")
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be contiguous")
    if x.dtype not in [np.dtype(d) for d in dtypes]:
        accepted = ", ".join(_dtype_label(d) for d in dtypes)
        raise TypeError(f"{name} dtype must be one of {accepted}, got {x.dtype}")


def matrix(x, name: str, shape: tuple, dtypes: tuple) -> None:
    """x must be a C-contiguous 2-D array of the given shape and one of `dtypes`."""
    if x.shape != shape or not x.flags.c_contiguous:
        raise ValueError(f"{name} must be a contiguous array of shape {shape}, got {x.shape}")
    if x.dtype not in [np.dtype(d) for d in dtypes]:
        accepted = ", ".join(_dtype_label(d) for d in dtypes)
        raise TypeError(f"{name} dtype must be one of {accepted}, got {x.dtype}")


def _dtype_label(d) -> str:
    return "uint16 (bfloat16 bits)" if np.dtype(d) == np.uint16 else np.dtype(d).name


def integer(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """value must be an int (numpy ints too, bool refused) in [low, high] (None: unbounded)."""
    if low is not None and high is not None:
        shown = f" in [{low}, {high}]"
    else:
        shown = f" >= {low}" if low is not None else ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer{shown}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer{shown}, got {value}")
    return int(value)


def real(value, name: str) -> float:
    """value must be a real number (numpy floats and ints too, bool refused); returns a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def density(value: float) -> float:
    value = real(value, "density")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {value}")
    return value


def block_size(value: int) -> int:
    return integer(value, "block_size", 1, MAX_BLOCK_SIZE)


def bits(value: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"bits must be 4 or 8 (an integer), got {value!r}")
    if value not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {value}")
    return int(value)


def bucket(value: int) -> int:
    return integer(value, "bucket", 2, MAX_BUCKET)


def finite_real(value, name: str) -> float:
    """A finite real number (see `real`) as a float."""
    value = real(value, name)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def instance(value, cls, name: str) -> None:
    """value must be a `cls` (the containers: Quantized, SparseBlocks, SparseWindow, ...)."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")


def block_indices(indices, block_size: int, length: int, k_full: int, name: str) -> None:
    """Every block-relative index (last axis: blocks of k_full entries, the tail block last) must
    lie in [0, its block's length). One read of the indices (O(k)); negative int16 indices read
    as uint16 are >= 32768 > any block length, so one max per part suffices."""
    n_blocks = -(-length // block_size)
    split = (n_blocks - 1) * k_full
    tail_len = length - (n_blocks - 1) * block_size
    as_unsigned = indices.view(np.uint16)
    for part, limit in (
        (as_unsigned[..., :split], block_size),
        (as_unsigned[..., split:], tail_len),
    ):
        if part.size and int(part.max()) >= limit:
            worst = int(np.uint16(int(part.max())).view(np.int16))
            raise ValueError(
                f"{name} must be block-relative positions in [0, block length) (block_size "
                f"{block_size}, last block {tail_len}), got {worst}"
            )


def dtype_name(value: str, name: str, accepted: tuple) -> str:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(accepted)}, got {value!r}")
    return value


def finite(x, name: str) -> None:
    """Raise ValueError if x holds NaN or ±Inf (uint16 arrays are read as bf16). One read pass."""
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    bf16 = x.dtype == np.uint16
    if is_gpu_array(x):
        xp = namespace(x)
        ok = bool(((x & 0x7F80) != 0x7F80).all()) if bf16 else bool(xp.isfinite(x).all())
    else:
        ok = kernels(x).all_finite(x, bf16)
    if not ok:
        raise ValueError(f"{name} must be finite (no NaN or Inf)")


def ordered_bounds(lo, hi, name: str) -> None:
    """Raise ValueError unless every bucket's bounds are finite with lo <= hi (uint16 arrays are
    bf16 bits): a decode of lo > hi or of a non-finite bound would be garbage or NaN. One read of
    the bounds (n/bucket elements)."""
    xp = namespace(lo)
    if lo.dtype == np.uint16:
        lo, hi = ((b.astype(np.uint32) << np.uint32(16)).view(np.float32) for b in (lo, hi))
    with np.errstate(invalid="ignore"):
        ok = bool(xp.all(xp.isfinite(lo) & xp.isfinite(hi) & (lo <= hi)))
    if not ok:
        bad = int(xp.argmin(xp.isfinite(lo) & xp.isfinite(hi) & (lo <= hi)))
        raise ValueError(
            f"{name} bounds must be finite with lo <= hi in every bucket, got "
            f"lo={float(lo[bad])}, hi={float(hi[bad])} in bucket {bad}"
        )


def storage(x):
    """(array for the kernels, storage kind): uint16 is bf16 bits; float16 travels as its bits."""
    if x.dtype == np.uint16:
        return x, BF16
    if x.dtype == np.float16:
        return x.view(np.uint16), F16
    return x, NATIVE
