"""Named sizes of the comparison: model shape, batch, step budgets of both tasks, sweep and timing.

- ``tiny``: for the test suite only; seconds, and the numbers mean nothing.
- ``quick``: a smoke test of both tasks (a two-point lr grid, one seed) in a few minutes on two
  CPU cores. Losses fall, but the numbers say little about the methods.
- ``default``: what a newcomer runs; both tasks, bracketed lr sweeps on shorter runs, two seeds
  at each chosen lr at full length (d_model 128, so the 128x128 to 128x512 weight matrices are
  8-32x larger than rank 16; 64-byte contexts keep attention cheap). Budget: 6,800 to 8,100
  training steps of 1,024 bytes (one or two lr extensions per sweep), built to finish within 20
  minutes on two CPU cores; its measured wall time belongs in docs/benchmarks.md.
- ``large``: for a GPU; a 25M-parameter model on 512-byte contexts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import ModelConfig


@dataclass(frozen=True)
class Preset:
    """Model shape and budgets of one named size.

    steps / finetune_steps: training steps of each pretraining / fine-tuning run at full length;
    base_steps: AdamW steps that build the model fine-tuning starts from; sweep_steps /
    finetune_sweep_steps: steps of each lr-sweep run (shorter than full length when the full
    sweep would not fit the preset's budget); grid_points: lr values tried first, around each
    optimizer's centre lr (on the 1-3-10 ladder of ``sweep.py``); max_extensions: how many
    times a grid may grow by one value past the edge its best value sits at; seeds: full-length
    runs at the chosen lr;
    timing_rounds: rounds of the alternating timing phase (one step of each optimizer a round).
    """

    model: ModelConfig
    batch_size: int
    steps: int
    finetune_steps: int
    base_steps: int
    sweep_steps: int
    finetune_sweep_steps: int
    grid_points: int = 3
    max_extensions: int = 2
    seeds: int = 2
    timing_rounds: int = 25
    evaluations: int = 10
    val_batches: int = 8
    warmup_fraction: float = 0.1


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        model=ModelConfig(seq_len=16, d_model=32, n_layers=1, n_heads=2),
        batch_size=4,
        steps=6,
        finetune_steps=4,
        base_steps=6,
        sweep_steps=6,
        finetune_sweep_steps=4,
        grid_points=2,
        max_extensions=1,
        seeds=1,
        timing_rounds=3,
        evaluations=2,
        val_batches=1,
    ),
    "quick": Preset(
        model=ModelConfig(seq_len=64, d_model=64, n_layers=2, n_heads=2),
        batch_size=8,
        steps=60,
        finetune_steps=40,
        base_steps=100,
        sweep_steps=60,
        finetune_sweep_steps=40,
        grid_points=2,
        max_extensions=1,
        seeds=1,
        timing_rounds=10,
        evaluations=3,
        val_batches=2,
    ),
    "default": Preset(
        model=ModelConfig(seq_len=64, d_model=128, n_layers=4, n_heads=4),
        batch_size=16,
        steps=200,
        finetune_steps=100,
        base_steps=400,
        sweep_steps=50,
        finetune_sweep_steps=30,
        timing_rounds=16,
        evaluations=6,
    ),
    "large": Preset(
        model=ModelConfig(seq_len=512, d_model=512, n_layers=8, n_heads=8),
        batch_size=32,
        steps=3000,
        finetune_steps=1000,
        base_steps=3000,
        sweep_steps=1000,
        finetune_sweep_steps=500,
        evaluations=15,
        val_batches=32,
    ),
}
