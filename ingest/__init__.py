"""Ingest jobs: raw sources -> Zarr v3 cubes.

Run as ``python -m ingest <source> SRC DEST``. From Python: a source module
plans (:mod:`ingest.sources`; ``plan()`` returns one plan per cube),
:func:`write_cubes` writes them, on a :class:`Runner`.
"""

from __future__ import annotations

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
