"""A cube's root metadata (its ``zarr.json``) read as JSON: what is at a URL, in one read.

A complete cube's root ``zarr.json`` holds the group attributes (kind, layout,
provenance, completeness, the quality counts) and the consolidated metadata of
every array (shape, dims, dtype, chunks, shards, codecs). Listing, describing
and telling a cube from things that are not cubes all start here, without
opening the group with zarr or xarray.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from cubes import conventions as cv
from cubes.errors import CubeError, SchemaError
from cubes.layout import ATTR_LAYOUT, Layout, layout_of
from cubes.store import (
    filesystem,
    join_url,
    probe_options,
    storage_errors,
    translate_storage_error,
)

__all__ = [
    "ROOT_KEY",
    "RootMetadata",
    "codecs_summary",
    "decode_times",
    "iso_time",
    "read_root",
    "read_roots",
    "single_get",
]

logger = logging.getLogger(__name__)

ROOT_KEY = "zarr.json"


@dataclass(frozen=True)
class RootMetadata:
    """The parsed ``zarr.json`` at the root of ``url``."""

    url: str
    doc: Mapping[str, Any]

    @property
    def node_type(self) -> str:
        """``group`` or ``array``."""
        return str(self.doc.get("node_type", ""))

    @property
    def attrs(self) -> dict[str, Any]:
        """The group (or array) attributes."""
        return dict(self.doc.get("attributes") or {})

    @property
    def arrays(self) -> dict[str, dict[str, Any]]:
        """Every array's metadata from the consolidated metadata (empty when not consolidated)."""
        consolidated = self.doc.get("consolidated_metadata") or {}
        return {
            name: dict(meta)
            for name, meta in (consolidated.get("metadata") or {}).items()
            if meta.get("node_type") == "array"
        }

    @property
    def consolidated(self) -> bool:
        """Whether the metadata of the arrays is consolidated here (complete cubes are)."""
        return bool((self.doc.get("consolidated_metadata") or {}).get("metadata"))

    @property
    def is_cube(self) -> bool:
        """A group with a recorded layout (or the kind of an older plate cube)."""
        if self.node_type != "group":
            return False
        try:
            layout_of(self.attrs, self.url)
        except SchemaError:
            return False
        return True

    @property
    def is_ome(self) -> bool:
        """An OME-NGFF group (``ome`` attribute), such as ``python -m ingest … --ome`` writes."""
        return "ome" in self.attrs or "multiscales" in self.attrs  # NGFF 0.5, 0.4

    @property
    def kind(self) -> str:
        """The cube kind; for other nodes a short word saying what they are."""
        if self.is_cube:
            return str(self.attrs.get(cv.ATTR_KIND) or self.layout().kind)
        if self.is_ome:
            return "ome-ngff"
        return "zarr-array" if self.node_type == "array" else "zarr-group"

    @property
    def complete(self) -> bool:
        """Whether the ingest that writes the cube has finished."""
        return self.attrs.get(cv.ATTR_COMPLETE) is True

    def layout(self) -> Layout:
        """The cube's layout (:class:`SchemaError` when this is not a cube)."""
        return layout_of(self.attrs, self.url)

    def what(self) -> str:
        """What a node that is not a cube is, and what to call instead, for error messages."""
        if self.node_type == "array":
            shape = "x".join(str(n) for n in self.doc.get("shape", ()))
            return (
                f"{self.url} is a Zarr array ({shape} {self.doc.get('data_type', '')}), not a "
                "cube: a cube is the group that holds such arrays. Open the folder above it with "
                "cubes.open_cube, or this array with zarr.open_array."
            )
        if self.is_ome:
            ours = self.attrs.get("cellcubes") or {}
            src = (ours.get(cv.ATTR_PROVENANCE) or {}).get("src")
            again = (
                f"'python -m ingest cellpainting {src} DEST' (without --ome)"
                if src
                else "'python -m ingest cellpainting SRC DEST' without --ome"
            )
            noun = "plate" if "plate" in (self.attrs.get("ome") or {}) else "image"
            return (
                f"{self.url} is an OME-NGFF {noun} (such as 'python -m ingest cellpainting --ome' "
                "writes), not a cube. Open it with an OME-NGFF reader (ome-zarr-py, napari, "
                f"vizarr), or write a cube of the same plate with {again} and open that."
            )
        return (
            f"{self.url} is a Zarr group but not a cube: its attributes record no "
            f"{ATTR_LAYOUT} and no {cv.ATTR_KIND}. Open it with xarray.open_zarr({self.url!r}) "
            "or zarr.open_group, or write a cube with 'python -m ingest'."
        )


def single_get(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """Options under which reading a whole small object is one GET.

    s3fs first asks for the size of an object it reads whole (a HEAD, to split
    big ones into concurrent ranges) unless ``max_concurrency`` is 1; metadata
    and coordinates are small, so listing a prefix then costs half the requests.
    """
    options = dict(storage_options or {})
    if url.startswith(("s3://", "s3a://")):
        options["max_concurrency"] = 1
    return options


def _parse(url: str, raw: bytes) -> RootMetadata:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise SchemaError(
            f"{join_url(url, ROOT_KEY)} is not JSON ({exc}): the cube's metadata is damaged. "
            "Write the cube again with 'python -m ingest … --overwrite'."
        ) from exc
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3:
        raise SchemaError(
            f"{join_url(url, ROOT_KEY)} is not Zarr v3 metadata (zarr_format "
            f"{doc.get('zarr_format') if isinstance(doc, dict) else '?'}). Cubes are Zarr v3."
        )
    return RootMetadata(url, doc)


def read_root(
    url: str, storage_options: dict[str, Any] | None = None, *, probe: bool = False
) -> RootMetadata | None:
    """The root metadata at ``url``, or None when there is no ``zarr.json`` there.

    Parameters
    ----------
    url
        Local path or URL of the cube (or of whatever is there).
    storage_options
        fsspec options, as :func:`cubes.store.resolve_storage_options` completes them.
    probe
        Read with 2 attempts instead of the usual 8, so that a wrong endpoint
        or a missing bucket fails in seconds (the read is then also the check);
        other failures (throttling, 5xx) are read again with the usual retries.

    Raises
    ------
    StorageError, SourceNotFoundError
        The endpoint cannot be reached, access is refused, the bucket is missing.
    SchemaError
        The ``zarr.json`` there is not Zarr v3 JSON.
    """
    if probe:
        try:
            return _read_root(url, probe_options(url, storage_options), storage_options)
        except CubeError:
            raise  # the endpoint, the credentials, the bucket: said within seconds
        except Exception:  # noqa: BLE001 - transient (5xx, throttling): with the usual retries
            logger.info("Reading %s failed twice; trying with the usual retries", url)
    return _read_root(url, storage_options, storage_options)


def _read_root(
    url: str, read_options: dict[str, Any] | None, storage_options: dict[str, Any] | None
) -> RootMetadata | None:
    fs, path = filesystem(join_url(url, ROOT_KEY), single_get(url, read_options))
    with storage_errors(url, storage_options):
        try:
            raw = fs.cat_file(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            if translate_storage_error(exc, url, storage_options) is not None:
                raise  # a missing bucket: translated by storage_errors
            return None
    return _parse(url, raw)


def read_roots(
    urls: Sequence[str], storage_options: dict[str, Any] | None = None
) -> dict[str, RootMetadata | None | CubeError]:
    """The root metadata of many URLs of one filesystem in one concurrent batch of reads.

    Returns, per URL, its metadata, None when it has no ``zarr.json``, or the
    error that reading or parsing it raised (other URLs are still read).
    """
    if not urls:
        return {}
    fs, _ = filesystem(urls[0], single_get(urls[0], storage_options))
    paths = {url: filesystem(join_url(url, ROOT_KEY), storage_options)[1] for url in urls}

    def read(path: str) -> bytes | BaseException:
        try:
            return bytes(fs.cat_file(path))
        except Exception as exc:  # noqa: BLE001 - returned, and translated below
            return exc

    # One GET each, concurrently (fs.cat(list) would first ask for each path's info: a HEAD).
    with ThreadPoolExecutor(min(16, len(paths))) as pool:
        raw = dict(zip(paths.values(), pool.map(read, paths.values()), strict=True))
    out: dict[str, RootMetadata | None | CubeError] = {}
    for url, path in paths.items():
        value = raw[path]
        if isinstance(value, FileNotFoundError | NotADirectoryError):
            out[url] = None
        elif isinstance(value, BaseException):
            translated = translate_storage_error(value, url, storage_options)
            if translated is None:
                raise value
            if not isinstance(translated, CubeError):  # pragma: no cover - all are
                raise translated from value
            out[url] = translated
        else:
            try:
                out[url] = _parse(url, value)
            except SchemaError as exc:
                out[url] = exc
    return out


def codecs_summary(meta: Mapping[str, Any]) -> tuple[tuple[int, ...] | None, str]:
    """``(inner chunk shape or None, "codec, codec …")`` of one array's metadata.

    A sharded array's chunk grid is its shard shape; its chunks and codecs are
    those inside the shards.
    """
    codecs = list(meta.get("codecs") or [])
    inner = None
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        config = codecs[0].get("configuration", {})
        inner = tuple(int(n) for n in config.get("chunk_shape", ()))
        codecs = list(config.get("codecs") or [])
    return inner, ", ".join(_codec(c) for c in codecs if c.get("name") != "bytes") or "none"


def _codec(codec: Mapping[str, Any]) -> str:
    name = str(codec.get("name", "?"))
    config = codec.get("configuration") or {}
    if name == "blosc":
        return f"blosc({config.get('cname', '?')}, level {config.get('clevel', '?')}, " + (
            f"{config.get('shuffle', 'noshuffle')})"
        )
    if name in ("zstd", "gzip"):
        return f"{name}(level {config.get('level', '?')})"
    return name


def decode_times(values: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """Times encoded as CF numbers (``units`` ``… since …``, ``calendar``) decoded by xarray."""
    import xarray as xr

    keep = {k: attrs[k] for k in ("units", "calendar") if k in attrs}
    return np.asarray(xr.decode_cf(xr.Dataset({"t": ("t", values, keep)}))["t"].values)


def iso_time(value: Any) -> str:
    """A time as ISO text, to the minute; the date alone at midnight."""
    if isinstance(value, np.datetime64):
        text = str(np.datetime_as_string(value, unit="m"))
    else:
        text = value.isoformat()[:16] if hasattr(value, "isoformat") else str(value)
    return text.removesuffix("T00:00")
