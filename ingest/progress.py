"""A progress bar for work that is not a dask graph (``synth-plate``, ``synth-climate``).

It is the ingest run's bar (:class:`dask.diagnostics.ProgressBar` as
:class:`ingest.runner.Runner` shows it) for a counted loop: the same line on
stderr, ``[####    ] | 45% Completed | 3.20 s``, redrawn every 0.1 s, and like
it drawn only once the work has taken :data:`MINIMUM_S` (quick work prints
nothing), whether or not stderr is a terminal. ``--no-progress`` turns both off.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

__all__ = ["MINIMUM_S", "CountBar"]

MINIMUM_S = 1.0  # seconds of work before a bar is drawn (the ingest run's minimum)
_WIDTH = 40
_DT = 0.1


class CountBar:
    """A context manager showing ``done / total`` of a loop on stderr; :meth:`advance` counts.

    Parameters
    ----------
    total
        Units of work (files, fields).
    enabled
        ``False``: draw nothing (``--no-progress``).
    out
        Where to draw (default: ``sys.stderr`` when entered).

    Examples
    --------
    >>> with CountBar(len(files)) as bar:  # doctest: +SKIP
    ...     for f in files:
    ...         write(f)
    ...         bar.advance()
    """

    def __init__(self, total: int, *, enabled: bool = True, out: TextIO | None = None) -> None:
        self.total = max(int(total), 0)
        self.enabled = enabled
        self._out = out
        self._done = 0
        self._start = 0.0
        self._drawn = False
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self._done += n

    def __enter__(self) -> CountBar:
        self._start = time.perf_counter()
        if self.enabled:
            self._out = self._out or sys.stderr
            self._timer = threading.Thread(target=self._tick, daemon=True)
            self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is None:
            return
        self._stop.set()
        self._timer.join()
        elapsed = time.perf_counter() - self._start
        if elapsed < MINIMUM_S and not self._drawn:
            return
        # Complete only when the work is; a failed run keeps the fraction it reached.
        self._draw(1.0 if exc_type is None else self._fraction(), elapsed)
        self._write("\n")

    def _tick(self) -> None:
        while not self._stop.wait(_DT):
            elapsed = time.perf_counter() - self._start
            if elapsed >= MINIMUM_S:
                self._draw(self._fraction(), elapsed)

    def _fraction(self) -> float:
        return min(self._done / self.total, 1.0) if self.total else 0.0

    def _draw(self, fraction: float, elapsed: float) -> None:
        from dask.utils import format_time  # dask's own line; not at import: --help stays light

        self._drawn = True
        bar = "#" * int(_WIDTH * fraction)
        self._write(
            f"\r[{bar:<{_WIDTH}}] | {int(100 * fraction)}% Completed | {format_time(elapsed)}"
        )

    def _write(self, text: str) -> None:
        if self._out is None:
            return
        try:
            self._out.write(text)
            self._out.flush()
        except ValueError:  # stderr closed under us (as dask's bar allows)
            pass
