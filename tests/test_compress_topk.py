"""Block top-k (ALGORITHMS.md §2.1): exact counts, largest magnitudes, ties, sparse helpers."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import compress


def block_slices(sparse: compress.SparseBlocks):
    for b in range(sparse.n_blocks):
        k = sparse.k_tail if b == sparse.n_blocks - 1 else sparse.k_full
        start = b * sparse.k_full
        yield b, slice(start, start + k)


@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(1, 3000),
    block_size=st.sampled_from([1, 7, 64, 1000, 4096]),
    density=st.sampled_from([0.001, 0.01, 0.1, 0.5, 1.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_exact_counts_and_largest_magnitudes(length, block_size, density, dtype, seed):
    rng = np.random.default_rng(seed)
    # A permutation of distinct magnitudes with random signs: tie-free.
    x = (rng.permutation(length) + 1.0) * rng.choice([-1.0, 1.0], length)
    x = x.astype(dtype)
    sparse = compress.topk_blocks(x, density=density, block_size=block_size)
    counts = compress.block_counts(length, density=density, block_size=block_size)
    assert sparse.values.size == counts.total_k == sparse.indices.size
    tail_len = length - (counts.n_blocks - 1) * block_size
    assert counts.k_tail == max(1, math.ceil(tail_len * density))
    for b, sl in block_slices(sparse):
        block = x[b * block_size : (b + 1) * block_size]
        k = sl.stop - sl.start
        idx = sparse.indices[sl].astype(np.int64)
        assert np.all(np.diff(idx) > 0), "indices ascend within a block"
        expected = np.sort(np.argpartition(-np.abs(block), k - 1)[:k])
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_array_equal(sparse.values[sl], block[idx])


def test_default_block_counts_and_int16_indices():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16384 * 3 + 100).astype(np.float32)
    sparse = compress.topk_blocks(x, density=0.01)
    assert (sparse.k_full, sparse.k_tail) == (164, 1)
    assert sparse.indices.dtype == np.int16
    assert sparse.indices.min() >= 0 and sparse.indices[:-1].max() < 16384
    limit = compress.topk_blocks(x[:32767], density=0.5, block_size=32767)
    assert limit.indices.max() <= 32766 and limit.indices.min() >= 0


def test_ties_go_to_the_lowest_index():
    x = np.ones(100, np.float32)
    x[[10, 90]] = -2.0
    sparse = compress.topk_blocks(x, density=0.05, block_size=100)
    np.testing.assert_array_equal(sparse.indices, [0, 1, 2, 10, 90])
    zeros = compress.topk_blocks(np.zeros(50, np.float32), density=0.1, block_size=25)
    np.testing.assert_array_equal(zeros.indices, [0, 1, 2, 0, 1, 2])


def assert_matches_stable_sort(x, density, block_size):
    """Every block's selection equals a stable sort by descending magnitude (ties: lowest index)."""
    sparse = compress.topk_blocks(x, density=density, block_size=block_size)
    counts = compress.block_counts(x.size, density=density, block_size=block_size)
    for b, start in enumerate(range(0, x.size, block_size)):
        block = x[start : start + block_size]
        k = counts.k_full if b < counts.n_blocks - 1 else counts.k_tail
        expected = np.sort(np.argsort(-np.abs(block), kind="stable")[:k])
        got = sparse.indices[b * counts.k_full : b * counts.k_full + k]
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("levels", [3, 50, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_heavy_ties_match_a_stable_sort(levels, dtype):
    # Few distinct magnitudes: many keys share the threshold (the radix select's all-equal end
    # and its small-remainder sort); the reference is a stable sort by descending magnitude.
    rng = np.random.default_rng(levels)
    block_size = 16384
    x = (rng.integers(-levels, levels + 1, 2 * block_size + 777) / levels).astype(dtype)
    assert_matches_stable_sort(x, 0.01, block_size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("density", [0.001, 0.01, 0.2])
def test_magnitudes_spanning_the_whole_exponent_range(dtype, density):
    # Keys from subnormals and zeros to the largest finite values, with repeats: the radix
    # select's range-fitted levels must narrow spans of up to all the magnitude bits.
    rng = np.random.default_rng(7)
    info = np.finfo(dtype)
    exponents = rng.uniform(np.log2(info.smallest_subnormal), np.log2(info.max), 40000)
    x = (np.exp2(exponents) * rng.choice([-1.0, 1.0], exponents.size)).astype(dtype)
    x[rng.integers(0, x.size, 2000)] = 0.0
    x[rng.integers(0, x.size, 2000)] = x[rng.integers(0, x.size, 2000)]  # repeated magnitudes
    block_size = 16384
    assert_matches_stable_sort(x, density, block_size)


def test_density_one_selects_everything():
    x = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    sparse = compress.topk_blocks(x, density=1.0, block_size=300)
    dense = compress.scatter_add(sparse, np.zeros_like(x))
    np.testing.assert_array_equal(dense, x)


@pytest.mark.parametrize("values_dtype", ["float32", "float64", "bfloat16"])
def test_scatter_of_gather_reproduces_the_selected_entries(values_dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(5000).astype(np.float32)
    sparse = compress.topk_blocks(x, density=0.03, block_size=512, values_dtype=values_dtype)
    positions = np.concatenate(
        [b * 512 + sparse.indices[sl].astype(np.int64) for b, sl in block_slices(sparse)]
    )
    y = rng.standard_normal(5000).astype(np.float32)
    gathered = compress.gather(y, sparse)
    rebuilt = compress.scatter_add(gathered, np.zeros_like(y), scale=2.0)
    mask = np.zeros(5000, bool)
    mask[positions] = True
    assert not rebuilt[~mask].any()
    if values_dtype == "bfloat16":
        expected = (gathered.values.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_allclose(y[positions], expected, rtol=2**-8)
        np.testing.assert_array_equal(rebuilt[positions], 2 * expected)
    else:
        np.testing.assert_array_equal(rebuilt[positions], 2 * y[positions])
    compress.zero_selected(y, sparse)
    assert not y[mask].any() and np.all(y[~mask] != 0)
