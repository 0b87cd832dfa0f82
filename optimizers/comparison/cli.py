"""``smallstate-compare``: train one small byte-level LM with each optimizer and compare them.

Prints the corpus, model and machine, one progress bar per optimizer, then a table (final losses,
optimizer-state bytes per parameter, step times and their ratios to AdamW), and writes
``results.json``, ``table.txt`` and ``comparison.png`` into the output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import torch

from .corpus import load_stdlib_corpus
from .presets import PRESETS
from .registry import DEFAULT_LR, DEFAULT_OPTIMIZERS, REGISTRY, unavailable_reason
from .report import add_ratios, format_table, plot, write_json
from .runner import initial_state, pinned_threads, preset_config, resolve_device, train_one


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see docs/getting-started.md."""
    parser = argparse.ArgumentParser(prog="smallstate-compare", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--quick", action="store_true", help="same as --preset quick")
    parser.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    parser.add_argument(
        "--optimizers",
        default=",".join(DEFAULT_OPTIMIZERS),
        help=f"comma list from {', '.join(REGISTRY)} (default: all)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--out", type=Path, help="output folder (default ./runs/compare-<time>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lr",
        default="",
        help="peak lr for every optimizer (0.002) or per optimizer (adamw=3e-3,adafactor=0.03)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def parse_optimizers(text: str) -> list[str]:
    """'adamw,ldadam' -> ['adamw', 'ldadam'], each checked against the registry."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in REGISTRY]
    if unknown or not names:
        raise ValueError(f"optimizers must be a comma list from {sorted(REGISTRY)}, got {text!r}")
    return names


def parse_lr(text: str, names: list[str]) -> dict[str, float]:
    """Peak learning rate per optimizer: DEFAULT_LR, overridden by '0.002' or 'name=value,...'."""
    rates = {name: DEFAULT_LR[name] for name in names}
    if not text:
        return rates
    if "=" not in text:
        return dict.fromkeys(names, float(text))
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in rates:
            raise ValueError(
                f"lr names must be among the selected optimizers {names}, got {name!r}"
            )
        rates[name.strip()] = float(value)
    return rates


def machine_info(device: str, threads: dict) -> dict:
    """Versions, processor and thread counts, for the JSON and the header."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns the process exit status (0 on success)."""
    args = parse_args(argv)
    preset_name = "quick" if args.quick else args.preset
    preset = PRESETS[preset_name]
    names = parse_optimizers(args.optimizers)
    rates = parse_lr(args.lr, names)
    steps = args.steps or preset.steps
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    config = preset_config(preset, steps=steps, seed=args.seed, device=resolve_device(args.device))
    out = args.out or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_stdlib_corpus()
    stats = corpus.stats()
    with pinned_threads(args.threads) as threads:
        machine = machine_info(config.device, threads)
        print(
            f"corpus: {stats['train_files']} train files ({stats['train_bytes'] / 1e6:.2f} MB), "
            f"{stats['val_files']} validation files ({stats['val_bytes'] / 1e6:.2f} MB) "
            f"from {stats['source']}"
        )
        print(
            f"model: {preset_name} preset, {config.model}, batch {config.batch_size}, "
            f"{steps} steps\nmachine: torch {machine['torch']} on {machine['device_name']}, "
            f"threads {threads}"
        )
        init = initial_state(config.model, config.seed)
        results = []
        for name in names:
            reason = unavailable_reason(name)
            if reason is not None:
                print(f"skipping {name}: {reason}", flush=True)
                results.append({"name": name, "status": "unavailable", "reason": reason})
                continue
            results.append(
                train_one(
                    name,
                    lr=rates[name],
                    config=config,
                    corpus=corpus,
                    init=init,
                    progress=not args.no_progress,
                )
            )
    add_ratios(results)
    table = format_table(results)
    print(table)
    settings = {
        "preset": preset_name,
        "argv": sys.argv[1:] if argv is None else list(argv),
        **dataclasses.asdict(config),
        "lr": rates,
    }
    (out / "table.txt").write_text(table + "\n")
    write_json(
        out / "results.json",
        {"settings": settings, "corpus": stats, "machine": machine, "results": results},
    )
    plot(out / "comparison.png", results)
    print(f"wrote {out / 'results.json'}, {out / 'table.txt'}, {out / 'comparison.png'}")
    return 0
