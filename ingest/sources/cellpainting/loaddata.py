"""CellProfiler LoadData tables (``load_data.csv`` / ``.parquet``, as pe2loaddata writes them).

One row per site: ``FileName_Orig<Ch>`` and ``PathName_Orig<Ch>`` per channel,
``Metadata_Plate``, ``Metadata_Well`` (``A01``), ``Metadata_Site``, then optional
``Metadata_*``. PathName values may be local folders (absolute, or relative to
the table), ``s3://`` URLs, or bucket/key paths without a scheme.
"""

from __future__ import annotations

import io
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cubes.errors import SchemaError, SourceNotFoundError
from cubes.store import filesystem, is_local, join_url, storage_errors

__all__ = ["LoadDataImage", "read_load_data"]

_FILE = "FileName_Orig"
_PATH = "PathName_Orig"
_WELL = re.compile(r"^([A-Z]{1,2})(\d{1,2})$")


@dataclass(frozen=True)
class LoadDataImage:
    """One image named by a LoadData row."""

    url: str
    plate: str
    row: int
    column: int
    field: int
    channel: str  # the <Ch> of FileName_Orig<Ch>: DNA, ER, …, Brightfield, HighZBF, LowZBF


def read_load_data(
    url: str, storage_options: dict[str, Any], plates: list[str] | None = None, src: str = ""
) -> tuple[list[LoadDataImage], list[str]]:
    """The images a LoadData table names (optionally of some plates only), checked to exist.

    A PathName without a scheme is a bucket/key path when the table or ``src`` is
    remote (JUMP's tables), else a folder relative to the table. Returns the
    images and the Harmony index files found beside them.
    """
    table = _read_table(url, storage_options)
    channels = _channels(url, table)
    for column in ("Metadata_Well", "Metadata_Site"):
        if column not in table.columns:
            raise SchemaError(
                f"LoadData {url} has no {column} column; pe2loaddata tables have Metadata_Plate, "
                "Metadata_Well and Metadata_Site. Regenerate the table, or add the column."
            )
    if plates and "Metadata_Plate" in table.columns:
        table = table[table["Metadata_Plate"].astype(str).isin(plates)]
    images = []
    for _, row in table.iterrows():
        well = str(row["Metadata_Well"]).strip().upper()
        match = _WELL.match(well)
        if not match:
            raise SchemaError(f"LoadData {url}: Metadata_Well '{well}' is not a well like A01.")
        r = 0
        for letter in match.group(1):
            r = r * 26 + ord(letter) - ord("A") + 1
        for channel in channels:
            folder = _folder(str(row[f"{_PATH}{channel}"]), url, src)
            images.append(
                LoadDataImage(
                    url=join_url(folder, str(row[f"{_FILE}{channel}"])),
                    plate=str(row.get("Metadata_Plate", "")),
                    row=r,
                    column=int(match.group(2)),
                    field=int(str(row["Metadata_Site"]).strip()),
                    channel=channel,
                )
            )
    if not images:
        raise SourceNotFoundError(
            f"LoadData {url} names no images{' of plates ' + ', '.join(plates) if plates else ''}."
            " Check the table, or --plates."
        )
    return images, _check_exist(url, images, storage_options)


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
    return sorted(files)


def _folder(path_name: str, table_url: str, src: str) -> str:
    path_name = path_name.strip().rstrip("/")
    if "://" in path_name or posixpath.isabs(path_name):
        return path_name
    for remote in (table_url, src):
        if remote and not is_local(remote):  # a bucket/key path, written without its scheme
            return f"{remote.split('://', 1)[0]}://{path_name}"
    return join_url(posixpath.dirname(table_url), path_name)


def _check_exist(url: str, images: list[LoadDataImage], options: dict[str, Any]) -> list[str]:
    """One listing per folder (no request per file); name the first image that is not there.

    Returns the Harmony index files seen in those folders.
    """
    from ingest.sources.cellpainting.harmony import INDEX_NAMES
    from ingest.sources.cellpainting.plate import well_name

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
                "PathName/FileName, or the missing image."
            )
    return [join_url(f, n) for f, names in folders.items() for n in INDEX_NAMES if n in names]
