"""Per-channel statistics gathered while writing, merged exactly across tasks.

Each task summarises its block into a :class:`ChannelStats` (counts, sums,
extremes and, for 8/16-bit integers, a histogram); summaries merge
associatively, so the runner can reduce them as a tree on any scheduler.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = ["ChannelStats"]

_HIST_BINS = 4096
_EXACT_INT64 = 2**63


@functools.cache
def _squares(n_levels: int) -> np.ndarray:
    """``(levels, levels²)`` as int64, for the exact sums of a full histogram."""
    levels = np.arange(n_levels, dtype=np.int64)
    squares = np.stack([levels, levels * levels])
    squares.setflags(write=False)
    return squares


@dataclass
class ChannelStats:
    """Mergeable summary of the present pixels of each channel."""

    count: np.ndarray  # (C,) int64
    total: np.ndarray  # (C,) float64
    total_sq: np.ndarray  # (C,) float64
    minimum: np.ndarray  # (C,) float64, +inf where empty
    maximum: np.ndarray  # (C,) float64, -inf where empty
    saturated: np.ndarray  # (C,) int64: pixels at the dtype's maximum (integers only)
    hist: np.ndarray | None  # (C, bins) int64 over the dtype's range, integers only
    bin_width: float
    nan_count: np.ndarray | None = None  # (C,) int64: NaN values left out (floats only)

    @classmethod
    def from_block(cls, block: np.ndarray, present: np.ndarray) -> ChannelStats:
        """Summarise a ``(group, ...)`` block, counting only what ``present`` marks.

        ``present`` is ``(group,)`` (a whole group counts or not: a plate's
        channels) or ``(group, *lead)`` over the block's leading dims after the
        group (the time steps of a climate variable): absent ones are left out.
        """
        stats = cls.empty(block.shape[0], block.dtype)
        for c in range(block.shape[0]):
            marks = np.asarray(present[c])
            if not marks.any():
                continue
            values = block[c] if marks.all() else block[c][marks]
            if stats.hist is None:
                stats._add_float(c, values.ravel())
            else:
                stats._add_integer(c, values.ravel(), stats.hist)
        return stats

    def _add_integer(self, c: int, values: np.ndarray, hist: np.ndarray) -> None:
        """Exact sums and extremes from one full-resolution histogram (one pass, no copies).

        The sums are integer dot products of the histogram with the levels and
        their squares: exact, and no BLAS call (a float ``@`` wakes OpenBLAS's
        threads, which spin for longer than the 65536-term product takes).
        """
        n_levels = 2 ** (8 * values.dtype.itemsize)
        full = np.bincount(values, minlength=n_levels)
        levels = np.flatnonzero(full)
        self.count[c] = values.size
        if values.size < _EXACT_INT64 // (n_levels - 1) ** 2:
            squares = _squares(n_levels)
            self.total[c] = float(np.dot(full, squares[0]))
            self.total_sq[c] = float(np.dot(full, squares[1]))
        else:  # the int64 sums could overflow
            weights = full[levels].astype(np.float64)
            as_float = levels.astype(np.float64)
            self.total[c] = weights @ as_float
            self.total_sq[c] = weights @ (as_float * as_float)
        self.minimum[c], self.maximum[c] = levels[0], levels[-1]
        self.saturated[c] = full[-1]
        hist[c] = full.reshape(hist.shape[1], -1).sum(axis=1)

    def _add_float(self, c: int, values: np.ndarray) -> None:
        as_float = values.astype(np.float64)
        nan = np.isnan(as_float)
        if nan.any():
            as_float = as_float[~nan]
        if self.nan_count is not None:
            self.nan_count[c] = int(nan.sum())
        self.count[c] = as_float.size
        if as_float.size:
            self.total[c] = as_float.sum()
            self.total_sq[c] = as_float @ as_float
            self.minimum[c] = as_float.min()
            self.maximum[c] = as_float.max()

    @classmethod
    def empty(cls, n_channels: int, dtype: np.dtype) -> ChannelStats:
        """A summary of nothing, for ``n_channels`` channels of ``dtype``."""
        dtype = np.dtype(dtype)
        hist = None
        width = 0.0
        if dtype.kind == "u" and dtype.itemsize <= 2:
            levels = 2 ** (8 * dtype.itemsize)
            bins = min(levels, _HIST_BINS)
            hist = np.zeros((n_channels, bins), dtype=np.int64)
            width = float(levels // bins)
        return cls(
            count=np.zeros(n_channels, np.int64),
            total=np.zeros(n_channels),
            total_sq=np.zeros(n_channels),
            minimum=np.full(n_channels, np.inf),
            maximum=np.full(n_channels, -np.inf),
            saturated=np.zeros(n_channels, np.int64),
            hist=hist,
            bin_width=width,
            nan_count=np.zeros(n_channels, np.int64) if dtype.kind == "f" else None,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The summary as named arrays (for ``np.savez``); see :meth:`from_arrays`."""
        out = {
            f.name: np.asarray(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ChannelStats:
        """The summary saved by :meth:`to_arrays`."""
        values: dict[str, Any] = {f.name: arrays[f.name] for f in fields(cls) if f.name in arrays}
        values.setdefault("hist", None)
        values.setdefault("nan_count", None)
        values["bin_width"] = float(values["bin_width"])
        return cls(**values)

    def merge(self, other: ChannelStats) -> ChannelStats:
        """The summary of both inputs (neither is modified)."""
        hist = None if self.hist is None or other.hist is None else self.hist + other.hist
        nans = None
        if self.nan_count is not None and other.nan_count is not None:
            nans = self.nan_count + other.nan_count
        return ChannelStats(
            count=self.count + other.count,
            total=self.total + other.total,
            total_sq=self.total_sq + other.total_sq,
            minimum=np.minimum(self.minimum, other.minimum),
            maximum=np.maximum(self.maximum, other.maximum),
            saturated=self.saturated + other.saturated,
            hist=hist,
            bin_width=self.bin_width,
            nan_count=nans,
        )

    def result(self) -> dict[str, np.ndarray]:
        """Arrays named by :data:`cubes.conventions.STAT_NAMES`; NaN for empty channels."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.where(self.count > 0, self.count, np.nan)
            mean = self.total / n
            var = np.maximum(self.total_sq / n - mean**2, 0.0)
        empty = self.count == 0
        out = {
            "mean": mean,
            "std": np.sqrt(var),
            "min": np.where(empty, np.nan, self.minimum),
            "max": np.where(empty, np.nan, self.maximum),
            "p01": self._percentile(1.0),
            "p99": self._percentile(99.0),
            "saturated": self.saturated / n,
        }
        if self.nan_count is not None:
            out["nan_count"] = self.nan_count.astype(np.float64)
        return out

    def _percentile(self, q: float) -> np.ndarray:
        """Percentile from the histogram: the lower edge of the bin holding it (±bin width)."""
        out = np.full(self.count.shape, np.nan)
        if self.hist is None:
            return out
        for c in np.flatnonzero(self.count):
            cum = np.cumsum(self.hist[c])
            out[c] = np.searchsorted(cum, q / 100.0 * cum[-1], side="left") * self.bin_width
        return out
