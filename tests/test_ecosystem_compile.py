"""torch.compile: a compiled model trains with each smallstate optimizer, the step staying eager.

Backend: "aot_eager" (AOTAutograd traces forward and backward into graphs, run eagerly). The
default inductor backend works on this CPU too but its first compile of even the tiny model took
~2 minutes on the shared 2-core machine (C++ codegen), too slow for the suite. The contract suite
already compiles the step itself with backend="eager"; here the model is compiled, the
optimizer's step is called outside the compiled region, and the losses must decrease and match
an eager twin to float32 rounding.
"""

from __future__ import annotations

import pytest
import torch
from contract.cases import CASES, tiny_batch, tiny_model

NAMES = ["microadam", "ldadam", "adapprox"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
STEPS = 5


def train(model, opt, forward):
    x, y = tiny_batch()
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(forward(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", NAMES)
def test_compiled_model_trains_like_eager(name):
    torch._dynamo.reset()
    eager_model, compiled_model = tiny_model(), tiny_model()
    eager = train(eager_model, CASES[name](eager_model.parameters(), lr=1e-2), eager_model)
    compiled_forward = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    opt = CASES[name](compiled_model.parameters(), lr=1e-2)
    compiled = train(compiled_model, opt, compiled_forward)
    assert compiled[-1] < compiled[0] * 0.9
    assert compiled == pytest.approx(eager, rel=1e-4)
    for a, b in zip(eager_model.parameters(), compiled_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert all(opt.state[p] for p in compiled_model.parameters())
