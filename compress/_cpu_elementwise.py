"""CPU (Numba) elementwise kernels: dense bf16 error store and the finite check."""

import numba
import numpy as np

from ._jit import jit
from ._scalar import bf16_bits_to_f32, f32_to_bf16_bits


@jit(parallel=True)
def add_bf16_kernel(bits, out):
    """out += bf16 values (bits), in out's dtype."""
    for i in numba.prange(out.size):
        out[i] += bf16_bits_to_f32(bits[i])


@jit(parallel=True)
def round_to_bf16_kernel(src, bits):
    """bits = bf16(src), round to nearest even."""
    for i in numba.prange(src.size):
        bits[i] = f32_to_bf16_bits(src[i])


@jit(parallel=True)
def all_finite_kernel(x, bf16):
    """True when no element is NaN or ±Inf (bf16: exponent bits not all ones). One read pass."""
    bad = 0
    for i in numba.prange(x.size):
        if bf16:
            bad += (np.uint32(x[i]) & np.uint32(0x7F80)) == np.uint32(0x7F80)
        else:
            bad += not (x[i] - x[i] == 0)
    return bad == 0
