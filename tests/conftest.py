"""Shared test configuration.

tests/cudasim/ holds the numba.cuda kernel tests. They must run in a process where
NUMBA_ENABLE_CUDASIM=1 was set before numba was imported, so they are collected only in that
case; tests/test_cuda_simulator.py launches that process from the normal suite.
"""

import os

import pytest

collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]


@pytest.fixture
def bfloat16_products(monkeypatch):
    """The list the bfloat16 products of randla's precision="mixed" append to (their
    `transpose_a` flag), in call order."""
    from randla import _backend

    calls = []
    real = _backend.low_precision_matmul

    def counting(*args, **kwargs):
        calls.append(kwargs["transpose_a"])
        return real(*args, **kwargs)

    monkeypatch.setattr(_backend, "low_precision_matmul", counting)
    return calls
