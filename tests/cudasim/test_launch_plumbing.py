"""How compress's GPU launchers launch: through `_gpu.launch`, on the current stream, with device
views that make numba wait for no stream.

The simulator has no external streams and no CuPy, so the GPU branch of `launch` is driven here
with a stand-in device array (an object whose type lives in a "cupy" module and which carries a
`__cuda_array_interface__`), a simulator stream, and a recording `from_cuda_array_interface`.
"""

import inspect
import re

import numpy as np
import pytest
from numba import cuda

from compress import _cuda_kernels, _gpu


class StandInDeviceArray:
    """Looks like a CuPy array to `is_gpu_array` and to `device_view`; wraps a numpy array."""

    def __init__(self, array):
        self.array = array

    @property
    def __cuda_array_interface__(self):
        return {
            "data": (self.array.ctypes.data, False),
            "shape": self.array.shape,
            "strides": None,
            "typestr": self.array.dtype.str,
            "stream": 7,  # a stream numba would synchronize if asked to
            "version": 3,
        }


@pytest.fixture
def views(monkeypatch):
    """Record every view `device_view` builds (its sync flag and owner); views are the wrapped
    numpy arrays, found by their pointer."""
    built = []
    arrays = {}

    def from_cuda_array_interface(interface, owner=None, sync=True):
        built.append((sync, owner))
        return arrays[interface["data"][0]]

    def stand_in(array):
        arrays[array.ctypes.data] = array
        return StandInDeviceArray(array)

    monkeypatch.setattr(_gpu, "_device_views", type(_gpu._device_views)())
    monkeypatch.setattr(
        _gpu.cuda, "from_cuda_array_interface", from_cuda_array_interface, raising=False
    )
    return built, stand_in


StandInDeviceArray.__module__ = "cupy._stand_in"


def test_every_launcher_goes_through_launch():
    source = inspect.getsource(_gpu)
    direct = re.findall(r"K\.\w+\[", source)
    assert direct == [], direct
    launched = set(re.findall(r"K\.(\w+_kernel)", source))
    kernels = {
        name
        for name, value in vars(_cuda_kernels).items()
        if name.endswith("_kernel") and hasattr(value, "py_func")
    }
    assert kernels <= launched, kernels - launched


def test_launch_on_a_gpu_uses_the_current_stream_and_sync_free_views(monkeypatch, views):
    built, stand_in = views
    stream = cuda.stream()
    monkeypatch.setattr(_gpu, "current_stream", lambda: stream)
    bits = np.array([0x3F80, 0x4000, 0xBF80], np.uint16)  # bf16 1, 2, -1
    out = np.zeros(3, np.float32)
    configs = []
    kernel = _cuda_kernels.add_bf16_kernel

    class Recorder:
        def __getitem__(self, config):
            configs.append(config)
            return kernel[config]

    _gpu.launch(Recorder(), 1, 32, stand_in(bits), stand_in(out))
    assert configs == [(1, 32, stream)]
    assert built == [(False, None), (False, None)]  # no sync, and the view owns no memory
    np.testing.assert_array_equal(out, [1.0, 2.0, -1.0])
    # the same arrays again: the cached views, nothing built
    _gpu.launch(Recorder(), 1, 32, stand_in(bits), stand_in(out))
    assert len(built) == 2
    np.testing.assert_array_equal(out, [2.0, 4.0, -2.0])


def test_device_views_differ_when_the_description_does(views):
    built, stand_in = views
    base = np.zeros(8, np.float32)
    _gpu.device_view(stand_in(base))
    _gpu.device_view(stand_in(base[:4]))  # same pointer, another shape
    _gpu.device_view(stand_in(base.view(np.int32)))  # same memory, another dtype
    assert len(built) == 3


def test_launch_under_the_simulator_passes_host_arrays_as_they_are():
    bits = np.array([0x3F80], np.uint16)
    out = np.ones(1, np.float32)
    _gpu.launch(_cuda_kernels.add_bf16_kernel, 1, 32, bits, out)
    assert out[0] == 2.0


def test_device_view_leaves_scalars_alone():
    assert _gpu.device_view(3) == 3
    assert _gpu.device_view(np.float32(0.5)) == np.float32(0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_window_weights_table_keeps_the_weights_float_type(dtype):
    rows = np.array([2, 1, 0])
    w1 = dtype(0.9) ** np.arange(3, dtype=dtype)
    table = _gpu._weights_table(np.zeros(1), rows, w1, w1 * w1)
    assert table.dtype == dtype and table.shape == (3, 3)
    np.testing.assert_array_equal(table[0], rows)
    np.testing.assert_array_equal(table[2], w1 * w1)
