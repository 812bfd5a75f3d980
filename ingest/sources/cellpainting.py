"""Cell Painting plates from Phenix/Harmony image folders (as in JUMP).

Image names follow ``rRRcCCfFFpPP-chNsk1fk1fl1.tiff``: row, column, field
(site), plane and channel number. Discovery is one recursive listing; the only
pixels-adjacent read while planning is the header of the first image (its
shape and dtype). Each write task reads the channels of one field and writes
one shard ``(1, 1, channel, y, x)``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import dask.array as da
import numpy as np
import tifffile
import xarray as xr
from zarr.codecs import BloscCodec

import cubes
from cubes import conventions as cv
from cubes.errors import InvalidImageError, SchemaError, SourceNotFoundError
from cubes.store import filesystem, is_local, storage_errors
from ingest.plan import IngestPlan, ShardTask

__all__ = ["IMAGE_NAME", "SOURCE4_CHANNELS", "add_arguments", "plan", "read_block", "well_name"]

logger = logging.getLogger(__name__)

NAME = "cellpainting"
HELP = "a Cell Painting plate folder (Phenix/Harmony TIFFs) -> (well, field, channel, y, x) cube"

IMAGE_NAME = re.compile(
    r"^r(?P<row>\d{2})c(?P<column>\d{2})f(?P<field>\d{2,})p(?P<plane>\d{2})"
    r"-ch(?P<channel>\d+)sk\d+fk\d+fl\d+\.tiff?$",
    re.IGNORECASE,
)
EXAMPLE_NAME = "r01c01f01p01-ch1sk1fk1fl1.tiff"

# JUMP channel_mapping.csv, Metadata_Source == source_4: Mito=1, AGP=2, RNA=3, ER=4,
# DNA=5, BFHighest=6, BFLowest=7, BFMedium=8 (pe2loaddata: HighZBF, LowZBF, Brightfield).
SOURCE4_CHANNELS: dict[int, str] = {
    1: "Mito",
    2: "AGP",
    3: "RNA",
    4: "ER",
    5: "DNA",
    6: "HighZBF",
    7: "LowZBF",
    8: "Brightfield",
}

# Chosen by benchmarks/layout.py: ratio within 4% of level 3, twice its encode speed.
COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


class ImageRef(NamedTuple):
    """One image file found by listing."""

    url: str
    row: int
    column: int
    field: int
    plane: int
    channel: int


@dataclass(frozen=True)
class ReadContext:
    """What a write task needs to read its images (picklable; no open handles)."""

    storage_options: dict[str, Any]
    shape: tuple[int, int]
    dtype: str
    n_channels: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this source's options to the ``python -m ingest cellpainting`` parser."""
    parser.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        metavar="UM",
        help="pixel size in micrometres for the y/x coords (default: pixel indices)",
    )


def well_name(row: int, column: int) -> str:
    """Well name from 1-based row and column: ``(1, 3) -> 'A03'``, ``(27, 1) -> 'AA01'``."""
    return f"{_row_letters(row)}{column:02d}"


def _row_letters(row: int) -> str:
    letters = ""
    while row > 0:
        row, rem = divmod(row - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def discover(src: str, storage_options: dict[str, Any]) -> list[ImageRef]:
    """List the plate images under ``src`` (one recursive listing, no per-file requests)."""
    fs, root = filesystem(src, storage_options)
    with storage_errors(src, storage_options):
        listing = fs.find(root)
    refs = []
    for path in listing:
        match = IMAGE_NAME.match(posixpath.basename(path))
        if match:
            parts = {k: int(v) for k, v in match.groupdict().items()}
            url = path if _is_local_fs(fs) else fs.unstrip_protocol(path)
            refs.append(ImageRef(url=url, **parts))
    if not refs:
        raise SourceNotFoundError(
            f"No Cell Painting images found under {src} ({len(listing)} files listed, none named "
            f"like {EXAMPLE_NAME}). Point SRC at a plate folder (…-Measurement1) or its Images/ "
            "folder."
        )
    _check_one_plate(src, refs)
    return refs


def _is_local_fs(fs: Any) -> bool:
    return "file" in np.atleast_1d(fs.protocol)


def _check_one_plate(src: str, refs: list[ImageRef]) -> None:
    seen: dict[tuple[int, int, int, int, int], str] = {}
    for ref in refs:
        key = (ref.row, ref.column, ref.field, ref.plane, ref.channel)
        if key in seen:
            raise SchemaError(
                f"Two images for well {well_name(ref.row, ref.column)}, field {ref.field}, "
                f"channel {ref.channel} under {src}: {seen[key]} and {ref.url}. SRC must hold "
                "one plate: point it at a single plate folder."
            )
        seen[key] = ref.url
    planes = sorted({ref.plane for ref in refs})
    if len(planes) > 1:
        raise SchemaError(
            f"Images under {src} have {len(planes)} planes (p{planes[0]:02d}…p{planes[-1]:02d}); "
            "z-stacks are not supported yet. Give one plane's images, or project them first."
        )


def read_image(url: str, storage_options: dict[str, Any]) -> np.ndarray:
    """Read one TIFF image, raising :class:`InvalidImageError` naming ``url`` if it is not one."""
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options):
        data = fs.cat_file(path)
    try:
        return tifffile.imread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for corrupt input
        raise _not_a_tiff(url, exc) from exc


def _read_header(url: str, storage_options: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the first page of a TIFF, reading its header only."""
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options), fs.open(path, "rb") as fh:
        try:
            with tifffile.TiffFile(fh) as tif:
                page = tif.pages.first
                return tuple(page.shape), np.dtype(page.dtype)
        except Exception as exc:  # noqa: BLE001 - see read_image
            raise _not_a_tiff(url, exc) from exc


def _not_a_tiff(url: str, exc: Exception) -> InvalidImageError:
    return InvalidImageError(
        f"{url} is named like a Cell Painting image but is not a readable TIFF "
        f"({type(exc).__name__}: {exc}). Replace it with a valid TIFF or remove it from SRC."
    )


def read_block(task: ShardTask, ctx: ReadContext) -> tuple[np.ndarray, np.ndarray]:
    """Read the channels of one field into a ``(channel, y, x)`` block."""
    block = np.zeros((ctx.n_channels, *ctx.shape), dtype=ctx.dtype)
    present = np.zeros(ctx.n_channels, dtype=bool)
    for position, url in task.inputs:
        image = read_image(url, ctx.storage_options)
        if image.shape != ctx.shape or image.dtype != np.dtype(ctx.dtype):
            raise InvalidImageError(
                f"Image {url} is {_describe(image.shape, image.dtype)}; the plate's images are "
                f"{_describe(ctx.shape, ctx.dtype)}. Fix or remove it from SRC."
            )
        block[position] = image
        present[position] = True
    return block, present


def _describe(shape: tuple[int, ...], dtype: Any) -> str:
    return f"{'x'.join(str(s) for s in shape)} {np.dtype(dtype).name}"


def plan(src: str, dest: str, args: argparse.Namespace, src_options: dict[str, Any]) -> IngestPlan:
    """Plan the cube of the plate under ``src``: list images, read one header, lay out shards."""
    refs = discover(src, src_options)
    shape, dtype = _read_header(refs[0].url, src_options)
    if len(shape) != 2:
        raise InvalidImageError(
            f"{refs[0].url} has shape {shape}; Cell Painting images are 2-D (y, x). Give single-"
            "plane grayscale TIFFs."
        )
    wells = sorted({(r.row, r.column) for r in refs})
    fields = sorted({r.field for r in refs})
    channels = sorted({r.channel for r in refs})
    well_pos = {w: i for i, w in enumerate(wells)}
    field_pos = {f: i for i, f in enumerate(fields)}
    chan_pos = {c: i for i, c in enumerate(channels)}
    by_shard: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for r in refs:
        key = (well_pos[(r.row, r.column)], field_pos[r.field])
        by_shard.setdefault(key, []).append((chan_pos[r.channel], r.url))
    tasks = [ShardTask(index=k, inputs=tuple(sorted(v))) for k, v in sorted(by_shard.items())]
    template = _template(wells, fields, channels, shape, dtype, args.pixel_size)
    n_chan = len(channels)
    encoding = {
        cv.IMAGES: {
            "chunks": (1, 1, 1, *shape),
            "shards": (1, 1, n_chan, *shape),
            "compressors": [COMPRESSOR],
        }
    }
    logger.info(
        "Planned %d images: %d wells x %d fields x %d channels of %s",
        len(refs),
        len(wells),
        len(fields),
        n_chan,
        _describe(shape, dtype),
    )
    return IngestPlan(
        source_format=NAME,
        src=src,
        dest=dest,
        template=template,
        encoding=encoding,
        variable=cv.IMAGES,
        tasks=tasks,
        reader=read_block,
        context=ReadContext(src_options, (shape[0], shape[1]), dtype.str, n_chan),
        attrs={
            cv.ATTR_KIND: cv.KIND_PLATE,
            "plate": _plate_name(refs[0].url),
            cv.ATTR_PROVENANCE: {
                "source_format": NAME,
                "src": src if not is_local(src) else os.path.abspath(src),
                "n_images": len(refs),
                "software": f"cellcubes {cubes.__version__}",
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        },
    )


def _plate_name(url: str) -> str:
    """Plate id from the measurement folder: ``BR00117035__2021-05-02T16_02_51-Measurement1``."""
    for part in reversed(url.replace("\\", "/").split("/")):
        if "__" in part and "Measurement" in part:
            return part.split("__", 1)[0]
    return ""


def _template(
    wells: list[tuple[int, int]],
    fields: list[int],
    channels: list[int],
    shape: tuple[int, ...],
    dtype: np.dtype,
    pixel_size: float | None,
) -> xr.Dataset:
    n_w, n_f, n_c = len(wells), len(fields), len(channels)
    full = (n_w, n_f, n_c, *shape)
    images = da.zeros(full, dtype=dtype, chunks=(1, 1, n_c, *shape))
    unit = "pixel" if pixel_size is None else "µm"
    step = 1.0 if pixel_size is None else pixel_size
    coords = {
        "well": ("well", np.array([well_name(r, c) for r, c in wells], dtype=object)),
        "row": ("well", np.array([_row_letters(r) for r, _ in wells], dtype=object)),
        "column": ("well", np.array([c for _, c in wells], dtype=np.int16)),
        "field": ("field", np.array(fields, dtype=np.int16)),
        "channel": (
            "channel",
            np.array([SOURCE4_CHANNELS.get(c, f"ch{c}") for c in channels], dtype=object),
        ),
        "channel_number": ("channel", np.array(channels, dtype=np.int16)),
        "y": ("y", np.arange(shape[0]) * step, {"units": unit}),
        "x": ("x", np.arange(shape[1]) * step, {"units": unit}),
    }
    data_vars: dict[str, Any] = {
        cv.IMAGES: (cv.PLATE_DIMS, images, {"long_name": "Cell Painting images"}),
        cv.PRESENT: (
            cv.PLATE_DIMS[:3],
            np.zeros((n_w, n_f, n_c), dtype=bool),
            {"long_name": "True where the source image was found and written"},
        ),
    }
    for stat in cv.STAT_NAMES:
        data_vars[cv.stat_var(stat)] = ("channel", np.full(n_c, np.nan), {"stat": stat})
    return xr.Dataset(data_vars, coords=coords)
