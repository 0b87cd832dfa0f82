"""The shared bf16 / float16 <-> float32 bit helpers used by every kernel."""

import numpy as np

from compress._scalar import (
    bf16_bits_to_f32,
    f16_bits_to_f32,
    f32_to_bf16_bits,
    f32_to_bf16_bits_outward,
    f32_to_f16_bits,
)


def probe_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    scales = [1e-8, 1e-6, 1e-5, 1e-3, 1.0, 100.0, 6e4, 7e4, 1e37]
    parts = [rng.standard_normal(3000).astype(np.float32) * s for s in scales]
    halves = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
    halves = halves[np.isfinite(halves)]
    # Exact ties between neighbouring halves / bf16 values exercise round-to-even.
    ties = (halves.astype(np.float64) + 2.0**-25).astype(np.float32)
    return np.concatenate(parts + [halves, ties, np.float32([0.0, -0.0, np.inf, -np.inf])])


def test_float16_conversions_match_numpy_exactly():
    bits = np.arange(65536, dtype=np.uint16)
    expected = bits.view(np.float16).astype(np.float32)
    got = np.array([f16_bits_to_f32(b) for b in bits], np.float32)
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(got.view(np.uint32)[finite], expected.view(np.uint32)[finite])
    assert np.isnan(got[~finite]).all()
    x = probe_values()
    with np.errstate(over="ignore"):
        reference = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(np.array([f32_to_f16_bits(v) for v in x], np.uint16), reference)


def test_bf16_round_to_nearest_even_and_nan():
    x = probe_values()
    word = x.view(np.uint32).astype(np.uint64)
    expected = ((word + 0x7FFF + ((word >> 16) & 1)) >> 16).astype(np.uint16)
    got = np.array([f32_to_bf16_bits(v) for v in x], np.uint16)
    np.testing.assert_array_equal(got, expected)
    back = np.array([bf16_bits_to_f32(b) for b in got], np.float32)
    np.testing.assert_array_equal(back.view(np.uint32), got.astype(np.uint32) << 16)
    for nan_bits in (0x7FC00000, 0xFF800001, 0x7F800001):
        rounded = f32_to_bf16_bits(np.uint32(nan_bits).view(np.float32))
        assert np.isnan(bf16_bits_to_f32(rounded))
        assert (rounded >> 15) == (nan_bits >> 31)


def test_outward_rounding_brackets_the_value():
    x = probe_values()[:-2]
    down = np.array([bf16_bits_to_f32(f32_to_bf16_bits_outward(v, False)) for v in x])
    up = np.array([bf16_bits_to_f32(f32_to_bf16_bits_outward(v, True)) for v in x])
    assert np.all(down <= x) and np.all(x <= up)
    assert np.all((up - down)[np.abs(x) < 1e37] <= np.abs(x[np.abs(x) < 1e37]) * 2**-7)
