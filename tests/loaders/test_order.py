"""The loader's sampling invariants, for any shards, batch size, ranks and seeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loaders import order

SETTINGS = settings(max_examples=100, deadline=None)


@st.composite
def plans(draw):
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=12))
    return {
        "sizes": np.array(sizes),
        "batch_size": draw(st.integers(1, 7)),
        "world_size": draw(st.integers(1, 4)),
        "shuffle": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "epoch": draw(st.integers(0, 50)),
        "uneven": draw(st.sampled_from(order.UNEVEN)),
        "drop_last": draw(st.booleans()),
        "shuffle_buffer": draw(st.none() | st.integers(1, 30)),
    }


def _epoch(p, epoch=None):
    """Every rank's batches of one epoch: {rank: [(samples, padding), ...]}."""
    sizes, bs = p["sizes"], p["batch_size"]
    buffer = order.effective_buffer(p["shuffle_buffer"], bs, int(sizes.max()))
    the_order = order.epoch_order(
        sizes,
        seed=p["seed"],
        epoch=p["epoch"] if epoch is None else epoch,
        shuffle=p["shuffle"],
        buffer=buffer,
    )
    counts = order.batch_counts(
        int(sizes.sum()), bs, p["world_size"], drop_last=p["drop_last"], uneven=p["uneven"]
    )
    return {
        rank: [
            order.rank_batch(
                the_order,
                i,
                batch_size=bs,
                rank=rank,
                world_size=p["world_size"],
                counts=counts,
            )
            for i in range(counts.per_rank)
        ]
        for rank in range(p["world_size"])
    }


@SETTINGS
@given(plans())
def test_every_sample_once_per_epoch_over_all_ranks(p):
    n, bs, ws = int(p["sizes"].sum()), p["batch_size"], p["world_size"]
    ranks = _epoch(p)
    per_rank = {len(batches) for batches in ranks.values()}
    assert len(per_rank) == 1, "ranks got different numbers of batches"
    real = np.concatenate([s[~pad] for b in ranks.values() for s, pad in b] or [[]])
    padded = np.concatenate([s[pad] for b in ranks.values() for s, pad in b] or [[]])
    assert len(np.unique(real)) == len(real), "a sample twice in one epoch"
    assert set(real.tolist()) <= set(range(n))
    if p["uneven"] == "drop":
        assert len(padded) == 0
    if p["uneven"] == "pad" and not p["drop_last"]:
        assert sorted(real.tolist()) == list(range(n)), "a sample missing from the epoch"
        batches = -(-n // bs)
        assert per_rank == {-(-batches // ws)}
    if p["drop_last"]:
        assert all(len(s) == bs for b in ranks.values() for s, _ in b)
    if p["uneven"] == "pad":
        assert set(padded.tolist()) <= set(real.tolist())


@SETTINGS
@given(plans())
def test_the_order_is_a_pure_function_of_seed_and_epoch(p):
    first, again = _epoch(p), _epoch(p)  # e.g. a worker or another rank, computing alone
    for rank, batches in first.items():
        for (s1, p1), (s2, p2) in zip(batches, again[rank], strict=True):
            np.testing.assert_array_equal(s1, s2)
            np.testing.assert_array_equal(p1, p2)


@SETTINGS
@given(plans(), st.integers(1, 11))
def test_different_epochs_give_different_orders(p, gap):
    n_shards = len(p["sizes"])
    kwargs = {"seed": p["seed"], "shuffle": True, "buffer": int(p["sizes"].max())}
    one = order.epoch_order(p["sizes"], epoch=p["epoch"], **kwargs)
    two = order.epoch_order(p["sizes"], epoch=p["epoch"] + gap, **kwargs)
    assert sorted(one.tolist()) == sorted(two.tolist()) == list(range(int(p["sizes"].sum())))
    if n_shards > 1 and gap % n_shards:
        assert not np.array_equal(one, two)


@SETTINGS
@given(plans())
def test_without_shuffle_the_order_is_the_cube_order(p):
    the_order = order.epoch_order(p["sizes"], seed=p["seed"], epoch=p["epoch"], shuffle=False)
    np.testing.assert_array_equal(the_order, np.arange(int(p["sizes"].sum())))


@SETTINGS
@given(plans(), st.data())
def test_resuming_at_any_batch_continues_exactly(p, data):
    """A resumed job recomputes the epoch from (seed, epoch) and continues at batch i."""
    full = _epoch(p)
    resumed = _epoch(dict(p))
    for rank, batches in full.items():
        start = data.draw(st.integers(0, len(batches)))
        for (s1, _), (s2, _) in zip(batches[start:], resumed[rank][start:], strict=True):
            np.testing.assert_array_equal(s1, s2)


@SETTINGS
@given(plans())
def test_a_batch_touches_a_bounded_number_of_shards(p):
    sizes, bs = p["sizes"], p["batch_size"]
    shard_of = np.repeat(np.arange(len(sizes)), sizes)
    buffer = order.effective_buffer(p["shuffle_buffer"], bs, int(sizes.max()))
    assert buffer % bs == 0 and buffer >= max(int(sizes.max()), 1)
    bound = order.max_shards_per_batch(buffer, int(sizes.min()))
    for batches in _epoch(p).values():
        for samples, padding in batches:
            assert len(np.unique(shard_of[samples[~padding]])) <= bound


@SETTINGS
@given(plans())
def test_windows_hold_consecutive_shards_of_the_permutation(p):
    """Level 1 permutes whole shards; level 2 only mixes samples inside a window."""
    sizes = p["sizes"]
    buffer = order.effective_buffer(p["shuffle_buffer"], p["batch_size"], int(sizes.max()))
    the_order = order.epoch_order(sizes, seed=p["seed"], epoch=p["epoch"], buffer=buffer)
    window_of = np.empty(len(the_order), dtype=np.int64)
    window_of[the_order] = np.arange(len(the_order)) // buffer
    shard_of = np.repeat(np.arange(len(sizes)), sizes)
    spans = [np.unique(window_of[shard_of == shard]) for shard in range(len(sizes))]
    # a shard lies in one window, or straddles one boundary between consecutive windows
    assert all(len(w) == 1 or (len(w) == 2 and w[1] == w[0] + 1) for w in spans)
    straddling = [int(w[0]) for w in spans if len(w) == 2]
    assert len(straddling) == len(set(straddling)), "two shards straddle one window boundary"


def test_shard_sizes_and_crop_offsets():
    keys = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1], [1, 0, 1]])
    assert order.shard_sizes(keys).tolist() == [2, 1, 2]
    samples = np.arange(1000)
    offsets = order.crop_offsets(samples, seed=1, epoch=2, spans=[3, 0])
    assert offsets.shape == (1000, 2)
    assert set(offsets[:, 0].tolist()) == {0, 1, 2, 3} and set(offsets[:, 1].tolist()) == {0}
    again = order.crop_offsets(samples, seed=1, epoch=2, spans=[3, 0])
    later = order.crop_offsets(samples, seed=1, epoch=3, spans=[3, 0])
    other_seed = order.crop_offsets(samples, seed=2, epoch=2, spans=[3, 0])
    np.testing.assert_array_equal(offsets, again)
    assert not np.array_equal(offsets, later) and not np.array_equal(offsets, other_seed)
    some = np.array([999, 3, 500])  # a batch gets the rows of its own samples
    np.testing.assert_array_equal(
        order.crop_offsets(some, seed=1, epoch=2, spans=[3, 0]), offsets[some]
    )
    wide = order.crop_offsets(np.arange(20000), seed=0, epoch=0, spans=[9, 4])
    for column, span in ((0, 9), (1, 4)):  # about uniform
        counts = np.bincount(wide[:, column], minlength=span + 1)
        assert len(counts) == span + 1 and counts.min() > 0.8 * 20000 / (span + 1)


def test_rank_batch_refuses_out_of_range():
    counts = order.batch_counts(10, 3, 2)
    with pytest.raises(IndexError, match="out of range for 2 batches per rank"):
        order.rank_batch(np.arange(10), 2, batch_size=3, world_size=2, counts=counts)


def test_pad_fills_and_flags_the_last_batches():
    # 10 samples, batches of 3 -> 4 batches, 3 ranks -> 2 each, 6 slots of padding... 18 slots
    counts = order.batch_counts(10, 3, 3, uneven="pad")
    assert (counts.per_rank, counts.real, counts.slots) == (2, 10, 18)
    the_order = np.arange(10)[::-1]
    samples, padding = order.rank_batch(
        the_order, 1, batch_size=3, rank=0, world_size=3, counts=counts
    )
    assert samples.tolist() == [0, 9, 8] and padding.tolist() == [False, True, True]
    dropped = order.batch_counts(10, 3, 3, uneven="drop")
    assert (dropped.per_rank, dropped.real, dropped.slots) == (1, 9, 9)
