"""Numba's threading layer for the library's parallel kernels: TBB, chosen once at import.

Numba picks its threading layer when the first parallel kernel runs, and by default takes
GNU OpenMP where TBB cannot be loaded. GNU OpenMP is not fork-safe: a child forked after the
parent ran a parallel kernel (a DataLoader worker, multiprocessing's default start method on
Linux) aborts at its first kernel ("fork() called from a process already using GNU OpenMP").
Numba's workqueue layer survives fork but aborts when two Python threads run parallel kernels
at once. TBB is both fork-safe and thread-safe, so the library asks for it.

The `tbb` wheel (a dependency on x86-64 Linux and Windows) installs libtbb into the
environment's lib folder, where the dynamic loader does not look in a virtual environment, so
Numba would not find it: `configure` loads it by its path from the wheel's file list first (also
when the user chose the layer), and Numba's own lookup then finds the loaded library by its name.

An explicit choice wins: with NUMBA_THREADING_LAYER or NUMBA_THREADING_LAYER_PRIORITY in the
environment, a `numba.config.THREADING_LAYER` set before the import, or a layer already running,
nothing is changed. Where TBB cannot be loaded the choice stays Numba's (docs/threads.md).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import sys

import numba
from numba.np.ufunc import parallel

USER_VARIABLES = ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")
TBB_MIN_INTERFACE = 12060  # oneTBB 2021.6: the oldest that Numba's TBB layer accepts
TBB_LIBRARY = {"win32": "tbb12.dll", "darwin": "libtbb.12.dylib"}.get(sys.platform, "libtbb.so.12")


def user_chose_layer() -> bool:
    """Whether the threading layer was chosen outside the library (environment, numba.config,
    or a layer already started)."""
    chosen = any(name in os.environ for name in USER_VARIABLES)
    return chosen or numba.config.THREADING_LAYER != "default" or parallel._is_initialized


def _open_library(name_or_path: str) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(name_or_path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None


def _wheel_library_path() -> str | None:
    """libtbb's path as installed by the `tbb` distribution, if it is installed."""
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == TBB_LIBRARY:
            return str(file.locate())
    return None


def load_tbb() -> bool:
    """Load a libtbb that Numba's TBB layer accepts (the loader's own, else the wheel's); True
    when Numba's TBB pool module then imports."""
    library = _open_library(TBB_LIBRARY)
    if library is None:
        path = _wheel_library_path()
        library = None if path is None else _open_library(path)
    if library is None:
        return False
    version = library.TBB_runtime_interface_version
    version.restype = ctypes.c_int
    if version() < TBB_MIN_INTERFACE:
        return False
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def configure() -> str:
    """Make the wheel's libtbb loadable, and ask Numba for the TBB layer unless the user chose a
    layer; return the layer requested ("tbb", or Numba's setting left as it was)."""
    if parallel._is_initialized:
        return str(numba.config.THREADING_LAYER)
    tbb_loaded = load_tbb()  # also for a user who asked for "tbb", "safe" or "threadsafe"
    if tbb_loaded and not user_chose_layer():
        numba.config.THREADING_LAYER = "tbb"
    return str(numba.config.THREADING_LAYER)


REQUESTED_LAYER = configure()
