"""Realistic synthetic Cell Painting plates, generated on the fly.

The public JUMP data cannot be downloaded everywhere (nor quickly), so the
project makes its own: Phenix/Harmony file names and folders, the source_4
channel numbering, uint16 TIFFs with cell-like content (nuclei in DNA, nucleoli
in RNA, perinuclear ER, punctate mitochondria, membranes in AGP, three
brightfield focus planes) and a CellProfiler ``load_data.csv`` as written by
pe2loaddata. Content is a pure function of the seed and the well/field, made by
:mod:`.synth_image` to look, and compress, like real Phenix images.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile

from cubes.store import filesystem, is_local, join_url, storage_errors
from ingest.progress import CountBar
from ingest.sources.base import ArgumentError
from ingest.sources.cellpainting.harmony import HarmonyImage, write_index
from ingest.sources.cellpainting.jump import SOURCE4_CHANNELS
from ingest.sources.cellpainting.plate import well_name
from ingest.sources.cellpainting.synth_image import synth_field

__all__ = ["JUMP_SIZE", "SynthPlate", "parse_wells", "synth_field", "write_synth_plate"]

logger = logging.getLogger(__name__)

JUMP_SIZE = 1080
PLATE_FORMATS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}
TIMESTAMP = "2021-05-02T16_02_51"
PIXEL_SIZE_M = 0.598e-6  # JUMP source_4 at binning 2
FIELD_SPACING_M = 700e-6

# Instrument channel name and main excitation/emission (nm) of each source_4 channel.
INSTRUMENT = {
    1: ("Alexa 647", 640, 706),
    2: ("Alexa 568", 561, 599),
    3: ("Alexa 488 long", 488, 601),
    4: ("Alexa 488", 488, 522),
    5: ("HOECHST 33342", 375, 456),
    6: ("Brightfield High", 0, 0),
    7: ("Brightfield Low", 0, 0),
    8: ("Brightfield", 0, 0),
}

# pe2loaddata's LoadData column stem for each source_4 channel name.
LOADDATA_NAMES = {name: f"Orig{name}" for name in SOURCE4_CHANNELS.values()}


@dataclass(frozen=True)
class SynthPlate:
    """Where a synthetic plate was written."""

    images_url: str
    load_data_url: str
    plate: str
    n_images: int


def parse_wells(spec: str, plate_format: int = 384) -> list[tuple[int, int]]:
    """Wells from ``"12"`` (the first 12, row by row) or ``"A01,B03"`` as (row, column), 1-based.

    Raises
    ------
    ArgumentError
        A count out of range, a name that is not a well of the plate, a well named twice.
    """
    rows, cols = PLATE_FORMATS[plate_format]
    if spec.strip().isdigit():
        count = int(spec)
        if not 1 <= count <= rows * cols:
            raise ArgumentError(
                f"--wells {spec}: a {plate_format}-well plate has 1 to {rows * cols} wells."
            )
        return [(i // cols + 1, i % cols + 1) for i in range(count)]
    wells: list[tuple[int, int]] = []
    for name in spec.split(","):
        match = re.fullmatch(r"([A-Z]{1,2})(\d{1,2})", name.strip().upper())
        if not match:
            raise ArgumentError(
                f"--wells: '{name}' is not a well name like A01 or AF48; give a count (12) or "
                "well names (A01,B03)."
            )
        row = 0
        for letter in match.group(1):
            row = row * 26 + ord(letter) - ord("A") + 1
        col = int(match.group(2))
        if not (1 <= row <= rows and 1 <= col <= cols):
            raise ArgumentError(f"--wells: {name} is outside a {plate_format}-well plate.")
        if (row, col) in wells:
            raise ArgumentError(
                f"--wells {spec}: {well_name(row, col)} is named twice; name it once."
            )
        wells.append((row, col))
    return wells


def write_synth_plate(
    dest: str,
    *,
    wells: list[tuple[int, int]],
    fields: int = 4,
    size: int = 256,
    seed: int = 0,
    plate: str = "SYNTH0001",
    plate_format: int = 384,
    measurement: str = "Measurement1",
    compression: str | None = None,
    storage_options: dict[str, Any] | None = None,
    threads: int = 4,
    progress: bool = False,
) -> SynthPlate:
    """Write a synthetic plate under ``dest`` (local path or URL).

    Layout: ``dest/<plate>__<timestamp>-<measurement>/Images/rRRcCCfFFp01-chNsk1fk1fl1.tiff``
    with ``Index.idx.xml`` beside the images, and ``dest/load_data.csv`` (its PathName
    relative to ``dest`` when local, a URL when remote).

    Parameters
    ----------
    wells
        (row, column) pairs, 1-based; see :func:`parse_wells`.
    fields
        Fields (sites) per well.
    size
        Image height and width in pixels (JUMP: 1080).
    measurement
        End of the plate folder's name (some JUMP plates have ``"Measurement 1"``).
    compression
        ``None`` (uncompressed, as most JUMP TIFFs) or ``"lzw"``.
    progress
        Show a progress bar of the fields written on stderr (:mod:`ingest.progress`).
    """
    options = storage_options or {}
    images_url = join_url(dest, f"{plate}__{TIMESTAMP}-{measurement}", "Images")
    fs, images_path = filesystem(images_url, options)
    if is_local(dest):
        os.makedirs(images_path, exist_ok=True)
    sites = [(r, c, f) for r, c in wells for f in range(1, fields + 1)]

    def make(site: tuple[int, int, int]) -> dict[str, bytes]:
        row, col, fld = site
        stack = synth_field(size, seed=seed, row=row, column=col, field=fld)
        return {
            join_url(images_path, _image_name(row, col, fld, ch)): _tiff_bytes(img, compression)
            for ch, img in zip(SOURCE4_CHANNELS, stack, strict=True)
        }

    with (
        storage_errors(dest, options),
        ThreadPoolExecutor(threads) as pool,
        CountBar(len(sites), enabled=progress) as bar,
    ):
        for files in pool.map(make, sites):
            fs.pipe(files)
            bar.advance()
    index = _harmony_index(plate, plate_format, sites, fields)
    with storage_errors(dest, options):
        fs.pipe_file(join_url(images_path, "Index.idx.xml"), index)
    load_data_url = join_url(dest, "load_data.csv")
    # Local tables name the images relative to the table's folder (a relative DEST stays
    # valid from any working directory); remote ones by URL.
    folder = f"{plate}__{TIMESTAMP}-{measurement}/Images"
    path_name = folder if is_local(dest) else images_url
    with storage_errors(dest, options):
        fs.pipe_file(filesystem(load_data_url, options)[1], _load_data(path_name, plate, sites))
    logger.info("Wrote %d images of plate %s to %s", len(sites) * 8, plate, images_url)
    return SynthPlate(images_url, load_data_url, plate, len(sites) * len(SOURCE4_CHANNELS))


def _harmony_index(
    plate: str, plate_format: int, sites: list[tuple[int, int, int]], fields: int
) -> bytes:
    side = int(np.ceil(np.sqrt(fields)))
    images = []
    for row, col, fld in sites:
        gy, gx = divmod(fld - 1, side)
        for ch, (name, ex, em) in INSTRUMENT.items():
            images.append(
                HarmonyImage(
                    name=_image_name(row, col, fld, ch),
                    row=row,
                    column=col,
                    field=fld,
                    plane=1,
                    channel=ch,
                    channel_name=name,
                    excitation_nm=ex,
                    emission_nm=em,
                    resolution_x_m=PIXEL_SIZE_M,
                    resolution_y_m=PIXEL_SIZE_M,
                    position_x_m=(gx - (side - 1) / 2) * FIELD_SPACING_M,
                    position_y_m=(gy - (side - 1) / 2) * FIELD_SPACING_M,
                )
            )
    rows, cols = PLATE_FORMATS[plate_format]
    return write_index(plate, rows, cols, images)


def _image_name(row: int, column: int, field: int, channel: int) -> str:
    return f"r{row:02d}c{column:02d}f{field:02d}p01-ch{channel}sk1fk1fl1.tiff"


def _tiff_bytes(image: np.ndarray, compression: str | None) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, image, photometric="minisblack", compression=compression)
    return buf.getvalue()


def _load_data(images_url: str, plate: str, sites: list[tuple[int, int, int]]) -> bytes:
    """A pe2loaddata-style LoadData CSV: FileName_/PathName_ per channel, then Metadata_."""
    header = []
    for name in SOURCE4_CHANNELS.values():
        header += [f"FileName_{LOADDATA_NAMES[name]}", f"PathName_{LOADDATA_NAMES[name]}"]
    header += ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Row", "Metadata_Col"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row, col, fld in sites:
        line: list[Any] = []
        for ch in SOURCE4_CHANNELS:
            line += [_image_name(row, col, fld, ch), images_url]
        line += [plate, well_name(row, col), fld, row, col]
        writer.writerow(line)
    return out.getvalue().encode()
