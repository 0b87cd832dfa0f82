"""Shared test configuration.

tests/cudasim/ holds the numba.cuda kernel tests. They must run in a process where
NUMBA_ENABLE_CUDASIM=1 was set before numba was imported, so they are collected only in that
case; tests/test_cuda_simulator.py launches that process from the normal suite.
"""

import os

collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]
