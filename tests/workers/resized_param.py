"""Child process for test_reliability_params: change a parameter after its state exists, step.

    python resized_param.py OPTIMIZER:CHANGE ...

For each OPTIMIZER:CHANGE pair, in order: trains the contract model two steps with OPTIMIZER (a
contract case), then changes its second
weight (64×48; two parameters come before it) by CHANGE: "bigger" (p.data = a 64×96 tensor),
"smaller" (16×8), "reshaped" (the same 3072 numbers as 48×64), "dtype" (model.to(float64)),
and steps again. Prints one
line per pair: "OPTIMIZER:CHANGE refused (unchanged|changed): <message>" when the step raises
ValueError (unchanged: no parameter and no state tensor changed), or "OPTIMIZER:CHANGE accepted"
when the step ran: it then ran the kernels on the old
state's sizes (writes outside the new tensor may have corrupted the heap, which is why this
runs in its own process).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from contract.cases import CASES, tiny_batch, tiny_model  # noqa: E402


def snapshot(model, opt):
    tensors = [p.detach().clone() for p in model.parameters()]
    for state in opt.state.values():
        tensors += [v.clone() for v in state.values() if torch.is_tensor(v)]
    return tensors


def attempt(name: str, change: str) -> str:
    model = tiny_model()
    opt = CASES[name](model.parameters(), lr=1e-2)
    x, y = tiny_batch()
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    weight = model[2].weight
    with torch.no_grad():
        if change == "bigger":
            weight.data = torch.randn(64, 96)
        elif change == "smaller":
            weight.data = torch.randn(16, 8)
        elif change == "reshaped":
            weight.data = weight.data.reshape(48, 64).clone()
        elif change == "dtype":
            model.to(torch.float64)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = snapshot(model, opt)
    try:
        opt.step()
    except ValueError as error:
        after = snapshot(model, opt)
        same = all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        return f"refused ({'unchanged' if same else 'changed'}): {error}"
    return "accepted"


def main() -> None:
    for pair in sys.argv[1:]:
        print(f"{pair} {attempt(*pair.split(':'))}", flush=True)


if __name__ == "__main__":
    main()
