"""The 4-bit quantize against a parallel copy, measured in turn in one process, several rounds.

Each round times the quantize of 64M float32 elements (4 bits, 64-element buckets, bf16 bounds:
4.5 bytes per element moved) as the best of 5 calls, then the copy of `bench.triad`
(`copy_bandwidth_now`, 8 bytes per element), and prints both bandwidths and their ratio, the
acceptance ratio of issue 23 (at least 0.5). Repeating the pair shows how far the copy's own
bandwidth moves between measurements, which a single benchmark run cannot.

Run: python -m bench.quantize_vs_copy [--threads N] [--rounds R]
(with NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES="" for the AVX2-only target)
"""

from __future__ import annotations

import argparse

import numba
import numpy as np

import compress
from bench.triad import best_seconds, copy_bandwidth_now


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
        parser.error(f"--threads must be in 1..{numba.config.NUMBA_NUM_THREADS}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    numba.set_num_threads(args.threads)
    x = np.random.default_rng(0).standard_normal(1 << 26, dtype=np.float32)
    q = compress.Quantized.empty(x.size, bits=4, bucket=64, bounds_dtype="bfloat16")

    def quantize() -> None:
        compress.quantize(x, bits=4, bucket=64, out=q, check_finite=False)

    quantize()
    target = numba.config.CPU_NAME or "host"
    for _ in range(args.rounds):
        seconds = best_seconds(quantize, 5)
        quantize_gbs = (x.nbytes + q.nbytes) / seconds / 1e9
        copy_gbs = copy_bandwidth_now()
        print(
            f"threads {args.threads}, Numba target {target}: quantize {1e3 * seconds:.1f} ms "
            f"({quantize_gbs:.1f} GB/s), copy {copy_gbs:.1f} GB/s, "
            f"fraction {quantize_gbs / copy_gbs:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
