"""A gradient whose shape is not its parameter's (`p.data` replaced while `p.grad` was kept) is
refused with an error naming the parameter, before any state exists or any weight moves: the
kernels size their passes by the parameter and would read the gradient out of bounds. This is
the case of a new optimizer built after resizing, where no old state exists to compare with.
"""

from __future__ import annotations

import pytest
import torch
from contract.cases import CASES

NAMES = ["microadam", "ldadam", "adapprox"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("name", NAMES)
def test_a_gradient_of_another_shape_is_refused_before_any_change(name):
    param = torch.nn.Parameter(torch.zeros(8, 8))
    param.grad = torch.ones(8, 8)
    param.data = torch.randn(64, 48)
    before = param.detach().clone()
    opt = CASES[name]([param], lr=1e-2)
    with pytest.raises(ValueError, match=r"gradient of param_groups\[0\]\['params'\]\[0\] is "):
        opt.step()
    assert torch.equal(param.detach(), before)
    assert not opt.state.get(param)
    param.grad = torch.randn(64, 48)  # the gradient of the parameter's shape trains
    opt.step()
    assert torch.isfinite(param).all() and not torch.equal(param.detach(), before)
