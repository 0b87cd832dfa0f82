"""Every Numba CPU function of the library is compiled with the options of `compress._jit.jit`:
cached on disk, and with no C callback wrapper (each one is an extra compilation on a first step,
and nothing uses them)."""

import importlib
import pkgutil

import pytest
from numba.core.registry import CPUDispatcher

import compress
import optimizers
import randla


def library_dispatchers() -> list[tuple[str, CPUDispatcher]]:
    found = []
    for package in (compress, optimizers, randla):
        for module_info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if module_info.name.endswith(("._cuda_kernels", "._gpu", ".__main__")):
                continue  # numba.cuda kernels (not njit); __main__ runs the comparison
            module = importlib.import_module(module_info.name)
            for name, value in vars(module).items():
                if isinstance(value, CPUDispatcher) and value.py_func.__module__ == module.__name__:
                    found.append((f"{module.__name__}.{name}", value))
    return found


DISPATCHERS = library_dispatchers()


def test_the_library_has_numba_functions_to_check():
    assert len(DISPATCHERS) >= 40, [name for name, _ in DISPATCHERS]


@pytest.mark.parametrize(("name", "dispatcher"), DISPATCHERS, ids=[n for n, _ in DISPATCHERS])
def test_numba_functions_are_cached_and_have_no_cfunc_wrapper(name, dispatcher):
    assert dispatcher._cache.__class__.__name__ == "FunctionCache", f"{name} is not cached"
    assert dispatcher.targetoptions.get("no_cfunc_wrapper") is True, name
