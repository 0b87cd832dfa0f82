"""Child process for test_fork_and_threads: use the library, fork, use it in the child and after.

argv[1:]: "os.fork" and/or "multiprocessing" (a 'fork' context), tried in turn. The parent
steps each optimizer and calls compress and randla (so Numba's pool and torch's are running),
forks, and the child does the same and exits 0. The child first sets torch to one thread, as
PyTorch's DataLoader workers do: torch's own GNU OpenMP pool hangs in a forked child otherwise
(torch's limitation, not the library's; docs/threads.md). Prints the layer, then per way
"<way> child exit <code>" and "<way> parent ok".
"""

import multiprocessing
import os
import sys

import numba
import numpy as np
import torch

import compress
import optimizers
import randla


def use_everything() -> None:
    """Two steps of each optimizer, then compress and randla calls (parallel Numba kernels)."""
    generator = torch.Generator().manual_seed(0)
    for name, options in (("MicroAdam", {}), ("LDAdam", {"rank": 4}), ("Adapprox", {"k_max": 4})):
        weight = torch.nn.Parameter(torch.randn(96, 80, generator=generator))
        optimizer = getattr(optimizers, name)([weight], lr=1e-3, **options)
        for _ in range(2):
            weight.grad = torch.randn(96, 80, generator=generator)
            optimizer.step()
        assert bool(torch.isfinite(weight).all()), name
    x = np.random.default_rng(0).standard_normal(1 << 18, dtype=np.float32)
    decoded = compress.dequantize(compress.quantize(x, bits=4))
    assert np.abs(decoded - x).max() < 0.5
    assert compress.topk_blocks(x, density=0.01).values.size > 0
    a = np.random.default_rng(1).standard_normal((300, 200)).astype(np.float32)
    u, s, vt = randla.rsvd(a, 8, rng=0)
    assert u.shape == (300, 8) and bool(np.all(np.diff(s) <= 0))


def child() -> None:
    torch.set_num_threads(1)
    use_everything()


def fork_and_wait(way: str) -> int | None:
    """Run `child` in a forked process; return its exit code."""
    if way == "os.fork":
        pid = os.fork()
        if pid == 0:
            try:
                child()
            except BaseException as error:  # report, then leave without the parent's teardown
                print("child failed:", repr(error), flush=True)
                os._exit(1)
            os._exit(0)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join()
    return process.exitcode


def main() -> None:
    use_everything()
    print("layer", numba.threading_layer(), flush=True)
    for way in sys.argv[1:]:
        print(way, "child exit", fork_and_wait(way), flush=True)
        use_everything()
        print(way, "parent ok", flush=True)


if __name__ == "__main__":
    main()
