"""Fork after use, the threading layer chosen at import, and concurrent steps (docs/threads.md).

- A process that stepped every optimizer and called compress and randla forks (os.fork and a
  multiprocessing 'fork' context); the child does the same and exits 0, and so does the parent
  after it (tests/workers/fork_after_use.py, in its own interpreter).
- Importing the library asks Numba for TBB, unless the user chose a layer (NUMBA_THREADING_LAYER).
- Three Python threads stepping three optimizers at once change no thread count that the process
  shows (torch's, each BLAS pool's, Numba's) and give the bits of each optimizer stepped alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numba
import pytest
import torch
from threadpoolctl import threadpool_info

import optimizers
from compress import _numba_setup

ROOT = Path(__file__).resolve().parents[1]
FORK_WORKER = ROOT / "tests" / "workers" / "fork_after_use.py"
needs_tbb = pytest.mark.skipif(
    not _numba_setup.load_tbb(), reason="no TBB that Numba accepts on this platform"
)


def run_python(args: list[str], env_update: dict[str, str], timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _numba_setup.USER_VARIABLES}
    env.update(env_update)
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_tbb
def test_a_child_forked_after_use_runs_the_library():
    out = run_python([str(FORK_WORKER), "os.fork", "multiprocessing"], {}, timeout=400)
    assert "layer tbb" in out
    for way in ("os.fork", "multiprocessing"):
        assert f"{way} child exit 0" in out, out
        assert f"{way} parent ok" in out, out


LAYER_PROBE = (
    "import numba, numpy as np, compress; "
    "compress.quantize(np.ones(1 << 16, np.float32)); print(numba.threading_layer())"
)


@needs_tbb
@pytest.mark.parametrize(
    ("env", "expected"), [({}, "tbb"), ({"NUMBA_THREADING_LAYER": "workqueue"}, "workqueue")]
)
def test_the_library_asks_for_tbb_unless_the_user_chose(env, expected):
    assert run_python(["-c", LAYER_PROBE], env, timeout=200).split()[-1] == expected


def thread_counts() -> tuple:
    """Every thread count the process shows: torch's intra-op pool, each BLAS/OpenMP pool that
    threadpoolctl finds, Numba's (for the calling thread)."""
    pools = tuple(sorted((p["filepath"], p["num_threads"]) for p in threadpool_info()))
    return torch.get_num_threads(), numba.get_num_threads(), pools


FACTORIES = {
    "MicroAdam": lambda ps: optimizers.MicroAdam(ps, lr=1e-2, density=0.1, block_size=256),
    "LDAdam": lambda ps: optimizers.LDAdam(ps, lr=1e-2, rank=8),
    "Adapprox": lambda ps: optimizers.Adapprox(ps, lr=1e-2, k_max=8),
}
STEPS = 6


def train(name: str, start: threading.Barrier | None = None) -> list[torch.Tensor]:
    """STEPS steps of one optimizer on fixed gradients; the final parameters."""
    generator = torch.Generator().manual_seed(len(name))
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]
    grads = [[torch.randn(p.shape, generator=generator) for p in params] for _ in range(STEPS)]
    optimizer = FACTORIES[name](params)
    if start is not None:
        start.wait()
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g
        optimizer.step()
    return [p.detach().clone() for p in params]


SHAPES = [(192, 160), (160, 192), (160,)]


def test_concurrent_steps_change_no_thread_count_and_match_steps_alone():
    alone = {name: train(name) for name in FACTORIES}
    before = thread_counts()
    results: dict[str, list[torch.Tensor]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(FACTORIES))

    def worker(name: str) -> None:
        try:
            results[name] = train(name, start)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    workers = [threading.Thread(target=worker, args=(name,)) for name in FACTORIES]
    for thread in workers:
        thread.start()
    seen = set()
    while any(thread.is_alive() for thread in workers):
        seen.add(thread_counts())
    for thread in workers:
        thread.join()
    assert errors == []
    assert seen <= {before}, f"thread counts changed during the steps: {seen - {before}}"
    assert thread_counts() == before
    for name, params in alone.items():
        for a, b in zip(params, results[name], strict=True):
            assert torch.equal(a, b), name
