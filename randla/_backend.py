"""The one place that decides numpy (CPU) versus CuPy (GPU) and bridges torch tensors.

Algorithms in randla are written once against the small set of operations below. The numpy path
runs its products (torch.mm) and factorizations (torch.linalg: float32 stays float32, where
numpy.linalg would compute in float64) on zero-copy torch views: one BLAS/LAPACK and one thread
pool, torch's. No function here changes a thread count (docs/threads.md). CuPy is imported only
when a CuPy array is seen; tensors are recognised by their module name and crossed through DLPack.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

import compress._numba_setup  # noqa: F401  (Numba's threading layer, before any kernel runs)
from compress._jit import jit

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def namespace(x: Any):
    """numpy or cupy, following the array type."""
    if is_cupy(x):
        import cupy

        return cupy
    return np


def to_core(x: Any, name: str) -> tuple[Any, Callable[[Any], Any]]:
    """Return (numpy or CuPy view of `x`, function converting core results back to x's kind).

    Torch tensors cross zero-copy through DLPack after ``.detach()`` (so requires_grad inputs
    are accepted); CUDA tensors become CuPy arrays. Dtypes DLPack or randla cannot carry
    (float16, bfloat16, integers) are refused here with the argument's name.
    """
    if is_torch(x):
        torch_dtype = str(x.dtype).removeprefix("torch.")
        if torch_dtype not in ("float32", "float64"):
            raise TypeError(f"{name} must be float32 or float64, got torch.{torch_dtype}")
        torch = sys.modules["torch"]
        if x.layout != torch.strided:
            raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
        detached = x.detach()
        if detached.device.type == "cuda":
            import cupy

            return cupy.from_dlpack(detached), torch.from_dlpack
        return np.from_dlpack(detached), torch.from_dlpack
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a plain array, got a masked array (pass its .filled())")
    if isinstance(x, np.ndarray):
        return np.asarray(x), _identity  # a subclass (np.matrix, memmap) as a plain view
    if is_cupy(x):
        return x, _identity
    raise TypeError(
        f"{name} must be a numpy array, CuPy array or torch tensor, got {type(x).__name__}"
    )


def _identity(x: Any) -> Any:
    return x


def to_host(x: Any) -> np.ndarray:
    """A numpy copy/view of a (small) numpy or CuPy array."""
    return x.get() if is_cupy(x) else np.asarray(x)


def eps(dtype: Any) -> float:
    return float(np.finfo(dtype).eps)


def standard_normal(rng: Any, shape: tuple[int, ...], dtype: Any, xp) -> Any:
    """Gaussian draws in `dtype` from a numpy or CuPy Generator, placed on xp's device.

    float32 draws on the CPU come from torch.randn seeded by one 63-bit integer taken from `rng`
    (so they stay a function of `rng`'s state): torch's sampler is a vectorized Box-Muller,
    where numpy draws float32 one at a time (ziggurat), and an Adapprox step draws l Gaussian
    columns per matrix. Other dtypes and CuPy use `rng` directly. torch's sampler is vectorized
    per instruction set, so the same `rng` gives the same draws on the same torch build and CPU
    type, not across CPU types.
    """
    if xp is np and np.dtype(dtype) == np.float32 and isinstance(rng, np.random.Generator):
        import torch

        seeded = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**63)))
        return torch.randn(shape, dtype=torch.float32, generator=seeded, device="cpu").numpy()
    draws = rng.standard_normal(shape, dtype=dtype)
    return xp.asarray(draws)


@jit(parallel=True, fastmath={"reassoc"})
def _sum_squares_f64(flat):
    # reassoc lets the float64 sum use several vector accumulators (without it, one add chain
    # ran at a fifth of memory speed); squares are >= 0, so no cancellation, and Inf/NaN still show
    total = 0.0
    for i in numba.prange(flat.size):
        value = np.float64(flat[i])
        total += value * value
    return total


def sum_squares(a: Any) -> float:
    """Σ a_ij² accumulated in float64 in one pass (also the finiteness test: NaN/Inf show)."""
    if is_cupy(a):
        xp = namespace(a)
        return float(xp.sum(xp.square(a.astype(xp.float64))))
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return float(_sum_squares_f64(a.ravel(order="K")))
    return float(np.sum(np.square(a), dtype=np.float64))


def qr_q(y: Any) -> Any:
    """Q factor of y's economic Householder QR (LAPACK geqrf + orgqr).

    On CPU through torch.linalg.qr on a zero-copy view: every CPU factorization here runs on
    torch's LAPACK and thread pool, the pool randla's products use, so no second BLAS pool
    (scipy's OpenBLAS) spins against it (docs/threads.md). One call: the two-call form
    (torch.geqrf, then householder_product) computes the same Q and ran slower on the blocks
    rsvd orthonormalizes; the l×l R that linalg.qr also returns costs l² of the block's m·l.
    """
    if is_cupy(y):
        return namespace(y).linalg.qr(y, mode="reduced")[0]
    import torch

    return torch.linalg.qr(_tensor_view(y)).Q.numpy()


@jit
def _row_order(pivots, rows):
    """The row order that LAPACK's getrf swaps (1-based `pivots`, applied in turn) produce."""
    order = np.arange(rows)
    for i in range(pivots.size):
        j = pivots[i] - 1
        order[i], order[j] = order[j], order[i]
    return order


def lu_pl(y: Any) -> Any:
    """The row-permuted unit-lower factor P·L of y = P L U (getrf); on CPU through torch's
    lu_factor, the row swaps applied to L in one gather (never an m×m permutation matrix)."""
    if is_cupy(y):
        import cupyx.scipy.linalg

        return cupyx.scipy.linalg.lu(y, permute_l=True, overwrite_a=True, check_finite=False)[0]
    import torch

    factored, pivots = torch.linalg.lu_factor(_tensor_view(y))
    lower = torch.tril(factored[:, : min(y.shape)], -1)
    lower.diagonal().fill_(1.0)
    permuted = np.empty(lower.shape, dtype=y.dtype, order="F")
    permuted[_row_order(pivots.numpy(), y.shape[0])] = lower.numpy()
    return permuted


def low_precision_copy(a: np.ndarray) -> Any:
    """A bfloat16 torch copy of a float32 CPU matrix (same strides), for `low_precision_matmul`;
    half of a's bytes."""
    import torch

    return _tensor_view(a).to(torch.bfloat16)


def low_precision_matmul(a_low: Any, b: np.ndarray, *, transpose_a: bool, out: Any) -> Any:
    """op(a_low) @ b in bfloat16 (torch.mm: float32 accumulation, bfloat16 result; b rounded to
    bfloat16), written as float32 into `out`.

    It pays only on CPUs with bfloat16 matrix instructions (AVX512-BF16, AMX): it then reads half
    the bytes of A at a higher multiply rate; without them torch emulates bfloat16 and it can be
    slower than float32 gemm (docs/randla.md).
    """
    import torch

    left = a_low.T if transpose_a else a_low
    product = torch.mm(left, _tensor_view(b).to(torch.bfloat16))
    torch.from_numpy(out).copy_(product)
    return out


def matmul(a: Any, b: Any, *, transpose_a: bool = False, out: Any = None, low: Any = None) -> Any:
    """op(a) @ b with op = transpose when asked, written into `out` if given, else into a new
    `empty_product` block; with `low`, a's `low_precision_copy`, in bfloat16
    (`low_precision_matmul`).

    Every product is one BLAS call: CuPy's matmul on the GPU; on the CPU torch.mm on zero-copy
    views (torch's BLAS and thread pool). A transposed or Fortran-ordered operand or `out` is
    passed to gemm as its transpose flag, not copied. An `out` that overlaps a or b (gemm would
    read what it has written) gets the product through a fresh buffer.
    """
    rows, inner = a.shape[::-1] if transpose_a else a.shape
    if inner != b.shape[0]:
        raise ValueError(
            f"matmul's inner dimensions differ: op(a) is {rows}×{inner}, "
            f"b is {b.shape[0]}×{b.shape[1]}"
        )
    if out is not None and tuple(out.shape) != (rows, b.shape[1]):
        raise ValueError(
            f"matmul's out must be {rows}×{b.shape[1]}, got {'×'.join(map(str, out.shape))}"
        )
    xp = namespace(a)
    if out is not None and (xp.may_share_memory(out, a) or xp.may_share_memory(out, b)):
        out[...] = matmul(a, b, transpose_a=transpose_a, low=low)
        return out
    if out is None:
        out = empty_product(a, b.shape[1], transpose_a=transpose_a)
    if is_cupy(a):
        return xp.matmul(a.T if transpose_a else a, b, out=out)
    if low is not None:
        return low_precision_matmul(low, b, transpose_a=transpose_a, out=out)
    import torch

    left = _tensor_view(a)
    if transpose_a:
        left = left.T
    torch.mm(left, _tensor_view(b), out=torch.from_numpy(out))
    return out


def _tensor_view(x: np.ndarray) -> Any:
    """A zero-copy torch view of a numpy array that is only read (torch warns about read-only
    arrays because it could write through the view; randla never does)."""
    import torch

    if x.flags.writeable:
        return torch.from_numpy(x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(x)


def empty_product(a: Any, columns: int, *, transpose_a: bool = False) -> Any:
    """An uninitialized block for op(a) @ b with `columns` columns, laid out as op(a) is:
    C-ordered when op(a) is C-contiguous, else Fortran-ordered.

    torch.mm wrote the thin products of the range finder at least as fast in op(a)'s layout as
    in the other one, and markedly faster for A·Q into a C-ordered block when A is C-ordered
    (docs/randla.md). No layout is owed to LAPACK: every factorization here copies its input.
    """
    rows = a.shape[1] if transpose_a else a.shape[0]
    c_ordered = a.flags.f_contiguous if transpose_a else a.flags.c_contiguous
    return namespace(a).empty((rows, columns), dtype=a.dtype, order="C" if c_ordered else "F")


def cholesky_upper(gram: Any) -> Any | None:
    """Upper Cholesky factor of a small Gram matrix, or None when it is not positive definite."""
    if is_cupy(gram):
        xp = namespace(gram)
        lower = xp.linalg.cholesky(gram)
        return lower.T if bool(xp.isfinite(lower).all()) else None
    import torch

    upper, info = torch.linalg.cholesky_ex(_tensor_view(gram), upper=True)
    return None if int(info) else upper.numpy()


def solve_right_upper(y: Any, r: Any) -> Any:
    """y R⁻¹ for upper-triangular R (trsm, m·l² flops)."""
    if is_cupy(y):
        import cupyx.scipy.linalg

        return cupyx.scipy.linalg.solve_triangular(r, y.T, trans="T", lower=False).T
    import torch

    return torch.linalg.solve_triangular(
        _tensor_view(r), _tensor_view(y), upper=True, left=False
    ).numpy()


def svd_thin(b: Any) -> tuple[Any, Any, Any]:
    """Thin SVD of a small matrix in its own precision (torch's gesdd on CPU)."""
    if is_cupy(b):
        return namespace(b).linalg.svd(b, full_matrices=False)
    import torch

    u, s, v_t = torch.linalg.svd(_tensor_view(b), full_matrices=False)
    return u.numpy(), s.numpy(), v_t.numpy()
