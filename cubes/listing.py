"""Finding and summarising the cubes under a prefix (``python -m cubes ls``).

The requests are bounded, whatever the size of the cubes: one probe of the
location, one delimiter listing of PREFIX (and of each folder below it that is
not a cube, with ``recursive``), one concurrent batch of reads of the folders'
root ``zarr.json`` (a complete cube's root metadata holds its attributes and
every array's metadata), the batch's ``plates.csv`` where there is one, and one
coordinate read for what the metadata does not say (a time series' first and
last time, a plate's channel names when its attributes lack them). Nothing
walks the shards, except ``sizes=True``: a cube's stored size is the sum over a
listing of its objects (one LIST request per 1,000 objects of each cube).
"""

from __future__ import annotations

import io
import logging
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cubes import conventions as cv
from cubes.errors import CubeError, SourceNotFoundError
from cubes.metadata import (
    ROOT_KEY,
    RootMetadata,
    decode_times,
    iso_time,
    read_roots,
    single_get,
)
from cubes.store import check_location, filesystem, join_url, storage_errors, zarr_store

__all__ = ["BATCH_INDEX", "CubeSummary", "Found", "find_cubes", "format_table", "list_cubes"]

logger = logging.getLogger(__name__)

BATCH_INDEX = "plates.csv"  # a plate batch's index of its cubes (written by python -m ingest)
_INDEX_ATTR = "batch_index"  # a cube's own row of that index: {"file": …, "row": {…}}
_JOURNALS = ".ingest"  # folders beside cubes that hold an ingest's journal, never cubes


@dataclass
class Found:
    """What a listing of a prefix found.

    Attributes
    ----------
    prefix
        The prefix as given.
    nodes
        The root metadata of every Zarr node found (cubes and others), by URL.
    errors
        Folders whose ``zarr.json`` could not be read or parsed, by URL.
    index
        Rows of the batch indexes (``plates.csv``) read, by the URL of the cube
        under the prefix that each row names.
    index_files
        The ``plates.csv`` files read.
    folders, files
        How many other folders and files the listings saw (for messages).
    zarr_v2
        Prefixes that hold Zarr v2 metadata (``.zgroup``, ``.zarray``).
    """

    prefix: str
    nodes: dict[str, RootMetadata] = field(default_factory=dict)
    errors: dict[str, CubeError] = field(default_factory=dict)
    index: dict[str, dict[str, str]] = field(default_factory=dict)
    index_files: list[str] = field(default_factory=list)
    folders: int = 0
    files: int = 0
    zarr_v2: list[str] = field(default_factory=list)

    @property
    def cubes(self) -> list[RootMetadata]:
        """The cubes found, by URL."""
        return [self.nodes[u] for u in sorted(self.nodes) if self.nodes[u].is_cube]

    @property
    def others(self) -> list[RootMetadata]:
        """Zarr nodes that are not cubes (OME-NGFF exports, plain groups)."""
        return [self.nodes[u] for u in sorted(self.nodes) if not self.nodes[u].is_cube]

    @property
    def absent(self) -> list[str]:
        """Cubes a ``plates.csv`` lists that the listing did not find."""
        return sorted(u for u in self.index if u not in self.nodes and u not in self.errors)

    def no_cubes(self, *, recursive: bool = False) -> str:
        """The message when no cube was found: what is there instead, and what to do."""
        seen = []
        if self.folders:
            seen.append(f"{self.folders} folder(s)")
        if self.files:
            seen.append(f"{self.files} file(s)")
        if self.others:
            seen.append(", ".join(f"{r.url} ({r.kind})" for r in self.others[:3]))
        what = ("it holds " + ", ".join(seen) + " but no cube") if seen else "nothing is there"
        deeper = "" if recursive or not self.folders else " Add --recursive to look below them, or"
        return (
            f"No cubes under {self.prefix}: {what} (a cube is a folder with a {ROOT_KEY} that "
            f"records a cube layout).{deeper} Check the prefix, or write cubes there with "
            "'python -m ingest'."
        )


def find_cubes(
    prefix: str, storage_options: dict[str, Any] | None = None, *, recursive: bool = False
) -> Found:
    """The Zarr nodes directly under ``prefix`` (or ``prefix`` itself, if it is one).

    Parameters
    ----------
    prefix
        Local folder or URL (``s3://bucket/batch1/``).
    storage_options
        fsspec options, completed by :func:`cubes.store.resolve_storage_options`.
    recursive
        Also look into the folders below that are not Zarr nodes (one more
        listing each), never into a node.

    Raises
    ------
    StorageError, SourceNotFoundError
        The endpoint cannot be reached, access is refused, the bucket is missing.
    """
    check_location(prefix, storage_options)  # fails in seconds on a wrong endpoint or bucket
    found = Found(prefix)
    _find(prefix, storage_options, recursive, found)
    return found


def _find(prefix: str, options: dict[str, Any] | None, recursive: bool, found: Found) -> None:
    fs, path = filesystem(prefix, options)
    with storage_errors(prefix, options):
        try:
            entries = fs.ls(path, detail=True, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            entries = []
    names = {posixpath.basename(str(e["name"]).replace("\\", "/").rstrip("/")): e for e in entries}
    if ROOT_KEY in names:  # the prefix is itself a Zarr node
        _add(found, read_roots([prefix], options))
        return
    if ".zgroup" in names or ".zarray" in names:
        found.zarr_v2.append(prefix)
    folders = [n for n, e in names.items() if e["type"] == "directory" and _candidate(n)]
    found.files += sum(1 for e in entries if e["type"] != "directory")
    roots = read_roots([join_url(prefix, n) for n in sorted(folders)], options)
    _add(found, roots)
    if BATCH_INDEX in names:
        _read_index(join_url(prefix, BATCH_INDEX), prefix, options, found)
    below = [url for url, root in roots.items() if root is None]
    found.folders += len(below)
    if recursive:
        for url in below:
            _find(url, options, recursive, found)


def _candidate(name: str) -> bool:
    return not name.endswith(_JOURNALS) and not name.startswith(".")


def _add(found: Found, roots: dict[str, RootMetadata | None | CubeError]) -> None:
    for url, root in roots.items():
        if isinstance(root, RootMetadata):
            found.nodes[url] = root
        elif isinstance(root, CubeError):
            found.errors[url] = root


def _read_index(url: str, prefix: str, options: dict[str, Any] | None, found: Found) -> None:
    """The rows of a batch's ``plates.csv``, keyed by the URL of their cube under ``prefix``.

    A row's ``url`` is where the ingest wrote the cube; the batch may have been
    copied since, so the cube is looked for by name beside the index.
    """
    import pandas as pd

    fs, path = filesystem(url, single_get(url, options))
    with storage_errors(url, options):
        raw = fs.cat_file(path)
    try:
        table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    except ValueError as exc:
        logger.warning("%s is not a readable table (%s); listing without it", url, exc)
        return
    found.index_files.append(url)
    for row in table.to_dict("records"):
        written = str(row.get("url", "")).replace("\\", "/").rstrip("/")
        if written:
            found.index[join_url(prefix, posixpath.basename(written))] = {
                str(k): str(v) for k, v in row.items()
            }


@dataclass
class CubeSummary:
    """One line of ``ls``: what a cube is, how big, whether complete, when written."""

    url: str
    kind: str
    status: str  # complete, incomplete, not a cube, absent, unreadable
    complete: bool | None = None
    written: str | None = None
    plate: str | None = None
    samples: dict[str, int] = field(default_factory=dict)
    n_samples: int | None = None
    time_range: list[str] | None = None
    channels: list[str] = field(default_factory=list)
    variables: list[str] = field(default_factory=list)
    dtype: list[str] = field(default_factory=list)
    found: int | None = None  # the layout's mask items found / expected (quality counts)
    expected: int | None = None
    stored_bytes: int | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the ``--json`` of ``ls``)."""
        return asdict(self)


def list_cubes(
    prefix: str,
    storage_options: dict[str, Any] | None = None,
    *,
    recursive: bool = False,
    sizes: bool = False,
) -> list[CubeSummary]:
    """Summaries of the cubes under ``prefix``; Zarr nodes that are not cubes are listed too.

    Parameters
    ----------
    prefix
        Local folder or URL; a cube's own URL lists that cube.
    storage_options
        fsspec options, completed by :func:`cubes.store.resolve_storage_options`.
    recursive
        Look into folders below ``prefix`` that are not cubes, too.
    sizes
        Sum each cube's stored size over a listing of its objects (a request
        per 1,000 objects); otherwise ``stored_bytes`` is None.

    Raises
    ------
    SourceNotFoundError
        No cube under ``prefix``; the message says what is there.
    """
    found = find_cubes(prefix, storage_options, recursive=recursive)
    if not found.cubes and not found.absent:
        for error in found.errors.values():
            raise error  # e.g. access denied: it says more than "no cubes"
        raise SourceNotFoundError(found.no_cubes(recursive=recursive))
    out = [_summary(root, found.index.get(root.url), storage_options) for root in found.cubes]
    out += [_other(root) for root in found.others]
    out += [CubeSummary(url, "?", "unreadable", note=str(exc)) for url, exc in found.errors.items()]
    out += [
        CubeSummary(
            url,
            "?",
            "absent",
            plate=found.index[url].get("plate") or None,
            note=f"listed in {BATCH_INDEX} but not found",
        )
        for url in found.absent
    ]
    if sizes:
        for summary in out:
            if summary.status not in ("absent", "unreadable"):
                summary.stored_bytes = _stored_bytes(summary.url, storage_options)
    return sorted(out, key=lambda s: s.url)


def _other(root: RootMetadata) -> CubeSummary:
    return CubeSummary(root.url, root.kind, "not a cube", note=root.what())


def _summary(
    root: RootMetadata, index_row: dict[str, str] | None, options: dict[str, Any] | None
) -> CubeSummary:
    """A cube's summary from its root metadata (and a coordinate read where needed)."""
    attrs = root.attrs
    layout = root.layout()
    arrays = root.arrays if root.consolidated else _array_metadata(root, layout.variables, options)
    first = arrays.get(layout.variables[0], {}) if layout.variables else {}
    sizes = dict(zip(first.get("dimension_names") or (), first.get("shape") or (), strict=False))
    samples = {d: int(sizes[d]) for d in layout.sample_dims if d in sizes}
    counts = (attrs.get("quality") or {}).get("counts") or {}
    own_row = (attrs.get(_INDEX_ATTR) or {}).get("row") or {}
    summary = CubeSummary(
        url=root.url,
        kind=root.kind,
        status="complete" if root.complete else "incomplete",
        complete=root.complete,
        written=(attrs.get(cv.ATTR_PROVENANCE) or {}).get("created"),
        plate=str(attrs.get("plate") or (index_row or {}).get("plate") or "") or None,
        samples=samples,
        n_samples=int(np.prod(list(samples.values()))) if samples else None,
        variables=list(layout.variables),
        dtype=sorted({str(arrays[v]["data_type"]) for v in layout.variables if v in arrays}),
        found=counts.get("found"),
        expected=counts.get("expected"),
    )
    if layout.channel_dim is not None:
        names = own_row.get("channels") or (index_row or {}).get("channels")
        summary.channels = (
            str(names).split() if names else _coord(root.url, layout.channel_dim, options)
        )
    if layout.time_dim is not None and samples.get(layout.time_dim):
        times = _coord(root.url, layout.time_dim, options, ends=True, meta=arrays)
        summary.time_range = [times[0], times[-1]] if times else None
    return summary


def _array_metadata(
    root: RootMetadata, names: tuple[str, ...], options: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """The metadata of some arrays of a cube that is not consolidated yet (an incomplete one)."""
    roots = read_roots([join_url(root.url, n) for n in names], options)
    return {
        n: dict(r.doc)
        for n, r in zip(names, roots.values(), strict=True)
        if isinstance(r, RootMetadata)
    }


def _coord(
    url: str,
    name: str,
    options: dict[str, Any] | None,
    *,
    ends: bool = False,
    meta: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """The values of a cube's coordinate ``name`` as text (with ``ends``, the first and last)."""
    import zarr

    with storage_errors(url, options):
        try:
            store = zarr_store(url, single_get(url, options), read_only=True)
            array = zarr.open_array(store, path=name, mode="r", zarr_format=3)
        except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError):
            return []
        n = array.shape[0] if array.ndim else 0
        if not n:
            return []
        values = array.get_orthogonal_selection(np.array([0, n - 1]) if ends else slice(None))
    attrs = dict((meta or {}).get(name, {}).get("attributes") or array.attrs)
    if "units" in attrs and "since" in str(attrs["units"]):
        return [iso_time(v) for v in decode_times(np.asarray(values), attrs)]
    return [str(v) for v in np.asarray(values).tolist()]


def _stored_bytes(url: str, options: dict[str, Any] | None) -> int:
    fs, path = filesystem(url, options)
    with storage_errors(url, options):
        return int(fs.du(path, total=True))


def format_table(summaries: list[CubeSummary]) -> str:
    """The text of ``ls``: a header, then one line per cube, in aligned columns."""
    header = ["URL", "KIND", "SAMPLES", "CHANNELS/VARIABLES", "DTYPE", "SIZE", "STATUS", "WRITTEN"]
    rows = [header] + [_columns(s) for s in summaries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


def _columns(s: CubeSummary) -> list[str]:
    samples = " × ".join(f"{n} {_plural(d, n)}" for d, n in s.samples.items()) or "-"
    if s.time_range:
        samples += f" ({s.time_range[0]} – {s.time_range[-1]})"
    labels = s.channels or s.variables
    what = f"{len(labels)}: {' '.join(labels)}" if labels else "-"
    status = s.status
    if s.found is not None and s.expected and s.found < s.expected:
        status += f", {s.expected - s.found}/{s.expected} absent"
    written = (s.written or "-").replace("T", " ")[:16]
    return [s.url, s.kind, samples, what, ",".join(s.dtype) or "-", _size(s.stored_bytes), status,
            written]  # fmt: skip


def _plural(dim: str, n: int) -> str:
    word = "step" if dim == "time" else dim
    return word if n == 1 or word.endswith("s") else word + "s"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
