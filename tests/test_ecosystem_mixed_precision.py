"""Mixed precision with each smallstate optimizer, on a small transformer block (attention,
LayerNorm, MLP) rather than the contract suite's MLP:
- fp32 parameters under torch.autocast("cpu", dtype=torch.bfloat16): trains, parameters and
  state stay fp32-consistent and finite, and tracks the fp32 run loosely;
- bf16 parameters (no master copy): trains, parameters stay bf16;
- fp16 parameters: train, or raise a clear TypeError/ValueError naming float16.
"""

from __future__ import annotations

import math

import pytest
import torch
from contract.cases import CASES

NAMES = ["microadam", "ldadam", "adapprox"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
STEPS = 10


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(
            d_model=64, nhead=4, dim_feedforward=128, dropout=0.0, batch_first=True
        )
        self.head = torch.nn.Linear(64, 1)

    def forward(self, x):
        return self.head(self.layer(x)).mean(dim=1)


def model_and_data(dtype):
    torch.manual_seed(0)
    model = Block().to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 8, 64, generator=g)
    y = torch.sin(x[:, :, :3].sum(dim=(1, 2))).unsqueeze(1) / 3
    return model, x.to(dtype), y


def train(name, dtype, autocast=None):
    model, x, y = model_and_data(dtype)
    opt = CASES[name](model.parameters(), lr=3e-3)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            prediction = model(x)
        loss = torch.nn.functional.mse_loss(prediction.float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, opt, losses


def assert_trained(model, opt, losses, dtype):
    assert all(math.isfinite(v) for v in losses), losses
    assert min(losses[-3:]) < losses[0] * 0.8, losses
    for p in model.parameters():
        assert p.dtype == dtype and torch.isfinite(p).all()
        for value in opt.state[p].values():
            if torch.is_tensor(value) and value.is_floating_point():
                assert not torch.isnan(value).any()


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_with_fp32_parameters(name):
    model, opt, losses = train(name, torch.float32, autocast=torch.bfloat16)
    assert_trained(model, opt, losses, torch.float32)
    _, _, reference = train(name, torch.float32)
    assert losses[-1] == pytest.approx(reference[-1], rel=0.25, abs=0.02)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_parameters(name):
    model, opt, losses = train(name, torch.bfloat16)
    assert_trained(model, opt, losses, torch.bfloat16)


@pytest.mark.parametrize("name", NAMES)
def test_fp16_parameters(name):
    """float16 parameters train (OPTIMIZER_CONTRACT.md §6), as bf16 ones do."""
    model, opt, losses = train(name, torch.float16)
    assert_trained(model, opt, losses, torch.float16)
