"""Hugging Face Trainer with each smallstate optimizer (needs `transformers` and `accelerate`).

A tiny GPT2LMHeadModel built from a GPT2Config (n_layer=2, n_embd=64, vocab 256, dropout off; no
download, HF_HUB_OFFLINE=1, report_to=[]) trains on a synthetic token dataset:
- passed as `optimizers=(opt, None)`: trains, writes checkpoint-2 (optimizer.pt included), and a
  second Trainer resuming from checkpoint-2 (`resume_from_checkpoint`) ends bit-identical to the
  uninterrupted run;
- passed as `optimizer_cls_and_kwargs`: Trainer builds it from its own decay/no-decay parameter
  groups and trains;
- state bytes per parameter (optimizer.state_nbytes() / numel) are recorded next to AdamW's from
  the same kind of run (printed; see docs/huggingface.md) and must be smaller.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from contract.cases import CASES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers", reason="needs the `hf` extra (transformers)")
pytest.importorskip("accelerate", reason="Trainer needs the `hf` extra (accelerate)")

NAMES = ["microadam", "ldadam", "adapprox"]
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
STEPS = 4


class Tokens(torch.utils.data.Dataset):
    """Token sequences with a learnable pattern: each token is the previous one plus 1, mod 256."""

    def __len__(self):
        return 64

    def __getitem__(self, index):
        start = torch.randint(0, 256, (1,), generator=torch.Generator().manual_seed(index))
        ids = (start + torch.arange(16)) % 256
        return {"input_ids": ids, "labels": ids.clone()}


def tiny_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=256,
        n_positions=32,
        n_embd=64,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config)


def arguments(output_dir, **overrides):
    options = dict(
        output_dir=str(output_dir),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        save_steps=2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    options.update(overrides)
    return transformers.TrainingArguments(**options)


def losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def bytes_per_param(opt, model):
    return opt.state_nbytes() / sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def adamw_bytes_per_param(tmp_path_factory):
    model = tiny_gpt2()
    trainer = transformers.Trainer(
        model=model,
        args=arguments(tmp_path_factory.mktemp("adamw"), max_steps=1, save_strategy="no"),
        train_dataset=Tokens(),
    )
    trainer.train()
    opt = trainer.optimizer.optimizer  # accelerate wraps the torch optimizer
    state = sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if torch.is_tensor(v)
    )
    return state / sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_trainer_with_optimizer_instance_checkpoints_and_resumes_bit_identically(
    name, tmp_path, adamw_bytes_per_param
):
    model = tiny_gpt2()
    opt = CASES[name](model.parameters(), lr=3e-3)
    trainer = transformers.Trainer(
        model=model,
        args=arguments(tmp_path / "run"),
        train_dataset=Tokens(),
        optimizers=(opt, None),
    )
    trainer.train()
    run_losses = losses(trainer)
    assert len(run_losses) == STEPS and all(map(lambda v: v == v, run_losses))
    assert run_losses[-1] < run_losses[0]
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "optimizer.pt").exists()
    torch.load(checkpoint / "optimizer.pt", weights_only=True)

    resumed_model = tiny_gpt2()
    resumed_opt = CASES[name](resumed_model.parameters(), lr=3e-3)
    resumed = transformers.Trainer(
        model=resumed_model,
        args=arguments(tmp_path / "resumed"),
        train_dataset=Tokens(),
        optimizers=(resumed_opt, None),
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed_opt.state  # the checkpoint's state was loaded and used
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    for p, q in zip(model.parameters(), resumed_model.parameters(), strict=True):
        for key, value in opt.state[p].items():
            other = resumed_opt.state[q][key]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other

    ours = bytes_per_param(opt, model)
    record = {
        "optimizer": type(opt).__name__,
        "bytes_per_param": ours,
        "adamw": adamw_bytes_per_param,
    }
    print("HF-TRAINER-STATE-BYTES " + json.dumps(record))
    assert ours < adamw_bytes_per_param


@pytest.mark.parametrize("name", NAMES)
def test_trainer_builds_the_optimizer_from_cls_and_kwargs(name, tmp_path):
    probe = CASES[name]([torch.nn.Parameter(torch.zeros(2))])
    sizes = ("density", "block_size", "window", "rank", "k_max")
    kwargs = {k: probe.defaults[k] for k in sizes if k in probe.defaults}
    kwargs["lr"] = 3e-3  # Trainer does not pass args.learning_rate on this path
    model = tiny_gpt2()
    trainer = transformers.Trainer(
        model=model,
        args=arguments(tmp_path, max_steps=3, save_strategy="no", weight_decay=0.01),
        train_dataset=Tokens(),
        optimizer_cls_and_kwargs=(type(probe), kwargs),
    )
    trainer.train()
    opt = trainer.optimizer.optimizer
    assert type(opt) is type(probe)
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, 0.01]  # Trainer's decay / no-decay split reached our groups
    assert all(g["lr"] == 3e-3 for g in opt.param_groups), [g["lr"] for g in opt.param_groups]
    run_losses = losses(trainer)
    assert len(run_losses) == 3 and run_losses[-1] < run_losses[0]
    assert sum(len(s) > 0 for s in opt.state.values()) == sum(1 for _ in model.parameters())
