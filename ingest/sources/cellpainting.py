"""Cell Painting plates from Phenix/Harmony image folders (as in JUMP).

Image names follow ``rRRcCCfFFpPP-chNsk1fk1fl1.tiff``: row, column, field
(site), plane and channel number. Discovery is one recursive listing; the only
pixels-adjacent read while planning is the header of the first image (its
shape and dtype). Each write task reads the channels of one field and writes
one shard ``(1, 1, channel, y, x)``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import tifffile
from zarr.codecs import BloscCodec

import cubes
from cubes import conventions as cv
from cubes.errors import InvalidImageError, SchemaError, SourceNotFoundError
from cubes.store import (
    check_location,
    filesystem,
    is_local,
    join_url,
    resolve_storage_options,
    storage_errors,
)
from ingest.plan import Block, IngestPlan, ShardTask
from ingest.sources._harmony import INDEX_NAMES, HarmonyIndex, apply_index, read_index
from ingest.sources._illum import illum_extras, illum_folder
from ingest.sources._jump import SOURCE4_CHANNELS, plate_location, read_channel_map
from ingest.sources._loaddata import read_load_data
from ingest.sources._plate import PlateMeta, plate_template, thumbnail, well_name

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
    on_error: str = "fail"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this source's options to the ``python -m ingest cellpainting`` parser."""
    parser.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        metavar="UM",
        help="pixel size in µm for the y/x coords (default: from Index.idx.xml, else pixels)",
    )
    parser.add_argument(
        "--on-error",
        choices=("fail", "skip"),
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
        help="the Metadata_Source row of --channel-map (default source_4)",
    )


def discover(
    src: str, storage_options: dict[str, Any]
) -> tuple[list[ImageRef], list[str], list[str]]:
    """Plate images, Harmony index files and TIFFs with other names under ``src`` (one listing)."""
    fs, root = filesystem(src, storage_options)
    with storage_errors(src, storage_options):
        listing = fs.find(root)
    refs, indexes, unparsed = [], [], []
    for path in listing:
        name = posixpath.basename(path.replace("\\", "/"))
        url = path if _is_local_fs(fs) else fs.unstrip_protocol(path)
        match = IMAGE_NAME.match(name)
        if match:
            parts = {k: int(v) for k, v in match.groupdict().items()}
            refs.append(ImageRef(url=url, **parts))
        elif name in INDEX_NAMES:
            indexes.append(url)
        elif name.lower().endswith((".tif", ".tiff")):
            unparsed.append(url)
    if not refs:
        raise SourceNotFoundError(
            f"No Cell Painting images found under {src} ({len(listing)} files listed, none named "
            f"like {EXAMPLE_NAME}). Point SRC at a plate folder (…-Measurement1) or its Images/ "
            "folder."
        )
    return refs, indexes, unparsed


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


@contextlib.contextmanager
def _open_image(url: str, storage_options: dict[str, Any]) -> Iterator[BinaryIO]:
    """The TIFF's bytes as a file: local files opened (decoded straight into the block,
    no copy of the file in memory), others fetched whole (one GET, not ranged reads)."""
    fs, path = filesystem(url, storage_options)
    with contextlib.ExitStack() as stack:
        with storage_errors(url, storage_options):
            if is_local(url):
                fh: BinaryIO = stack.enter_context(open(path, "rb"))
            else:
                fh = io.BytesIO(_cat_whole(fs, path))
        yield fh


def _cat_whole(fs: Any, path: str) -> bytes:
    """One object in one GET: s3fs (``max_concurrency`` > 1) would first HEAD every object to
    decide whether to split it into ranged GETs (only above 50 MB): a round trip per image."""
    if getattr(fs, "max_concurrency", 1) > 1:
        return fs.cat_file(path, max_concurrency=1)
    return fs.cat_file(path)


def _read_image_into(
    url: str, storage_options: dict[str, Any], out: np.ndarray
) -> tuple[tuple[int, ...], np.dtype]:
    """Decode one TIFF image into ``out`` if it has ``out``'s shape and dtype.

    Returns the image's shape and dtype (``out`` is left untouched when they
    differ); raises :class:`InvalidImageError` naming ``url`` if it is not a
    readable TIFF (``out`` may then hold part of it).
    """
    with _open_image(url, storage_options) as fh:
        try:
            with tifffile.TiffFile(fh) as tif:
                series = tif.series[0]
                shape, dtype = tuple(series.shape), np.dtype(series.dtype)
                if shape == out.shape and dtype == out.dtype:
                    tif.asarray(out=out)
                else:  # decoded all the same: a corrupt image is unreadable, not mismatched
                    tif.asarray()
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for corrupt input
            raise _not_a_tiff(url, exc) from exc
    return shape, dtype


def _read_header(url: str, storage_options: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the first page of a TIFF, reading its header only."""
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options), fs.open(path, "rb") as fh:
        try:
            with tifffile.TiffFile(fh) as tif:
                page = tif.pages.first
                return tuple(page.shape), np.dtype(page.dtype)
        except Exception as exc:  # noqa: BLE001 - see _read_image_into
            raise _not_a_tiff(url, exc) from exc


def _first_header(
    refs: list[ImageRef], on_error: str, options: dict[str, Any]
) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the plate: the first image's, or under skip the first readable one's."""
    candidates = refs if on_error == "skip" else refs[:1]
    for ref in candidates[:-1]:
        try:
            return _read_header(ref.url, options)
        except InvalidImageError as exc:
            logger.warning("Skipped while planning: %s", exc)
    return _read_header(candidates[-1].url, options)


def _not_a_tiff(url: str, exc: Exception) -> InvalidImageError:
    return InvalidImageError(
        f"{url} is named like a Cell Painting image but is not a readable TIFF "
        f"({type(exc).__name__}: {exc}). Replace it with a valid TIFF, remove it from SRC, or "
        "pass --on-error skip."
    )


def read_block(task: ShardTask, ctx: ReadContext) -> Block:
    """Read the channels of one field into a ``(channel, y, x)`` block.

    Under ``on_error="skip"`` an unreadable or mismatched image is left out
    (``present`` False, listed in ``skipped``) instead of failing the task.
    """
    block = np.zeros((ctx.n_channels, *ctx.shape), dtype=ctx.dtype)
    present = np.zeros(ctx.n_channels, dtype=bool)
    skipped: list[tuple[str, str]] = []
    for position, url in task.inputs:
        kind = "unreadable"
        try:
            shape, dtype = _read_image_into(url, ctx.storage_options, block[position])
            if shape != ctx.shape or dtype != np.dtype(ctx.dtype):
                kind = "mismatched"
                raise InvalidImageError(
                    f"Image {url} is {_describe(shape, dtype)}; the plate's images "
                    f"are {_describe(ctx.shape, ctx.dtype)}. Fix or remove it from SRC, or pass "
                    "--on-error skip."
                )
        except InvalidImageError as exc:
            block[position] = 0  # what a failed decode left there
            if ctx.on_error != "skip":
                raise
            logger.warning("Skipped: %s", exc)
            skipped.append((kind, url))
            continue
        present[position] = True
    return Block(block, present, skipped)


def _describe(shape: tuple[int, ...], dtype: Any) -> str:
    return f"{'x'.join(str(s) for s in shape)} {np.dtype(dtype).name}"


def plan(
    src: str, dest: str, args: argparse.Namespace, src_options: dict[str, Any]
) -> list[IngestPlan]:
    """Plan one cube per plate under ``src``: list images, read one header per plate.

    SRC holding one plate: DEST is its cube. SRC holding several (a batch, even
    when ``--plates`` picks one of them): DEST is a prefix, and each plate goes
    to ``DEST/<plate>.zarr``.
    """
    check_location(src, src_options)  # fail fast on a bad endpoint or bucket
    names = _channel_map(args)
    if getattr(args, "load_data", None):
        refs, indexes = _load_data_refs(src, args, names, src_options)
        groups = {"": refs}
        unparsed: list[str] = []
    else:
        refs, indexes, unparsed = discover(src, src_options)
        if unparsed:
            logger.warning(
                "%d TIFFs under %s have names that are not rRRcCCfFFpPP-chN… (e.g. %s); they are "
                "left out and listed in the quality report",
                len(unparsed),
                src,
                unparsed[0],
            )
        every = _group_by_plate(refs)
        groups = _select_plates(src, every, getattr(args, "plates", None))
    batch = len(groups) > 1 or (not getattr(args, "load_data", None) and len(every) > 1)
    plans = []
    for folder, group in sorted(groups.items()):
        _check_one_plate(folder or src, group)
        plate_id = plate_location(group[0].url)["plate"] or "plate"
        target = join_url(dest, f"{plate_id}.zarr") if batch else dest
        own = [i for i in indexes if i.startswith(folder)]
        plan = _plan_plate(src, target, group, own, folder, names, args, src_options)
        plan.ignored = [u for u in unparsed if u.startswith(folder)]
        plans.append(plan)
    return plans


_PLATE_FOLDER = re.compile(r"^(.*?[^/\\]+__[^/\\]*Measurement ?\d+)[/\\]")


def _group_by_plate(refs: list[ImageRef]) -> dict[str, list[ImageRef]]:
    """Images by plate folder (``…/<Plate>__<timestamp>-Measurement1``; '' when there is none)."""
    groups: dict[str, list[ImageRef]] = {}
    for ref in refs:
        match = _PLATE_FOLDER.match(ref.url)
        groups.setdefault(match.group(1) if match else "", []).append(ref)
    return groups


def _select_plates(
    src: str, groups: dict[str, list[ImageRef]], plates: str | None
) -> dict[str, list[ImageRef]]:
    if not plates:
        return groups
    wanted = set(plates.split(","))
    chosen = {k: v for k, v in groups.items() if plate_location(v[0].url)["plate"] in wanted}
    if not chosen:
        found = sorted(plate_location(v[0].url)["plate"] for v in groups.values())
        raise SourceNotFoundError(
            f"--plates {plates}: none of them is under {src}, which holds {', '.join(found)}. "
            "Check the plate ids."
        )
    return chosen


def _plan_plate(
    src: str,
    dest: str,
    refs: list[ImageRef],
    indexes: list[str],
    folder: str,
    names: dict[int, str],
    args: argparse.Namespace,
    src_options: dict[str, Any],
) -> IngestPlan:
    """The plan of one plate's cube."""
    shape, dtype = _first_header(refs, getattr(args, "on_error", "fail"), src_options)
    if len(shape) != 2:
        raise InvalidImageError(
            f"{refs[0].url} has shape {shape}; Cell Painting images are 2-D (y, x). Give single-"
            "plane grayscale TIFFs."
        )
    meta = _metadata(refs, indexes, args, src_options)
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
    named = [(c, names.get(c, f"ch{c}")) for c in channels]
    template = plate_template(wells, fields, named, (shape[0], shape[1]), dtype, meta)
    n_chan = len(channels)
    extras = illum_extras(
        template, illum_folder(folder, meta.plate), (shape[0], shape[1]), src_options
    )
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
        encoding=_encoding(n_chan, shape, template),
        variable=cv.IMAGES,
        tasks=tasks,
        reader=read_block,
        context=ReadContext(
            src_options,
            (shape[0], shape[1]),
            dtype.str,
            n_chan,
            getattr(args, "on_error", "fail"),
        ),
        derived={cv.THUMBNAIL: thumbnail},
        extras=extras,
        attrs={
            cv.ATTR_KIND: cv.KIND_PLATE,
            cv.ATTR_PROVENANCE: {
                "source_format": NAME,
                "src": src if not is_local(src) else os.path.abspath(src),
                "index": meta.index_url,
                "n_images": len(refs),
                "software": f"cellcubes {cubes.__version__}",
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        },
    )


def _encoding(n_chan: int, shape: tuple[int, ...], template: Any) -> dict[str, dict[str, Any]]:
    return {
        cv.IMAGES: {
            "chunks": (1, 1, 1, *shape),
            "shards": (1, 1, n_chan, *shape),
            "compressors": [COMPRESSOR],
        },
        cv.THUMBNAIL: {  # one shard per well: written whole by the well's gather task
            "chunks": (1, 1, n_chan, *template[cv.THUMBNAIL].shape[-2:]),
            "shards": (1, *template[cv.THUMBNAIL].shape[1:]),
            "compressors": [COMPRESSOR],
        },
        **({cv.ILLUM: {"chunks": (1, *shape)}} if cv.ILLUM in template else {}),
    }


def _load_data_refs(
    src: str, args: argparse.Namespace, names: dict[int, str], options: dict[str, Any]
) -> tuple[list[ImageRef], list[str]]:
    """Images from a LoadData table; channel numbers from the map (new names get new numbers)."""
    url = args.load_data
    table_options = resolve_storage_options(url, endpoint_url=getattr(args, "endpoint_url", None))
    plates = args.plates.split(",") if getattr(args, "plates", None) else None
    images, indexes = read_load_data(url, {**table_options, **options}, plates, src)
    found_plates = sorted({im.plate for im in images})
    if len(found_plates) > 1:
        raise SchemaError(
            f"LoadData {url} names {len(found_plates)} plates ({', '.join(found_plates[:5])}…); a "
            "cube holds one plate. Pick one with --plates."
        )
    numbers = {name: number for number, name in names.items()}
    for channel in sorted({im.channel for im in images} - set(numbers)):
        number = max(names, default=0) + 1
        names[number] = channel
        numbers[channel] = number
    refs = []
    for im in images:
        match = IMAGE_NAME.match(posixpath.basename(im.url))
        plane = int(match.group("plane")) if match else 1
        refs.append(ImageRef(im.url, im.row, im.column, im.field, plane, numbers[im.channel]))
    _check_one_plate(url, refs)
    return refs, indexes


def _channel_map(args: argparse.Namespace) -> dict[int, str]:
    url = getattr(args, "channel_map", None)
    options = (
        resolve_storage_options(url, endpoint_url=getattr(args, "endpoint_url", None))
        if url
        else {}
    )
    return read_channel_map(url, getattr(args, "source", None), options)


def _metadata(
    refs: list[ImageRef], indexes: list[str], args: argparse.Namespace, options: dict[str, Any]
) -> PlateMeta:
    """Plate id, batch and source from the keys; the rest from the Harmony index, if any.

    ``meta.index_url`` (named by the provenance) is set only when the index was applied.
    """
    where = plate_location(refs[0].url)
    meta = PlateMeta(plate=where["plate"], batch=where["batch"], source=where["source"])
    if indexes:
        _apply_index(read_index(indexes[0], options), refs, meta)
    if getattr(args, "pixel_size", None) is not None:
        meta.pixel_size_um = args.pixel_size
    return meta


def _apply_index(index: HarmonyIndex, refs: list[ImageRef], meta: PlateMeta) -> None:
    """Metadata from ``index`` into ``meta``; see :func:`~ingest.sources._harmony.apply_index`."""
    found = {
        posixpath.basename(r.url.replace("\\", "/")): (r.row, r.column, r.field, r.plane, r.channel)
        for r in refs
    }
    apply_index(index, found, meta)
