"""The comparison's outputs: one table per task (with a legend of its columns) and the figure.

Ratios are to AdamW measured in the same run and task (absent when AdamW did not run): a
validation-loss ratio below 1 means a better model than AdamW's after the same steps; time
ratios above 1 mean slower than AdamW, both timed in the same alternating phase.
"""

from __future__ import annotations

import math
from pathlib import Path

TASK_TITLES = {
    "pretrain": "pretraining from scratch on the standard library's sources",
    "finetune": "fine-tuning the AdamW-pretrained model on the standard library's test suites",
}

#: (header, cell function, legend) of each column after the optimizer's name.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("lr", "lr", "peak lr chosen by the sweep (* = at the grid's edge, given = from --lr)"),
    (
        "val loss",
        "val_loss",
        "validation cross-entropy, nats/byte, mean over the seeds (lower is better)",
    ),
    ("±", "val_loss_spread", "max - min of the validation loss over the seeds"),
    ("val/AdamW", "val_loss_ratio_to_adamw", "val loss / AdamW's (< 1: better than AdamW)"),
    (
        "state B/param",
        "state_bytes_per_param",
        "optimizer-state bytes per model parameter (lower is leaner)",
    ),
    (
        "opt step ms",
        "opt_step_median_ms",
        "median optimizer.step() time in the alternating timing phase (lower is faster)",
    ),
    ("opt xAdamW", "opt_step_ratio_to_adamw", "opt step ms / AdamW's (> 1: slower)"),
    (
        "full step ms",
        "full_step_median_ms",
        "median forward + backward + step time, same phase (lower is faster)",
    ),
    ("full xAdamW", "full_step_ratio_to_adamw", "full step ms / AdamW's (> 1: slower)"),
)

_DECIMALS = {
    "val_loss": 4,
    "val_loss_spread": 4,
    "val_loss_ratio_to_adamw": 3,
    "state_bytes_per_param": 3,
    "opt_step_median_ms": 2,
    "opt_step_ratio_to_adamw": 2,
    "full_step_median_ms": 1,
    "full_step_ratio_to_adamw": 2,
}

_RATIOS = {
    "val_loss_ratio_to_adamw": "val_loss",
    "opt_step_ratio_to_adamw": "opt_step_median_ms",
    "full_step_ratio_to_adamw": "full_step_median_ms",
}


def add_ratios(records: list[dict]) -> None:
    """Write the ratio-to-AdamW entries into every record that ran (None without AdamW or
    without the value)."""
    reference = next((r for r in records if r["name"] == "adamw" and r["status"] == "ran"), None)
    for record in records:
        if record["status"] != "ran":
            continue
        for ratio_key, value_key in _RATIOS.items():
            value = record.get(value_key)
            base = None if reference is None else reference.get(value_key)
            record[ratio_key] = (
                value / base if value is not None and base and math.isfinite(base) else None
            )


def format_cell(record: dict, key: str) -> str:
    """One table cell: the lr with its edge/given mark, or the number at its decimals."""
    if key == "lr":
        mark = (
            "given"
            if record.get("lr_fixed")
            else "*"
            if record.get("lr_bracketed") is False
            else ""
        )
        return f"{record['lr']:g}{mark and ' ' + mark}"
    value = record.get(key)
    if value is None or (key == "val_loss_spread" and len(record.get("val_loss_seeds", [])) < 2):
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "diverged" if key == "val_loss" else "-"
    return f"{value:.{_DECIMALS[key]}f}"


def format_table(task: str, records: dict[str, dict], settings: dict) -> str:
    """The task's title, a fixed-width table of the optimizers that ran, one line per skipped
    optimizer and per note, then the legend of the columns."""
    ran = [r for r in records.values() if r["status"] == "ran"]
    seeds = len(settings["seeds"])
    title = (
        f"{task}: {TASK_TITLES[task]} - {settings['steps'][task]} steps, "
        f"{seeds} seed{'s' * (seeds > 1)}, preset {settings['preset']}"
    )
    headers = ["optimizer"] + [header for header, _, _ in COLUMNS]
    rows = [[r["name"]] + [format_cell(r, key) for _, key, _ in COLUMNS] for r in ran]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    if task == "finetune" and ran:
        title += f"; the pretrained model starts at val loss {ran[0]['initial_val_loss']:.4f}"
    lines = [title, ""]
    for row in [headers, *rows]:
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines.insert(3, "  ".join("-" * w for w in widths))
    lines += [
        f"skipped {r['name']}: {r['reason']}" for r in records.values() if r["status"] != "ran"
    ]
    lines += [f"note ({r['name']}): {note}" for r in ran for note in r.get("notes", [])]
    lines += ["", "columns:"] + [f"  {header}: {legend}" for header, _, legend in COLUMNS]
    lines.append(f"  lr chosen as: {settings['sweep_note']}")
    return "\n".join(lines)


def plot(path: Path, payload: dict) -> None:
    """PNG: one validation-curve panel per task (mean over seeds; the y axis fitted to the
    points after step 0, so the untrained loss does not flatten the curves), then validation
    loss against state bytes per parameter for every task. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    settings, tasks = payload["settings"], payload["tasks"]
    names = list(dict.fromkeys(name for records in tasks.values() for name in records))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    figure, axes = plt.subplots(1, len(tasks) + 1, figsize=(5.2 * (len(tasks) + 1), 4.6))
    for axis, (task, records) in zip(axes, tasks.items(), strict=False):
        for record in records.values():
            if record["status"] != "ran":
                continue
            steps, losses = mean_curve(record["val_curves"])
            axis.plot(
                steps,
                losses,
                marker="o",
                markersize=2.5,
                color=colours[record["name"]],
                label=record["name"],
            )
        limits = loss_limits(records)
        if limits is not None:
            axis.set_ylim(*limits)
        axis.set(
            xlabel="step",
            ylabel="validation loss (nats/byte)",
            title=f"{task}: {settings['steps'][task]} steps",
        )
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    quality = axes[-1]
    markers = {"pretrain": "o", "finetune": "s"}
    for task, records in tasks.items():
        for record in records.values():
            if record["status"] != "ran" or not math.isfinite(record["val_loss"]):
                continue
            quality.errorbar(
                record["state_bytes_per_param"],
                record["val_loss"],
                yerr=(record["val_loss_spread"] or 0.0) / 2,
                marker=markers.get(task, "^"),
                color=colours[record["name"]],
                linestyle="none",
            )
            quality.annotate(
                record["name"],
                (record["state_bytes_per_param"], record["val_loss"]),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
            )
    quality.set_xscale("log")
    quality.set(
        xlabel="optimizer state bytes per parameter (log)",
        ylabel="final validation loss (nats/byte)",
        title="quality vs state (o pretrain, s finetune)",
    )
    quality.grid(alpha=0.3)
    seeds = len(settings["seeds"])
    figure.suptitle(
        f"smallstate-compare, preset {settings['preset']}: "
        + ", ".join(f"{task} {settings['steps'][task]} steps" for task in tasks)
        + f"; {seeds} seed{'s' * (seeds > 1)} at each chosen lr (mean shown)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def loss_limits(records: dict[str, dict]) -> tuple[float, float] | None:
    """y-axis limits of a task's curve panel: the finite mean-curve losses after step 0 plus a
    5% margin (the untrained loss at step 0 would squeeze every curve into a sliver), or None
    when there is none."""
    losses = [
        loss
        for record in records.values()
        if record["status"] == "ran"
        for step, loss in zip(*mean_curve(record["val_curves"]), strict=True)
        if step > 0 and math.isfinite(loss)
    ]
    if not losses:
        return None
    low, high = min(losses), max(losses)
    margin = 0.05 * (high - low or 1.0)
    return low - margin, high + margin


def mean_curve(curves: list[list[list[float]]]) -> tuple[list[int], list[float]]:
    """Steps and mean losses over the seeds' curves, on the steps every curve reached."""
    common = sorted(set.intersection(*({int(step) for step, _ in curve} for curve in curves)))
    by_seed = [dict((int(step), loss) for step, loss in curve) for curve in curves]
    return common, [sum(seed[step] for seed in by_seed) / len(by_seed) for step in common]
