"""The one place that decides numpy (CPU) versus CuPy (GPU) and bridges torch tensors.

Algorithms in randla are written once against the small set of operations below. The numpy path
keeps float32 in float32 LAPACK (scipy.linalg calls s* routines; numpy.linalg would compute in
float64) and runs its gemm-sized products on torch.mm over zero-copy views (torch's BLAS and
thread pool; see `one_busy_pool`). CuPy is imported only when a CuPy array is seen; tensors are
recognised by their module name and crossed through DLPack.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
import scipy.linalg
from threadpoolctl import ThreadpoolController

from . import _thin, _tiles

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
    (so they stay a function of `rng`'s state): its vectorized Box-Muller ran 3x faster than
    numpy's float32 ziggurat on the development machine (3072×69: 0.51 against 1.80 ms), a tenth
    of an Adapprox step at k_max = 64. Other dtypes and CuPy use `rng` directly. torch's sampler
    is vectorized per instruction set, so the same `rng` gives the same draws on the same torch
    build and CPU type (as randla's own vectorized kernels do), not across CPU types.
    """
    if xp is np and np.dtype(dtype) == np.float32 and isinstance(rng, np.random.Generator):
        import torch

        seeded = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**63)))
        return torch.randn(shape, dtype=torch.float32, generator=seeded, device="cpu").numpy()
    draws = rng.standard_normal(shape, dtype=dtype)
    return xp.asarray(draws)


@numba.njit(parallel=True, fastmath={"reassoc"}, cache=True)
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
    """Q factor of the economic Householder QR (geqrf + orgqr), y may be overwritten.

    On CPU the two LAPACK routines are called directly with a workspace of 64 columns' worth
    (at least what LAPACK's own query asks for, so the blocking and the result are identical to
    scipy.linalg.qr's): no workspace queries and no R formed, which saved 8 µs of the 13 µs a
    768×6 QR took through scipy.linalg.qr (Adapprox at k_max = 1 takes 60 of them per step).
    """
    if is_cupy(y):
        return namespace(y).linalg.qr(y, mode="reduced")[0]
    rows, columns = y.shape
    if rows < columns:
        return scipy.linalg.qr(y, mode="economic", overwrite_a=True, check_finite=False)[0]
    geqrf, orgqr = scipy.linalg.lapack.get_lapack_funcs(("geqrf", "orgqr"), (y,))
    lwork = 64 * max(1, columns)
    factored, tau, _, info = geqrf(y, lwork=lwork, overwrite_a=True)
    if info == 0:
        q, _, info = orgqr(factored, tau, lwork=lwork, overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK QR failed (info {info})")
    return q


def lu_pl(y: Any) -> Any:
    """The row-permuted unit-lower factor P·L of y = P L U (getrf), y may be overwritten."""
    if is_cupy(y):
        import cupyx.scipy.linalg

        return cupyx.scipy.linalg.lu(y, permute_l=True, overwrite_a=True, check_finite=False)[0]
    return scipy.linalg.lu(y, permute_l=True, overwrite_a=True, check_finite=False)[0]


#: Thin products (few columns in b) on CPU go to the Numba kernels of `_tiles` and `_thin`
#: instead of gemm: A·X-type products up to this many columns, Aᵀ·Y-type up to the second limit.
#: Both kernels still beat torch.mm at 384 columns on the development machine; 288 covers rank
#: 256 plus oversampling (Adapprox's default k_max).
THIN_DOT_COLUMNS = 288
THIN_AXPY_COLUMNS = 288
THIN_MIN_ELEMENTS = 1 << 15  # smaller matrices: gemm's fixed costs are as small as the loops'


_controller: ThreadpoolController | None = None
_IN_ONE_POOL = contextvars.ContextVar("randla_in_one_pool", default=False)


@contextmanager
def one_busy_pool() -> Iterator[None]:
    """Bundled BLAS (numpy's and scipy's OpenBLAS) at one thread, restored on exit (about
    10 µs; nothing when already inside one, as randla calls within an optimizer step are); every
    public randla function runs inside it (`on_one_busy_pool`).

    On CPU randla's gemms run on torch.mm, on torch's OpenMP pool with all its threads; its QRs,
    LUs and small SVDs stay on scipy's LAPACK, whose OpenBLAS has a pool of its own. When both
    pools are multi-threaded they spin against each other, and a thin QR gains nothing from a
    second thread: on the 2-core development machine a 4096×74 float32 QR took 8.0 ms on two
    OpenBLAS threads and 2.1 ms on one, an Adapprox step over twelve 512×128 and 384×128 matrices
    (k_max 16) 222 ms against 16 ms, a mixed-precision rsvd (4096×1024, rank 64) 223 ms against
    38 ms. The limit is process-wide while the context is open: another Python thread using
    numpy's BLAS meanwhile gets one thread too.
    """
    global _controller
    if _IN_ONE_POOL.get():  # nested (a randla call inside an optimizer step): already limited
        yield
        return
    if _controller is None:
        _controller = ThreadpoolController()
    token = _IN_ONE_POOL.set(True)
    try:
        with _controller.limit(limits=1, user_api="blas"):
            yield
    finally:
        _IN_ONE_POOL.reset(token)


def on_one_busy_pool(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run a public randla function inside `one_busy_pool`."""

    @functools.wraps(function)
    def in_one_pool(*args: Any, **kwargs: Any) -> Any:
        with one_busy_pool():
            return function(*args, **kwargs)

    return in_one_pool


def low_precision_copy(a: np.ndarray) -> Any:
    """A bfloat16 torch copy of a float32 CPU matrix (same strides), for `low_precision_matmul`;
    half of a's bytes."""
    import torch

    return _tensor_view(a).to(torch.bfloat16)


def low_precision_matmul(a_low: Any, b: np.ndarray, *, transpose_a: bool, out: Any) -> Any:
    """op(a_low) @ b in bfloat16 (torch.mm: float32 accumulation, bfloat16 result; b rounded to
    bfloat16), written as float32 into `out` (a new Fortran-ordered array when None).

    With AVX512-BF16 or AMX this runs about 5x faster than float32 gemm (4096×1024 by 1024×74
    on the 2-core development machine: 0.81 ms against 3.98 ms); without them torch emulates
    it and it can be slower.
    """
    import torch

    left = a_low.T if transpose_a else a_low
    product = torch.mm(left, _tensor_view(b).to(torch.bfloat16))
    if out is None:
        out = np.empty(tuple(product.shape), dtype=np.float32, order="F")
    torch.from_numpy(out).copy_(product)
    return out


def matmul(
    a: Any,
    b: Any,
    *,
    transpose_a: bool = False,
    out: Any = None,
    low: Any = None,
    fortran: bool = True,
) -> Any:
    """op(a) @ b with op = transpose when asked, written into `out` (Fortran order) if given;
    with `low`, a's `low_precision_copy`, in bfloat16 (`low_precision_matmul`). A result made
    here is Fortran-ordered (what LAPACK takes in place), or in whatever order the product
    writes it with fortran=False.

    On CPU a large contiguous matrix times a thin block (see THIN_*_COLUMNS) runs the Numba
    kernels of `_tiles` (on FMA targets: Aᵀ·Y, and A·X with column counts a multiple of the
    vector length, a single vector only where that takes at most one copy) or `_thin`, which
    stay near memory speed where gemm does not; every other product is torch.mm on zero-copy
    views, on torch's thread pool (`one_busy_pool` says why not OpenBLAS).
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
    if is_cupy(a):
        return namespace(a).matmul(a.T if transpose_a else a, b, out=out)
    if low is not None:
        return low_precision_matmul(low, b, transpose_a=transpose_a, out=out)
    thin = _thin_matmul(a, b, transpose_a, out, fortran)
    if thin is not None:
        return thin
    import torch

    left = _tensor_view(a)
    if transpose_a:
        left = left.T
    if out is None:
        out = np.empty((left.shape[0], b.shape[1]), dtype=a.dtype, order="F")
    torch.mm(left, _tensor_view(b), out=torch.from_numpy(out))
    return out


def add_product(c: np.ndarray, left: np.ndarray, right: np.ndarray, *, beta: float) -> bool:
    """c ← beta·c + left·right in place for a large contiguous CPU matrix c (m×n) and a product
    of small inner dimension K (left m×K, right K×n), through `_tiles.tiled_update`; beta = 0
    overwrites c. Returns False, doing nothing, where the kernel does not apply (c too small or
    not contiguous, K above THIN_DOT_COLUMNS, mixed dtypes, c overlapping left or right, a
    target without FMA): the caller then uses gemm.
    Inconsistent shapes raise ValueError.

    A Fortran-ordered c is updated as cᵀ ← beta·cᵀ + rightᵀ·leftᵀ. The kernel is the register
    tile of `_tiles` (`tiled_update`), 1.3-1.9x faster than `_thin`'s blocked loops on
    768×768, 768×3072 and 3072×768 float32 targets with K = 16 and 64 on the development
    machine, which were 1.1-2.2x faster than torch's addmm_ (MKL, 2 threads).
    """
    if c.shape != (left.shape[0], right.shape[1]) or left.shape[1] != right.shape[0]:
        raise ValueError(
            f"add_product needs c (m×n) = left (m×K) · right (K×n), got c {tuple(c.shape)}, "
            f"left {tuple(left.shape)}, right {tuple(right.shape)}"
        )
    if (
        not _tiles.TILES_APPLY
        or c.size < THIN_MIN_ELEMENTS
        or left.shape[1] > THIN_DOT_COLUMNS
        or c.dtype not in FLOAT_DTYPES
        or not (left.dtype == right.dtype == c.dtype)
        or not (c.flags.c_contiguous or c.flags.f_contiguous)
        or np.may_share_memory(c, left)
        or np.may_share_memory(c, right)
    ):
        return False
    if not c.flags.c_contiguous:
        c, left, right = c.T, right.T, left.T
    if not right.flags.c_contiguous:
        right = np.ascontiguousarray(right)
    _tiled(c, left, right, beta)
    return True


def _tiled(
    c: np.ndarray, left: np.ndarray, right: np.ndarray, beta: float, *, max_rows: int | None = None
) -> None:
    """`_tiles.tiled_update` with the tile this machine's vectors and c's columns take
    (`tile_shape`), cut to max_rows rows when given."""
    rows, vectors = _tiles.tile_shape(c.shape[1], c.itemsize)
    if max_rows is not None:
        rows = min(rows, max_rows)
    _tiles.tiled_update(c, left, right, c.dtype.type(beta), *_tile_tokens(rows, vectors, c))


def _transposed_product(a: np.ndarray, y: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """Aᵀ·Y for a C-ordered A (K×N) and a thin Y (K×c), computed as the wide product (Yᵀ·A)ᵀ on
    the register tile: A's rows are the tile's vectors and Yᵀ its broadcasts. A c that is not a
    whole number of tile rows is padded with zero rows of Yᵀ (a last block of fewer rows would
    load the same panel of A for fewer products); A's last N mod lanes columns (fewer than one
    vector) are copied into a zero-padded vector's width and take the tile too (a gemm there
    would wake a second BLAS pool against the Numba threads). Into `out` (Fortran-ordered N×c)
    when given, written in place when it needs no padding and overlaps neither operand, else a
    new Fortran-ordered result."""
    columns, width = y.shape[1], a.shape[1]
    lanes = _tiles.VECTOR_BYTES // a.itemsize
    whole = width - width % lanes
    tile_rows = _tiles.wide_tile_shape()[0]
    padded = -(-columns // tile_rows) * tile_rows
    in_place = (
        out is not None
        and padded == columns
        and not np.may_share_memory(out, y)
        and not np.may_share_memory(out, a)
    )
    result = out.T if in_place else np.empty((padded, width), dtype=a.dtype)
    if padded == columns:
        left = y.T
    else:
        left = np.zeros((padded, a.shape[0]), dtype=a.dtype)
        left[:columns] = y.T
    _tiled_wide(result[:, :whole], left, a[:, :whole])
    if whole < width:  # A's last columns, zero-padded to one vector
        tail = np.zeros((a.shape[0], lanes), dtype=a.dtype)
        tail[:, : width - whole] = a[:, whole:]
        part = np.empty((padded, lanes), dtype=a.dtype)
        _tiled_wide(part, left, tail)
        result[:, whole:] = part[:, : width - whole]
    if out is None:
        return result[:columns].T
    if not in_place:
        out.T[...] = result[:columns]
    return out


def _tiled_wide(c: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
    """c ← left·right on `_tiles.tiled_wide` for a c of few rows and many columns, with
    `wide_tile_shape`: about two items per thread (columns permitting), each of at most
    WIDE_ITEM_COLUMNS, the inner dimension in passes of WIDE_PASS_DEPTH; c's columns a whole
    number of vectors."""
    rows, vectors = _tiles.wide_tile_shape()
    width = vectors * _tiles.VECTOR_BYTES // c.itemsize
    share = -(-c.shape[1] // (2 * numba.get_num_threads()))
    most = max(width, _tiles.WIDE_ITEM_COLUMNS // width * width)
    item_columns = min(max(width, -(-share // width) * width), most)
    _tiles.tiled_wide(
        c,
        left,
        right,
        c.dtype.type(0.0),
        *_tile_tokens(rows, vectors, c),
        item_columns,
        _tiles.WIDE_PASS_DEPTH,
    )


def _tile_tokens(rows: int, vectors: int, c: np.ndarray) -> list[np.ndarray]:
    """The count_tokens of a tile of rows × vectors for c's dtype: rows, vectors, lanes, one."""
    lanes = _tiles.VECTOR_BYTES // c.itemsize
    return [_tiles.count_token(count) for count in (rows, vectors, lanes, 1)]


def _tensor_view(x: np.ndarray) -> Any:
    """A zero-copy torch view of a numpy array that is only read (torch warns about read-only
    arrays because it could write through the view; randla never does)."""
    import torch

    if x.flags.writeable:
        return torch.from_numpy(x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(x)


def _thin_matmul(a: Any, b: Any, transpose_a: bool, out: Any, fortran: bool) -> Any:
    """op(a) @ b through `_tiles` or `_thin` when they apply (else None): a contiguous and
    large, b thin, one float dtype, `out` (if given) Fortran-ordered. The big matrix is read as
    its C-ordered face (a, or a.T for a Fortran-ordered a), which decides between A·X and Aᵀ·Y.

    On the register tile (`_tiles`, FMA targets): Aᵀ·Y always, as the wide product (Yᵀ·A)ᵀ
    (`_transposed_product`), whose result is Fortran-ordered as it comes; A·X when the column
    count is a whole number of vectors (a single vector only where that takes at most one copy:
    of a Fortran-ordered X, or of the result into Fortran order), into a C-ordered result copied
    into a Fortran-ordered one when asked. Elsewhere `_thin`'s loops. On the development
    machine, float32, matrix in cache, Aᵀ·Y with 16 columns on 768×768, 768×3072 and 3072×768
    ran 1.6-2.0x and with 74 columns 1.1-1.7x faster than before it was written as the wide
    product; A·X with 16 columns 1.15-1.3x faster than `rows_dot` without a copy,
    0.85-0.97x with two."""
    columns = b.shape[1]
    if (
        columns > THIN_DOT_COLUMNS
        or a.size < THIN_MIN_ELEMENTS
        or a.dtype not in FLOAT_DTYPES
        or b.dtype != a.dtype
        or not (a.flags.c_contiguous or a.flags.f_contiguous)
        or (out is not None and not (out.flags.f_contiguous and out.dtype == a.dtype))
    ):
        return None
    c_face, dot = (a, not transpose_a) if a.flags.c_contiguous else (a.T, transpose_a)
    if not dot and columns > THIN_AXPY_COLUMNS:
        return None
    rows = c_face.shape[0] if dot else c_face.shape[1]
    if _tiles.TILES_APPLY and not dot:
        return _transposed_product(c_face, b, out)
    lanes = _tiles.VECTOR_BYTES // a.itemsize
    # one vector of columns: the tile only where it needs no more than one copy (of b, or of
    # the C-ordered result), else rows_dot is as fast
    copies = (not b.flags.c_contiguous) + (out is not None or fortran)
    if _tiles.TILES_APPLY and columns % lanes == 0 and (columns >= 2 * lanes or copies < 2):
        result = np.empty((rows, columns), dtype=a.dtype)
        _tiled(result, c_face, np.ascontiguousarray(b), 0.0, max_rows=_tiles.DOT_TILE_ROWS)
        if out is not None:
            out[...] = result
            return out
        return np.asfortranarray(result) if fortran else result
    if out is None:
        out = np.empty((rows, columns), dtype=a.dtype, order="F")
    b_t = b.T if b.flags.f_contiguous else np.ascontiguousarray(b.T)
    if dot:
        _thin.rows_dot(c_face, b_t, out.T)
    else:
        _thin.rows_axpy(c_face, b_t, out.T, max(1, min(numba.get_num_threads(), c_face.shape[0])))
    return out


def empty_block(rows: int, columns: int, dtype: Any, xp) -> Any:
    """A Fortran-ordered workspace block (LAPACK works on it in place)."""
    return xp.empty((rows, columns), dtype=dtype, order="F")


def cholesky_upper(gram: Any) -> Any | None:
    """Upper Cholesky factor of a small Gram matrix, or None when it is not positive definite."""
    if is_cupy(gram):
        xp = namespace(gram)
        lower = xp.linalg.cholesky(gram)
        return lower.T if bool(xp.isfinite(lower).all()) else None
    try:
        return scipy.linalg.cholesky(gram, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None


def solve_right_upper(y: Any, r: Any) -> Any:
    """y R⁻¹ for upper-triangular R (trsm, m·l² flops), in place when y is Fortran-ordered."""
    if is_cupy(y):
        import cupyx.scipy.linalg

        return cupyx.scipy.linalg.solve_triangular(r, y.T, trans="T", lower=False).T
    trsm = scipy.linalg.blas.get_blas_funcs("trsm", (y, r))
    return trsm(1.0, r, y, side=1, lower=0, overwrite_b=1)


def svd_thin(b: Any) -> tuple[Any, Any, Any]:
    """Thin SVD (gesdd) of a small matrix in its own precision."""
    if is_cupy(b):
        return namespace(b).linalg.svd(b, full_matrices=False)
    return scipy.linalg.svd(b, full_matrices=False, overwrite_a=True, check_finite=False)
