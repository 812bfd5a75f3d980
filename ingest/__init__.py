"""Ingest jobs: raw sources -> Zarr v3 cubes.

Run as ``python -m ingest <source> SRC DEST``. From Python: a source module
plans (:mod:`ingest.sources`; ``plan()`` returns one plan per cube),
:func:`write_cubes` writes them, on a :class:`Runner`.

The names below are imported on first use: ``import ingest`` (and so
``python -m ingest --help``) does not import xarray, dask or zarr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest._lazy import lazy_names

if TYPE_CHECKING:
    from ingest.plan import Block, IngestPlan, ShardTask
    from ingest.runner import Runner
    from ingest.sources import SOURCES
    from ingest.sources.cellpainting.synth import parse_wells, synth_field, write_synth_plate
    from ingest.writer import IngestResult, write_cube, write_cubes

__all__ = [
    "SOURCES",
    "Block",
    "IngestPlan",
    "IngestResult",
    "Runner",
    "ShardTask",
    "parse_wells",
    "synth_field",
    "write_cube",
    "write_cubes",
    "write_synth_plate",
]

_HOMES = {
    "Block": "ingest.plan",
    "IngestPlan": "ingest.plan",
    "ShardTask": "ingest.plan",
    "Runner": "ingest.runner",
    "SOURCES": "ingest.sources",
    "parse_wells": "ingest.sources.cellpainting.synth",
    "synth_field": "ingest.sources.cellpainting.synth",
    "write_synth_plate": "ingest.sources.cellpainting.synth",
    "IngestResult": "ingest.writer",
    "write_cube": "ingest.writer",
    "write_cubes": "ingest.writer",
}


__getattr__ = lazy_names(__name__, _HOMES)
