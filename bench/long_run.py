"""Long-run stability of the three optimizers: many steps on a small model, no NaN, bounded state.

Trains a 3-layer MLP (64→128→128→1, tanh; ≈25k parameters) on a fresh random regression batch
per step (y = sin(sum of 3 inputs) + noise) with MicroAdam, LDAdam and Adapprox, settings chosen
so that every weight matrix takes the compressed path. Every `--every` steps it records the
training loss, the loss on a fixed held-out batch, the gradient norm, the norm of every floating
state tensor, and the error-feedback norm relative to the gradient norm (MicroAdam: the
dequantized 4-bit error; LDAdam: its dense error buffer; Adapprox keeps no error feedback).
Writes JSON and prints a short summary per optimizer.

    python bench/long_run.py --steps 2000 --every 50 --out long_run.json

Cost: steps × (forward/backward of a 25k-parameter MLP on 128 rows + one optimizer step);
2000 steps took 4-6 minutes per optimizer on the shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np
import torch

import compress
import optimizers

SETTINGS = {
    "MicroAdam": dict(lr=1e-3, density=0.05, block_size=1024, quant_bucket=64, window=10),
    "LDAdam": dict(lr=1e-3, rank=8),
    "Adapprox": dict(lr=1e-3, k_max=16),
}


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 128),
        torch.nn.Tanh(),
        torch.nn.Linear(128, 128),
        torch.nn.Tanh(),
        torch.nn.Linear(128, 1),
    )


def batch(step: int, rows: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(10_000 + step)
    x = torch.randn(rows, 64, generator=generator)
    noise = 0.05 * torch.randn(rows, 1, generator=generator)
    return x, torch.sin(x[:, :3].sum(dim=1, keepdim=True)) + noise


def error_feedback(
    state: dict[str, Any], group: dict[str, Any], length: int
) -> torch.Tensor | None:
    """The stored error of one parameter as a float32 tensor, or None if it keeps none."""
    if "error_codes" in state:  # MicroAdam: 4-bit codes with bf16 bounds (int16 bits)
        q = compress.Quantized(
            state["error_codes"].numpy(),
            state["error_lo"].numpy().view(np.uint16),
            state["error_hi"].numpy().view(np.uint16),
            length,
            4,
            group["quant_bucket"],
        )
        return torch.from_numpy(compress.dequantize(q))
    error = state.get("error")
    if not (torch.is_tensor(error) and error.is_floating_point()):
        return None
    if "error_fold" in state:  # LDAdam's folded buffer holds e + κ·P·m (P·m transposed: "right")
        folded = state["basis"] @ state["exp_avg"]
        folded = folded.t() if state["side"] == "right" else folded
        error = error - float(state["error_fold"]) * folded.reshape(error.shape)
    return error.float()


def measure(opt: torch.optim.Optimizer) -> tuple[float, float, dict[str, float], bool]:
    """(gradient norm, error-feedback norm, norm of each floating state key, any NaN/Inf)."""
    grad_sq, error_sq, norms, bad = 0.0, 0.0, {}, False
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            grad_sq += p.grad.double().pow(2).sum().item()
            error = error_feedback(state, group, p.numel())
            if error is not None:
                error_sq += error.double().pow(2).sum().item()
                bad |= not bool(torch.isfinite(error).all())
            for key, value in state.items():
                if key == "error" and error is not None:
                    value = error  # e itself (LDAdam's buffer holds e + κ·P·m)
                if torch.is_tensor(value) and value.is_floating_point() and value.dim():
                    norms[key] = norms.get(key, 0.0) + value.double().pow(2).sum().item()
                    bad |= not bool(torch.isfinite(value).all())
            bad |= not bool(torch.isfinite(p).all())
    return math.sqrt(grad_sq), math.sqrt(error_sq), {k: math.sqrt(v) for k, v in norms.items()}, bad


def run(name: str, steps: int, every: int) -> dict[str, Any]:
    model = make_model()
    opt = getattr(optimizers, name)(model.parameters(), **SETTINGS[name])
    held_out = batch(0, rows=512)
    record: dict[str, Any] = {
        "eval_loss": [],
        "step": [],
        "loss": [],
        "grad_norm": [],
        "ef_ratio": [],
        "state_norms": {},
        "nonfinite_at": None,
    }
    started = time.perf_counter()
    for step in range(1, steps + 1):
        x, y = batch(step)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if step % every and step != steps:
            continue
        grad_norm, error_norm, norms, bad = measure(opt)
        record["step"].append(step)
        record["loss"].append(loss.item())
        with torch.no_grad():
            record["eval_loss"].append(
                torch.nn.functional.mse_loss(model(held_out[0]), held_out[1]).item()
            )
        record["grad_norm"].append(grad_norm)
        record["ef_ratio"].append(error_norm / grad_norm if grad_norm > 0 else 0.0)
        for key, value in norms.items():
            record["state_norms"].setdefault(key, []).append(value)
        if (bad or not math.isfinite(loss.item())) and record["nonfinite_at"] is None:
            record["nonfinite_at"] = step
    record["seconds"] = time.perf_counter() - started
    record["state_bytes_per_param"] = opt.state_nbytes() / sum(
        p.numel() for p in model.parameters()
    )
    return record


def summarize(name: str, record: dict[str, Any]) -> str:
    ratios = record["ef_ratio"]
    tail = ratios[len(ratios) * 3 // 4 :] or ratios
    growth = {
        key: values[-1] / values[0] if values[0] > 0 else float("inf")
        for key, values in record["state_norms"].items()
    }
    return (
        f"{name:9s} steps={record['step'][-1]}"
        f" loss {record['loss'][0]:.4f}→{record['loss'][-1]:.4f}"
        f" held-out {record['eval_loss'][0]:.4f}→{record['eval_loss'][-1]:.4f}"
        f" nonfinite_at={record['nonfinite_at']} ef/grad max={max(ratios):.3f}"
        f" last-quarter median={float(np.median(tail)):.3f}"
        f" state-norm final/first={{{', '.join(f'{k}: {v:.2f}' for k, v in growth.items())}}}"
        f" bytes/param={record['state_bytes_per_param']:.2f} ({record['seconds']:.1f}s)"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--out", default="long_run.json")
    parser.add_argument("--optimizers", nargs="*", default=list(SETTINGS))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    results = {name: run(name, args.steps, args.every) for name in args.optimizers}
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=1)
    for name, record in results.items():
        print(summarize(name, record))
    return results


if __name__ == "__main__":
    main()
