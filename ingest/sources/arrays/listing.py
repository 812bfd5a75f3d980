"""Listing an ``arrays`` SRC: which files are array files, in natural order.

One recursive listing of a local folder, ``s3://`` prefix or single file finds the
``.npy``/``.npz``/``.pt``/``.pth`` files (``sample_2`` before ``sample_10``), their
sizes, and the other files, which are reported and ignored.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from cubes.errors import SourceNotFoundError
from cubes.store import filesystem, is_local, storage_errors
from ingest.sources.arrays.formats import ARRAY_SUFFIXES, suffix

__all__ = ["ArrayListing", "list_array_files"]


@dataclass(frozen=True)
class ArrayListing:
    """What one recursive listing of SRC found.

    Attributes
    ----------
    src
        The SRC as given.
    files
        URLs of the array files, in natural order of their path under SRC.
    sizes
        Size in bytes of each array file, from the listing.
    ignored
        URLs of the other files (wrong suffix, or hidden: a name or folder starting with
        ``.``), for the report.
    """

    src: str
    files: tuple[str, ...]
    sizes: dict[str, int]
    ignored: tuple[str, ...]


def _natural_key(path: str) -> tuple[list[Any], str]:
    """Sort key putting ``sample_2`` before ``sample_10`` (ties broken by the raw path)."""
    parts = re.split(r"(\d+)", path)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], path


def _is_array_file(relative: str) -> bool:
    hidden = any(part.startswith(".") for part in relative.split("/"))
    return not hidden and suffix(relative) in ARRAY_SUFFIXES


def list_array_files(src: str, storage_options: dict[str, Any] | None = None) -> ArrayListing:
    """List the array files under ``src`` with one recursive listing.

    Parameters
    ----------
    src
        A local folder, a ``file://`` or ``s3://`` URL (a prefix), or one file.
    storage_options
        fsspec options for ``src`` (endpoint, ``anon``, ...).

    Returns
    -------
    ArrayListing
        ``.npy``/``.npz``/``.pt``/``.pth`` files in natural order, their sizes, and the
        other files found.

    Raises
    ------
    SourceNotFoundError
        ``src`` does not exist, or holds no array file.
    """
    fs, root = filesystem(src, storage_options)
    fs.invalidate_cache()  # a listing cached by an earlier run in this process is stale
    with storage_errors(src, storage_options):
        listing: dict[str, dict[str, Any]] = fs.find(root, detail=True)
    base = root.replace("\\", "/")
    rel = {p: posixpath.relpath(p.replace("\\", "/"), base) for p in listing}
    rel = {p: posixpath.basename(base) if r == "." else r for p, r in rel.items()}  # SRC: a file
    files: list[str] = []
    ignored: list[str] = []
    for path in sorted(listing, key=lambda p: _natural_key(rel[p])):
        (files if _is_array_file(rel[path]) else ignored).append(path)
    url = {p: p if is_local(src) else fs.unstrip_protocol(p) for p in listing}
    if not files:
        raise _no_array_files(src, [url[p] for p in ignored])
    return ArrayListing(
        src=src,
        files=tuple(url[p] for p in files),
        sizes={url[p]: int(listing[p].get("size") or 0) for p in files},
        ignored=tuple(url[p] for p in ignored),
    )


def _no_array_files(src: str, others: list[str]) -> SourceNotFoundError:
    if not others:
        return SourceNotFoundError(
            f"{src} does not exist (or is an empty folder). Check the path or URL, and the "
            "endpoint and bucket for s3:// sources."
        )
    examples = ", ".join(posixpath.basename(o.replace("\\", "/")) for o in others[:3])
    return SourceNotFoundError(
        f"{src} holds no .npy, .npz or .pt files ({len(others)} other files, e.g. {examples}). "
        "Point SRC at the folder of array files, or give the files one of the suffixes "
        f"{', '.join(ARRAY_SUFFIXES)}."
    )
