"""Child process for test_fuzz_compress: hand compress block-relative indices outside the block.

Prints "refused" when compress raises ValueError, "accepted" when it silently reads or writes
outside the arrays (heap corruption may follow; that is why this runs in its own process).
"""

import sys

import numpy as np

import compress

operation = sys.argv[1]
bad = np.array([30000, -30000], np.int16)
sparse = compress.SparseBlocks(np.ones(2, np.float32), bad, 4, 4, 2)
window = compress.SparseWindow.empty(4, m=2, density=0.5, block_size=4, values_dtype="float32")
window.values[:] = 1.0
window.indices[:] = 30000
calls = {
    "scatter_add": lambda: compress.scatter_add(sparse, np.zeros(4, np.float32)),
    "gather": lambda: compress.gather(np.zeros(4, np.float32), sparse),
    "window_adam_apply": lambda: compress.window_adam_apply(
        window, 2, beta1=0.9, beta2=0.99, eps=1e-8, lr=1.0, param=np.zeros(4, np.float32)
    ),
}
try:
    calls[operation]()
except ValueError as error:
    print(f"{operation}: {error}\nrefused")
else:
    print(f"{operation}: accepted")
