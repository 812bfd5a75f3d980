"""Read counters shared by the readers of a process: :class:`ReadStats`.

Re-exported by :mod:`loaders.reader`, which fills them, and read per batch by
:class:`~loaders.dataset.CubeBatchDataset` (``batch["stats"]``).
"""

from __future__ import annotations

import threading

__all__ = ["STAT_KEYS", "ReadStats"]

STAT_KEYS = (
    "bytes",
    "requests",
    "disk_hits",
    "disk_misses",
    "memory_hits",
    "memory_misses",
    "read_seconds",
    "decode_seconds",
)


class ReadStats:
    """Thread-safe counters of one reader (or several sharing it).

    Keys: ``bytes`` and ``requests`` (what went to storage), ``disk_hits``,
    ``disk_misses``, ``memory_hits``, ``memory_misses``, ``read_seconds`` (wall
    time waiting on storage, per read call) and ``decode_seconds``. Unpickles as
    fresh counters.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STAT_KEYS, 0.0)

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (ReadStats, ())

    def add(self, **counts: float) -> None:
        """Add to the named counters (unknown names start new counters)."""
        with self._lock:
            for name, value in counts.items():
                self._counts[name] = self._counts.get(name, 0.0) + value

    def snapshot(self) -> dict[str, float]:
        """The counters now."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> dict[str, float]:
        """The counters now, which then restart from zero."""
        with self._lock:
            snapshot = dict(self._counts)
            self._counts = dict.fromkeys(self._counts, 0.0)
            return snapshot
