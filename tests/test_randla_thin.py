"""randla's products (`_backend.matmul`: the register tile of `_tiles` or the loops of `_thin` for
few columns, torch.mm for more) against a float64 product, for every layout, both dtypes, with
and without `out`, on both sides of the column limits, and with the tile switched off; the
tile's two drivers directly; and the one-thread OpenBLAS around randla's LAPACK calls."""

import numba
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

import randla
from optimizers import Adapprox
from randla import _backend, _tiles


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize(
    ("m", "n", "columns"),
    [
        (300, 200, 5),
        (200, 300, 1),
        (256, 512, 8),
        (256, 512, 20),
        (1, 70000, 3),
        (70000, 1, 2),
        (512, 300, 40),
        (301, 257, 37),
        (203, 150, 33),
        (513, 300, 130),
        (520, 410, 300),  # above both column limits: torch.mm
        (260, 310, 7),  # Aᵀ·Y: 7 rows of Yᵀ padded to a tile's; `_thin`: 3 left from 4-blocks
        (300, 260, 66),  # ... 66 padded; `_thin`: 2 left over
        (301, 257, 16),  # A·X with one vector: `_thin` here (two copies; see the next test)
        (263, 300, 32),  # A·X on the tile; A's last columns zero-padded to a vector for Aᵀ·Y
        (515, 300, 48),
        (300, 515, 64),
        (203, 150, 128),
        (257, 260, 24),  # float64: three vectors of 8
    ],
)
def test_products_match_float64(dtype, order, transpose_a, m, n, columns):
    rng = np.random.default_rng(m + n + columns)
    a = np.asarray(rng.standard_normal((m, n)), dtype=dtype, order=order)
    b = np.asfortranarray(rng.standard_normal((m if transpose_a else n, columns)).astype(dtype))
    op_a = (a.T if transpose_a else a).astype(np.float64)
    expected = op_a @ b.astype(np.float64)
    scale = (np.abs(op_a) @ np.abs(b.astype(np.float64))).max()  # bound of any summation order
    tolerance = (1e-6 if dtype == np.float32 else 1e-14) * scale
    out = np.full((n if transpose_a else m, columns), np.nan, dtype=dtype, order="F")
    a.flags.writeable = False  # read-only inputs are fine (and raise no torch warning)
    results = (_backend.matmul(a, b, transpose_a=transpose_a), out)
    assert _backend.matmul(a, b, transpose_a=transpose_a, out=out) is out
    for result in results:
        assert result.dtype == dtype and result.shape == expected.shape
        np.testing.assert_allclose(result, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", ["any order", "C-ordered b into out"])
def test_one_vector_products_on_the_tile(dtype, how):
    """A·X with one vector of columns runs on the tile where it takes at most one copy: a
    result in any order (fortran=False), or a C-ordered b into `out`; rows left over from the
    12-row tiles."""
    lanes = _tiles.VECTOR_BYTES // np.dtype(dtype).itemsize
    rng = np.random.default_rng(lanes)
    a = rng.standard_normal((301, 257)).astype(dtype)
    b = rng.standard_normal((257, lanes)).astype(dtype)
    expected = a.astype(np.float64) @ b
    if how == "any order":
        result = _backend.matmul(a, np.asfortranarray(b), fortran=False)
        assert result.flags.c_contiguous or not _tiles.TILES_APPLY
    else:
        out = np.full((301, lanes), np.nan, dtype=dtype, order="F")
        result = _backend.matmul(a, b, out=out)
        assert result is out
    tolerance = (1e-5 if dtype == np.float32 else 1e-13) * np.abs(expected).max()
    np.testing.assert_allclose(result, expected, rtol=0, atol=tolerance)


def test_c_ordered_thin_operand_is_accepted():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 300)).astype(np.float32)
    b = np.ascontiguousarray(rng.standard_normal((300, 4)).astype(np.float32))
    np.testing.assert_allclose(_backend.matmul(a, b), a @ b, rtol=1e-5, atol=1e-4)


def _blas_threads():
    return sorted(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


def test_lapack_runs_on_one_blas_thread_and_the_limit_is_restored(monkeypatch):
    seen = []
    real = _backend.qr_q
    monkeypatch.setattr(_backend, "qr_q", lambda y: seen.append(_blas_threads()) or real(y))
    before = _blas_threads()
    randla.rsvd(np.random.default_rng(0).standard_normal((300, 200)), 60, rng=0)
    param = torch.nn.Parameter(torch.randn(200, 150))
    param.grad = torch.randn(200, 150)
    Adapprox([param], k_max=40).step()
    assert len(seen) > 5 and all(set(threads) == {1} for threads in seen)
    assert _blas_threads() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.75])
@pytest.mark.parametrize(
    ("m", "n", "depth"), [(203, 170, 21), (256, 300, 8), (301, 129, 3), (768, 64, 64)]
)
def test_rank_update_matches_float64(dtype, order, beta, m, n, depth):
    """`add_product`: c ← beta·c + left·right on the register tile, for both orders of c, with
    rows and columns left over from its blocks; beta = 0 overwrites c even where it held NaN."""
    rng = np.random.default_rng(m + n + depth)
    start = rng.standard_normal((m, n))
    left = rng.standard_normal((m, depth)).astype(dtype)
    right = rng.standard_normal((depth, n)).astype(dtype)
    c = np.array(start, dtype=dtype, order=order)
    if beta == 0.0:
        c[::7, ::5] = np.nan
    assert _backend.add_product(c, left, right, beta=beta)
    expected = beta * start + left.astype(np.float64) @ right.astype(np.float64)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=0, atol=tolerance * np.abs(expected).max())


def _tokens(rows, vectors, lanes):
    return [_tiles.count_token(k) for k in (rows, vectors, lanes, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vector_bytes", [64, 32])
@pytest.mark.parametrize("columns", [8, 16, 40, 64, 100, 200])
@pytest.mark.parametrize("transposed_left", [False, True])
@pytest.mark.parametrize("driver", ["tiled_update", "tiled_wide"])
def test_every_tile_shape_matches_float64(dtype, vector_bytes, columns, transposed_left, driver):
    """Both drivers with the tiles `tile_shape` and `wide_tile_shape` pick, for AVX-512
    (64-byte vectors) and for 32-byte vectors alike, whatever the host: full tiles, one-vector
    tiles, single rows, the scalar last columns (`tiled_update`), and a left factor read through
    a transposed view; `tiled_wide` (whole vectors of columns) with items of a tile's width and
    one vector more, and passes over the inner dimension that do not divide it evenly."""
    rng = np.random.default_rng(columns + vector_bytes)
    m, depth = 53, 37
    lanes = vector_bytes // np.dtype(dtype).itemsize
    if driver == "tiled_update":
        rows, vectors = _tiles.tile_shape(columns, np.dtype(dtype).itemsize, vector_bytes)
        split = ()
    else:
        columns = -(-columns // lanes) * lanes
        rows, vectors = _tiles.wide_tile_shape(vector_bytes)
        split = ((vectors + 1) * lanes, 10)  # columns per item, inner dimension per pass
    left = rng.standard_normal((depth, m) if transposed_left else (m, depth)).astype(dtype)
    left = left.T if transposed_left else left
    right = rng.standard_normal((depth, columns)).astype(dtype)
    start = rng.standard_normal((m, columns)).astype(dtype)
    expected = 0.5 * start.astype(np.float64) + left.astype(np.float64) @ right
    c = start.copy()
    run = getattr(_tiles, driver)
    run(c, left, right, c.dtype.type(0.5), *_tokens(rows, vectors, lanes), *split)
    tolerance = (1e-5 if dtype == np.float32 else 1e-13) * np.abs(expected).max()
    np.testing.assert_allclose(c, expected, rtol=0, atol=tolerance)


def test_results_are_fortran_ordered_unless_any_order_is_asked():
    """randla's callers hand matmul's results to LAPACK: Fortran order by default, from the
    tile too; fortran=False takes the tile's C-ordered result as it is."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((400, 300)).astype(np.float32)
    b = np.asfortranarray(rng.standard_normal((300, 64)).astype(np.float32))
    assert _backend.matmul(a, b).flags.f_contiguous
    assert _backend.matmul(a, np.asfortranarray(a[:, :64]), transpose_a=True).flags.f_contiguous
    with pytest.raises(ValueError, match="inner dimensions"):
        _backend.matmul(a.T, b)
    loose = _backend.matmul(a, b, fortran=False)
    np.testing.assert_allclose(loose, a @ b, rtol=1e-5, atol=1e-3)
    assert loose.flags.c_contiguous or not _tiles.TILES_APPLY


def test_a_nan_beta_reaches_every_column():
    """beta = NaN is not beta = 0: the tiled columns and the scalar last columns both give NaN."""
    left, right = np.ones((12, 7), np.float32), np.ones((7, 48), np.float32)
    tokens = _tokens(6, 2, 16)
    c = np.ones((12, 37), np.float32)
    _tiles.tiled_update(c, left, right[:, :37], np.float32(np.nan), *tokens)
    assert np.isnan(c).all()
    c = np.ones((12, 48), np.float32)  # in passes of 3: β on the first, 1 on the others
    _tiles.tiled_wide(c, left, right, np.float32(np.nan), *tokens, 32, 3)
    assert np.isnan(c).all()


def test_the_wide_driver_refuses_partial_vectors_and_bad_splits():
    tokens = _tokens(6, 2, 16)
    left, right = np.ones((12, 7), np.float32), np.ones((7, 40), np.float32)
    for c, split in [
        (np.zeros((12, 40), np.float32), (16, 3)),  # 40 columns: not whole vectors
        (np.zeros((12, 32), np.float32), (8, 3)),  # items of half a vector
        (np.zeros((12, 32), np.float32), (0, 3)),
        (np.zeros((12, 32), np.float32), (16, 0)),
    ]:
        with pytest.raises(ValueError, match="tiled_wide needs"):
            _tiles.tiled_wide(c, left, right[:, : c.shape[1]], np.float32(0), *tokens, *split)
    c = np.zeros((12, 32), np.float32)
    for wrong_left, wrong_right in [(left[:11], right[:, :32]), (left, right[:, :16])]:
        with pytest.raises(ValueError, match="tiled_wide needs"):
            _tiles.tiled_wide(c, wrong_left, wrong_right, np.float32(0), *tokens, 16, 3)


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize(("m", "n", "columns"), [(301, 257, 16), (260, 310, 7), (300, 515, 64)])
def test_products_without_the_tile_use_thin_loops(monkeypatch, transpose_a, m, n, columns):
    """On a target without FMA (TILES_APPLY False) both products run `_thin`'s loops."""
    monkeypatch.setattr(_tiles, "TILES_APPLY", False)
    rng = np.random.default_rng(m + columns)
    a = rng.standard_normal((m, n)).astype(np.float32)
    b = np.asfortranarray(rng.standard_normal((m if transpose_a else n, columns)), np.float32)
    expected = (a.T if transpose_a else a).astype(np.float64) @ b
    result = _backend.matmul(a, b, transpose_a=transpose_a)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_out_that_overlaps_an_operand_or_has_the_wrong_shape():
    """Aᵀ·Y into an `out` that is Y itself (square A) is computed into a fresh buffer first; an
    `out` of the wrong shape raises before anything is written."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((400, 400)).astype(np.float32)
    y = np.asfortranarray(rng.standard_normal((400, 16)), np.float32)
    expected = a.T.astype(np.float64) @ y
    assert _backend.matmul(a, y, transpose_a=True, out=y) is y
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    wrong = np.zeros((400, 15), np.float32, order="F")
    with pytest.raises(ValueError, match="out must be 400×16"):
        _backend.matmul(a, y, out=wrong)
    assert not wrong.any()


def test_the_tile_refuses_mixed_dtypes():
    c = np.zeros((12, 32), np.float32)
    with pytest.raises(numba.errors.TypingError, match="left must be a 2-D array of c's dtype"):
        _tiles.tiled_update(
            c, np.ones((12, 3)), np.ones((3, 32), np.float32), 1.0, *_tokens(6, 2, 16)
        )


def test_rank_update_declines_what_the_kernel_does_not_take():
    small = np.zeros((10, 10), np.float32)
    assert not _backend.add_product(
        small, np.ones((10, 2), np.float32), np.ones((2, 10), np.float32), beta=1.0
    )
    big = np.zeros((300, 300), np.float32)
    assert not _backend.add_product(big, np.ones((300, 2)), np.ones((2, 300)), beta=1.0)
    strided = np.zeros((600, 600), np.float32)[::2, ::2]
    assert not _backend.add_product(
        strided, np.ones((300, 2), np.float32), np.ones((2, 300), np.float32), beta=1.0
    )
    overlapping = np.zeros((300, 300), np.float32)
    assert not _backend.add_product(
        overlapping, overlapping[:, :4], np.ones((4, 300), np.float32), beta=1.0
    )
    assert not big.any() and not strided.any()


def test_rank_update_refuses_inconsistent_shapes():
    c = np.zeros((300, 300), np.float32)
    for left, right in (
        (np.ones((100, 2), np.float32), np.ones((2, 300), np.float32)),
        (np.ones((300, 5), np.float32), np.ones((3, 300), np.float32)),
    ):
        with pytest.raises(ValueError, match="add_product needs"):
            _backend.add_product(c, left, right, beta=1.0)
    assert not c.any()
