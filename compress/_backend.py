"""The one place that decides CPU (numpy + Numba) or GPU (CuPy + numba.cuda) from the array type.

Both kernel sets expose the same names and signatures (see `_cpu_kernels` below and
`compress._gpu`), so the public functions are written once. CuPy and numba.cuda are imported only
when a CuPy array is seen.
"""

from types import SimpleNamespace

import numba
import numpy as np


def is_gpu_array(x) -> bool:
    """True for CuPy arrays (detected without importing cupy)."""
    return type(x).__module__.split(".")[0] == "cupy"


def namespace(x):
    """numpy or cupy, following the array."""
    if is_gpu_array(x):
        import cupy

        return cupy
    return np


def _cpu_kernels() -> SimpleNamespace:
    from . import _cpu_densify, _cpu_elementwise, _cpu_fused, _cpu_quant, _cpu_topk, _cpu_window

    return SimpleNamespace(
        quantize=_cpu_quant.quantize,
        dequantize=_cpu_quant.dequantize,
        topk_blocks=_cpu_topk.topk_blocks_kernel,
        scatter_add=_cpu_topk.scatter_add_kernel,
        gather=_cpu_topk.gather_kernel,
        zero_selected=_cpu_topk.zero_selected_kernel,
        window_adam=_cpu_window.window_adam_kernel,
        window_adam_apply=_cpu_window.window_adam_apply_kernel,
        ef_topk_requantize=_cpu_fused.ef_topk_requantize,
        densify_from_error=_cpu_densify.densify_from_error_kernel,
        add_bf16=_cpu_elementwise.add_bf16_kernel,
        round_to_bf16=_cpu_elementwise.round_to_bf16_kernel,
        all_finite=_cpu_elementwise.all_finite_kernel,
        n_workers=lambda n_blocks: min(numba.get_num_threads(), n_blocks),
    )


_KERNELS: dict[str, SimpleNamespace] = {}


def kernels(x) -> SimpleNamespace:
    """The kernel set for x's device: Numba CPU kernels or numba.cuda launchers."""
    device = "gpu" if is_gpu_array(x) else "cpu"
    if device not in _KERNELS:
        if device == "gpu":
            from . import _gpu

            _KERNELS[device] = _gpu.kernel_set()
        else:
            _KERNELS[device] = _cpu_kernels()
    return _KERNELS[device]
