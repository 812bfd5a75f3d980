"""Where a recipe keeps its work under DEST: names starting with ``_``, which readers skip.

::

    DEST/_recipe/manifest.json        provenance: recipe SHA-256, function, source fingerprint
    DEST/_recipe/done/<unit>.arrow    a unit's table (Arrow IPC, its coords as first columns)
    DEST/_recipe/done/<unit>.npz      a unit's arrays
    DEST/_recipe/done/<unit>.absent   a unit the cube's mask says is absent (empty)
    DEST/_recipe/failed/<unit>.json   a unit that raised under --on-error skip, with the error
    DEST/_recipe/report.json          written last by finalize: the merged outputs are complete

The unit's result is its done marker: one object per unit, so a unit costs
one PUT (measured: a separate marker object cost a second PUT per unit, 0.6x
the plain loop's throughput on S3). pyarrow skips paths starting with ``_`` or
``.``, so ``pandas.read_parquet(DEST)`` reads only the merged table; Zarr reads
only what its consolidated metadata names. Every object is written whole
(local files are written aside, then renamed; an S3 PUT is atomic), so a job
killed at any moment never leaves a unit that looks done but is not.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cubes.store import filesystem, is_local, join_url, storage_errors

__all__ = ["RecipeDest"]

WORK = "_recipe"


@dataclass(frozen=True)
class RecipeDest:
    """DEST and its storage options: the recipe's work and outputs there."""

    url: str
    options: dict[str, Any]

    def key(self, *parts: str) -> str:
        """The URL of ``_recipe/<parts>``."""
        return join_url(self.url, WORK, *parts)

    def put(self, url: str, data: bytes) -> None:
        """Write ``data`` whole at ``url`` (aside then renamed locally; one PUT on S3)."""
        fs, path = filesystem(url, self.options)
        with storage_errors(url, self.options):
            if is_local(url):
                fs.pipe_file(path + ".partial", data)
                os.replace(path + ".partial", path)
            else:
                fs.pipe_file(path, data)

    def put_json(self, url: str, value: Any) -> None:
        self.put(url, json.dumps(value, default=str, indent=1).encode())

    def get(self, url: str) -> bytes | None:
        """The bytes at ``url``, or None if there is nothing."""
        fs, path = filesystem(url, self.options)
        with storage_errors(url, self.options):
            try:
                data: bytes = fs.cat_file(path)
            except FileNotFoundError:
                return None
        return data

    def get_json(self, url: str) -> Any:
        data = self.get(url)
        return None if data is None else json.loads(data)

    def get_many(self, urls: Iterable[str]) -> dict[str, bytes]:
        """Several objects at once (concurrent GETs on S3), keyed by URL."""
        urls = list(urls)
        if not urls:
            return {}
        fs, _ = filesystem(urls[0], self.options)
        paths = {filesystem(u, self.options)[1]: u for u in urls}
        with storage_errors(self.url, self.options):
            found = fs.cat(list(paths), on_error="omit")
        return {paths[p]: v for p, v in found.items()}

    def names(self, folder: str) -> dict[str, str]:
        """``{unit: suffix}`` of the objects in ``_recipe/<folder>`` (one listing)."""
        url = self.key(folder)
        fs, path = filesystem(url, self.options)
        with storage_errors(url, self.options):
            fs.invalidate_cache(path)  # another process may have written there
            found = fs.find(path) if fs.exists(path) else []
        names = (posixpath.basename(p.replace("\\", "/")) for p in found)
        split = (n.partition(".") for n in names if not n.endswith(".partial"))
        return {stem: dot + rest for stem, dot, rest in split}

    def remove(self, url: str, *, recursive: bool = False) -> None:
        """Delete ``url`` if it exists."""
        fs, path = filesystem(url, self.options)
        with storage_errors(url, self.options):
            if fs.exists(path):
                fs.rm(path, recursive=recursive)

    def listing(self) -> list[str]:
        """What DEST holds at its top level (names), empty if nothing."""
        fs, path = filesystem(self.url, self.options)
        with storage_errors(self.url, self.options):
            if not fs.exists(path):
                return []
            return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))

    # The unit files.
    def manifest(self) -> str:
        return self.key("manifest.json")

    def report(self) -> str:
        return self.key("report.json")

    def done(self, unit: str, suffix: str) -> str:
        return self.key("done", unit + suffix)

    def failure(self, unit: str) -> str:
        return self.key("failed", unit + ".json")
