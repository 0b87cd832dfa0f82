"""Scalar helpers shared by the CPU (Numba njit) and GPU (numba.cuda device) kernels.

Each helper is written once as a plain Python function on scalars (`*_py`) and compiled for the
CPU here with `jit` (njit with the library's options, `_jit.py`); `_cuda_kernels.py` compiles
the same Python functions with `cuda.jit(device=True)`. Keeping them leaf functions (no helper
calls another) lets both targets compile them from the one source.
"""

import numpy as np

from ._jit import jit

NARROW_LIMIT = 1e36
"""The window apply's `narrow_direction` takes the float32 square root and division while c2·S
and |c1·M| are below this (so both fit float32 with room to spare), float64 beyond."""
NARROW_MIN_EPS = float(np.finfo(np.float32).tiny)
"""...and only for eps at least float32's smallest normal number (a smaller eps would round to
zero or lose its precision in float32: the whole apply then computes in float64)."""
RADIX_BITS = 11  # top-k threshold select: 2048-bin histograms, 3 levels for float32 magnitudes
RADIX_BINS = 1 << RADIX_BITS
# How a float array is stored: native float dtype, or uint16 bits of bfloat16 / IEEE half
# (Numba has no float16 type, so half arrays travel as uint16 views).
NATIVE, BF16, F16 = 0, 1, 2


def bf16_bits_to_f32_py(bits):
    """bfloat16 bit pattern (uint16) -> float32: the bits are the upper half of a float32."""
    return np.uint32(np.uint32(bits) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits_py(x):
    """float32 (or float64, rounded to float32 first) -> bfloat16 bits, round to nearest even;
    NaN stays NaN (quiet bit set), ±Inf stays ±Inf, and a finite x that would round past bf16's
    largest finite value (|x| >= 3.3962e38, float64 values beyond float32's range included)
    saturates at ±3.3895e38 instead of becoming ±Inf (x − x == 0 tells a finite x from ±Inf)."""
    u = np.float32(x).view(np.uint32)
    a = u & np.uint32(0x7FFFFFFF)
    if a > np.uint32(0x7F800000):
        return np.uint16((u >> np.uint32(16)) | np.uint32(0x40))
    if a >= np.uint32(0x7F7F8000) and x - x == 0:
        return np.uint16(((u >> np.uint32(16)) & np.uint32(0x8000)) | np.uint32(0x7F7F))
    lsb = (u >> np.uint32(16)) & np.uint32(1)
    return np.uint16((u + np.uint32(0x7FFF) + lsb) >> np.uint32(16))


def f32_to_bf16_bits_outward_py(x, up):
    """float32 -> bfloat16 bits rounded toward +inf (`up`) or toward -inf (not `up`), saturating
    at ±bf16 max (3.3895e38): a finite x never becomes ±Inf. NaN and ±Inf pass through.

    Used for quantization bounds so that every element stays inside [lo, hi] after rounding (x
    past bf16's largest finite value is the exception: it decodes to that value, within 0.4%).
    Branch-free (the bump is a 0/1 integer), so that a loop over buckets of it vectorizes.
    """
    u = np.float32(x).view(np.uint32)
    t = u >> np.uint32(16)
    inexact = (t << np.uint32(16)) != u
    positive = (u >> np.uint32(31)) == np.uint32(0)
    below_max = (t & np.uint32(0x7FFF)) != np.uint32(0x7F7F)
    return np.uint16(t + np.uint32(inexact & (positive == up) & below_max))


def f16_bits_to_f32_py(bits):
    """IEEE half bit pattern (uint16) -> float32, exact (subnormals, Inf and NaN included)."""
    h = np.uint32(bits)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    exponent = (h >> np.uint32(10)) & np.uint32(0x1F)
    mantissa = h & np.uint32(0x3FF)
    if exponent == np.uint32(0x1F):
        word = sign | np.uint32(0x7F800000) | (mantissa << np.uint32(13))
    elif exponent == np.uint32(0):
        magnitude = np.float32(mantissa) * np.float32(2.0**-24)
        word = sign | np.float32(magnitude).view(np.uint32)
    else:
        word = sign | ((exponent + np.uint32(112)) << np.uint32(23)) | (mantissa << np.uint32(13))
    return np.uint32(word).view(np.float32)


def f32_to_f16_bits_py(x):
    """float32 -> IEEE half bits, round to nearest even; overflow to Inf, NaN stays NaN."""
    u = np.float32(x).view(np.uint32)
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    a = u & np.uint32(0x7FFFFFFF)
    if a > np.uint32(0x7F800000):
        return np.uint16(sign | np.uint32(0x7E00) | ((a >> np.uint32(13)) & np.uint32(0x3FF)))
    if a >= np.uint32(0x477FF000):
        return np.uint16(sign | np.uint32(0x7C00))
    if a >= np.uint32(0x38800000):
        rounded = (a + np.uint32(0xFFF) + ((a >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
        return np.uint16(sign | (rounded - np.uint32(112 << 10)))
    shift = np.uint32(126) - (a >> np.uint32(23))
    if shift > np.uint32(25):
        return np.uint16(sign)
    mantissa = (a & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
    q = mantissa >> shift
    rest = mantissa & ((np.uint32(1) << shift) - np.uint32(1))
    half = np.uint32(1) << (shift - np.uint32(1))
    if rest > half or (rest == half and (q & np.uint32(1)) == np.uint32(1)):
        q = q + np.uint32(1)
    return np.uint16(sign | q)


def hash_uniform_py(seed, index):
    """Counter-based uniform in [0, 1) from (seed, element index): splitmix64's finalizer.

    Reproducible, order-free and identical on every target; 24 random bits (exact in float32).
    """
    z = np.uint64(seed) + np.uint64(index) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float32(z >> np.uint64(40)) * np.float32(1.0 / 16777216.0)


def quant_code_py(x, scale, base, inv_step, offset, max_code):
    """code = floor((x·scale - base) / step + offset) clamped to [0, max_code], branch-free.

    (scale, base, 1/step) come from `bucket_steps`; offset = 0.5 is round_half_up, a uniform
    offset in [0, 1) is stochastic rounding. Clamping first makes truncation a floor (v >= 0).
    """
    v = (np.float32(x) * scale - base) * inv_step + offset
    v = min(max(v, np.float32(0.0)), np.float32(max_code))
    return np.int32(v)


def dequant_value_py(code, step, base, unscale):
    """x̂ = (code·step + base) / scale of a bucket (see `bucket_steps`); unscale = 1/scale."""
    return (np.float32(code) * step + base) * unscale


def bucket_steps_py(lo, hi, levels):
    """(scale, 1/scale, base, step, 1/step) of a bucket [lo, hi] coded on `levels` steps, float32.

    Codes are computed on x·scale against base = lo·scale; scale is a power of two, so scaling is
    exact. scale = 1 for ordinary buckets (code = (x - lo)/step exactly as written). A bucket
    reaching |bound| >= 2^126 is coded at scale 1/4 (its width hi - lo, or code·step + lo, would
    overflow float32 at scale 1), with the step shrunk by 2^-21 relative so that code·step + base
    never rounds past hi. A bucket narrower than 2^-100 (its values are then below 2^-76 in
    magnitude) is coded at scale 2^64 (1/step would overflow, step would be subnormal).
    A constant bucket (hi == lo, or NaN bounds) has step 0 and 1/step 0: code 0 decodes to lo.
    Decoding is within half a step of x plus float32 rounding (a few ulps of max(|lo|, |hi|)).
    Branch-free (selects, and a divisor that is never zero), so that a loop over buckets of it
    vectorizes on the CPU.
    """
    lo = np.float32(lo)
    hi = np.float32(hi)
    one = np.float32(1.0)
    valid = hi > lo  # False for a constant bucket and for NaN bounds
    big = max(hi, -lo) >= np.float32(2.0**126)
    tiny = hi - lo < np.float32(2.0**-100)
    scale = np.float32(0.25) if big else (np.float32(2.0**64) if tiny else one)
    scale = scale if valid else one
    unscale = np.float32(4.0) if big else (np.float32(2.0**-64) if tiny else one)
    unscale = unscale if valid else one  # 1/scale, exactly (scale is a power of two)
    shrink = np.float32(1.0 - 2.0**-21) if big else one
    base = lo * scale
    width = (hi * scale - base) * shrink
    width = width if valid else one
    step = width / np.float32(levels) if valid else np.float32(0.0)
    inv_step = np.float32(levels) / width if valid else np.float32(0.0)
    return scale, unscale, base, step, inv_step


bf16_bits_to_f32 = jit(bf16_bits_to_f32_py)
f32_to_bf16_bits = jit(f32_to_bf16_bits_py)
f32_to_bf16_bits_outward = jit(f32_to_bf16_bits_outward_py)
f16_bits_to_f32 = jit(f16_bits_to_f32_py)
f32_to_f16_bits = jit(f32_to_f16_bits_py)
hash_uniform = jit(hash_uniform_py)
quant_code = jit(quant_code_py)
dequant_value = jit(dequant_value_py)
bucket_steps = jit(bucket_steps_py, error_model="numpy")
"""error_model="numpy": its divisors are never zero, and Numba's zero check would be a branch."""
