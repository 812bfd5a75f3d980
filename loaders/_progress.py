"""A progress bar on stderr for the epochs of a :class:`~loaders.loader.CubeLoader` (opt-in)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["EpochBar"]

WIDTH = 24
"""Characters of the bar itself."""
EVERY_S = 0.25
"""Seconds between redraws (and the last batch of the epoch)."""


class EpochBar:
    """``epoch 3: [#####.....] 120/400 batches, 12.3 batches/s, 240 MB/s read, waiting 5%``.

    One line, redrawn in place at most every :data:`EVERY_S`; ended with a newline
    when the epoch's last batch is delivered (or the iteration stops).
    """

    def __init__(self, epoch: int, start: int, total: int, out: TextIO | None = None) -> None:
        self.epoch, self.done, self.total = epoch, start, total
        self.out = out if out is not None else sys.stderr
        self.began = self.last = time.perf_counter()
        self.wait = self.bytes = 0.0
        self.open = False

    def update(self, wait: float, nbytes: float) -> None:
        """One more batch delivered, after ``wait`` seconds of waiting, ``nbytes`` read."""
        self.done += 1
        self.wait += wait
        self.bytes += nbytes
        now = time.perf_counter()
        if self.done >= self.total or now - self.last >= EVERY_S:
            self.last = now
            self._draw(now)

    def close(self) -> None:
        if self.open:
            self.out.write("\n")
            self.out.flush()
            self.open = False

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.began, 1e-9)
        filled = WIDTH * self.done // max(self.total, 1)
        self.out.write(
            f"\repoch {self.epoch}: [{'#' * filled}{'.' * (WIDTH - filled)}] "
            f"{self.done}/{self.total} batches, {self.done / elapsed:.1f} batches/s, "
            f"{self.bytes / elapsed / 1e6:.0f} MB/s read, waiting {self.wait / elapsed:.0%}"
        )
        self.out.flush()
        self.open = True
        if self.done >= self.total:
            self.close()
