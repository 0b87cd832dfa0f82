"""MicroAdam's update size over steps: the published bias correction (1 − β^t) against the
window-normalized one (1 − β^min(t, m)), next to AdamW.

Usage: python bench/microadam_window_correction.py [STEPS]   (default 400)

Trains the comparison's quick-preset model on the standard library's sources at a constant lr
(no schedule, so only the optimizer changes the step size) and prints, at a few steps t, the RMS
of the parameter change divided by the lr, and the training loss at the end. With m = 10 and
β2 = 0.999 the published correction lets the update grow by about
sqrt((1 − β2^t) / (1 − β2^m)) once t > m; the window-normalized one keeps it flat.
"""

from __future__ import annotations

import sys

import torch

from optimizers.comparison.corpus import load_stdlib_corpus, random_batch
from optimizers.comparison.presets import PRESETS
from optimizers.comparison.registry import OptimizerSettings, build_optimizer
from optimizers.comparison.runner import build_model, initial_state, preset_config

LR = 1e-3
MARKS = (1, 5, 10, 20, 50, 100, 200, 400, 1000)
NAMES = ("adamw", "microadam", "microadam-window")


def update_sizes(name: str, steps: int, corpus, config, init) -> tuple[list[float], float]:
    """RMS(Δθ)/lr at every step and the last training loss, for optimizer ``name``."""
    model = build_model(config, init)
    optimizer = build_optimizer(name, model.parameters(), lr=LR, settings=OptimizerSettings())
    generator = torch.Generator().manual_seed(config.seed)
    sizes = []
    for _ in range(steps):
        x, y = random_batch(
            corpus.train,
            batch_size=config.batch_size,
            seq_len=config.model.seq_len,
            generator=generator,
        )
        before = torch.cat([p.detach().flatten() for p in model.parameters()])
        loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        sizes.append(((after - before).norm() / before.numel() ** 0.5 / LR).item())
    return sizes, loss.item()


def main(argv: list[str]) -> None:
    steps = int(argv[0]) if argv else 400
    preset = PRESETS["quick"]
    config = preset_config(preset, steps=steps, seed=0, device="cpu")
    corpus = load_stdlib_corpus()
    init = initial_state(preset.model, 0)
    print(f"RMS(parameter change)/lr, quick model, constant lr {LR}, {steps} steps")
    for name in NAMES:
        sizes, loss = update_sizes(name, steps, corpus, config, init)
        shown = "  ".join(f"t={t}: {sizes[t - 1]:.3f}" for t in MARKS if t <= steps)
        print(f"{name:>17}  {shown}  final train loss {loss:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
