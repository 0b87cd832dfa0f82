"""The whole comparison: for each task, a timing phase, then per optimizer a bracketed lr sweep and
full-length runs at the chosen lr over several seeds; results saved after every optimizer.

Tasks: "pretrain" trains from a fresh initialization on the standard library's sources;
"finetune" starts from that model pretrained with AdamW (built once, cached in the output folder
as ``finetune-base.pt``) and trains on the test suites, which pretraining never saw. A rerun into
the same output folder with the same settings keeps the optimizers already done (a run
interrupted with Ctrl-C resumes where it stopped); the timing phase reruns in full, since its
ratios compare optimizers timed in the same alternation.
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .corpus import Corpus, load_stdlib_corpus, load_test_suite_corpus
from .presets import Preset
from .registry import DEFAULT_LR, FINETUNE_LR, describe, runs_in, unavailable_reason
from .report import add_ratios
from .runner import initial_state, preset_config, train_run
from .sweep import best_lr, initial_grid, is_bracketed, next_lr
from .timing import alternating_timings

TASKS = ("pretrain", "finetune")
BASE_FILE = "finetune-base.pt"
RESULTS_FILE = "results.json"
UNCOMPARED = ("corpus", "command")  # settings entries a resumed run need not match
TIMING_KEYS = (
    "opt_step_median_ms",
    "opt_step_iqr_ms",
    "opt_step_spread",
    "full_step_median_ms",
    "full_step_iqr_ms",
    "full_step_spread",
)


@dataclass(frozen=True)
class Plan:
    """What one invocation runs (built and checked by the command line)."""

    preset_name: str
    preset: Preset
    tasks: tuple[str, ...]
    names: tuple[str, ...]
    fixed_lr: dict[str, float]
    steps: dict[str, int]
    sweep_steps: dict[str, int]
    seeds: tuple[int, ...]
    device: str
    progress: bool = True

    def settings(self) -> dict:
        """Everything that decides the results (a resumed run must match it exactly)."""
        return {
            "preset": self.preset_name,
            "tasks": list(self.tasks),
            "optimizers": list(self.names),
            "model": vars(self.preset.model).copy(),
            "batch_size": self.preset.batch_size,
            "steps": dict(self.steps),
            "sweep_steps": dict(self.sweep_steps),
            "finetune_base_steps": self.preset.base_steps,
            "finetune_base_lr": DEFAULT_LR["adamw"],
            "grid_points": self.preset.grid_points,
            "max_extensions": self.preset.max_extensions,
            "seeds": list(self.seeds),
            "fixed_lr": dict(self.fixed_lr),
            "timing_rounds": self.preset.timing_rounds,
            "device": self.device,
            "sweep_note": sweep_note(self),
        }


def sweep_note(plan: Plan) -> str:
    """One sentence on how the lr was chosen, for the output and the JSON."""
    parts = []
    for task in plan.tasks:
        short, full = plan.sweep_steps[task], plan.steps[task]
        length = f"{short}-step runs (full length {full})" if short < full else "full-length runs"
        parts.append(f"{task}: lr swept on {length}")
    seeds = f"{len(plan.seeds)} seed{'s' * (len(plan.seeds) > 1)}"
    return "; ".join(parts) + f"; then {seeds} at the chosen lr, full length"


def load_previous(out: Path, settings: dict) -> dict | None:
    """The results saved in ``out`` by an earlier run with the same settings, else None.

    Raises ValueError when ``out`` holds results of different settings (nothing is overwritten).
    """
    path = out / RESULTS_FILE
    if not path.exists():
        return None
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"out folder {out} holds an unreadable {RESULTS_FILE} ({error})") from None
    compared = {k: v for k, v in previous.get("settings", {}).items() if k not in UNCOMPARED}
    if compared != settings:
        raise ValueError(
            f"out folder {out} holds results of other settings; choose another --out or remove "
            f"{path}"
        )
    return previous


def finetune_base(
    plan: Plan, corpus: Corpus, out: Path, log: Callable[[str], None]
) -> dict[str, torch.Tensor]:
    """The AdamW-pretrained model fine-tuning starts from: loaded from ``out/BASE_FILE`` when
    it was built with the same settings, else trained now (base_steps steps on the pretraining
    corpus, AdamW at its default lr, the first seed) and saved there."""
    key = {
        "model": vars(plan.preset.model).copy(),
        "batch_size": plan.preset.batch_size,
        "steps": plan.preset.base_steps,
        "lr": DEFAULT_LR["adamw"],
        "seed": plan.seeds[0],
        "train_bytes": int(corpus.train.numel()),
    }
    path = out / BASE_FILE
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == json.dumps(key, sort_keys=True):
            log(f"fine-tuning base: reusing {path}")
            return saved["state"]
    log(f"fine-tuning base: pretraining with AdamW for {plan.preset.base_steps} steps")
    config = preset_config(
        plan.preset, steps=plan.preset.base_steps, seed=plan.seeds[0], device=plan.device
    )
    run = train_run(
        "adamw",
        lr=DEFAULT_LR["adamw"],
        config=config,
        corpus=corpus,
        init=initial_state(plan.preset.model, plan.seeds[0]),
        progress=plan.progress,
        description="base adamw",
        keep_model=True,
    )
    if not math.isfinite(run["val_loss"]):
        raise RuntimeError("the AdamW pretraining of the fine-tuning base diverged")
    tmp = path.with_suffix(".tmp")
    torch.save({"key": json.dumps(key, sort_keys=True), "state": run["model_state"]}, tmp)
    os.replace(tmp, path)
    log(f"fine-tuning base: validation loss {run['val_loss']:.4f} on the pretraining corpus")
    return run["model_state"]


def same_start(state: dict[str, torch.Tensor]) -> Callable[[int], dict[str, torch.Tensor]]:
    """Seed -> starting weights for fine-tuning: the same pretrained model for every seed (the
    seed then changes only the data order)."""

    def start(seed: int) -> dict[str, torch.Tensor]:
        return state

    return start


def optimizer_record(
    name: str,
    task: str,
    plan: Plan,
    corpus: Corpus,
    init_for_seed: Callable[[int], dict[str, torch.Tensor]],
    log: Callable[[str], None],
) -> dict:
    """Sweep (unless the lr is fixed), then the seeds at the chosen lr; the optimizer's record."""
    full_steps, short_steps = plan.steps[task], plan.sweep_steps[task]
    centre = (DEFAULT_LR if task == "pretrain" else FINETUNE_LR)[name]
    runs: dict[tuple[float, int, int], dict] = {}

    def run(lr: float, seed: int, steps: int) -> dict:
        if (lr, seed, steps) not in runs:
            full = steps == full_steps
            config = preset_config(
                plan.preset,
                steps=steps,
                seed=seed,
                device=plan.device,
                evaluations=None if full else 1,
            )
            runs[(lr, seed, steps)] = train_run(
                name,
                lr=lr,
                config=config,
                corpus=corpus,
                init=init_for_seed(seed),
                progress=plan.progress,
                description=f"{task} {name} lr {lr:g} seed {seed}",
            )
        return runs[(lr, seed, steps)]

    sweep: dict[float, float] = {}
    if name in plan.fixed_lr:
        chosen, bracketed = plan.fixed_lr[name], None
        log(f"  {name}: lr {chosen:g} given on the command line (no sweep)")
    else:
        grid = initial_grid(centre, points=plan.preset.grid_points)
        for lr in grid:
            sweep[lr] = run(lr, plan.seeds[0], short_steps)["val_loss"]
        for _ in range(plan.preset.max_extensions):
            extra = next_lr(sweep)
            if extra is None:
                break
            sweep[extra] = run(extra, plan.seeds[0], short_steps)["val_loss"]
        chosen, bracketed = best_lr(sweep), is_bracketed(sweep)
        shown = ", ".join(f"{lr:g}: {loss:.4f}" for lr, loss in sorted(sweep.items()))
        log(
            f"  {name}: sweep ({short_steps} steps) {shown} -> lr {chosen:g}"
            + ("" if bracketed else " (at the edge: extension limit reached)")
        )
    seeded = [run(chosen, seed, full_steps) for seed in plan.seeds]
    losses = [r["val_loss"] for r in seeded]
    finite = all(math.isfinite(loss) for loss in losses)
    notes = list(dict.fromkeys(note for r in seeded for note in r["notes"]))
    if bracketed is False:
        notes.append(
            f"best lr {chosen:g} is at the edge of the grid after "
            f"{plan.preset.max_extensions} extensions"
        )
    record = {
        "name": name,
        "status": "ran",
        "label": describe(name),
        "lr": chosen,
        "lr_grid": sorted(sweep) if sweep else [chosen],
        "lr_fixed": name in plan.fixed_lr,
        "lr_bracketed": bracketed,
        "sweep_steps": short_steps if sweep else None,
        "sweep_val_loss": [[lr, loss] for lr, loss in sorted(sweep.items())],
        "steps": full_steps,
        "seeds": list(plan.seeds),
        "val_loss": statistics.fmean(losses) if finite else math.inf,
        "val_loss_seeds": losses,
        "val_loss_spread": max(losses) - min(losses) if finite else None,
        "train_loss": statistics.fmean(r["train_loss"] for r in seeded),
        "initial_val_loss": seeded[0]["initial_val_loss"],
        "n_params": seeded[0]["n_params"],
        "state_bytes": seeded[0]["state_bytes"],
        "state_bytes_per_param": seeded[0]["state_bytes_per_param"],
        "optimizer_class": seeded[0]["optimizer_class"],
        "val_curves": [r["val_curve"] for r in seeded],
        "steps_done": [r["steps_done"] for r in seeded],
        "wall_seconds": sum(r["wall_seconds"] for r in runs.values()),
        "notes": notes,
    }
    spread = "" if len(losses) < 2 or not finite else f" ± {record['val_loss_spread']:.4f}"
    log(f"  {name}: lr {chosen:g}, val loss {record['val_loss']:.4f}{spread} over seeds {losses}")
    return record


def run_comparison(
    plan: Plan, out: Path, machine: dict, command: list[str], log: Callable[[str], None] = print
) -> dict:
    """Run every task of ``plan``, writing ``out/results.json`` after each optimizer; returns
    the payload {"settings", "machine", "tasks"}."""
    settings = plan.settings()
    previous = load_previous(out, settings)
    payload = {
        "settings": {**settings, "command": command, "corpus": {}},
        "machine": {**machine, "timing_warnings": {}},
        "tasks": {task: {} for task in plan.tasks},
    }
    if previous is not None:
        for task in plan.tasks:
            payload["tasks"][task] = dict(previous["tasks"].get(task, {}))
        done = sum(len(records) for records in payload["tasks"].values())
        log(f"resuming: {done} optimizer results kept from {out / RESULTS_FILE}")
    log(settings["sweep_note"])
    pretrain_corpus = load_stdlib_corpus()
    for task in plan.tasks:
        corpus = pretrain_corpus if task == "pretrain" else load_test_suite_corpus()
        stats = corpus.stats()
        payload["settings"]["corpus"][task] = stats
        log(
            f"\n== {task}: {stats['train_files']} train files ({stats['train_bytes'] / 1e6:.2f} "
            f"MB), {stats['val_files']} validation files ({stats['val_bytes'] / 1e6:.2f} MB)"
        )
        if task == "pretrain":
            init_for_seed = functools.partial(initial_state, plan.preset.model)
        else:
            init_for_seed = same_start(finetune_base(plan, pretrain_corpus, out, log))
        names = [name for name in plan.names if runs_in(name, task)]
        available = [name for name in names if unavailable_reason(name) is None]
        centre = DEFAULT_LR if task == "pretrain" else FINETUNE_LR
        lrs = {name: plan.fixed_lr.get(name, centre[name]) for name in available}
        config = preset_config(
            plan.preset, steps=plan.steps[task], seed=plan.seeds[0], device=plan.device
        )
        log(f"timing phase: {plan.preset.timing_rounds} alternating rounds of {len(available)}")
        timings, messages = alternating_timings(
            available,
            lrs=lrs,
            config=config,
            train_data=corpus.train,
            init=init_for_seed(plan.seeds[0]),
            rounds=plan.preset.timing_rounds,
        )
        payload["machine"]["timing_warnings"][task] = messages
        for message in messages:
            log(f"warning: {message}")
        records = payload["tasks"][task]
        for record in records.values():
            if record["status"] == "ran":
                record.update({key: timings[record["name"]][key] for key in TIMING_KEYS})
        for name in names:
            if name in records:
                continue
            reason = unavailable_reason(name)
            if reason is not None:
                log(f"  skipping {name}: {reason}")
                records[name] = {"name": name, "status": "unavailable", "reason": reason}
            else:
                record = optimizer_record(name, task, plan, corpus, init_for_seed, log)
                record.update({key: timings[name][key] for key in TIMING_KEYS})
                records[name] = record
            add_ratios(list(records.values()))
            write_results(out, payload)
        add_ratios(list(records.values()))
        write_results(out, payload)
    return payload


def write_results(out: Path, payload: dict) -> None:
    """Write ``out/results.json`` atomically (a temporary file renamed over it)."""
    path = out / RESULTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)
