"""Guard: these tests only mean something under the CUDA simulator."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        raise pytest.UsageError("tests/cudasim must run with NUMBA_ENABLE_CUDASIM=1")
