"""Adapprox at k_max = 32 trains a small byte-level transformer at least as well as Adafactor.

Both optimizers start from the same weights, see the same batches and follow the same warmup +
cosine schedule with the same peak learning rate (3e-3, the comparison's AdamW-family rate);
the test compares the validation loss after 150 steps. One thread, so the run is deterministic
and quick (about 20 s on an idle 2-core machine; marked slow).
"""

from __future__ import annotations

import pytest
import torch

from optimizers import Adapprox
from optimizers.comparison.corpus import fixed_batches, load_stdlib_corpus, random_batch
from optimizers.comparison.model import ByteTransformer, ModelConfig
from optimizers.comparison.runner import pinned_threads
from optimizers.comparison.schedule import warmup_cosine

CONFIG = ModelConfig(seq_len=64, d_model=128, n_layers=2, n_heads=4)
STEPS, BATCH, PEAK_LR = 150, 8, 3e-3


def validation_loss_after_training(make_optimizer, corpus, init) -> tuple[float, list[str]]:
    model = ByteTransformer(CONFIG)
    model.load_state_dict(init)
    opt = make_optimizer(model.parameters())
    schedule = warmup_cosine(opt, warmup_steps=STEPS // 10, total_steps=STEPS)
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        x, y = random_batch(
            corpus.train, batch_size=BATCH, seq_len=CONFIG.seq_len, generator=generator
        )
        opt.zero_grad(set_to_none=True)
        model(x, y).backward()
        opt.step()
        schedule.step()
    val = fixed_batches(corpus.val, count=4, batch_size=16, seq_len=CONFIG.seq_len)
    with torch.no_grad():
        loss = sum(model(x, y).item() for x, y in val) / len(val)
    paths = [r.path for r in opt.describe()] if hasattr(opt, "describe") else []
    return loss, paths


@pytest.mark.slow
def test_adapprox_k32_is_no_worse_than_adafactor_on_a_small_transformer():
    corpus = load_stdlib_corpus()
    torch.manual_seed(0)
    init = ByteTransformer(CONFIG).state_dict()
    with pinned_threads(1):
        adafactor, _ = validation_loss_after_training(
            lambda p: torch.optim.Adafactor(p, lr=PEAK_LR), corpus, init
        )
        adapprox, paths = validation_loss_after_training(
            lambda p: Adapprox(p, lr=PEAK_LR, k_max=32), corpus, init
        )
    assert sum(path.startswith("adapprox") for path in paths) == 4 * CONFIG.n_layers + 2
    assert adapprox <= adafactor, (adapprox, adafactor)


@pytest.mark.slow
def test_mixed_precision_srsi_trains_like_full_precision(bfloat16_products):
    low_products = bfloat16_products
    corpus = load_stdlib_corpus()
    torch.manual_seed(0)
    init = ByteTransformer(CONFIG).state_dict()
    with pinned_threads(1):
        full, _ = validation_loss_after_training(
            lambda p: Adapprox(p, lr=PEAK_LR, k_max=32), corpus, init
        )
        assert not low_products
        mixed, _ = validation_loss_after_training(
            lambda p: Adapprox(p, lr=PEAK_LR, k_max=32, precision="mixed"), corpus, init
        )
    assert len(low_products) >= STEPS * (4 * CONFIG.n_layers + 2) * 2 * 4  # 4 of 5 sweeps
    # Across the seeds 0-2 of Adapprox's draws full reached 2.60-2.66 and mixed 2.57-2.59: the
    # seed moves the loss by about 2%, so "no worse than full by more than that" is the claim.
    assert mixed <= 1.02 * full, (mixed, full)
