"""GPU launch configuration, in one place (threads per block, grid caps)."""

from numba import config

# Threads per block; a power of two (the block scans assume it). The simulator runs every
# thread as a Python thread, so it gets small blocks.
THREADS = 32 if config.ENABLE_CUDASIM else 256
# Per-data-block kernels: thread blocks resident at once, each owning a scratch row.
MAX_WORKERS = 4 if config.ENABLE_CUDASIM else 1024


def elementwise_grid(n: int) -> tuple[int, int]:
    """(blocks, threads) for one thread per item."""
    return max(1, -(-n // THREADS)), THREADS


def per_block_grid(n_blocks: int) -> tuple[int, int]:
    """(blocks, threads) for one thread block per data block, grid-strided."""
    return min(n_blocks, MAX_WORKERS), THREADS
