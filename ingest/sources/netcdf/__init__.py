"""The NetCDF/HDF5 source (``python -m ingest netcdf``): catalog, header reading, synth.

Many NetCDF-3/4 or HDF5 files of one model run (a folder, a glob, an ``s3://``
prefix or a list of URLs) become one climate cube ``var (time, [level,] lat,
lon)``: headers are read while planning (:mod:`.catalog`), each write task
reads the files of one time shard (:mod:`.reader`), see :mod:`.planning`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ingest._lazy import lazy_names
from ingest.checks import int_at_least
from ingest.sources.base import ON_ERROR, ArgumentError

if TYPE_CHECKING:
    from ingest.plan import IngestPlan
    from ingest.sources.netcdf.planning import NetcdfOptions, plan

__all__ = ["SOURCE", "NetcdfOptions", "NetcdfSource", "plan"]


# NetcdfOptions and plan: imported with the planner (xarray) on first use.
_PLANNING = "ingest.sources.netcdf.planning"
__getattr__ = lazy_names(__name__, {"NetcdfOptions": _PLANNING, "plan": _PLANNING})


class NetcdfSource:
    """The ``netcdf`` sub-command (see :class:`ingest.sources.base.Source`)."""

    name = "netcdf"
    help = (
        "NetCDF/HDF5 files of a model run (folder, glob, s3:// prefix or URL list) -> climate cube"
    )
    examples: tuple[str, ...] = (
        "python -m ingest netcdf demo-data/climate demo-data/climate.zarr",
        "python -m ingest netcdf 's3://bucket/run1/*.nc' s3://bucket/run1.zarr --variables T,q_H2O",
        "python -m ingest netcdf urls.txt s3://bucket/era.zarr --concat-dim time "
        "--steps-per-shard 4 --on-error skip",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this source's options to the ``python -m ingest netcdf`` parser."""
        parser.add_argument(
            "--variables",
            default=None,
            metavar="A,B",
            help="comma-separated data variables to keep (default: every variable on the "
            "record dim)",
        )
        parser.add_argument(
            "--concat-dim",
            default=None,
            metavar="DIM",
            help="the record dim the files are joined along (default: the unlimited dim, else "
            "'time')",
        )
        parser.add_argument(
            "--steps-per-shard",
            type=int,
            default=None,
            metavar="N",
            help="time steps per shard and write task (default: up to 8, shards <= 64 MB)",
        )
        parser.add_argument(
            "--chunks",
            default=None,
            metavar="DIM=N,…",
            help="chunk sizes by dim, e.g. lat=181,lon=360 for spatial tiles (default: one time "
            "step x the full grid per chunk, what training reads)",
        )
        parser.add_argument(
            "--stats-period",
            default=None,
            metavar="START/END",
            help="compute the statistics over the steps of this period only, e.g. the "
            "training period 2000-01-01/2009-12-31 (default: all steps)",
        )
        parser.add_argument(
            "--on-error",
            choices=ON_ERROR,
            default="fail",
            help="an unreadable file stops the job (fail), or is left out, its steps marked "
            "absent in 'present' and listed in the quality report (skip)",
        )
        parser.add_argument(
            "--keep-bits",
            type=int_at_least(0),
            default=None,
            metavar="N",
            help="LOSSY, opt-in: round the float32 values to N mantissa bits (0-23; error at "
            "most 2**-(N+1) of a value) so that they compress better; recorded as keep_bits "
            "in each variable's attrs (default: lossless; see docs/codecs.md)",
        )

    def options_from_args(
        self, args: argparse.Namespace, storage_options: dict[str, Any]
    ) -> NetcdfOptions:
        """The options from parsed arguments; :class:`ArgumentError` for unusable values."""
        from ingest.sources.netcdf.planning import NetcdfOptions

        variables = None
        if args.variables is not None:
            variables = tuple(v.strip() for v in args.variables.split(",") if v.strip())
            if not variables:
                raise ArgumentError(f"--variables {args.variables!r}: name at least one variable.")
        return NetcdfOptions(
            storage_options=storage_options,
            endpoint_url=args.endpoint_url,
            on_error=args.on_error,
            codec=args.codec,
            variables=variables,
            concat_dim=args.concat_dim,
            steps_per_shard=args.steps_per_shard,
            stats_period=_period(args.stats_period),
            chunks=_chunks(args.chunks),
            keep_bits=args.keep_bits,
        )

    def add_commands(self, sub: Any) -> None:
        """This source's own commands: ``synth-climate``."""
        from ingest.sources.netcdf.synth import add_synth_climate_parser

        add_synth_climate_parser(sub)

    def plan(self, src: str, dest: str, options: NetcdfOptions) -> list[IngestPlan]:
        """The climate cube's plan; see :func:`.planning.plan`."""
        from ingest.sources.netcdf.planning import plan

        return plan(src, dest, options)


def _chunks(text: str | None) -> dict[str, int] | None:
    """``lat=181,lon=360`` as a dict; :class:`ArgumentError` for anything else."""
    if text is None:
        return None
    out = {}
    for part in text.split(","):
        dim, sep, size = part.partition("=")
        if not sep or not dim.strip() or not size.strip().isdigit() or int(size) < 1:
            raise ArgumentError(f"--chunks {text!r}: give DIM=N pairs, e.g. lat=181,lon=360.")
        out[dim.strip()] = int(size)
    return out


def _period(text: str | None) -> tuple[str, str] | None:
    """``START/END`` (dates or date-times as xarray selects them) or None."""
    if text is None:
        return None
    start, sep, end = text.partition("/")
    if not sep or not start.strip() or not end.strip():
        raise ArgumentError(f"--stats-period {text!r}: give START/END, e.g. 2000-01-01/2009-12-31.")
    return start.strip(), end.strip()


SOURCE = NetcdfSource()
