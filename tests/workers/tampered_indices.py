"""Child process for test_reliability_checkpoints: a MicroAdam checkpoint whose int16
window_indices were tampered with (right shape and dtype, values outside [0, block_size)).

Prints "refused" if load_state_dict raises ValueError; otherwise steps once (the kernels then
read and write outside the arrays, possibly corrupting the heap — hence a separate process) and
prints "accepted".
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from contract.cases import CASES, tiny_batch, tiny_model  # noqa: E402


def train_once(model, opt):
    x, y = tiny_batch()
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


model = tiny_model()
opt = CASES["microadam"](model.parameters())
train_once(model, opt)
saved = opt.state_dict()
for state in saved["state"].values():
    state["window_indices"].fill_(30000)
target = CASES["microadam"](model.parameters())
try:
    target.load_state_dict(saved)
except ValueError as error:
    print(f"{error}\nrefused")
else:
    train_once(model, target)
    print("accepted")
