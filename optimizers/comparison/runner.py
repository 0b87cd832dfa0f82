"""Train the same model with each optimizer: same init, data order, schedule and step budget.

Per run: rebuild the model from one saved state_dict (a fresh initialization, or the AdamW-
pretrained model for fine-tuning), draw batches from a ``torch.Generator`` seeded with the run's
seed, step a shared warmup + cosine schedule and evaluate the validation loss on fixed batches
at regular intervals. Step times are not taken here but in ``timing.py``'s alternating phase:
optimizers run one after another see different machine load.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

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


def preset_config(
    preset: Preset, *, steps: int, seed: int, device: str, evaluations: int | None = None
) -> TrainConfig:
    """The TrainConfig of a named size for a given step budget: ``evaluations`` (default: the
    preset's) spread evenly over the steps and the warmup a fixed fraction of them."""
    return TrainConfig(
        model=preset.model,
        batch_size=preset.batch_size,
        steps=steps,
        eval_every=max(1, steps // (evaluations or preset.evaluations)),
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


def progress_bar(total: int, description: str, enabled: bool):
    """A tqdm bar when tqdm is installed and ``enabled``, else a silent stand-in with the same
    ``update``, ``set_postfix`` and ``close`` (tqdm is in the ``bench`` extra, not required)."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=description, unit="step", leave=False)
    return _SilentBar()


class _SilentBar:
    def update(self, n: int = 1) -> None:
        """Nothing to show."""

    def set_postfix(self, **values: object) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


def validation_set(
    data: torch.Tensor, config: TrainConfig
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed evaluation batches of a validation stream under ``config``."""
    return fixed_batches(
        data, count=config.val_batches, batch_size=config.batch_size, seq_len=config.model.seq_len
    )


def build_model(config: TrainConfig, init: dict[str, torch.Tensor]) -> ByteTransformer:
    """A model of ``config.model`` loaded from ``init``, on ``config.device``."""
    model = ByteTransformer(config.model)
    model.load_state_dict(init)
    return model.to(config.device)


def train_run(
    name: str,
    *,
    lr: float,
    config: TrainConfig,
    corpus: Corpus,
    init: dict[str, torch.Tensor],
    progress: bool = True,
    description: str = "",
    keep_model: bool = False,
) -> dict:
    """Train one optimizer for ``config.steps`` steps from ``init`` on ``corpus``.

    Returns the validation curve (step 0 included), the final validation loss (the curve's last
    point), the mean training loss of the last ``final_loss_window`` steps, state bytes and
    notes (construction warnings; a non-finite loss stops the run early with a note and a
    final validation loss of inf). With ``keep_model``, the trained state_dict is under
    "model_state".
    """
    model = build_model(config, init)
    train_data = corpus.train.to(config.device)
    val_set = validation_set(corpus.val.to(config.device), config)
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
    started = time.perf_counter()
    bar = progress_bar(config.steps, description or name, progress)
    for step in range(1, config.steps + 1):
        x, y = random_batch(
            train_data,
            batch_size=config.batch_size,
            seq_len=config.model.seq_len,
            generator=generator,
        )
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        train_losses.append(loss.item())
        if not math.isfinite(train_losses[-1]):
            notes.append(f"training loss became non-finite at step {step}; stopped")
            val_curve.append((step, math.inf))
            break
        if step % config.eval_every == 0 or step == config.steps:
            val_curve.append((step, evaluate(model, val_set)))
            bar.set_postfix(loss=f"{train_losses[-1]:.3f}", val=f"{val_curve[-1][1]:.3f}")
        bar.update()
    bar.close()
    n_params = sum(p.numel() for p in model.parameters())
    nbytes = state_nbytes(optimizer)
    window = train_losses[-config.final_loss_window :]
    result = {
        "lr": lr,
        "seed": config.seed,
        "steps": config.steps,
        "steps_done": len(train_losses),
        "notes": notes,
        "optimizer_class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "n_params": n_params,
        "state_bytes": nbytes,
        "state_bytes_per_param": nbytes / n_params,
        "initial_val_loss": val_curve[0][1],
        "val_loss": val_curve[-1][1],
        "train_loss": sum(window) / len(window),
        "wall_seconds": time.perf_counter() - started,
        "val_curve": val_curve,
    }
    if keep_model:
        result["model_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return result
