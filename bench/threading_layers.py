"""Numba threading layers compared: the compress kernels and a MicroAdam step, per layer.

Each measurement runs in a fresh interpreter (a process keeps the layer it started), the layers
alternating round by round so that a shared machine's drift falls on all of them alike; the
result is the median per layer of each round's best time, and its ratio to the first layer.
The layer is chosen through NUMBA_THREADING_LAYER, so the library's own choice (TBB) is
overridden as a user's would be. docs/threads.md quotes a run.

Run: python -m bench.threading_layers [--rounds 3] [--layers tbb workqueue omp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.fresh_interpreter import run_child

LENGTH = 1 << 24  # 16M float32: 64 MB, beyond any cache
REPEATS = 5


def best(run, repeats: int = REPEATS) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure() -> dict[str, float]:
    """Best seconds of each case in this process (on the layer it was started with)."""
    import numba
    import numpy as np
    import torch

    import compress
    import optimizers
    from bench.param_sets import transformer_params

    x = np.random.default_rng(0).standard_normal(LENGTH, dtype=np.float32)
    q = compress.Quantized.empty(x.size, bits=4, bucket=64, bounds_dtype="bfloat16")
    sparse = compress.SparseBlocks.empty(x.size, density=0.01, block_size=16384)
    error = compress.Quantized.empty(x.size, bits=4, bucket=64, bounds_dtype="bfloat16")
    window = compress.SparseWindow.empty(x.size, m=10, density=0.01)
    params = transformer_params(blocks=1)
    microadam = optimizers.MicroAdam(params, lr=1e-3)
    torch.manual_seed(0)
    times = {
        "quantize4_16M": best(lambda: compress.quantize(x, bits=4, out=q, check_finite=False)),
        "topk_16M": best(lambda: compress.topk_blocks(x, density=0.01, out=sparse)),
        "ef_topk_requantize_16M": best(
            lambda: compress.ef_topk_requantize(x, error, window, density=0.01)
        ),
        "microadam_step_7M": best(microadam.step),
    }
    times["layer"] = numba.threading_layer()
    return times


def run_fresh(layer: str) -> dict[str, float]:
    return run_child("bench.threading_layers", [], {"NUMBA_THREADING_LAYER": layer})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", nargs="+", default=["tbb", "workqueue", "omp"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure()))
        return
    results: dict[str, list[dict]] = {layer: [] for layer in args.layers}
    for round_ in range(args.rounds):
        order = args.layers if round_ % 2 == 0 else args.layers[::-1]
        for layer in order:
            results[layer].append(run_fresh(layer))
    cases = [key for key in results[args.layers[0]][0] if key != "layer"]
    first = args.layers[0]
    medians = {
        layer: {case: statistics.median(r[case] for r in runs) for case in cases}
        for layer, runs in results.items()
    }
    print(f"{'case':26s}" + "".join(f"{layer:>22s}" for layer in args.layers))
    for case in cases:
        cells = []
        for layer in args.layers:
            value = medians[layer][case]
            cells.append(f"{1e3 * value:9.2f} ms ({value / medians[first][case]:4.2f}x)")
        print(f"{case:26s}" + "".join(f"{cell:>22s}" for cell in cells))
    print("layers used:", {layer: runs[0]["layer"] for layer, runs in results.items()})


if __name__ == "__main__":
    main()
