"""Per-channel statistics merge exactly, whatever the split into tasks."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.sources.cellpainting.plate import THUMBNAIL_FACTOR, thumbnail
from ingest.stats import ChannelStats


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n_blocks=st.integers(1, 6),
    missing=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_merged_equals_whole(seed, n_blocks, missing):
    rng = np.random.default_rng(seed)
    blocks = [rng.integers(0, 60000, (3, 8, 8), dtype=np.uint16) for _ in range(n_blocks)]
    presents = [np.array([not m for m in missing]) for _ in blocks]
    presents[0] = np.ones(3, bool)  # every channel present at least once
    merged = ChannelStats.empty(3, np.uint16)
    for block, present in zip(blocks, presents, strict=True):
        merged = merged.merge(ChannelStats.from_block(block, present))
    result = merged.result()
    for c in range(3):
        values = np.concatenate(
            [b[c].ravel() for b, p in zip(blocks, presents, strict=True) if p[c]]
        ).astype(float)
        np.testing.assert_allclose(result["mean"][c], values.mean())
        np.testing.assert_allclose(result["std"][c], values.std(), rtol=1e-6)
        assert result["min"][c] == values.min() and result["max"][c] == values.max()
        for name, q in (("p01", 1), ("p99", 99)):  # the lower edge of the right bin
            exact = np.percentile(values, q, method="inverted_cdf")
            assert result[name][c] <= exact < result[name][c] + merged.bin_width


def test_empty_channel_is_nan():
    stats = ChannelStats.from_block(np.ones((2, 4, 4), np.uint16), np.array([True, False]))
    result = stats.result()
    assert result["mean"][0] == 1 and np.isnan(result["mean"][1]) and np.isnan(result["p99"][1])


def test_float_images_have_moments_but_no_percentiles():
    rng = np.random.default_rng(0)
    block = rng.normal(5, 2, (2, 16, 16)).astype(np.float32)
    result = ChannelStats.from_block(block, np.array([True, True])).result()
    np.testing.assert_allclose(result["mean"], block.reshape(2, -1).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(result["std"], block.reshape(2, -1).std(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(result["max"], block.reshape(2, -1).max(axis=1))
    assert np.isnan(result["p01"]).all()


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    size=st.integers(1, 300),
)
def test_sums_are_exact(seed, dtype, size):
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    block = rng.integers(0, top, (2, size, 7), dtype=dtype, endpoint=True)
    block[0, 0, 0] = top  # the extremes of the range are counted too
    stats = ChannelStats.from_block(block, np.array([True, True]))
    for c in range(2):
        values = block[c].ravel().astype(np.int64)
        assert stats.total[c] == float(values.sum())
        assert stats.total_sq[c] == float((values * values).sum())
        assert stats.saturated[c] == np.count_nonzero(values == top)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
)
def test_thumbnail_is_the_rounded_block_mean(seed, dtype, height, width):
    f = THUMBNAIL_FACTOR
    rng = np.random.default_rng(seed)
    block = rng.integers(0, np.iinfo(dtype).max, (3, height, width), dtype=dtype, endpoint=True)
    th, tw = -(-height // f), -(-width // f)
    padded = np.pad(block, ((0, 0), (0, th * f - height), (0, tw * f - width)), "edge")
    means = padded.astype(np.float64).reshape(3, th, f, tw, f).mean(axis=(2, 4))
    expected = np.rint(means).astype(dtype)
    result = thumbnail(block)
    assert result.dtype == block.dtype
    np.testing.assert_array_equal(result, expected)  # exact: integer sums, one rounding
