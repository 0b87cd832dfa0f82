"""Adapprox's rank trajectory on a real training run (the training comparison's model and data).

Trains the comparison's default model (same data, initialization and warmup-cosine schedule as
`smallstate-compare`) with Adapprox at each requested k_max and records, after every step, the
rank every factored matrix holds (`state["rank"]`, set by the rank controller of ALGORITHMS.md
§1.2 with its defaults: tol 1e-3, Δk = ceil(0.02·k_max), "step" strategy, starting at k_max).

Run: python bench/adapprox_rank_trajectory.py --steps 200 --k-max 16,64 --out runs/ranks
(prints, per k_max and matrix, the rank at a few steps and its range; writes ranks.json with
every step's ranks and ranks.png).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from optimizers import Adapprox
from optimizers.comparison import registry
from optimizers.comparison.corpus import load_stdlib_corpus
from optimizers.comparison.presets import PRESETS
from optimizers.comparison.runner import initial_state, pinned_threads, preset_config, train_run

LR = 3e-3  # the comparison's Adapprox learning rate
REPORT_STEPS = (1, 10, 25, 50, 100, 150, 200)


def recording_factory(k_max: int, trajectory: dict[str, list[int]]):
    """A registry factory building Adapprox(k_max) whose post-step hook appends each factored
    matrix's current rank to `trajectory` (keyed "index: m×n", in parameter order)."""

    def build(params, lr: float, settings: registry.OptimizerSettings) -> torch.optim.Optimizer:
        params = list(params)
        optimizer = Adapprox(params, lr=lr, weight_decay=settings.weight_decay, k_max=k_max)

        def record(opt, args, kwargs) -> None:
            for index, param in enumerate(params):
                state = opt.state.get(param, {})
                if "rank" in state:
                    key = f"{index}: {state['Q'].shape[0]}x{state['U'].shape[0]}"
                    trajectory.setdefault(key, []).append(int(state["rank"]))

        optimizer.register_step_post_hook(record)
        return optimizer

    return build


def summary(k_max: int, trajectory: dict[str, list[int]]) -> str:
    steps = [s for s in REPORT_STEPS if s <= min(len(r) for r in trajectory.values())]
    header = f"k_max {k_max}: rank of each factored matrix after step "
    lines = [header + ", ".join(map(str, steps))]
    for key, ranks in trajectory.items():
        at = " ".join(f"{ranks[s - 1]:3d}" for s in steps)
        lines.append(f"  {key:>14s}  {at}   range [{min(ranks)}, {max(ranks)}]")
    mean = sum(sum(r) / len(r) for r in trajectory.values()) / len(trajectory)
    lines.append(f"  mean rank over the run and the matrices: {mean:.1f} of {k_max}")
    return "\n".join(lines)


def plot(path: Path, runs: dict[int, dict[str, list[int]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.5), squeeze=False)
    for axis, (k_max, trajectory) in zip(axes[0], runs.items(), strict=True):
        for key, ranks in trajectory.items():
            axis.plot(range(1, len(ranks) + 1), ranks, linewidth=0.8, label=key)
        axis.set_title(f"Adapprox k_max={k_max}")
        axis.set_xlabel("step")
        axis.set_ylabel("rank")
        axis.set_ylim(0, k_max + 1)
        axis.legend(fontsize=5, ncol=2, title="parameter: m×n", title_fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--k-max", default="16,64", help="comma list of k_max values")
    parser.add_argument("--out", type=Path, default=Path("runs") / "adapprox-ranks")
    args = parser.parse_args()
    config = preset_config(PRESETS["default"], steps=args.steps, seed=0, device="cpu")
    corpus = load_stdlib_corpus()
    runs: dict[int, dict[str, list[int]]] = {}
    standard = registry.REGISTRY["adapprox"]
    try:
        with pinned_threads(2):
            init = initial_state(config.model, config.seed)
            for k_max in (int(k) for k in args.k_max.split(",")):
                runs[k_max] = {}
                registry.REGISTRY["adapprox"] = recording_factory(k_max, runs[k_max])
                result = train_run(
                    "adapprox", lr=LR, config=config, corpus=corpus, init=init, progress=False
                )
                print(summary(k_max, runs[k_max]))
                print(f"  final validation loss {result['val_loss']:.3f}", flush=True)
    finally:
        registry.REGISTRY["adapprox"] = standard
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ranks.json").write_text(json.dumps({str(k): r for k, r in runs.items()}))
    plot(args.out / "ranks.png", runs)
    print(f"wrote {args.out / 'ranks.json'} and {args.out / 'ranks.png'}")


if __name__ == "__main__":
    main()
