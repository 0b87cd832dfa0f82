"""Compile the Numba kernels of the optimizers' CPU steps into Numba's on-disk cache, ahead of use.

With an empty cache, the first step of a process compiles the kernels it needs (about 75
functions for MicroAdam; docs/installation.md has what that costs). Run this once where the cache
lives (a container image's build, a shared ``NUMBA_CACHE_DIR``) and later processes load the
kernels instead. Numba keys each cached kernel by its source file, its argument types and the CPU
model and features, so warm the cache on the kind of CPU that will use it.

How: each optimizer takes three steps (the first step's path, then the steady one) on a small
throwaway model per parameter dtype (`SHAPES`: a matrix past LDAdam's exact-SVD size, a small
one and a vector), with random gradients. The steps are the real ones, so whatever a step
compiles is compiled here, and nothing else. Options pass
through to the optimizer, for the settings that change which kernels a step uses (for example
MicroAdam's ``values_dtype`` and ``alpha``, LDAdam's ``error_feedback``): run once per setting
you use. Thread counts are not touched. The CUDA kernels of GPU steps are not covered.

Run: python -m optimizers.precompile [microadam ldadam adapprox] [--dtypes float32 bfloat16]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from ._ldadam_step import EXACT_SVD_MAX_SIDE
from .adapprox import Adapprox
from .ldadam import LDAdam
from .microadam import MicroAdam

OPTIMIZERS = {"microadam": MicroAdam, "ldadam": LDAdam, "adapprox": Adapprox}
DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
SHAPES = ((EXACT_SVD_MAX_SIDE + 8, 768), (64, 96), (96,))
"""The throwaway model: one matrix just past LDAdam's exact-SVD size (its first step takes
randla.rsvd) and across several MicroAdam blocks, one small enough for the exact SVD, a vector."""
STEPS = 3


def precompile(name: str, dtype: str = "float32", **options: Any) -> float:
    """Take STEPS steps of optimizer `name` ("microadam", "ldadam" or "adapprox") on a throwaway
    CPU model of parameter dtype `dtype` ("float32", "bfloat16", "float16" or "float64") so that
    every kernel those steps need is compiled into Numba's cache; `options` go to the optimizer.
    Returns the seconds taken.

    Cost: STEPS optimizer steps on about 0.4M parameters, plus compiling whatever the cache lacks
    (nothing when it is warm: the kernels load from disk).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    generator = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(shape, generator=generator).to(DTYPES[dtype]))
        for shape in SHAPES
    ]
    optimizer = OPTIMIZERS[name](params, **options)
    start = time.perf_counter()
    for _ in range(STEPS):
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator).to(param.dtype)
        optimizer.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "optimizers",
        nargs="*",
        metavar="OPTIMIZER",
        help=f"any of {', '.join(OPTIMIZERS)} (default: all three)",
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=list(DTYPES),
        default=["float32", "bfloat16"],
        help="parameter dtypes to compile for (default: float32 bfloat16)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.optimizers if name not in OPTIMIZERS]
    if unknown:
        parser.error(
            f"unknown optimizer(s) {', '.join(unknown)}; choose from {', '.join(OPTIMIZERS)}"
        )
    for name in args.optimizers or list(OPTIMIZERS):
        for dtype in args.dtypes:
            seconds = precompile(name, dtype)
            print(f"{name} {dtype}: {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
