"""CPU (Numba) kernel of MicroAdam's densifying option (the reference's `alpha`, docs/microadam.md).

Per chunk of whole buckets, in a chunk-local float32 scratch q (in cache): q = decode(error);
param -= lr·α·q; error = quantize((1 − α)·q). One read and write of the error codes and of the
parameter; the parameter update runs in its float type (bf16/f16 bits: in float32, then rounded
to nearest even), as torch's `param.add_(q, alpha=-lr·α)`.
"""

import numba
import numpy as np

from ._cpu_quant import dequantize_range, quantize_range
from ._cpu_topk import load_value, store_value
from ._jit import jit
from ._scalar import NATIVE

CHUNK_BUCKETS = 256  # even, so every chunk starts on a whole byte of 4-bit codes


@jit(parallel=True)
def densify_from_error_kernel(
    codes, lo, hi, bits, bucket, bounds_bf16, step, keep, param, param_kind, n_workers
):
    """param[e] -= step·q[e], then the error holds quantize(keep·q), q the decoded error.

    step = lr·α in the parameter's float type (float32 for bf16/f16 bits), keep = 1 − α
    (float32). Parallel over chunks of CHUNK_BUCKETS buckets, each thread reusing one scratch.
    """
    n = param.size
    chunk = CHUNK_BUCKETS * bucket
    n_chunks = (n + chunk - 1) // chunk
    for w in numba.prange(n_workers):
        scratch = np.empty(chunk, np.float32)
        for c in range(w, n_chunks, n_workers):
            start = c * chunk
            length = min(chunk, n - start)
            q = scratch[:length]
            first_bucket = start // bucket
            dequantize_range(
                codes, start, lo, hi, first_bucket, bits, bucket, bounds_bf16, q, False
            )
            if param_kind == NATIVE:
                for j in range(length):
                    param[start + j] = param[start + j] - step * param.dtype.type(q[j])
            else:
                for j in range(length):
                    x = np.float32(load_value(param, start + j, param_kind))
                    store_value(param, start + j, x - step * q[j], param_kind)
            for j in range(length):
                q[j] = keep * q[j]
            quantize_range(
                q, start, codes, lo, hi, first_bucket, bits, bucket, bounds_bf16, False, 0
            )
