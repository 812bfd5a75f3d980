"""The options of the Cell Painting source (built by the CLI, or directly from Python)."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.sources.base import SourceOptions

__all__ = ["CellPaintingOptions"]


@dataclass(frozen=True)
class CellPaintingOptions(SourceOptions):
    """Options of :func:`ingest.sources.cellpainting.plan`.

    Attributes
    ----------
    pixel_size
        Pixel size in µm for the y/x coords (default: from the Harmony index).
    load_data
        A CellProfiler LoadData table (CSV or Parquet, path or URL) naming the images.
    load_data_root
        The folder the table's relative PathNames start from (CellProfiler's base
        folder); None: see :mod:`.loaddata` for where they resolve.
    plates
        Plate ids to ingest (LoadData tables and batches); None: all.
    channel_map
        JUMP ``channel_mapping.csv`` naming the channels; None: source_4's.
    source
        The ``Metadata_Source`` row of ``channel_map``.
    ome
        Write an OME-NGFF 0.5 HCS plate instead of a cube.
    """

    pixel_size: float | None = None
    load_data: str | None = None
    load_data_root: str | None = None
    plates: tuple[str, ...] | None = None
    channel_map: str | None = None
    source: str | None = None
    ome: bool = False
