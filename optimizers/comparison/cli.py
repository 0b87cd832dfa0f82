"""``smallstate-compare``: pretrain and fine-tune one small byte-level LM with each optimizer.

Prints the corpora, model and machine, each optimizer's lr sweep and seeds, then one table per
task (validation loss over seeds, optimizer-state bytes per parameter, step times from an
alternating timing phase and their ratios to AdamW), and writes ``results.json`` (after every
optimizer), ``table.txt`` and ``comparison.png`` into the output folder. Ctrl-C stops with exit
status 130 and keeps what finished; the same command resumes.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from .experiment import RESULTS_FILE, TASKS, Plan, load_previous, run_comparison, write_results
from .presets import PRESETS
from .registry import DEFAULT_OPTIMIZERS, REGISTRY
from .report import format_table, plot
from .runner import pinned_threads
from .timing import load_average, usable_cores

INTERRUPTED = 130  # the shell's status for a process stopped by SIGINT


def optimizer_list(text: str) -> list[str]:
    """'adamw,ldadam' -> ['adamw', 'ldadam'], each a registry name (argparse type)."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in REGISTRY]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer(s) {', '.join(unknown) or '(none given)'} in {text!r}; "
            f"valid names: {', '.join(REGISTRY)}"
        )
    return list(dict.fromkeys(names))


def positive_int(text: str) -> int:
    """An int >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def lr_value(text: str) -> float:
    """A finite lr > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"lr must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"lr must be finite and > 0, got {text!r}")
    return value


def lr_spec(text: str) -> dict[str, float] | float:
    """'0.002' (every optimizer) or 'adamw=3e-3,adafactor=0.03' (argparse type)."""
    if "=" not in text:
        return lr_value(text)
    rates = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name not in REGISTRY:
            raise argparse.ArgumentTypeError(
                f"unknown optimizer {name!r} in --lr {text!r}; valid names: {', '.join(REGISTRY)}"
            )
        rates[name] = lr_value(value.strip())
    return rates


def build_parser() -> argparse.ArgumentParser:
    """The command line; see docs/getting-started.md."""
    parser = argparse.ArgumentParser(
        prog="smallstate-compare",
        description=__doc__.split("\n")[0].split(": ", 1)[1],
    )
    parser.add_argument(
        "--task",
        choices=(*TASKS, "both"),
        default="both",
        help="pretrain from scratch, fine-tune an AdamW-pretrained model on held-out test-suite "
        "code, or both (default)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="model size and budgets (default: default; 'tiny' is for the test suite)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the quick preset: a two-point lr grid and one seed, a few minutes on 2 cores",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="steps of each full-length pretraining run (default: the preset's); the sweep "
        "runs keep the preset's fraction of it",
    )
    parser.add_argument(
        "--finetune-steps",
        type=positive_int,
        help="steps of each full-length fine-tuning run (default: the preset's)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        help="full-length runs at each chosen lr, seeds --seed, --seed + 1, ... (default: the "
        "preset's)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="first seed: initialization and data order (default 0)"
    )
    parser.add_argument(
        "--optimizers",
        type=optimizer_list,
        default=list(DEFAULT_OPTIMIZERS),
        help=f"comma list from {', '.join(REGISTRY)} (default: all)",
    )
    parser.add_argument(
        "--lr",
        type=lr_spec,
        help="fix the peak lr instead of sweeping: one value for every optimizer (0.002) or "
        "per optimizer (adamw=3e-3,adafactor=0.03)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="auto",
        help="where to train (default auto: cuda when available)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=usable_cores(),
        help="CPU threads for torch, Numba and BLAS (default: the usable cores)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default ./runs/compare-<time>); a folder holding results of the "
        "same settings is resumed",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def make_plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Plan:
    """Check the arguments together and build the Plan (argparse errors: exit status 2)."""
    if args.quick and args.preset not in (None, "quick"):
        parser.error(f"--quick conflicts with --preset {args.preset}")
    preset_name = "quick" if args.quick else args.preset or "default"
    preset = PRESETS[preset_name]
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: cuda requested but torch.cuda.is_available() is False")
    if args.seed < 0:
        parser.error(f"argument --seed: must be >= 0, got {args.seed}")
    fixed = args.lr if isinstance(args.lr, dict) else {}
    if isinstance(args.lr, float):
        fixed = dict.fromkeys(args.optimizers, args.lr)
    stray = sorted(set(fixed) - set(args.optimizers))
    if stray:
        parser.error(f"argument --lr: {', '.join(stray)} not among --optimizers")
    tasks = TASKS if args.task == "both" else (args.task,)
    steps = {"pretrain": args.steps or preset.steps}
    steps["finetune"] = args.finetune_steps or preset.finetune_steps
    ratios = {
        "pretrain": preset.sweep_steps / preset.steps,
        "finetune": preset.finetune_sweep_steps / preset.finetune_steps,
    }
    sweep_steps = {task: max(1, round(steps[task] * ratios[task])) for task in TASKS}
    seeds = args.seeds or preset.seeds
    return Plan(
        preset_name=preset_name,
        preset=preset,
        tasks=tasks,
        names=tuple(args.optimizers),
        fixed_lr=fixed,
        steps={task: steps[task] for task in tasks},
        sweep_steps={task: sweep_steps[task] for task in tasks},
        seeds=tuple(range(args.seed, args.seed + seeds)),
        device=device,
        progress=not args.no_progress,
    )


def machine_info(device: str, threads: dict) -> dict:
    """Versions, processor, cores, load and thread counts, for the JSON and the header."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "load_average_at_start": load_average(),
        "threads": threads,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns the process exit status (0 done, 2 bad arguments, 130
    interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    plan = make_plan(args, parser)
    out = args.out or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        parser.error(f"argument --out: {out} exists and is not a folder")
    try:
        load_previous(out, plan.settings())
    except ValueError as error:
        parser.error(f"argument --out: {error}")
    out.mkdir(parents=True, exist_ok=True)
    command = sys.argv[1:] if argv is None else list(argv)
    try:
        return _run(plan, out, args.threads, command)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished optimizers are kept in {out / RESULTS_FILE}; "
            "run the same command to resume",
            file=sys.stderr,
        )
        return INTERRUPTED


def _run(plan: Plan, out: Path, threads: int, command: list[str]) -> int:
    started = time.perf_counter()
    with pinned_threads(threads) as pinned:
        machine = machine_info(plan.device, pinned)
        print(
            f"model: preset {plan.preset_name}, {plan.preset.model}, batch "
            f"{plan.preset.batch_size}\nmachine: torch {machine['torch']} on "
            f"{machine['device_name']}, threads {pinned}, {machine['usable_cores']} usable "
            f"cores, load average {machine['load_average_at_start']}"
        )
        load = machine["load_average_at_start"]
        if load is not None and load > machine["usable_cores"] and threads > 1:
            print(
                f"warning: load average {load:.1f} exceeds the {machine['usable_cores']} usable "
                f"cores; {threads} threads per process then wait on each other (many times "
                "slower here), consider --threads 1"
            )
        payload = run_comparison(plan, out, machine, command)
    payload["machine"]["wall_seconds"] = time.perf_counter() - started
    tables = [
        format_table(task, records, payload["settings"])
        for task, records in payload["tasks"].items()
    ]
    text = "\n\n".join(tables)
    print("\n" + text)
    (out / "table.txt").write_text(text + "\n")
    write_results(out, payload)
    written = [out / RESULTS_FILE, out / "table.txt"]
    try:
        plot(out / "comparison.png", payload)
        written.append(out / "comparison.png")
    except ImportError:
        print("figure skipped: matplotlib is not installed (pip install 'smallstate[bench]')")
    minutes = payload["machine"]["wall_seconds"] / 60
    print(f"wrote {', '.join(map(str, written))} in {minutes:.1f} min")
    return 0
