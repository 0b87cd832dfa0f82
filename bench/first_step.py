"""The first MicroAdam step's cost with an empty Numba cache, and with the cache it leaves.

Each run is a fresh interpreter with NUMBA_CACHE_DIR set to a new empty folder (cold), then a
second fresh interpreter on the same folder (warm). Reported per run: wall and CPU seconds of
`import optimizers` and of the first step (one 512×512 float32 parameter, default options), and
the second step's wall time. CPU seconds are the honest figure on a shared machine: compilation
is single-threaded, so wall time there mostly measures the other users. With --profile the cold
run also lists the compilations that took longest (inclusive of what they compiled inside).
The issue-23 target: the cold first step within about 8 s on an idle 2-core machine.

Run: python -m bench.first_step [--runs 1] [--profile]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from bench.fresh_interpreter import run_child


def child(profile: bool) -> dict:
    """Import, build MicroAdam, two steps; the timings (and the longest compilations)."""
    recorder = None
    if profile:
        from numba.core import event

        recorder = event.RecordingListener()
        event.register("numba:compile", recorder)
    wall, cpu = time.perf_counter(), time.process_time()
    import torch

    import optimizers

    result = {"import_wall": time.perf_counter() - wall, "import_cpu": time.process_time() - cpu}
    weight = torch.nn.Parameter(torch.randn(512, 512))
    weight.grad = torch.randn(512, 512)
    optimizer = optimizers.MicroAdam([weight], lr=1e-3)
    wall, cpu = time.perf_counter(), time.process_time()
    optimizer.step()
    result.update(step_wall=time.perf_counter() - wall, step_cpu=time.process_time() - cpu)
    wall = time.perf_counter()
    optimizer.step()
    result["second_step_wall"] = time.perf_counter() - wall
    if recorder is not None:
        result["longest_compilations"] = longest(recorder.buffer)
    return result


def longest(buffer, count: int = 12) -> list[tuple[float, str]]:
    """(seconds, function) of the longest compilations, inclusive, from numba:compile events."""
    started, done = {}, []
    for stamp, event in buffer:
        key = (id(event.data["dispatcher"]), str(event.data["args"]))
        if event.is_start:
            started[key] = stamp
        else:
            name = event.data["dispatcher"].py_func.__qualname__
            done.append((round(stamp - started.pop(key), 2), name))
    return sorted(done, reverse=True)[:count]


def run_fresh(cache_dir: str, profile: bool) -> dict:
    return run_child(
        "bench.first_step", ["--profile"] if profile else [], {"NUMBA_CACHE_DIR": cache_dir}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.profile)))
        return
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache_dir:
            for label, profile in (("cold", args.profile), ("warm", False)):
                r = run_fresh(cache_dir, profile)
                print(
                    f"{label}: import {r['import_wall']:.1f} s wall / {r['import_cpu']:.1f} s CPU,"
                    f" first step {r['step_wall']:.1f} s wall / {r['step_cpu']:.1f} s CPU,"
                    f" second step {1e3 * r['second_step_wall']:.1f} ms"
                )
                for seconds, name in r.get("longest_compilations", []):
                    print(f"    {seconds:7.2f} s  {name}")


if __name__ == "__main__":
    main()
