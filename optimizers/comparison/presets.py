"""Named sizes of the comparison: model shape, batch and step budget.

- ``quick``: a smoke test; the whole comparison (five optimizers) runs in well under a minute on
  two CPU cores. Losses fall, but the numbers say little about the methods.
- ``default``: what a newcomer runs; about one minute per optimizer on a two-core CPU
  (d_model 128, so the 128x128 to 128x512 weight matrices are 8-32x larger than rank 16).
- ``large``: for a GPU; a 25M-parameter model on 512-byte contexts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import ModelConfig


@dataclass(frozen=True)
class Preset:
    """Model shape and training budget of one named size."""

    model: ModelConfig
    batch_size: int
    steps: int
    evaluations: int = 10
    val_batches: int = 8
    warmup_fraction: float = 0.1


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        model=ModelConfig(seq_len=64, d_model=64, n_layers=2, n_heads=2),
        batch_size=8,
        steps=60,
        evaluations=3,
        val_batches=2,
    ),
    "default": Preset(
        model=ModelConfig(seq_len=128, d_model=128, n_layers=4, n_heads=4),
        batch_size=16,
        steps=500,
    ),
    "large": Preset(
        model=ModelConfig(seq_len=512, d_model=512, n_layers=8, n_heads=8),
        batch_size=32,
        steps=3000,
        evaluations=15,
        val_batches=32,
    ),
}
