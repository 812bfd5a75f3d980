"""Sample order, sharding across ranks, and crop positions: pure functions of (seed, epoch).

Nothing here touches torch, zarr or storage: every function maps integers to
integer arrays, so the same arguments give the same answer in any process
(the main process, a ``DataLoader`` worker, another rank, a resumed job).

Samples are numbered ``0 .. n-1`` in cube order, grouped in *shards*: the
consecutive samples stored in one storage shard of one cube (a plate's field,
a block of time steps), which are read together.
An epoch's order is built in two levels:

1. the shards are permuted (:func:`epoch_order`);
2. the samples are shuffled within consecutive *windows* of ``buffer``
   samples of that sequence, ``buffer`` being a multiple of the batch size.

A batch is a ``batch_size`` block of the order, so it lies inside one window,
and its samples come from at most :func:`max_shards_per_batch` shards: a batch
touches few shards, and each shard it touches is read once for all its samples.

Batches are dealt to ranks round-robin (:func:`rank_batch`): batch ``i`` of
rank ``r`` is block ``i * world_size + r`` of the epoch's order, so at every
step all ranks read from the same window, and ranks that stop at batch ``i``
have together consumed a prefix of the order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "UNEVEN",
    "BatchCounts",
    "batch_counts",
    "crop_offsets",
    "effective_buffer",
    "epoch_order",
    "max_shards_per_batch",
    "rank_batch",
    "shard_sizes",
]

UNEVEN = ("pad", "drop")
Uneven = Literal["pad", "drop"]

# spawn_key tags: independent random streams per purpose, per epoch.
_FIELDS, _SAMPLES, _CROPS, _LEADS = range(4)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def shard_sizes(keys: np.ndarray) -> np.ndarray:
    """Lengths of the runs of equal rows in ``keys`` ``(n, k)``, sorted by shard.

    >>> shard_sizes(np.array([[0, 0], [0, 0], [0, 1], [1, 0]])).tolist()
    [2, 1, 1]
    """
    keys = np.asarray(keys).reshape(len(keys), -1)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
    bounds = np.concatenate([[0], change, [len(keys)]])
    return np.diff(bounds).astype(np.int64)


def effective_buffer(shuffle_buffer: int | None, batch_size: int, largest_shard: int) -> int:
    """The shuffle window actually used, in samples.

    ``shuffle_buffer`` (default ``4 * batch_size``), raised to at least the
    samples of the largest shard, rounded up to a multiple of ``batch_size``.
    """
    wanted = 4 * batch_size if shuffle_buffer is None else shuffle_buffer
    wanted = max(wanted, largest_shard, 1)
    return -(-wanted // batch_size) * batch_size


def max_shards_per_batch(buffer: int, smallest_shard: int) -> int:
    """Most shards the non-padding samples of one batch can come from.

    A batch lies inside one window of ``buffer`` consecutive samples of the
    shard sequence; such a window holds at most ``buffer - 1`` shard
    boundaries spaced at least ``smallest_shard`` apart, so it touches at most
    ``1 + ceil((buffer - 1) / smallest_shard)`` shards.
    """
    return 1 + -(-(buffer - 1) // max(smallest_shard, 1))


def epoch_order(
    sizes: np.ndarray, *, seed: int, epoch: int, shuffle: bool = True, buffer: int = 1
) -> np.ndarray:
    """Sample indices of one epoch, in the order they are consumed.

    Parameters
    ----------
    sizes
        Samples per shard, shards in cube order (see :func:`shard_sizes`).
    seed, epoch
        Non-negative integers; the order is a pure function of them.
    shuffle
        ``False``: the cube order ``0 .. n-1`` (evaluation).
    buffer
        Window, in samples, within which samples are shuffled after the
        shards are permuted (see :func:`effective_buffer`).

    Returns
    -------
    numpy.ndarray
        A permutation of ``0 .. sum(sizes) - 1`` (int64).

    Notes
    -----
    The shard permutation of epoch ``e`` starts with shard ``lead[e % n]``,
    ``lead`` being a random permutation of the ``n`` shards fixed by ``seed``;
    the rest is uniformly random. So two epochs less than ``n`` apart never
    have the same order, and each shard leads once every ``n`` epochs.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    if not shuffle or n == 0:
        return np.arange(n, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    fields = _rng(seed, _FIELDS, epoch).permutation(len(sizes))
    lead = _rng(seed, _LEADS).permutation(len(sizes))[epoch % len(sizes)]
    fields = np.roll(fields, -int(np.flatnonzero(fields == lead)[0]))
    counts = sizes[fields]
    # Samples of the permuted shards, concatenated: start of the shard + offset in it.
    first = np.repeat(starts[fields], counts)
    offset = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    sequence = first + offset
    window = np.arange(n) // max(buffer, 1)
    keys = _rng(seed, _SAMPLES, epoch).random(n)
    return sequence[np.lexsort((keys, window))]


@dataclass(frozen=True)
class BatchCounts:
    """How the samples of an epoch fill the batches of ``world_size`` ranks.

    Attributes
    ----------
    per_rank
        Batches per rank per epoch (the same on every rank).
    real
        Positions ``0 .. real-1`` of the epoch order are used once each.
    slots
        Positions handed out in all; ``slots - real`` are padding (repeats).
    """

    per_rank: int
    real: int
    slots: int


def batch_counts(
    n: int,
    batch_size: int,
    world_size: int = 1,
    *,
    drop_last: bool = False,
    uneven: Uneven = "pad",
) -> BatchCounts:
    """Batches per rank, and which positions of the order are used or padded.

    ``drop_last`` drops the last partial batch of the epoch. Then, if the
    batches do not divide among ``world_size`` ranks, ``uneven="pad"`` adds
    samples repeated from the start of the order (filling the partial batch
    too) until every rank has as many full batches, and ``uneven="drop"`` drops
    batches from the end. When they divide, nothing is padded or dropped, and
    the last batch (of one rank) may be partial unless ``drop_last``.
    """
    batches = n // batch_size if drop_last else -(-n // batch_size)
    real = min(n, batches * batch_size)
    if batches % world_size == 0:
        return BatchCounts(batches // world_size, real, real)
    if uneven == "pad":
        per_rank = -(-batches // world_size)
        return BatchCounts(per_rank, real, per_rank * world_size * batch_size)
    per_rank = batches // world_size
    used = per_rank * world_size * batch_size
    return BatchCounts(per_rank, used, used)


def rank_batch(
    order: np.ndarray,
    index: int,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    counts: BatchCounts,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples of batch ``index`` of ``rank``, and which of them are padding.

    Batch ``index`` of rank ``r`` is block ``index * world_size + r`` of the
    epoch's order (round-robin).

    Returns
    -------
    samples, padding
        Sample indices (int64) and a bool mask, ``True`` for padding.
    """
    if not 0 <= index < counts.per_rank:
        raise IndexError(f"batch {index} out of range for {counts.per_rank} batches per rank")
    block = index * world_size + rank
    slots = np.arange(block * batch_size, min((block + 1) * batch_size, counts.slots))
    padding = slots >= counts.real
    positions = np.where(padding, (slots - counts.real) % max(counts.real, 1), slots)
    return np.asarray(order)[positions], padding


def crop_offsets(samples: np.ndarray, *, seed: int, epoch: int, spans: list[int]) -> np.ndarray:
    """Random crop offsets ``(len(samples), len(spans))``, each uniform in ``[0, span]``.

    A pure function of ``(seed, epoch, sample, spans)`` for each sample: a
    counter-based hash (splitmix64) of the three numbers, so a batch costs its
    own samples only, however large the dataset. Two dims share one 64-bit
    draw (32 random bits each: bias < 2**-16).
    """
    x = np.asarray(samples, dtype=np.uint64)
    x = x * np.uint64(0x9E3779B97F4A7C15) + np.uint64(_mix(_mix(seed) ^ (epoch + _CROPS)))
    out = np.zeros((len(x), len(spans)), dtype=np.int64)
    u = x
    for j, span in enumerate(spans):
        if j % 2 == 0:
            u = _splitmix64(x + np.uint64(j // 2))
            bits = u >> np.uint64(32)
        else:
            bits = u & np.uint64(0xFFFFFFFF)
        out[:, j] = (bits % np.uint64(span + 1)).astype(np.int64)
    return out


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _mix(value: int) -> int:
    return int(_splitmix64(np.array([value % 2**64], dtype=np.uint64))[0])
