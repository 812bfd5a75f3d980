"""Source formats: one module or folder each, listed in :data:`SOURCES`.

Each exposes a :class:`~ingest.sources.base.Source` (name, help, examples,
``add_arguments``, ``options_from_args``, ``plan(src, dest, options)``).
Adding a format is adding a module (or folder) and a line here.
"""

from __future__ import annotations

from ingest.sources import arrays, cellpainting, netcdf  # light: planners import on use
from ingest.sources.base import ArgumentError, Source, SourceOptions

__all__ = ["SOURCES", "ArgumentError", "Source", "SourceOptions"]

SOURCES: dict[str, Source] = {
    source.name: source for source in (cellpainting.SOURCE, netcdf.SOURCE, arrays.SOURCE)
}
