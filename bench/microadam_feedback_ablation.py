"""MicroAdam's error feedback, ablated on the training comparison's model.

Trains the comparison's default model (same data, initialization and schedule as
`smallstate-compare`) with AdamW, our MicroAdam (q4 error feedback, and none), and an independent
pure-torch transcription of ALGORITHMS.md §3.1 whose error store is 4-bit, dense float32, or
absent. The transcription uses torch.topk and dense index_add_, so it shares no kernel with the
library: when it and `MicroAdam` land on the same losses, a gap to AdamW belongs to the
algorithm, not to our kernels.

Run: python bench/microadam_feedback_ablation.py --steps 300 --lr 1e-3,3e-3
(prints one line per run: name, lr, final validation and training loss).
"""

from __future__ import annotations

import argparse
import math

import torch

import optimizers
from optimizers.comparison import registry
from optimizers.comparison.corpus import load_stdlib_corpus
from optimizers.comparison.presets import PRESETS
from optimizers.comparison.runner import initial_state, pinned_threads, preset_config, train_run


class TranscribedMicroAdam(torch.optim.Optimizer):
    """ALGORITHMS.md §3.1 in plain torch (float32 work, bf16 window values, no weight decay).

    error: "q4" (per-bucket min/max, round half up, as §2.2 with float32 bounds), "dense"
    (float32, nothing dropped) or "none". Dense O(d) temporaries: for experiments only.
    """

    def __init__(self, params, lr, *, error="q4", density=0.01, window=10, block=16384, q=64):
        super().__init__(params, dict(lr=lr))
        self.error, self.density, self.window, self.block, self.q = error, density, window, block, q

    def _compress_error(self, remainder: torch.Tensor) -> torch.Tensor:
        if self.error == "dense":
            return remainder.clone()
        if self.error == "none":
            return torch.zeros_like(remainder)
        buckets = remainder.view(-1, self.q)
        lo = buckets.min(1, keepdim=True).values
        step = (buckets.max(1, keepdim=True).values - lo) / 15
        safe = torch.where(step > 0, step, torch.ones_like(step))
        codes = torch.where(step > 0, ((buckets - lo) / safe + 0.5).floor().clamp(0, 15), 0.0)
        return (codes * step + lo).reshape(-1)

    @torch.no_grad()
    def step(self):
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for group in self.param_groups:
            for p in group["params"]:
                d = p.numel()
                size = min(self.block, d)
                n_blocks = -(-d // size)
                padded = -(-(n_blocks * size) // self.q) * self.q  # whole buckets
                state = self.state[p]
                if not state:
                    state.update(error=torch.zeros(padded), rows=[], t=0)
                a = torch.zeros(padded)
                a[:d] = p.grad.reshape(-1).float()
                a += state["error"]
                blocks = a[: n_blocks * size].view(n_blocks, size)
                k = max(1, math.ceil(size * self.density))
                index = blocks.abs().topk(k, dim=1).indices
                values = blocks.gather(1, index).bfloat16().double()
                blocks.scatter_(1, index, 0.0)
                state["error"] = self._compress_error(a)
                flat_index = (index + torch.arange(n_blocks).unsqueeze(1) * size).reshape(-1)
                newest = (flat_index, values.reshape(-1))
                state["rows"] = [newest, *state["rows"][: self.window - 1]]
                state["t"] += 1
                t = state["t"]
                moment = torch.zeros(padded, dtype=torch.float64)
                second = torch.zeros_like(moment)
                for age, (where, v) in enumerate(state["rows"]):
                    moment.index_add_(0, where, beta1**age * v)
                    second.index_add_(0, where, beta2**age * v * v)
                c1, c2 = (1 - beta1) / (1 - beta1**t), (1 - beta2) / (1 - beta2**t)
                update = c1 * moment / ((c2 * second).sqrt() + eps)
                p.add_(update[:d].view_as(p).to(p.dtype), alpha=-group["lr"])


VARIANTS = {
    "adamw": None,  # the comparison's own fused AdamW
    "microadam": lambda ps, lr, s: optimizers.MicroAdam(ps, lr=lr),
    "microadam-noef": lambda ps, lr, s: optimizers.MicroAdam(ps, lr=lr, error_feedback="none"),
    "transcribed-q4": lambda ps, lr, s: TranscribedMicroAdam(ps, lr, error="q4"),
    "transcribed-dense": lambda ps, lr, s: TranscribedMicroAdam(ps, lr, error="dense"),
    "transcribed-none": lambda ps, lr, s: TranscribedMicroAdam(ps, lr, error="none"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", default="3e-3", help="comma list of peak learning rates")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    config = preset_config(PRESETS["default"], steps=args.steps, seed=0, device="cpu")
    corpus = load_stdlib_corpus()
    for name in args.variants.split(","):
        if VARIANTS[name] is not None:
            registry.REGISTRY[name] = VARIANTS[name]
    with pinned_threads(2):
        init = initial_state(config.model, config.seed)
        for lr in (float(x) for x in args.lr.split(",")):
            for name in args.variants.split(","):
                result = train_run(
                    name, lr=lr, config=config, corpus=corpus, init=init, progress=False
                )
                print(
                    f"{name:18s} lr {lr:g}  val {result['val_loss']:.3f}  "
                    f"train {result['train_loss']:.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
