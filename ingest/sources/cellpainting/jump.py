"""Conventions of the JUMP Cell Painting data: channel maps and where things live in a bucket.

Reference: github.com/jump-cellpainting/datasets (metadata/channel_mapping.csv) and
github.com/broadinstitute/cellpainting-gallery (documentation/data_structure.md).

JUMP writes a source two ways: ``channel_mapping.csv`` names them ``1`` … ``15``, its
``microscope_config.csv`` and the bucket's keys ``source_1`` … ``source_15``. A source is
matched by its number, so ``4``, ``source_4``, ``Source_4`` and `` 4 `` are one source
(other names are compared as written, without surrounding spaces).

Two stains on one channel (source 15 images ER and RNA both in channel 2) stay both: the
channel is named by the stains joined with ``/`` in the map's column order (``ER/RNA``),
since that is what the microscope recorded, and a warning names the source and the stains.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import pandas as pd

from cubes.errors import SchemaError
from cubes.store import filesystem, storage_errors

__all__ = [
    "DEFAULT_SOURCE",
    "SOURCE4_CHANNELS",
    "plate_location",
    "read_channel_map",
    "source_key",
]

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "source_4"

# channel_mapping.csv, Metadata_Source == 4: Mito=1, AGP=2, RNA=3, ER=4, DNA=5,
# BFHighest=6, BFLowest=7, BFMedium=8. Brightfield planes get pe2loaddata's names.
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

# channel_mapping.csv column suffix -> the channel's name in cubes (pe2loaddata's names).
MAP_COLUMNS = {
    "DNA": "DNA",
    "ER": "ER",
    "RNA": "RNA",
    "AGP": "AGP",
    "Mito": "Mito",
    "BFLowest": "LowZBF",
    "BFMedium": "Brightfield",
    "BFHighest": "HighZBF",
}
_MAP_PREFIX = "Metadata_Channel_Num_"
_SOURCE_COLUMN = "Metadata_Source"
# "4", "source_4", "Source_4", "4.0" (a number column saved as floats) -> 4.
_SOURCE_NUMBER = re.compile(r"^(?:source_)?(\d+)(?:\.0*)?$", re.IGNORECASE)
_WHOLE_NUMBER = re.compile(r"^\+?(\d+)(?:\.0*)?$")
STAIN_SEPARATOR = "/"


def source_key(source: object) -> str:
    """The number of a JUMP source written ``N`` or ``source_N``; other names as written.

    Parameters
    ----------
    source
        A ``Metadata_Source`` value or a ``--source`` argument.

    Returns
    -------
    str
        ``"4"`` for ``4``, ``"4"``, ``" source_4 "``, ``"Source_4"`` or ``"4.0"``;
        any other name stripped of surrounding spaces; ``""`` for a missing value.

    Examples
    --------
    >>> source_key("source_4") == source_key(4) == "4"
    True
    """
    if source is None or (not isinstance(source, str) and pd.isna(source)):
        return ""
    text = str(source).strip()
    match = _SOURCE_NUMBER.match(text)
    return str(int(match.group(1))) if match else text


def read_channel_map(
    url: str | None, source: str | None, storage_options: dict[str, Any] | None = None
) -> dict[int, str]:
    """Channel number -> channel name for ``source``, from a channel_mapping.csv or built in.

    Parameters
    ----------
    url
        A CSV in JUMP's ``channel_mapping.csv`` format (``Metadata_Source`` plus
        ``Metadata_Channel_Num_<DNA|ER|RNA|AGP|Mito|BFLowest|BFMedium|BFHighest>``; other
        ``Metadata_Channel_Num_<Name>`` columns name their channel ``<Name>``), or ``None``
        for the built-in source_4 map.
    source
        The ``Metadata_Source`` row to use (default source_4), written ``4`` or
        ``source_4`` whichever way the file writes it.
    storage_options
        Options of the storage holding ``url``.

    Returns
    -------
    dict[int, str]
        Channel numbers in ascending order and their names; two stains on one channel
        are named together, ``ER/RNA``.

    Raises
    ------
    SchemaError
        No such source (the message lists the file's), a file not in that format, or a
        channel number that is not a whole number.
    """
    source = source or DEFAULT_SOURCE
    if url is None:
        if source_key(source) != source_key(DEFAULT_SOURCE):
            raise SchemaError(
                f"No built-in channel map for source '{source}' (only {DEFAULT_SOURCE}). Pass "
                "--channel-map with JUMP's channel_mapping.csv."
            )
        return dict(SOURCE4_CHANNELS)
    table = _read_map(url, storage_options)
    row = _source_row(table, url, source)
    return _row_channels(row, url, source)


def _read_map(url: str, storage_options: dict[str, Any] | None) -> pd.DataFrame:
    """The channel map table, every cell a string (or NaN), column names stripped."""
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options):
        table = pd.read_csv(io.BytesIO(fs.cat_file(path)), dtype=str)
    table.columns = [str(c).strip() for c in table.columns]
    if _SOURCE_COLUMN not in table.columns:
        raise SchemaError(
            f"Channel map {url} has no {_SOURCE_COLUMN} column; expected JUMP's "
            "channel_mapping.csv format (Metadata_Source, Metadata_Channel_Num_DNA, …)."
        )
    return table


def _source_row(table: pd.DataFrame, url: str, source: str) -> pd.Series:
    """The one row of ``source``, matched by number (``4`` = ``source_4``)."""
    keys = table[_SOURCE_COLUMN].map(source_key)
    rows = table[keys == source_key(source)]
    if rows.empty:
        raise SchemaError(
            f"Channel map {url} has no row for source '{source}' (it has "
            f"{_listing(table[_SOURCE_COLUMN])}). Pass --source with one of them; 4 and "
            "source_4 are the same source."
        )
    columns = [c for c in table.columns if c.startswith(_MAP_PREFIX)]
    if len(rows.drop_duplicates(subset=columns)) > 1:
        raise SchemaError(
            f"Channel map {url} has {len(rows)} different rows for source '{source}' "
            f"({', '.join(rows[_SOURCE_COLUMN].str.strip())}). Keep one of them."
        )
    return rows.iloc[0]


def _listing(sources: pd.Series) -> str:
    """The sources a map names, as written, in number order: ``1, 2, …, 15``."""
    written = {str(s).strip() for s in sources.dropna() if str(s).strip()}

    def order(name: str) -> tuple[int, int, str]:
        key = source_key(name)
        return (0, int(key), name) if key.isdigit() else (1, 0, name)

    return ", ".join(sorted(written, key=order)) or "none"


def _row_channels(row: pd.Series, url: str, source: str) -> dict[int, str]:
    """Channel number -> name from one row; stains sharing a channel are joined."""
    stains: dict[int, list[str]] = {}
    for column, value in row.items():
        stem = str(column)[len(_MAP_PREFIX) :]
        if not str(column).startswith(_MAP_PREFIX) or not stem:
            continue
        number = _channel_number(value, url, source, str(column))
        if number is not None:
            stains.setdefault(number, []).append(MAP_COLUMNS.get(stem, stem))
    if not stains:
        raise SchemaError(f"Channel map {url} names no channel for source '{source}'.")
    for number, names in stains.items():
        if len(names) > 1:
            logger.warning(
                "Channel map %s, source %s: channel %d holds %s; it is named %s",
                url,
                source,
                number,
                " and ".join(names),
                STAIN_SEPARATOR.join(names),
            )
    return {n: STAIN_SEPARATOR.join(stains[n]) for n in sorted(stains)}


def _channel_number(value: object, url: str, source: str, column: str) -> int | None:
    """A cell's channel number: ``5``, `` 5 `` or ``5.0`` -> 5; empty -> None."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    match = _WHOLE_NUMBER.match(text)
    if match is None or int(match.group(1)) < 1:
        raise SchemaError(
            f"Channel map {url}, source '{source}', column {column}: '{text}' is not a "
            "channel number (expected a whole number from 1, or an empty cell). Fix the file."
        )
    return int(match.group(1))


_BATCH = re.compile(r"^\d{4}_\d{2}_\d{2}_.+")
_SOURCE = re.compile(r"^source_\d+$")


def plate_location(url: str) -> dict[str, str]:
    """Plate id, batch and source named by an image's key, where the layout says them.

    ``…/source_4/images/2021_05_02_Batch1/images/BR00117035__2021-05-02T16_02_51-Measurement1/
    Images/r01c01f01p01-ch1sk1fk1fl1.tiff`` -> plate BR00117035, batch 2021_05_02_Batch1,
    source source_4. Folders ending in ``Measurement 1`` (with a space) count too.
    """
    parts = url.replace("\\", "/").split("/")
    out = {"plate": "", "batch": "", "source": ""}
    for part in parts:
        if "__" in part and re.search(r"Measurement ?\d+$", part):
            out["plate"] = part.split("__", 1)[0]
        elif _BATCH.match(part):
            out["batch"] = part
        elif _SOURCE.match(part):
            out["source"] = part
    return out
