"""Source formats: one module each, listed in :data:`SOURCES`.

Each module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``plan(src, dest, args, src_options) -> IngestPlan``. Adding a format is adding
a module and a line here.
"""

from __future__ import annotations

from types import ModuleType

from ingest.sources import cellpainting

__all__ = ["SOURCES"]

SOURCES: dict[str, ModuleType] = {module.NAME: module for module in (cellpainting,)}
