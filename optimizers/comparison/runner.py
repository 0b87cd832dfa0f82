"""Train the same model with each optimizer: same init, data order, schedule and step budget.

Per optimizer: rebuild the model from one saved initial state_dict, draw batches from a
``torch.Generator`` seeded identically, step a shared warmup + cosine schedule, evaluate the
validation loss on fixed batches at regular intervals, and time ``opt.step()`` alone and the whole
training step (forward + backward + step) with ``time.perf_counter`` (CUDA synchronized).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .corpus import Corpus, fixed_batches, random_batch
from .model import ByteTransformer, ModelConfig
from .presets import Preset
from .registry import OptimizerSettings, build_optimizer, state_nbytes
from .schedule import warmup_cosine


@dataclass(frozen=True)
class TrainConfig:
    """Everything that is the same for every optimizer in one comparison."""

    model: ModelConfig
    batch_size: int
    steps: int
    eval_every: int
    val_batches: int
    warmup_steps: int
    seed: int
    device: str
    weight_decay: float = 0.0
    final_loss_window: int = 20


def preset_config(preset: Preset, *, steps: int, seed: int, device: str) -> TrainConfig:
    """The TrainConfig of a named size for a given step budget: evaluations spread evenly over
    the steps and the warmup a fixed fraction of them, as the preset says."""
    return TrainConfig(
        model=preset.model,
        batch_size=preset.batch_size,
        steps=steps,
        eval_every=max(1, steps // preset.evaluations),
        val_batches=preset.val_batches,
        warmup_steps=int(preset.warmup_fraction * steps),
        seed=seed,
        device=device,
    )


def resolve_device(requested: str) -> str:
    """'cpu', 'cuda' or 'auto' (cuda when available) -> the device string to use."""
    if requested not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be one of cpu, cuda, auto, got {requested!r}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but torch.cuda.is_available() is False")
    return requested


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[dict]:
    """Pin torch, Numba and (when threadpoolctl is installed) BLAS pools to ``threads``.

    Yields what was set, for the report; restores torch's and Numba's counts on exit.
    """
    import numba

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    saved = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    with contextlib.ExitStack() as stack:
        blas = "unchanged (threadpoolctl not installed)"
        with contextlib.suppress(ImportError):
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=threads))
            blas = threads
        try:
            yield {
                "torch": torch.get_num_threads(),
                "numba": numba.get_num_threads(),
                "blas": blas,
            }
        finally:
            torch.set_num_threads(saved[0])
            numba.set_num_threads(saved[1])


def initial_state(model_config: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """The state_dict every run starts from (built once under ``torch.manual_seed(seed)``)."""
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in ByteTransformer(model_config).state_dict().items()}


def evaluate(model: ByteTransformer, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean cross-entropy (nats/byte) over fixed batches, without gradients."""
    model.eval()
    with torch.no_grad():
        loss = sum(model(x, y).item() for x, y in batches) / len(batches)
    model.train()
    return loss


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_step(
    model: ByteTransformer,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    device: str,
) -> tuple[float, float, float]:
    """One training step: (loss, seconds in ``optimizer.step()``, seconds for the whole step).

    The whole step is forward + backward + step, timed with ``time.perf_counter`` after a
    device synchronization at each boundary (a no-op on the CPU).
    """
    _synchronize(device)
    started = time.perf_counter()
    loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _synchronize(device)
    backward_done = time.perf_counter()
    optimizer.step()
    _synchronize(device)
    finished = time.perf_counter()
    return loss.item(), finished - backward_done, finished - started


def train_one(
    name: str,
    *,
    lr: float,
    config: TrainConfig,
    corpus: Corpus,
    init: dict[str, torch.Tensor],
    progress: bool = True,
) -> dict:
    """Train one optimizer; returns its losses, curve, state bytes, timings and notes.

    Stops early (with a note) if the training loss becomes non-finite.
    """
    device = config.device
    model = ByteTransformer(config.model)
    model.load_state_dict(init)
    model.to(device)
    train_data, val_data = corpus.train.to(device), corpus.val.to(device)
    val_set = fixed_batches(
        val_data,
        count=config.val_batches,
        batch_size=config.batch_size,
        seq_len=config.model.seq_len,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = build_optimizer(
            name,
            model.parameters(),
            lr=lr,
            settings=OptimizerSettings(weight_decay=config.weight_decay),
        )
    notes = list(dict.fromkeys(str(w.message) for w in caught if w.category is UserWarning))
    scheduler = warmup_cosine(optimizer, warmup_steps=config.warmup_steps, total_steps=config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    val_curve = [(0, evaluate(model, val_set))]
    train_losses: list[float] = []
    step_seconds: list[float] = []
    full_seconds: list[float] = []
    started = time.perf_counter()
    bar = tqdm(total=config.steps, desc=f"{name:>10}", unit="step", disable=not progress)
    for step in range(1, config.steps + 1):
        x, y = random_batch(
            train_data,
            batch_size=config.batch_size,
            seq_len=config.model.seq_len,
            generator=generator,
        )
        loss, step_s, full_s = timed_step(model, optimizer, x, y, device=device)
        scheduler.step()
        train_losses.append(loss)
        step_seconds.append(step_s)
        full_seconds.append(full_s)
        diverged = not math.isfinite(loss)
        if diverged or step % config.eval_every == 0 or step == config.steps:
            val_curve.append((step, evaluate(model, val_set)))
        if diverged:
            notes.append(f"training loss became non-finite at step {step}; stopped")
            break
        if step % 10 == 0 or val_curve[-1][0] == step:
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_curve[-1][1]:.3f}")
        bar.update()
    bar.close()
    n_params = sum(p.numel() for p in model.parameters())
    nbytes = state_nbytes(optimizer)
    window = train_losses[-config.final_loss_window :]
    return {
        "name": name,
        "status": "ran",
        "notes": notes,
        "optimizer_class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "lr": lr,
        "steps_done": len(train_losses),
        "n_params": n_params,
        "state_bytes": nbytes,
        "state_bytes_per_param": nbytes / n_params,
        "initial_val_loss": val_curve[0][1],
        "final_val_loss": val_curve[-1][1],
        "final_train_loss": sum(window) / len(window),
        "first_train_loss": train_losses[0],
        "opt_step_median_ms": 1e3 * statistics.median(step_seconds),
        "full_step_median_ms": 1e3 * statistics.median(full_seconds),
        "wall_seconds": time.perf_counter() - started,
        "val_curve": val_curve,
        "train_losses": train_losses,
    }
