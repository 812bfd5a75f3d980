"""The Cell Painting source: ``python -m ingest cellpainting SRC DEST``.

Phenix/Harmony plate folders (as in JUMP), optionally named by a CellProfiler
LoadData table, become ``images (well, field, channel, y, x)`` cubes, one per
plate. Everything that knows about wells, fields and channels lives in this
folder: file names and indexes (:mod:`.planning`, :mod:`.harmony`,
:mod:`.loaddata`, :mod:`.jump`), the plate schema (:mod:`.plate`,
:mod:`.layout`), TIFF reading (:mod:`.tiff`), the OME-NGFF output
(:mod:`.ome`) and the synthetic plates (:mod:`.synth`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cubes.store import resolve_storage_options
from ingest._lazy import lazy_names
from ingest.checks import check_exists, float_above
from ingest.sources.base import ON_ERROR, ArgumentError
from ingest.sources.cellpainting.options import CellPaintingOptions

if TYPE_CHECKING:
    from ingest.plan import IngestPlan
    from ingest.sources.cellpainting.jump import SOURCE4_CHANNELS
    from ingest.sources.cellpainting.planning import COMPRESSOR, IMAGE_NAME, plan
    from ingest.sources.cellpainting.plate import well_name

__all__ = [
    "COMPRESSOR",
    "IMAGE_NAME",
    "SOURCE",
    "SOURCE4_CHANNELS",
    "CellPaintingOptions",
    "CellPaintingSource",
    "plan",
    "well_name",
]

# Imported on first use: the command line builds its parser from SOURCE alone,
# without xarray, dask, pandas or zarr (planning and reading import them).
_HOMES = {
    "COMPRESSOR": "planning",
    "IMAGE_NAME": "planning",
    "plan": "planning",
    "SOURCE4_CHANNELS": "jump",
    "well_name": "plate",
}


__getattr__ = lazy_names(__name__, {name: f"{__name__}.{home}" for name, home in _HOMES.items()})


class CellPaintingSource:
    """The ``cellpainting`` sub-command (see :class:`ingest.sources.base.Source`)."""

    name = "cellpainting"
    help = (
        "a Cell Painting plate folder (Phenix/Harmony TIFFs) -> (well, field, channel, y, x) cube"
    )
    examples: tuple[str, ...] = (
        "python -m ingest cellpainting demo-data/plate demo-data/plate.zarr",
        "python -m ingest cellpainting s3://cellpainting-gallery/cpg0016-jump/source_4/images/"
        "2021_04_26_Batch1/images/ s3://my-bucket/batch1/ --anon --plates BR00117035",
        "python -m ingest cellpainting s3://bucket/plate/ s3://bucket/plate.zarr "
        "--load-data s3://bucket/load_data.csv --on-error skip",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this source's options to the ``python -m ingest cellpainting`` parser."""
        parser.add_argument(
            "--pixel-size",
            type=float_above(0),
            default=None,
            metavar="UM",
            help="pixel size in µm for the y/x coords (default: from Index.idx.xml, else pixels)",
        )
        parser.add_argument(
            "--on-error",
            choices=ON_ERROR,
            default="fail",
            help="an unreadable or mismatched image stops the job (fail), or is left out, marked "
            "absent in 'present' and listed in the quality report (skip)",
        )
        parser.add_argument(
            "--load-data",
            default=None,
            metavar="CSV",
            help="a CellProfiler LoadData table (.csv or .parquet, path or URL) naming the images",
        )
        parser.add_argument(
            "--load-data-root",
            default=None,
            metavar="DIR",
            help="the folder (path or URL) the --load-data table's relative PathName_* values "
            "start from, as CellProfiler's base folder (default: keys in SRC's bucket when SRC "
            "or the table is remote, else the table's folder)",
        )
        parser.add_argument(
            "--plates",
            default=None,
            help="comma-separated plate ids to ingest (LoadData tables and batches)",
        )
        parser.add_argument(
            "--channel-map",
            default=None,
            metavar="CSV",
            help="JUMP channel_mapping.csv (path or URL) naming the channels; default: source_4's",
        )
        parser.add_argument(
            "--source",
            default=None,
            help="the Metadata_Source row of --channel-map: 4 or source_4 (default source_4)",
        )
        parser.add_argument(
            "--ome", action="store_true", help="write an OME-NGFF 0.5 HCS plate instead of a cube"
        )

    def options_from_args(
        self, args: argparse.Namespace, storage_options: dict[str, Any]
    ) -> CellPaintingOptions:
        """The options from parsed arguments (the parser checked their values).

        Raises
        ------
        ArgumentError
            ``--load-data-root`` without ``--load-data``.
        SourceNotFoundError
            ``--load-data`` or ``--channel-map`` names a table that does not exist.
        """
        if args.load_data_root and not args.load_data:
            raise ArgumentError(
                f"--load-data-root {args.load_data_root} needs --load-data: give the LoadData "
                "table whose paths start there, or leave --load-data-root out."
            )
        _check_tables(args, storage_options)
        plates = None
        if args.plates:
            plates = tuple(p.strip() for p in args.plates.split(",") if p.strip())
        return CellPaintingOptions(
            storage_options=storage_options,
            endpoint_url=args.endpoint_url,
            on_error=args.on_error,
            codec=args.codec,
            pixel_size=args.pixel_size,
            load_data=args.load_data,
            load_data_root=args.load_data_root,
            plates=plates,
            channel_map=args.channel_map,
            source=args.source,
            ome=args.ome,
        )

    def add_commands(self, sub: Any) -> None:
        """This source's own commands: ``synth-plate``."""
        from ingest.sources.cellpainting.synth_cli import add_synth_plate_parser

        add_synth_plate_parser(sub)

    def plan(self, src: str, dest: str, options: CellPaintingOptions) -> list[IngestPlan]:
        """One plan per plate under ``src``; see :func:`.planning.plan`."""
        from ingest.sources.cellpainting.planning import plan

        return plan(src, dest, options)


def _check_tables(args: argparse.Namespace, storage_options: dict[str, Any]) -> None:
    """Fail before planning, naming the option, if a table given by URL does not exist."""
    remedy = "Check the path or URL (a .csv or .parquet file)."
    if args.load_data:
        table = resolve_storage_options(args.load_data, endpoint_url=args.endpoint_url)
        options = {**table, **storage_options}  # as the planner reads it
        check_exists(args.load_data, options, what="--load-data", remedy=remedy, file=True)
    if args.channel_map:
        options = resolve_storage_options(args.channel_map, endpoint_url=args.endpoint_url)
        check_exists(args.channel_map, options, what="--channel-map", remedy=remedy, file=True)


SOURCE = CellPaintingSource()
