"""compress: lossy codecs with error feedback for flat vectors (numpy on CPU, CuPy on GPU).

Block top-k (`topk_blocks`), block quantization (`quantize`/`dequantize`), error feedback
(`ErrorFeedback`), the sliding window of sparse vectors with its Adam statistics
(`SparseWindow`, `window_adam`, `window_adam_apply`) and MicroAdam's fused compression step
(`ef_topk_requantize`, or `window_topk` without error feedback). See docs/compress.md and
ALGORITHMS.md §2.
"""

from . import _numba_setup  # noqa: F401  (first: the threading layer, before any kernel)
from .feedback import ErrorFeedback
from .fused import ef_topk_requantize, window_topk
from .quantization import Quantized, dequantize, quantize
from .topk import (
    BlockCounts,
    SparseBlocks,
    block_counts,
    gather,
    scatter_add,
    topk_blocks,
    zero_selected,
)
from .window import SparseWindow, window_adam, window_adam_apply

__all__ = [
    "BlockCounts",
    "ErrorFeedback",
    "Quantized",
    "SparseBlocks",
    "SparseWindow",
    "block_counts",
    "dequantize",
    "ef_topk_requantize",
    "gather",
    "quantize",
    "scatter_add",
    "topk_blocks",
    "window_adam",
    "window_adam_apply",
    "window_topk",
    "zero_selected",
]
