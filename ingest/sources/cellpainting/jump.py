"""Conventions of the JUMP Cell Painting data: channel maps and where things live in a bucket.

Reference: github.com/jump-cellpainting/datasets (metadata/channel_mapping.csv) and
github.com/broadinstitute/cellpainting-gallery (documentation/data_structure.md).
"""

from __future__ import annotations

import io
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
]

DEFAULT_SOURCE = "source_4"

# channel_mapping.csv, Metadata_Source == source_4: Mito=1, AGP=2, RNA=3, ER=4, DNA=5,
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


def read_channel_map(
    url: str | None, source: str | None, storage_options: dict[str, Any] | None = None
) -> dict[int, str]:
    """Channel number -> channel name for ``source``, from a channel_mapping.csv or built in.

    Parameters
    ----------
    url
        A CSV in JUMP's ``channel_mapping.csv`` format (``Metadata_Source`` plus
        ``Metadata_Channel_Num_<DNA|ER|RNA|AGP|Mito|BFLowest|BFMedium|BFHighest>``),
        or ``None`` for the built-in source_4 map.
    source
        The ``Metadata_Source`` row to use (default source_4).
    """
    source = source or DEFAULT_SOURCE
    if url is None:
        if source != DEFAULT_SOURCE:
            raise SchemaError(
                f"No built-in channel map for {source} (only {DEFAULT_SOURCE}). Pass "
                "--channel-map with JUMP's channel_mapping.csv."
            )
        return dict(SOURCE4_CHANNELS)
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options):
        table = pd.read_csv(io.BytesIO(fs.cat_file(path)), dtype=str)
    if "Metadata_Source" not in table.columns:
        raise SchemaError(
            f"Channel map {url} has no Metadata_Source column; expected JUMP's "
            "channel_mapping.csv format (Metadata_Source, Metadata_Channel_Num_DNA, …)."
        )
    rows = table[table["Metadata_Source"] == source]
    if rows.empty:
        raise SchemaError(
            f"Channel map {url} has no row for source '{source}' (it has "
            f"{sorted(table['Metadata_Source'].dropna().unique())}). Pass --source with one of "
            "them."
        )
    mapping: dict[int, str] = {}
    for column in table.columns:
        if not column.startswith(_MAP_PREFIX):
            continue
        stem = column[len(_MAP_PREFIX) :]
        value = rows.iloc[0][column]
        if pd.isna(value) or not str(value).strip():
            continue
        mapping[int(float(value))] = MAP_COLUMNS.get(stem, stem)
    if not mapping:
        raise SchemaError(f"Channel map {url} names no channel for source '{source}'.")
    return mapping


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
