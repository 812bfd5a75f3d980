"""Planning a Cell Painting plate's cube from Phenix/Harmony image folders (as in JUMP).

Image names follow ``rRRcCCfFFpPP-chNsk1fk1fl1.tiff``: row, column, field
(site), plane and channel number. Discovery is one recursive listing; the only
pixels-adjacent read while planning is the header of the first image (its
shape and dtype). Each write task reads the channels of one field and writes
one shard ``(1, 1, channel, y, x)``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

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
from ingest.checks import check_exists
from ingest.codecs import compressor
from ingest.index import ATTR_INDEX
from ingest.plan import IngestPlan, ShardTask
from ingest.sources.cellpainting.harmony import INDEX_NAMES, HarmonyIndex, apply_index, read_index
from ingest.sources.cellpainting.illum import illum_extras, illum_folder
from ingest.sources.cellpainting.jump import plate_location, read_channel_map
from ingest.sources.cellpainting.layout import (
    ILLUM,
    IMAGES,
    KIND_PLATE,
    PLATE_LAYOUT,
    THUMBNAIL,
)
from ingest.sources.cellpainting.loaddata import LoadData, fill_from_table, read_load_data
from ingest.sources.cellpainting.ome import OmeOutput
from ingest.sources.cellpainting.options import CellPaintingOptions
from ingest.sources.cellpainting.plate import PlateMeta, plate_template, thumbnail, well_name
from ingest.sources.cellpainting.tiff import ReadContext, describe, first_header, read_block

__all__ = ["COMPRESSOR", "IMAGE_NAME", "ImageRef", "discover", "plan"]

logger = logging.getLogger(__name__)

IMAGE_NAME = re.compile(
    r"^r(?P<row>\d{2})c(?P<column>\d{2})f(?P<field>\d{2,})p(?P<plane>\d{2})"
    r"-ch(?P<channel>\d+)sk\d+fk\d+fl\d+\.tiff?$",
    re.IGNORECASE,
)
EXAMPLE_NAME = "r01c01f01p01-ch1sk1fk1fl1.tiff"

# Chosen by benchmarks/codecs.py on real Phenix and Operetta images (docs/codecs.md):
# Blosc lz4hc 1 + bitshuffle decodes twice as fast as zstd 1 + shuffle (the codec
# until 2026-12) for the same stored bytes and encode CPU. ``--codec`` picks another.
COMPRESSOR = compressor(np.uint16)


class ImageRef(NamedTuple):
    """One image file found by listing."""

    url: str
    row: int
    column: int
    field: int
    plane: int
    channel: int


def discover(
    src: str, storage_options: dict[str, Any]
) -> tuple[list[ImageRef], list[str], list[str]]:
    """Plate images, Harmony index files and TIFFs with other names under ``src`` (one listing).

    Raises
    ------
    SourceNotFoundError
        ``src`` does not exist (naming near names beside it), or holds no image
        named like a Cell Painting image.
    """
    fs, root = filesystem(src, storage_options)
    fs.invalidate_cache()  # a listing cached by an earlier run in this process is stale
    with storage_errors(src, storage_options):
        listing = fs.find(root)
    if not listing:  # nothing under it: a mistyped SRC says so, an empty folder says that
        remedy = (
            "Check it for typos: SRC is a plate folder (…-Measurement1), its Images/ folder, or "
            "a folder of plate folders (a batch)."
        )
        check_exists(src, storage_options, what="SRC", remedy=remedy)
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


def plan(src: str, dest: str, options: CellPaintingOptions) -> list[IngestPlan]:
    """Plan one cube per plate under ``src``: list images, read one header per plate.

    SRC holding one plate: DEST is its cube. SRC holding several (a batch, even
    when ``--plates`` picks one of them): DEST is a prefix, and each plate goes
    to ``DEST/<plate>.zarr``.
    """
    src_options = options.storage_options
    check_location(src, src_options)  # fail fast on a bad endpoint or bucket
    names = _channel_map(options)
    table: PlateMeta | None = None
    if options.load_data:
        refs, indexes, table = _load_data_refs(src, options, names)
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
        groups = _select_plates(src, every, options.plates)
    batch = len(groups) > 1 or (not options.load_data and len(every) > 1)
    plans = []
    for folder, group in sorted(groups.items()):
        _check_one_plate(folder or src, group)
        plate_id = plate_location(group[0].url)["plate"] or "plate"
        target = join_url(dest, f"{plate_id}.zarr") if batch else dest
        own = [i for i in indexes if i.startswith(folder)]
        plan = _plan_plate(src, target, group, own, folder, names, options, table)
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
    src: str, groups: dict[str, list[ImageRef]], plates: tuple[str, ...] | None
) -> dict[str, list[ImageRef]]:
    if not plates:
        return groups
    wanted = set(plates)
    chosen = {k: v for k, v in groups.items() if plate_location(v[0].url)["plate"] in wanted}
    if not chosen:
        found = sorted(plate_location(v[0].url)["plate"] for v in groups.values())
        raise SourceNotFoundError(
            f"--plates {','.join(plates)}: none of them is under {src}, which holds "
            f"{', '.join(found)}. Check the plate ids."
        )
    return chosen


def _plan_plate(
    src: str,
    dest: str,
    refs: list[ImageRef],
    indexes: list[str],
    folder: str,
    names: dict[int, str],
    options: CellPaintingOptions,
    table: PlateMeta | None = None,
) -> IngestPlan:
    """The plan of one plate's cube (``table``: a LoadData table's metadata)."""
    src_options = options.storage_options
    shape, dtype = first_header([r.url for r in refs], options.on_error, src_options)
    if len(shape) != 2:
        raise InvalidImageError(
            f"{refs[0].url} has shape {shape}; Cell Painting images are 2-D (y, x). Give single-"
            "plane grayscale TIFFs."
        )
    meta = _metadata(refs, indexes, options, table)
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
        describe(shape, dtype),
    )
    return IngestPlan(
        source_format="cellpainting",
        src=src,
        dest=dest,
        template=template,
        encoding=_encoding(n_chan, shape, template, compressor(dtype, options.codec)),
        codec=options.codec,
        layout=PLATE_LAYOUT,
        tasks=tasks,
        group_depth=1,  # a well's fields share the thumbnail shard
        reader=read_block,
        context=ReadContext(
            src_options,
            (shape[0], shape[1]),
            dtype.str,
            n_chan,
            options.on_error,
        ),
        derived={THUMBNAIL: thumbnail},
        extras=extras,
        output=OmeOutput() if options.ome else None,
        attrs={
            cv.ATTR_KIND: KIND_PLATE,
            ATTR_INDEX: _index_entry(template),
            cv.ATTR_PROVENANCE: {
                "source_format": "cellpainting",
                "src": src if not is_local(src) else os.path.abspath(src),
                "index": meta.index_url,
                "n_images": len(refs),
                "software": f"cellcubes {cubes.__version__}",
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        },
    )


def _index_entry(template: Any) -> dict[str, Any]:
    """This plate's row in its batch's ``plates.csv``."""
    return {
        "file": "plates.csv",
        "row": {
            "plate": template.attrs.get("plate", ""),
            "batch": template.attrs.get("batch", ""),
            "source": template.attrs.get("source", ""),
            "wells": template.sizes["well"],
            "fields": template.sizes["field"],
            "channels": " ".join(str(c) for c in template["channel"].values),
        },
    }


def _encoding(
    n_chan: int, shape: tuple[int, ...], template: Any, codec: Any
) -> dict[str, dict[str, Any]]:
    return {
        IMAGES: {
            "chunks": (1, 1, 1, *shape),
            "shards": (1, 1, n_chan, *shape),
            "compressors": [codec],
        },
        THUMBNAIL: {  # one shard per well: written whole by the well's gather task
            "chunks": (1, 1, n_chan, *template[THUMBNAIL].shape[-2:]),
            "shards": (1, *template[THUMBNAIL].shape[1:]),
            "compressors": [codec],
        },
        **({ILLUM: {"chunks": (1, *shape)}} if ILLUM in template else {}),
    }


def _load_data_refs(
    src: str, options: CellPaintingOptions, names: dict[int, str]
) -> tuple[list[ImageRef], list[str], PlateMeta]:
    """Images and metadata from a LoadData table; ``names`` gets the table's channel names.

    A channel's number is the file name's (or the table's ChannelID); else the
    channel map's for its name; new names get new numbers.
    """
    url = str(options.load_data)
    table_options = resolve_storage_options(url, endpoint_url=options.endpoint_url)
    plates = list(options.plates) if options.plates else None
    storage = {**table_options, **options.storage_options}
    table = read_load_data(url, storage, plates, src, options.load_data_root)
    found_plates = sorted({im.plate for im in table.images})
    if len(found_plates) > 1:
        raise SchemaError(
            f"LoadData {url} names {len(found_plates)} plates ({', '.join(found_plates[:5])}…); a "
            "cube holds one plate. Pick one with --plates."
        )
    numbers = _channel_numbers(table, names)
    refs = [
        ImageRef(im.url, im.row, im.column, im.field, im.plane, numbers[(im.channel, im.number)])
        for im in table.images
    ]
    _check_one_plate(url, refs)
    table.meta.instrument = {
        numbers[(im.channel, im.number)]: table.instrument[im.channel]
        for im in table.images
        if im.channel in table.instrument
    }
    return refs, table.indexes, table.meta


def _channel_numbers(table: LoadData, names: dict[int, str]) -> dict[tuple[str, int | None], int]:
    """(name, number or None) -> the cube's channel number; ``names`` gets number -> name."""
    table_names: dict[int, str] = {}
    for im in table.images:
        if im.number is not None and table_names.setdefault(im.number, im.channel) != im.channel:
            raise SchemaError(
                f"LoadData {table.url} names channel {im.number} both {table_names[im.number]} "
                f"and {im.channel} (e.g. {im.url}). Fix the table: one name per channel number."
            )
    by_name = {name: number for number, name in names.items()}
    by_name.update({name: number for number, name in table_names.items()})
    out: dict[tuple[str, int | None], int] = {}
    for im in table.images:
        number = im.number if im.number is not None else by_name.get(im.channel)
        if number is None or table_names.setdefault(number, im.channel) != im.channel:
            number = max([*table_names, *names], default=0) + 1
            table_names[number] = im.channel
            by_name[im.channel] = number
        out[(im.channel, im.number)] = number
    names.update(table_names)
    return out


def _channel_map(options: CellPaintingOptions) -> dict[int, str]:
    url = options.channel_map
    storage = resolve_storage_options(url, endpoint_url=options.endpoint_url) if url else {}
    return read_channel_map(url, options.source, storage)


def _metadata(
    refs: list[ImageRef],
    indexes: list[str],
    options: CellPaintingOptions,
    table: PlateMeta | None = None,
) -> PlateMeta:
    """Plate id, batch and source from the keys; the rest from the Harmony index, if any.

    ``meta.index_url`` (named by the provenance) is set only when the index was applied.
    A LoadData table's metadata (``table``) fills what the index did not say.
    """
    where = plate_location(refs[0].url)
    meta = PlateMeta(plate=where["plate"], batch=where["batch"], source=where["source"])
    if indexes:
        _apply_index(read_index(indexes[0], options.storage_options), refs, meta)
    if table is not None:
        fill_from_table(meta, table, str(options.load_data))
    if options.pixel_size is not None:
        meta.pixel_size_um = options.pixel_size
    return meta


def _apply_index(index: HarmonyIndex, refs: list[ImageRef], meta: PlateMeta) -> None:
    """Metadata from ``index`` into ``meta``; see :func:`.harmony.apply_index`."""
    found = {
        posixpath.basename(r.url.replace("\\", "/")): (r.row, r.column, r.field, r.plane, r.channel)
        for r in refs
    }
    apply_index(index, found, meta)
