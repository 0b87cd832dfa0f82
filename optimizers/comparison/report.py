"""The comparison's outputs: the terminal table, the JSON file and the figure.

Ratios are to AdamW measured in the same run (absent when AdamW did not run): validation loss
ratio below 1 means a better model than AdamW's after the same steps; time ratios above 1 mean
slower than AdamW.
"""

from __future__ import annotations

import json
from pathlib import Path

#: (header, key in the row, decimals) of each table column after the optimizer's name.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("train loss", "final_train_loss", 4),
    ("val loss", "final_val_loss", 4),
    ("val/AdamW", "val_loss_ratio_to_adamw", 3),
    ("state B/param", "state_bytes_per_param", 3),
    ("opt step ms", "opt_step_median_ms", 2),
    ("opt x AdamW", "opt_step_ratio_to_adamw", 2),
    ("full step ms", "full_step_median_ms", 2),
    ("full x AdamW", "full_step_ratio_to_adamw", 2),
)

_RATIOS = {
    "val_loss_ratio_to_adamw": "final_val_loss",
    "opt_step_ratio_to_adamw": "opt_step_median_ms",
    "full_step_ratio_to_adamw": "full_step_median_ms",
}


def add_ratios(results: list[dict]) -> None:
    """Write the ratio-to-AdamW entries into every result that ran (None without AdamW)."""
    reference = next((r for r in results if r["name"] == "adamw" and r["status"] == "ran"), None)
    for result in results:
        if result["status"] != "ran":
            continue
        for ratio_key, value_key in _RATIOS.items():
            result[ratio_key] = (
                result[value_key] / reference[value_key] if reference is not None else None
            )


def format_table(results: list[dict]) -> str:
    """A fixed-width table of the optimizers that ran, then one line per skipped optimizer."""
    headers = ["optimizer"] + [header for header, _, _ in COLUMNS]
    rows = [
        [result["name"]] + [_format(result[key], decimals) for _, key, decimals in COLUMNS]
        for result in results
        if result["status"] == "ran"
    ]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"skipped {r['name']}: {r['reason']}" for r in results if r["status"] != "ran"]
    lines += [f"note ({r['name']}): {n}" for r in results for n in r.get("notes", [])]
    return "\n".join(lines)


def _format(value: float | None, decimals: int) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` (settings, corpus, machine, results) as indented JSON."""
    path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")


def plot(path: Path, results: list[dict]) -> None:
    """PNG with validation-loss curves (left) and state bytes per parameter (right)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ran = [r for r in results if r["status"] == "ran"]
    figure, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=(3, 2))
    for result in ran:
        steps, losses = zip(*result["val_curve"], strict=True)
        curves.plot(steps, losses, marker="o", markersize=3, label=result["name"])
    curves.set(xlabel="step", ylabel="validation loss (nats/byte)", title="Validation loss")
    curves.grid(alpha=0.3)
    curves.legend()
    names = [r["name"] for r in ran]
    values = [r["state_bytes_per_param"] for r in ran]
    bars.bar(names, values, color=[f"C{i}" for i in range(len(ran))])
    for x, value in enumerate(values):
        bars.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom", fontsize=8)
    bars.set(ylabel="bytes per parameter", title="Optimizer state")
    bars.tick_params(axis="x", rotation=35)
    for label in bars.get_xticklabels():  # anchor each rotated name at its bar, not its middle
        label.set_horizontalalignment("right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
