"""Adapprox's step with its small factorizations on torch's LAPACK (today) against scipy's
LAPACK (before), with and without OpenBLAS held at one thread around the step (what every step
used to do, a process-wide setting): the three alternate step by step in one process, rotating
the order; medians are printed. docs/threads.md quotes a run.

Run: python -m bench.factorization_pools [--k-max 16] [--steps 9]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

import optimizers
from bench.param_sets import transformer_params
from randla import _backend


def scipy_qr_q(y):
    return scipy.linalg.qr(y, mode="economic", overwrite_a=True, check_finite=False)[0]


def scipy_lu_pl(y):
    return scipy.linalg.lu(y, permute_l=True, overwrite_a=True, check_finite=False)[0]


def scipy_cholesky_upper(gram):
    try:
        return scipy.linalg.cholesky(gram, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None


def scipy_solve_right_upper(y, r):
    return scipy.linalg.solve_triangular(r, y.T, trans="T", lower=False, check_finite=False).T


def scipy_svd_thin(b):
    return scipy.linalg.svd(b, full_matrices=False, overwrite_a=True, check_finite=False)


SCIPY = {
    "qr_q": scipy_qr_q,
    "lu_pl": scipy_lu_pl,
    "cholesky_upper": scipy_cholesky_upper,
    "solve_right_upper": scipy_solve_right_upper,
    "svd_thin": scipy_svd_thin,
}
TORCH = {name: getattr(_backend, name) for name in SCIPY}
VARIANTS = ("scipy", "scipy, OpenBLAS at 1 thread", "torch")


def use(variant: str):
    for name, function in (TORCH if variant == "torch" else SCIPY).items():
        setattr(_backend, name, function)
    if variant == "scipy, OpenBLAS at 1 thread":
        return threadpool_limits(1, user_api="blas")
    return contextlib.nullcontext()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k-max", type=int, default=16)
    parser.add_argument("--steps", type=int, default=9)
    args = parser.parse_args()
    optimizer = optimizers.Adapprox(transformer_params(blocks=1), lr=1e-3, k_max=args.k_max)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for round_ in range(-1, args.steps):
        shift = round_ % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            with use(variant):
                start = time.perf_counter()
                optimizer.step()
                if round_ >= 0:  # the first round compiles and warms up
                    times[variant].append(time.perf_counter() - start)
    use("torch")
    medians = {variant: statistics.median(values) for variant, values in times.items()}
    for variant, median in medians.items():
        print(f"k_max {args.k_max}  {variant:30s} {1000 * median:8.1f} ms")
    print(f"torch / (scipy, OpenBLAS at 1 thread): {medians['torch'] / medians[VARIANTS[1]]:.2f}")


if __name__ == "__main__":
    main()
