"""CellProfiler LoadData tables (``load_data.csv`` / ``.parquet``, as pe2loaddata writes them).

One row per site: ``FileName_Orig<Ch>`` and ``PathName_Orig<Ch>`` per channel,
``Metadata_Plate``, ``Metadata_Well`` (``A01``), ``Metadata_Site``, then optional
``Metadata_*`` (checked on pe2loaddata's own test tables, Version1/5/7 and the
Cell Painting Gallery one):

- ``Metadata_PositionX/Y`` (the field's stage position) and
  ``Metadata_ImageResolutionX`` (the pixel size) are in metres, as in the
  Harmony index; the cube gets µm.
- Per channel ``Metadata_ChannelID_Orig<Ch>``, ``Metadata_ChannelName_Orig<Ch>``,
  ``Metadata_MainExcitationWavelength_Orig<Ch>`` and
  ``…MainEmissionWavelength_Orig<Ch>`` (nm). Older tables (the Gallery's) have one
  unsuffixed ``Metadata_ChannelID``/``ChannelName``/… per row: the last channel's
  values, so they describe only the channel of that number.

The channel's *name* is the ``<Ch>`` of its column; its *number* (the instrument
channel) is the N of a file named ``rRRcCCfFFpPP-chN…``, else the table's
``Metadata_ChannelID_Orig<Ch>``, else (in planning) the channel map's. Two columns
naming one file (JUMP source 15 images ER and RNA in one channel) are one channel
named by both, ``ER/RNA`` (as :mod:`.jump` names it), with a warning; two columns
naming different files with one channel number are a :class:`SchemaError`.

Where a ``PathName`` points, in this order:

1. a URL (``s3://…``) or an absolute path: as it is;
2. with ``--load-data-root`` (CellProfiler's base folder): relative to that root;
3. when SRC or the table is remote: a key inside SRC's bucket, else the table's
   bucket (the Gallery's tables: ``cpg0001-…/source_4/images/…``); a path whose
   first part is itself the bucket (``bucket/key``, as some JUMP tables write it)
   is taken so only when the bucket-relative key does not exist and that one does
   (one existence check per distinct PathName, not per image);
4. else relative to the table's folder (``synth-plate`` writes such tables).
"""

from __future__ import annotations

import io
import logging
import math
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from cubes.errors import SchemaError, SourceNotFoundError
from cubes.store import filesystem, is_local, join_url, storage_errors
from ingest.sources.cellpainting.jump import MAP_COLUMNS, STAIN_SEPARATOR
from ingest.sources.cellpainting.plate import PlateMeta, well_name

__all__ = ["LoadData", "LoadDataImage", "fill_from_table", "read_load_data", "resolve_folder"]

logger = logging.getLogger(__name__)

_FILE = "FileName_Orig"
_PATH = "PathName_Orig"
_META = "Metadata_"
_WELL = re.compile(r"^([A-Z]{1,2})(\d{1,2})$")
_INSTRUMENT = ("ChannelName", "MainExcitationWavelength", "MainEmissionWavelength")


@dataclass(frozen=True)
class LoadDataImage:
    """One image named by a LoadData row (one file, even when two columns name it)."""

    url: str
    plate: str
    row: int
    column: int
    field: int
    channel: str  # the <Ch> of FileName_Orig<Ch> (DNA, …, Brightfield), or stains joined: ER/RNA
    number: int | None  # chN of the file name, else Metadata_ChannelID_Orig<Ch>; None: neither
    plane: int = 1


@dataclass
class LoadData:
    """What a LoadData table says: its images, the indexes beside them, and the metadata.

    ``meta`` holds the plate id, pixel size and field positions; ``instrument``
    maps a channel name to (instrument channel name, excitation nm, emission nm).
    """

    url: str
    images: list[LoadDataImage]
    indexes: list[str]
    meta: PlateMeta
    instrument: dict[str, tuple[str, float, float]] = field(default_factory=dict)


def read_load_data(
    url: str,
    storage_options: dict[str, Any],
    plates: list[str] | None = None,
    src: str = "",
    root: str | None = None,
) -> LoadData:
    """The images a LoadData table names (optionally of some plates only), checked to exist.

    Parameters
    ----------
    url
        The table (CSV or Parquet), a path or URL.
    storage_options
        fsspec options for the table, SRC and the images.
    plates
        Keep the rows of these ``Metadata_Plate`` values only.
    src
        SRC of the run: a remote SRC makes bucket-relative PathNames keys in its bucket.
    root
        ``--load-data-root``: the folder relative PathNames start from.

    Returns
    -------
    LoadData
        The images, the Harmony index files found beside them, and the table's metadata.

    Raises
    ------
    SchemaError
        A malformed table; SourceNotFoundError: an image it names does not exist.
    """
    table = _read_table(url, storage_options)
    channels = _channels(url, table)
    if plates and "Metadata_Plate" in table.columns:
        table = table[table["Metadata_Plate"].astype(str).isin(plates)]

    def exists(folder: str) -> bool:
        try:
            fs, path = filesystem(folder, storage_options)
            return bool(fs.exists(path))
        except (OSError, ValueError):  # no such bucket, or not ours: not this candidate
            return False

    resolve = _memo(lambda p: resolve_folder(p, url, src, root, exists))
    out = LoadData(url, [], [], PlateMeta())
    merged: set[str] = set()
    for rec in table.to_dict("records"):
        site = _site_images(url, rec, channels, resolve)
        merged.update(im.channel for im in site if STAIN_SEPARATOR in im.channel)
        _row_meta(rec, site, out)
        out.images += site
    for name in sorted(merged):
        logger.warning(
            "LoadData %s names one file for the stains %s: they are one channel, named %s",
            url,
            ", ".join(name.split(STAIN_SEPARATOR)),
            name,
        )
    if not out.images:
        raise SourceNotFoundError(
            f"LoadData {url} names no images{' of plates ' + ', '.join(plates) if plates else ''}."
            " Check the table, or --plates."
        )
    out.indexes = _check_exist(url, out.images, storage_options)
    return out


def resolve_folder(
    path_name: str, table_url: str, src: str, root: str | None, exists: Callable[[str], bool]
) -> str:
    """Where a table's ``PathName`` points (the order is in the module docstring).

    ``exists`` says whether a folder URL exists (called for remote tables only).
    Example: ``resolve_folder("cpg0001-x/Images", "s3://cellpainting-gallery/t.csv",
    "", None, exists)`` is ``s3://cellpainting-gallery/cpg0001-x/Images``.
    """
    path_name = path_name.strip().rstrip("/")
    if "://" in path_name or posixpath.isabs(path_name) or re.match(r"^[A-Za-z]:[\\/]", path_name):
        return path_name
    if root:
        return join_url(root, path_name)
    remote = [u for u in (src, table_url) if u and not is_local(u)]
    if not remote:
        return join_url(posixpath.dirname(table_url) or ".", path_name)
    candidates = [f"{_bucket(u)}/{path_name}" for u in remote]
    candidates.append(f"{remote[0].split('://', 1)[0]}://{path_name}")  # bucket/key
    return next((c for c in dict.fromkeys(candidates) if exists(c)), candidates[0])


def fill_from_table(meta: PlateMeta, table: PlateMeta, table_url: str) -> None:
    """Fill what the index (already in ``meta``) did not say from the LoadData table's metadata.

    The index wins where both say something; a different pixel size is a warning.
    """
    meta.plate = meta.plate or table.plate
    for number, info in table.instrument.items():
        meta.instrument.setdefault(number, info)
    for key, pos in table.positions.items():
        meta.positions.setdefault(key, pos)
    if meta.pixel_size_um is None:
        meta.pixel_size_um = table.pixel_size_um
    elif table.pixel_size_um is not None and not math.isclose(
        meta.pixel_size_um, table.pixel_size_um, rel_tol=1e-6
    ):
        logger.warning(
            "LoadData %s gives a pixel size of %.6g µm, the index %s gives %.6g µm: the index's is "
            "used (pass --pixel-size to choose)",
            table_url,
            table.pixel_size_um,
            meta.index_url,
            meta.pixel_size_um,
        )


def _bucket(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _memo(func: Callable[[str], str]) -> Callable[[str], str]:
    cache: dict[str, str] = {}
    return lambda key: cache[key] if key in cache else cache.setdefault(key, func(key))


def _cell(rec: dict[str, Any], column: str) -> str | None:
    value = rec.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _number(rec: dict[str, Any], column: str) -> float:
    text = _cell(rec, column)
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _site(url: str, rec: dict[str, Any]) -> tuple[str, int, int, int]:
    """(plate, row, column, field) of a row."""
    well = (_cell(rec, "Metadata_Well") or "").upper()
    match = _WELL.match(well)
    if not match:
        raise SchemaError(f"LoadData {url}: Metadata_Well '{well}' is not a well like A01.")
    row = 0
    for letter in match.group(1):
        row = row * 26 + ord(letter) - ord("A") + 1
    site = _cell(rec, "Metadata_Site") or ""
    if not site.isdigit():
        raise SchemaError(f"LoadData {url}: Metadata_Site '{site}' is not a site number like 1.")
    return _cell(rec, "Metadata_Plate") or "", row, int(match.group(2)), int(site)


def _site_images(
    url: str, rec: dict[str, Any], channels: list[str], resolve: Callable[[str], str]
) -> list[LoadDataImage]:
    """The images of one row: one per file; a channel number names one file only."""
    plate, row, column, fld = _site(url, rec)
    by_file: dict[str, list[str]] = {}
    for channel in channels:
        folder = resolve(_cell(rec, f"{_PATH}{channel}") or "")
        by_file.setdefault(join_url(folder, _cell(rec, f"{_FILE}{channel}") or ""), []).append(
            channel
        )
    images: list[LoadDataImage] = []
    for file, names in by_file.items():
        number, plane = _channel_number(url, rec, file, names)
        clash = next((im for im in images if number is not None and im.number == number), None)
        if clash is not None:
            raise SchemaError(
                f"LoadData {url}: well {well_name(row, column)}, site {fld} names two files "
                f"for channel {number}: {clash.url} ({clash.channel}) and {file} "
                f"({STAIN_SEPARATOR.join(names)}). Fix the table: one channel, one file."
            )
        name = STAIN_SEPARATOR.join(names)
        images.append(LoadDataImage(file, plate, row, column, fld, name, number, plane))
    return images


def _channel_number(
    url: str, rec: dict[str, Any], file: str, names: list[str]
) -> tuple[int | None, int]:
    """(channel number, plane) of a file: from its name, else Metadata_ChannelID_Orig<Ch>."""
    from ingest.sources.cellpainting.planning import IMAGE_NAME

    match = IMAGE_NAME.match(posixpath.basename(file.replace("\\", "/")))
    number = int(match.group("channel")) if match else None
    for name in names:
        said = _number(rec, f"{_META}ChannelID_Orig{name}")
        if math.isnan(said):
            continue
        if number is None:
            number = int(said)
        elif said != number:
            raise SchemaError(
                f"LoadData {url}: {_META}ChannelID_Orig{name} is {int(said)}, but its file "
                f"{file} is named channel {number} (-ch{number}). Fix the table or the file name."
            )
    return number, int(match.group("plane")) if match else 1


def _row_meta(rec: dict[str, Any], site: list[LoadDataImage], out: LoadData) -> None:
    """Plate id, pixel size, the field's position and the channels' instrument from a row."""
    if not site:
        return
    first = site[0]
    out.meta.plate = out.meta.plate or first.plate
    resolution = _number(rec, f"{_META}ImageResolutionX")
    if out.meta.pixel_size_um is None and math.isfinite(resolution) and resolution > 0:
        out.meta.pixel_size_um = resolution * 1e6
    x, y = _number(rec, f"{_META}PositionX"), _number(rec, f"{_META}PositionY")
    if math.isfinite(x) and math.isfinite(y):
        out.meta.positions[(first.row, first.column, first.field)] = (x * 1e6, y * 1e6)
    for image in site:
        for stain in image.channel.split(STAIN_SEPARATOR):
            info = _instrument(rec, f"_Orig{stain}")
            if info is not None:
                out.instrument.setdefault(image.channel, info)
    said = _number(rec, f"{_META}ChannelID")  # the Gallery's: one channel's values per row
    info = _instrument(rec, "")
    for image in site:
        if info is not None and image.number is not None and image.number == said:
            out.instrument.setdefault(image.channel, info)


def _instrument(rec: dict[str, Any], suffix: str) -> tuple[str, float, float] | None:
    name, excitation, emission = (f"{_META}{what}{suffix}" for what in _INSTRUMENT)
    if _cell(rec, name) is None:
        return None
    return str(_cell(rec, name)), _number(rec, excitation), _number(rec, emission)


def _read_table(url: str, storage_options: dict[str, Any]) -> pd.DataFrame:
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options):
        data = fs.cat_file(path)
    try:
        if url.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data), dtype=str)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types
        raise SchemaError(
            f"Cannot read LoadData {url} ({type(exc).__name__}: {exc}). Give a CSV or Parquet "
            "table as written by pe2loaddata."
        ) from exc


def _channels(url: str, table: pd.DataFrame) -> list[str]:
    """The table's channels, in the channel map's order (DNA, ER, RNA, …), then by name."""
    files = {c[len(_FILE) :] for c in table.columns if c.startswith(_FILE)}
    paths = {c[len(_PATH) :] for c in table.columns if c.startswith(_PATH)}
    if not files:
        raise SchemaError(
            f"LoadData {url} has no FileName_Orig<Channel> columns; expected pe2loaddata's "
            "FileName_OrigDNA/PathName_OrigDNA … per channel."
        )
    for channel in sorted(files ^ paths):
        missing = f"{_PATH}{channel}" if channel in files else f"{_FILE}{channel}"
        raise SchemaError(
            f"LoadData {url} has no {missing} column for channel {channel}: every channel needs "
            f"both {_FILE}{channel} and {_PATH}{channel}. Fix the table's header."
        )
    for column in ("Metadata_Well", "Metadata_Site"):
        if column not in table.columns:
            raise SchemaError(
                f"LoadData {url} has no {column} column; pe2loaddata tables have Metadata_Plate, "
                "Metadata_Well and Metadata_Site. Regenerate the table, or add the column."
            )
    order = list(MAP_COLUMNS.values())
    return sorted(files, key=lambda c: (order.index(c) if c in order else len(order), c))


def _check_exist(url: str, images: list[LoadDataImage], options: dict[str, Any]) -> list[str]:
    """One listing per folder (no request per file); name the first image that is not there.

    Returns the Harmony index files seen in those folders.
    """
    from ingest.sources.cellpainting.harmony import INDEX_NAMES

    folders: dict[str, set[str]] = {}
    for image in images:
        folders.setdefault(posixpath.dirname(image.url), set())
    for folder in folders:
        fs, path = filesystem(folder, options)
        with storage_errors(folder, options):
            listing = fs.find(path, maxdepth=1) if fs.exists(path) else []
        folders[folder] = {posixpath.basename(p.replace("\\", "/")) for p in listing}
    for image in images:
        if posixpath.basename(image.url) not in folders[posixpath.dirname(image.url)]:
            raise SourceNotFoundError(
                f"LoadData {url} names {image.url} (well {well_name(image.row, image.column)}, "
                f"site {image.field}, {image.channel}), which does not exist. Fix the table's "
                "PathName/FileName or the missing image; for paths relative to another folder "
                "than the table's, pass --load-data-root."
            )
    return [join_url(f, n) for f, names in folders.items() for n in INDEX_NAMES if n in names]
