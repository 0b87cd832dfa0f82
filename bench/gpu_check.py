"""The device check: everything the GPU path needs measured, in one run of a few minutes.

For a machine with one NVIDIA GPU where torch, CuPy and numba-cuda are installed (nothing is
downloaded). From the repository root:

    PYTHONPATH=. python bench/gpu_check.py --out gpu-check

writes gpu-check/gpu_check.json (everything) and gpu-check/gpu_check.txt (a short summary):

1. `pytest -m gpu` on the real-device tests (tests/test_gpu_device.py: CUDA step against CPU
   step for MicroAdam, LDAdam and Adapprox, sync debug mode, non-default stream, scratch reuse,
   compress and randla on CuPy arrays; the CuPy cases of tests/test_randla_core.py);
2. per optimizer, on a small model: two steps under torch.cuda.set_sync_debug_mode("error") with
   only the step's one intended transfer (`optimizers._base._to_host`) allowed, whether the GPU
   is still busy when `step()` returns (the host ran ahead: no hidden wait, CuPy's included),
   and the largest difference between steps on the default stream and on a side stream;
3. step timings against torch.optim.AdamW(fused=True) on the 85M GPT-2-small set (float32) and a
   1.0B set (bfloat16, 20 blocks of width 2048; bench/param_sets.py's shapes): GPU time per step
   (CUDA events), host time per step (`step()` returning, the GPU idle before it), kernel
   launches per step (torch.profiler's CUDA activity; numba launches counted beside it),
   `state_nbytes()` and peak memory.

A deadline (--budget, default 360 s) skips the timings not yet started and says so; the one
running when it passes ends (at most about a minute on the 1B set), so the run ends in under 8
minutes. Without a CUDA device, or without CuPy or numba-cuda, it prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

NO_DEVICE = 2
PYTEST_TIMEOUT_S = 200
GPU_TESTS = ["tests/test_gpu_device.py", "tests/test_randla_core.py"]
SETS = {
    "gpt2-small-85M-fp32": dict(blocks=12, width=768, dtype="float32", step_share=1.0),
    "1B-bf16": dict(blocks=20, width=2048, dtype="bfloat16", step_share=0.5),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure smallstate's GPU path on one NVIDIA GPU (see the module docstring).",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the JSON and summary")
    parser.add_argument(
        "--budget", type=float, default=360.0, help="seconds before the rest is skipped (360)"
    )
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    parser.add_argument(
        "--sets",
        default=",".join(SETS),
        help=f"comma-separated parameter sets to time, of {', '.join(SETS)}",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (10)")
    return parser.parse_args(argv)


def missing_requirement() -> str | None:
    """Why this machine cannot run the check, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    for module, package in (("cupy", "cupy-cuda12x or cupy-cuda13x"), ("numba.cuda", "numba-cuda")):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return f"{module} is not installed (pip install {package})"
    return None


# ----------------------------------------------------------------------------- optimizers
def optimizer_factories() -> dict:
    import torch

    from optimizers import Adapprox, LDAdam, MicroAdam

    return {
        "MicroAdam": lambda p: MicroAdam(p, lr=1e-4),
        "LDAdam": lambda p: LDAdam(p, lr=1e-4),
        "Adapprox": lambda p: Adapprox(p, lr=1e-4),
        "AdamW(fused)": lambda p: torch.optim.AdamW(p, lr=1e-4, fused=True),
    }


def cuda_params(blocks: int, width: int, dtype, seed: int = 0):
    """bench/param_sets.py's transformer shapes on the GPU, gradients attached."""
    import torch

    from bench.param_sets import transformer_shapes

    generator = torch.Generator(device="cuda").manual_seed(seed)
    params = []
    for shape in transformer_shapes(blocks, width):
        p = torch.nn.Parameter(
            (0.02 * torch.randn(shape, device="cuda", generator=generator)).to(dtype)
        )
        p.grad = (1e-3 * torch.randn(shape, device="cuda", generator=generator)).to(dtype)
        params.append(p)
    return params


def release_memory() -> None:
    import gc

    import cupy
    import torch

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    cupy.get_default_memory_pool().free_all_blocks()


@contextlib.contextmanager
def sync_debug_errors():
    """torch.cuda.set_sync_debug_mode("error"), except inside the step's intended transfer."""
    import torch

    from optimizers import _base

    original = _base._to_host

    def allowed(flat):
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
        try:
            return original(flat)
        finally:
            torch.cuda.set_sync_debug_mode(previous)

    _base._to_host = allowed
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
        _base._to_host = original


@contextlib.contextmanager
def counting_numba_launches(counter: list[int]):
    """Count compress's numba.cuda launches (they go through `compress._gpu.launch`)."""
    from compress import _gpu

    original = _gpu.launch

    def counted(*args, **kwargs):
        counter[0] += 1
        return original(*args, **kwargs)

    _gpu.launch = counted
    try:
        yield
    finally:
        _gpu.launch = original


# ----------------------------------------------------------------------------- sections
def run_gpu_tests(out: Path) -> dict:
    junit = out / "gpu_tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    command += ["-o", "addopts=", "-rfEs", f"--junitxml={junit}", *GPU_TESTS]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        tail = (error.stdout or b"")[-3000:]
        return {"status": "timeout", "seconds": PYTEST_TIMEOUT_S, "tail": str(tail)}
    lines = done.stdout.strip().splitlines()
    return {
        "status": "passed" if done.returncode == 0 else f"exit code {done.returncode}",
        "seconds": round(time.perf_counter() - start, 1),
        "summary": lines[-1] if lines else "",
        "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))][:40],
        "tail": done.stdout[-4000:] + done.stderr[-2000:],
        "junit": str(junit),
    }


def check_syncs_and_streams() -> dict:
    """Per optimizer on a small model (2 blocks of width 768)."""
    import torch

    results = {}
    for name, make in optimizer_factories().items():
        if name == "AdamW(fused)":
            continue
        entry: dict = {}
        try:
            params = cuda_params(2, 768, torch.float32)
            opt = make(params)
            opt.step()
            opt.step()
            torch.cuda.synchronize()
            try:
                with sync_debug_errors():
                    opt.step()
                    opt.step()
                entry["sync_debug_error_mode"] = "no hidden synchronization"
            except RuntimeError as error:
                entry["sync_debug_error_mode"] = f"FAILED: {str(error).splitlines()[0]}"
                entry["sync_debug_where"] = traceback.format_exc(limit=-6)[-1500:]
            torch.cuda.synchronize()
            opt.step()
            entry["gpu_busy_when_step_returns"] = not torch.cuda.current_stream().query()
            torch.cuda.synchronize()
            entry["side_stream_max_abs_difference"] = stream_difference(make)
        except Exception as error:  # record and go on: one broken optimizer must not hide others
            entry["error"] = f"{type(error).__name__}: {error}"
            entry["traceback"] = traceback.format_exc()[-3000:]
        results[name] = entry
        release_memory()
    return results


def stream_difference(make) -> float:
    import torch

    finals = []
    for stream in (None, torch.cuda.Stream()):
        params = cuda_params(2, 768, torch.float32, seed=3)
        opt = make(params)
        torch.cuda.synchronize()  # made on the default stream: ready before a side stream reads
        context = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with context:
            for _ in range(3):
                opt.step()
        torch.cuda.synchronize()
        finals.append([p.detach().clone() for p in params])
    return max(float((a - b).abs().max()) for a, b in zip(*finals, strict=True))


def time_optimizer(name: str, make, params, steps: int) -> dict:
    import torch

    entry: dict = {"parameters": sum(p.numel() for p in params)}
    torch.cuda.reset_peak_memory_stats()
    opt = make(params)
    start = time.perf_counter()
    opt.step()  # state, and the numba kernels' compilation
    torch.cuda.synchronize()
    entry["first_step_s"] = round(time.perf_counter() - start, 3)
    opt.step()
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(steps):
        opt.step()
    end.record()
    end.synchronize()
    entry["step_ms"] = round(begin.elapsed_time(end) / steps, 3)
    host = []
    for _ in range(max(3, steps // 2)):
        torch.cuda.synchronize()
        start = time.perf_counter()
        opt.step()
        host.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    entry["host_ms_per_step_median"] = round(1e3 * statistics.median(host), 3)
    entry.update(count_launches(opt))
    if hasattr(opt, "state_nbytes"):
        entry["state_nbytes"] = opt.state_nbytes()
    else:
        entry["state_nbytes"] = sum(
            v.numel() * v.element_size()
            for state in opt.state.values()
            for v in state.values()
            if torch.is_tensor(v)
        )
    entry["state_bytes_per_param"] = round(entry["state_nbytes"] / entry["parameters"], 4)
    entry["peak_torch_memory_bytes"] = torch.cuda.max_memory_allocated()
    import cupy

    entry["cupy_pool_bytes"] = cupy.get_default_memory_pool().total_bytes()
    return entry


def count_launches(opt) -> dict:
    """Kernel launches of one step: torch.profiler's CUDA activity (all kernels on the device,
    numba's and CuPy's included) and compress's numba launches counted on the host."""
    import torch

    numba_launches = [0]
    result: dict = {}
    with counting_numba_launches(numba_launches):
        try:
            activities = [torch.profiler.ProfilerActivity.CUDA]
            with torch.profiler.profile(activities=activities) as profile:
                opt.step()
                torch.cuda.synchronize()
            events = list(profile.events())
            names = [e.name for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            copies = [n for n in names if n.lower().startswith(("memcpy", "memset"))]
            result["kernels_per_step"] = len(names) - len(copies)
            result["copies_per_step"] = len(copies)
            # the host side of the same launches (runtime and driver API), as a cross-check
            result["launch_calls_per_step"] = sum(
                e.name.startswith(("cudaLaunchKernel", "cuLaunchKernel")) for e in events
            )
        except Exception as error:  # CUPTI missing: keep the host-side count
            result["kernels_per_step"] = f"profiler unavailable: {type(error).__name__}: {error}"
            opt.step()
            torch.cuda.synchronize()
    result["numba_launches_per_step"] = numba_launches[0]
    return result


def time_sets(set_names: list[str], steps: int, deadline: float) -> dict:
    import torch

    results: dict = {}
    for set_name in set_names:
        shape = SETS[set_name]
        dtype = getattr(torch, shape["dtype"])
        results[set_name] = {}
        for name, make in optimizer_factories().items():
            if time.perf_counter() > deadline:
                results[set_name][name] = {"skipped": "time budget spent"}
                continue
            try:
                params = cuda_params(shape["blocks"], shape["width"], dtype)
                timed = max(3, round(steps * shape["step_share"]))
                results[set_name][name] = time_optimizer(name, make, params, timed)
            except Exception as error:
                results[set_name][name] = {
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            params = None
            release_memory()
    for per_set in results.values():
        reference = per_set.get("AdamW(fused)", {}).get("step_ms")
        for entry in per_set.values():
            if reference and isinstance(entry.get("step_ms"), float):
                entry["step_time_vs_fused_adamw"] = round(entry["step_ms"] / reference, 2)
    return results


def environment() -> dict:
    import cupy
    import numba
    import torch

    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_bytes": props.total_memory,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cupy": cupy.__version__,
        "numba": numba.__version__,
        "numba_cuda": _version("numba-cuda"),
        "python": platform.python_version(),
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def summary(report: dict) -> str:
    lines = [f"smallstate GPU check on {report['environment'].get('device', '?')}"]
    tests = report.get("gpu_tests", {})
    lines.append(f"pytest -m gpu: {tests.get('status', 'not run')} {tests.get('summary', '')}")
    lines += [f"  {failure}" for failure in tests.get("failures", [])]
    for name, entry in report.get("syncs_and_streams", {}).items():
        if "error" in entry:
            lines.append(f"{name}: ERROR {entry['error']}")
            continue
        lines.append(
            f"{name}: sync debug: {entry['sync_debug_error_mode']}; GPU busy when step "
            f"returns: {entry['gpu_busy_when_step_returns']}; side stream max |diff| "
            f"{entry['side_stream_max_abs_difference']:.3g}"
        )
    for set_name, per_set in report.get("timings", {}).items():
        lines.append(f"{set_name}:")
        for name, entry in per_set.items():
            if "step_ms" not in entry:
                lines.append(f"  {name}: {entry.get('skipped') or entry.get('error')}")
                continue
            lines.append(
                f"  {name}: {entry['step_ms']} ms/step (x{entry.get('step_time_vs_fused_adamw')}"
                f" AdamW fused), host {entry['host_ms_per_step_median']} ms, kernels "
                f"{entry['kernels_per_step']}, numba launches {entry['numba_launches_per_step']},"
                f" state {entry['state_bytes_per_param']} B/param"
            )
    lines.append(f"total {report['seconds']} s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [s for s in args.sets.split(",") if s and s not in SETS]
    if unknown:
        print(f"gpu_check: unknown --sets {unknown}; choose from {list(SETS)}", file=sys.stderr)
        return 1
    reason = missing_requirement()
    if reason is not None:
        print(f"gpu_check: {reason}; nothing to check on this machine")
        return NO_DEVICE
    start = time.perf_counter()
    deadline = start + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"environment": environment(), "budget_s": args.budget}
    if not args.skip_tests:
        report["gpu_tests"] = run_gpu_tests(args.out)
    report["syncs_and_streams"] = check_syncs_and_streams()
    sets = [s for s in args.sets.split(",") if s]
    report["timings"] = time_sets(sets, args.steps, deadline)
    report["seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    text = summary(report)
    (args.out / "gpu_check.txt").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
