"""``python -m ingest synth-plate``: the command that writes synthetic plates (:mod:`.synth`)."""

from __future__ import annotations

import argparse
from typing import Any

from cubes.store import resolve_storage_options
from ingest.checks import int_at_least, matching
from ingest.cli_common import (
    common_arguments,
    progress_argument,
    storage_arguments,
    sub_parser,
)

__all__ = ["add_synth_plate_parser"]

SYNTH_EXAMPLES = (
    "python -m ingest synth-plate demo-data/plate",
    "python -m ingest synth-plate demo-data/batch --plate SYNTH0002 --wells A01,B03 --fields 2",
    "python -m ingest synth-plate s3://my-bucket/synth --jump-size --compression lzw",
)


def add_synth_plate_parser(sub: Any) -> None:
    """Add ``synth-plate DEST`` to the CLI's sub-commands."""
    summary = "write a realistic synthetic Cell Painting plate (TIFFs + load_data.csv)"
    p = sub_parser(
        sub,
        "synth-plate",
        summary,
        f"{summary}, in a plate folder DEST/<plate>__<timestamp>-<measurement>/Images/; "
        "several plates in one DEST make a batch",
        SYNTH_EXAMPLES,
    )
    p.add_argument("dest", metavar="DEST", help="local folder or s3:// prefix")
    p.add_argument("--wells", default="12", help="a count (first N wells) or names A01,B03")
    p.add_argument(
        "--fields", type=int_at_least(1), default=4, help="fields (sites) per well (default 4)"
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--size", type=int_at_least(1), default=256, help="image height/width (default 256)"
    )
    size.add_argument("--jump-size", action="store_true", help="1080x1080 images, as in JUMP")
    _plate_arguments(p)
    p.add_argument(
        "--compression",
        choices=("none", "lzw"),
        default="none",
        help="TIFF compression (default none, as most JUMP images)",
    )
    p.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        help="seed of the images' content, 0 or more; a seed and a field give one image "
        "(default 0)",
    )
    progress_argument(p)
    storage_arguments(p, with_anon=False)
    common_arguments(p)
    p.set_defaults(handler=_run_synth)


def _plate_arguments(p: argparse.ArgumentParser) -> None:
    """``synth-plate``'s plate: id, format and folder name (as JUMP names them)."""
    p.add_argument(
        "--plate",
        type=matching(r"(?!.*__)[A-Za-z0-9][A-Za-z0-9._-]*", "letters, digits, . _ - (not __)"),
        default="SYNTH0001",
        help="plate id, the start of the plate folder's name (default SYNTH0001)",
    )
    p.add_argument(
        "--plate-format",
        type=int,
        choices=(96, 384, 1536),
        default=384,
        help="wells of the plate (default 384)",
    )
    p.add_argument(
        "--measurement",
        type=matching(r"Measurement ?\d+", "Measurement followed by a number"),
        default="Measurement1",
        help="plate folder suffix: Measurement1 (default) or 'Measurement 1'",
    )


def _run_synth(args: argparse.Namespace) -> None:
    """Write the synthetic plate the arguments describe."""
    from ingest.sources.cellpainting.synth import JUMP_SIZE, parse_wells, write_synth_plate

    options = resolve_storage_options(args.dest, endpoint_url=args.endpoint_url)
    wells = parse_wells(args.wells, args.plate_format)  # ArgumentError before writing
    plate = write_synth_plate(
        args.dest,
        wells=wells,
        fields=args.fields,
        size=JUMP_SIZE if args.jump_size else args.size,
        seed=args.seed,
        plate=args.plate,
        plate_format=args.plate_format,
        measurement=args.measurement,
        compression=None if args.compression == "none" else args.compression,
        storage_options=options,
        progress=not args.no_progress,
    )
    print(f"Wrote {plate.n_images} images to {plate.images_url} and {plate.load_data_url}")
