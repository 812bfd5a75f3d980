"""Ingest jobs: raw sources -> Zarr v3 cubes.

Run as ``python -m ingest <source> SRC DEST``. From Python: a source module
plans (:mod:`ingest.sources`), :func:`write_cube` writes.
"""

from __future__ import annotations

from ingest.plan import IngestPlan, ShardTask
from ingest.sources import SOURCES
from ingest.synth import parse_wells, synth_field, write_synth_plate
from ingest.writer import IngestResult, write_cube

__all__ = [
    "SOURCES",
    "IngestPlan",
    "IngestResult",
    "ShardTask",
    "parse_wells",
    "synth_field",
    "write_cube",
    "write_synth_plate",
]
