"""randla's products (`_backend.matmul`: the Numba loops for few columns, gemm or, inside
`torch_products`, torch.mm for more) against a float64 product, for every layout, both dtypes,
with and without `out`, on both sides of the column limits; and the optimizers' use of torch.mm."""

import contextlib

import numpy as np
import pytest
import torch

from optimizers import Adapprox
from randla import _backend


@pytest.mark.parametrize("via_torch", [False, True], ids=["scipy", "torch"])
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
    ],
)
def test_products_match_float64(via_torch, dtype, order, transpose_a, m, n, columns):
    rng = np.random.default_rng(m + n + columns)
    a = np.asarray(rng.standard_normal((m, n)), dtype=dtype, order=order)
    b = np.asfortranarray(rng.standard_normal((m if transpose_a else n, columns)).astype(dtype))
    op_a = (a.T if transpose_a else a).astype(np.float64)
    expected = op_a @ b.astype(np.float64)
    scale = (np.abs(op_a) @ np.abs(b.astype(np.float64))).max()  # bound of any summation order
    tolerance = (1e-6 if dtype == np.float32 else 1e-14) * scale
    out = np.full((n if transpose_a else m, columns), np.nan, dtype=dtype, order="F")
    with _backend.torch_products() if via_torch else contextlib.nullcontext():
        results = (_backend.matmul(a, b, transpose_a=transpose_a), out)
        assert _backend.matmul(a, b, transpose_a=transpose_a, out=out) is out
    for result in results:
        assert result.dtype == dtype and result.shape == expected.shape
        np.testing.assert_allclose(result, expected, rtol=0, atol=tolerance)


def test_c_ordered_thin_operand_is_accepted():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 300)).astype(np.float32)
    b = np.ascontiguousarray(rng.standard_normal((300, 4)).astype(np.float32))
    np.testing.assert_allclose(_backend.matmul(a, b), a @ b, rtol=1e-5, atol=1e-4)


def test_optimizer_steps_send_gemm_sized_products_to_torch(monkeypatch):
    calls = []
    real = _backend._torch_matmul
    monkeypatch.setattr(
        _backend, "_torch_matmul", lambda *args: calls.append(args[0].shape) or real(*args)
    )
    param = torch.nn.Parameter(torch.randn(200, 150))
    param.grad = torch.randn(200, 150)
    Adapprox([param], k_max=40).step()  # 40 + oversample columns: past the thin loops' limits
    assert calls, "no product went to torch.mm inside the step"
    calls.clear()
    _backend.matmul(np.ones((200, 150)), np.ones((150, 45)))
    assert not calls, "torch.mm used outside an optimizer step"
