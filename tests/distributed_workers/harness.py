"""Launch a worker script as N local processes (gloo on loopback) and collect their results.

Every launch is bounded: the workers run in their own process group (session), and when the
time limit passes the whole group is killed before the test fails. Each worker writes
`rank{r}.pt` into the output folder; the caller loads them with `weights_only=True`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKERS = Path(__file__).resolve().parent
ROOT = WORKERS.parents[1]


def free_loopback_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker_env(timeout: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GLOO_SOCKET_IFNAME="lo",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        WORKER_STACK_DUMP_AFTER=str(max(1.0, timeout - 5.0)),
    )
    return env


def _kill(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()


def run_workers(
    script: str, out_dir: Path, *args: str, world: int = 2, timeout: float = 60.0
) -> list[dict]:
    """Run `tests/distributed_workers/<script>` on `world` ranks; return each rank's results.

    Fails (AssertionError with every rank's output tail) when a rank exits non-zero or the
    launch exceeds `timeout` seconds (workers dump their stacks 5 s before the kill); a port
    taken between probing and binding is retried once.
    """
    for attempt in range(2):
        init = f"tcp://127.0.0.1:{free_loopback_port()}"
        logs = [out_dir / f"rank{rank}.log" for rank in range(world)]
        procs = []
        for rank, log in enumerate(logs):
            command = [sys.executable, str(WORKERS / script), str(rank), str(world), init]
            with open(log, "w") as sink:
                procs.append(
                    subprocess.Popen(
                        [*command, str(out_dir), *args],
                        cwd=ROOT,
                        env=_worker_env(timeout),
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        try:
            for proc in procs:
                proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(procs)
            raise AssertionError(f"{script} exceeded {timeout} s:\n{_tails(logs)}") from None
        finally:
            _kill(procs)
        failed = [proc.returncode for proc in procs if proc.returncode != 0]
        if not failed:
            break
        if attempt == 0 and "Address already in use" in _tails(logs):
            continue
        raise AssertionError(f"{script} failed (exit codes {failed}):\n{_tails(logs)}")
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(world)]


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
