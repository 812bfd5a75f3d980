"""Realistic synthetic Cell Painting plates, generated on the fly.

The public JUMP data cannot be downloaded everywhere (nor quickly), so the
project makes its own: Phenix/Harmony file names and folders, the source_4
channel numbering, uint16 TIFFs with cell-like content (nuclei in DNA, nucleoli
in RNA, perinuclear ER, punctate mitochondria, membranes in AGP, three
brightfield focus planes) and a CellProfiler ``load_data.csv`` as written by
pe2loaddata. Content is a pure function of the seed and the well/field.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import tifffile

from cubes.store import filesystem, is_local, join_url, storage_errors
from ingest.sources.base import ArgumentError
from ingest.sources.cellpainting.harmony import HarmonyImage, write_index
from ingest.sources.cellpainting.jump import SOURCE4_CHANNELS
from ingest.sources.cellpainting.plate import well_name

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

    with storage_errors(dest, options), ThreadPoolExecutor(threads) as pool:
        for files in pool.map(make, sites):
            fs.pipe(files)
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


# --- image content ----------------------------------------------------------------------


def synth_field(size: int, *, seed: int, row: int, column: int, field: int) -> np.ndarray:
    """The 8 channels of one field as ``(8, size, size)`` uint16, in channel-number order."""
    rng = np.random.default_rng([seed, row, column, field])
    cells = list(_cells(rng, size))
    nuclei = np.zeros((size, size), np.float32)
    cyto = np.zeros((size, size), np.float32)
    nucleoli = np.zeros((size, size), np.float32)
    for cy, cx, r_nuc, r_cell, angle, bright in cells:
        _stamp(nuclei, cy, cx, r_nuc, r_nuc * 0.8, angle, bright)
        _stamp(cyto, cy, cx, r_cell, r_cell * 0.75, angle + 0.3, 1.0)
        for _ in range(rng.integers(1, 4)):
            dy, dx = rng.normal(0, r_nuc * 0.35, 2)
            _stamp(nucleoli, cy + dy, cx + dx, r_nuc * 0.22, r_nuc * 0.2, 0.0, 1.0)
    cyto = np.clip(cyto - (nuclei > 0) * 0.6, 0, 1)
    membrane = np.clip(_blur(cyto, 1.0) - _blur(cyto, 3.0), 0, None) * 4
    texture = _blur(rng.random((size, size), dtype=np.float32), 1.2)
    texture = (texture - texture.min()) / (np.ptp(texture) + 1e-6)
    puncta = _blur((rng.random((size, size)) > 0.97).astype(np.float32), 0.8) * 6
    perinuclear = np.clip(_blur(nuclei > 0, 6.0) * cyto * 2.0, 0, 1)
    signals = {
        "Mito": cyto * (0.3 + puncta * texture),
        "AGP": membrane + 0.25 * cyto * texture,
        "RNA": 0.35 * cyto * texture + 0.5 * _blur(nuclei, 1.0) / 3 + 1.5 * nucleoli,
        "ER": perinuclear * (0.4 + 0.8 * texture),
        "DNA": _blur(nuclei, 1.5) * (0.75 + 0.25 * texture),
    }
    gains = {"Mito": 6000, "AGP": 5000, "RNA": 4000, "ER": 7000, "DNA": 12000}
    bf_edges = _blur(cyto, 2.0) - _blur(cyto, 5.0)
    out = np.empty((len(SOURCE4_CHANNELS), size, size), np.uint16)
    for i, name in enumerate(SOURCE4_CHANNELS.values()):
        if name in signals:
            mean = 400 + gains[name] * _blur(signals[name], 0.7)
        else:  # brightfield planes: bright background, cell edges at three focus depths
            focus = {"HighZBF": 3.0, "LowZBF": 2.0, "Brightfield": 0.6}[name]
            mean = 9000 + 4000 * _blur(bf_edges, focus) + 300 * texture
        out[i] = np.clip(rng.poisson(np.maximum(mean, 0)), 0, 65535)
    return out


def _cells(rng: np.random.Generator, size: int) -> Iterator[tuple[float, ...]]:
    """Random cells: centre, nucleus and cell radii (px at 0.6 µm), angle, DNA brightness."""
    for _ in range(max(1, rng.poisson(size * size / 5500))):
        r_nuc = rng.uniform(6, 11)
        yield (
            rng.uniform(0, size),
            rng.uniform(0, size),
            r_nuc,
            r_nuc * rng.uniform(2.0, 3.2),
            rng.uniform(0, np.pi),
            rng.uniform(0.6, 1.0),
        )


def _stamp(
    image: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float, value: float
) -> None:
    """Add a filled rotated ellipse (max with what is there) to ``image`` in place."""
    reach = int(np.ceil(max(ry, rx))) + 1
    y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, image.shape[0])
    x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, image.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    inside = ((dy * cos + dx * sin) / ry) ** 2 + ((dx * cos - dy * sin) / rx) ** 2 <= 1.0
    region = image[y0:y1, x0:x1]
    np.maximum(region, inside * np.float32(value), out=region)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur by FFT (periodic edges), float32."""
    spectrum = np.fft.rfft2(image.astype(np.float32))
    return np.fft.irfft2(spectrum * _gaussian_transfer(image.shape, sigma), s=image.shape).astype(
        np.float32
    )


@lru_cache(maxsize=32)
def _gaussian_transfer(shape: tuple[int, int], sigma: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2)).astype(np.float32)
