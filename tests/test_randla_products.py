"""randla's products (`_backend.matmul`: torch.mm on zero-copy views on the CPU) against a float64
product, for every layout of both operands, both dtypes, with and without `out`, read-only inputs,
an `out` that overlaps an operand, an `out` of the wrong shape."""

import numpy as np
import pytest

from randla import _backend


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("b_order", ["C", "F"])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize(
    ("m", "n", "columns"),
    [(300, 200, 5), (200, 300, 1), (1, 7000, 3), (7000, 1, 2), (301, 257, 37), (130, 120, 300)],
)
def test_products_match_float64(dtype, order, b_order, transpose_a, m, n, columns):
    rng = np.random.default_rng(m + n + columns)
    a = np.asarray(rng.standard_normal((m, n)), dtype=dtype, order=order)
    b = np.asarray(rng.standard_normal((m if transpose_a else n, columns)), dtype, order=b_order)
    op_a = (a.T if transpose_a else a).astype(np.float64)
    expected = op_a @ b.astype(np.float64)
    scale = (np.abs(op_a) @ np.abs(b.astype(np.float64))).max()  # bound of any summation order
    tolerance = (1e-6 if dtype == np.float32 else 1e-14) * scale
    out = np.full((n if transpose_a else m, columns), np.nan, dtype=dtype, order="F")
    a.flags.writeable = False  # read-only inputs are fine (and raise no torch warning)
    b.flags.writeable = False
    made = _backend.matmul(a, b, transpose_a=transpose_a)
    op_a_is_c = a.flags.f_contiguous if transpose_a else a.flags.c_contiguous
    assert made.flags.c_contiguous if op_a_is_c else made.flags.f_contiguous  # op(a)'s layout
    assert _backend.matmul(a, b, transpose_a=transpose_a, out=out) is out
    for result in (made, out):
        assert result.dtype == dtype and result.shape == expected.shape
        np.testing.assert_allclose(result, expected, rtol=0, atol=tolerance)


def test_a_c_ordered_out_is_written_in_place():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((60, 40)).astype(np.float32)
    b = rng.standard_normal((40, 7)).astype(np.float32)
    out = np.full((60, 7), np.nan, np.float32)
    assert _backend.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=0, atol=1e-4)


def test_out_that_overlaps_an_operand_or_has_the_wrong_shape():
    """Aᵀ·Y into an `out` that is Y itself (square A) is computed into a fresh buffer first; an
    `out` of the wrong shape or inner dimensions that differ raise before anything is written."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((400, 400)).astype(np.float32)
    y = np.asfortranarray(rng.standard_normal((400, 16)), np.float32)
    expected = a.T.astype(np.float64) @ y
    assert _backend.matmul(a, y, transpose_a=True, out=y) is y
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    wrong = np.zeros((400, 15), np.float32, order="F")
    with pytest.raises(ValueError, match="out must be 400×16"):
        _backend.matmul(a, y, out=wrong)
    with pytest.raises(ValueError, match="inner dimensions differ: op\\(a\\) is 400×400, b is"):
        _backend.matmul(a, y[:300])
    assert not wrong.any()
