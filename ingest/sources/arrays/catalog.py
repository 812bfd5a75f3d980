"""The reading half of the ``arrays`` source: list, describe and read .npy/.npz/.pt files.

A folder (local or ``s3://``) of ``.npy``, ``.npz`` or ``.pt``/``.pth`` files, each one
sample or, with ``batched``, a batch along the first axis. Each key of an ``.npz`` and
each entry of a tensor dict becomes a variable; a ``.npy`` or a bare tensor is the
variable :data:`DATA_VARIABLE`.

Planning reads headers only where the format allows: a ``.npy`` costs one ranged GET of
its first KiB, an ``.npz`` the zip's central directory plus each member's first bytes
(through an fsspec file with small blocks, so ``zipfile`` fetches only what it reads).
A ``.pt`` has no header apart from its pickle, so it is loaded. Nothing is ever
unpickled beyond plain data: ``np.load(allow_pickle=False)`` and
``torch.load(weights_only=True)``; a file that would need more is refused, not executed.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import logging
import pickle
import posixpath
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal, NamedTuple

import numpy as np
from numpy.lib import format as npy_format

from cubes.errors import CubeError, SchemaError, SourceNotFoundError
from cubes.store import filesystem, is_local, storage_errors

__all__ = [
    "ARRAY_SUFFIXES",
    "DATA_VARIABLE",
    "ArrayListing",
    "ArraySpec",
    "ArraysCatalog",
    "FileHeader",
    "FileSamples",
    "list_array_files",
    "plan_samples",
    "read_file",
    "read_header",
]

logger = logging.getLogger(__name__)

DATA_VARIABLE = "data"
"""The variable of a ``.npy`` file or of a ``.pt`` file holding one tensor."""

ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
"""File name endings read as arrays (case-insensitive); other files are ignored."""

# A .npy header is 128 bytes in practice (64-byte aligned, ~60-120 chars of dict); one KiB
# covers it in one ranged GET. A longer header (huge structured dtypes) costs a second GET.
_NPY_HEAD_BYTES = 1024
# Block size of the fsspec file (block cache: zipfile reads the tail backwards) that zipfile
# reads an .npz through: the tail block holds the central directory, and each member's local
# header + .npy header fit in a block. On s3 that is a HEAD (s3fs pins the ETag its ranged
# GETs must match) and a GET of 64 KiB per block touched: 3 requests for a 50 MB 2-key .npz.
_NPZ_BLOCK_BYTES = 64 * 1024
_REFUSED = "refused, not executed"


class ArraySpec(NamedTuple):
    """The shape and dtype of one variable (of one file, or of one sample)."""

    shape: tuple[int, ...]
    dtype: np.dtype


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


@dataclass(frozen=True)
class FileHeader:
    """The variables of one array file, as stored (a batch keeps its first axis)."""

    url: str
    size: int
    variables: dict[str, ArraySpec]


@dataclass(frozen=True)
class FileSamples:
    """The samples ``[start, stop)`` of the cube that come from one file."""

    url: str
    size: int
    start: int
    stop: int


@dataclass(frozen=True)
class ArraysCatalog:
    """The samples of a set of array files and the variables every sample has.

    Attributes
    ----------
    variables
        ``{name: ArraySpec(sample_shape, dtype)}``, in the first file's order.
    files
        Each file with its sample range, in sample order.
    batched
        Whether each file is a batch along its first axis (else one sample).
    fingerprint
        sha256 of the files' URLs, sizes, shapes and dtypes: equal for an unchanged source.
    """

    variables: dict[str, ArraySpec]
    files: tuple[FileSamples, ...]
    batched: bool
    fingerprint: str

    @property
    def n_samples(self) -> int:
        """Total number of samples."""
        return self.files[-1].stop if self.files else 0

    def source_file(self) -> np.ndarray:
        """The URL of each sample's file (the ``source_file`` coord), one per sample."""
        urls = np.array([f.url for f in self.files], dtype=str)
        return np.repeat(urls, [f.stop - f.start for f in self.files])


# --- listing ---------------------------------------------------------------------------


def _natural_key(path: str) -> tuple[list[Any], str]:
    """Sort key putting ``sample_2`` before ``sample_10`` (ties broken by the raw path)."""
    parts = re.split(r"(\d+)", path)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], path


def _suffix(url: str) -> str:
    return posixpath.splitext(url.replace("\\", "/"))[1].lower()


def _is_array_file(relative: str) -> bool:
    hidden = any(part.startswith(".") for part in relative.split("/"))
    return not hidden and _suffix(relative) in ARRAY_SUFFIXES


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


# --- headers ---------------------------------------------------------------------------


def read_header(
    url: str, storage_options: dict[str, Any] | None = None, *, size: int | None = None
) -> FileHeader:
    """The variables (shape and dtype) of one array file, reading as little as it can.

    ``.npy``: one ranged read of the first KiB. ``.npz``: the zip's central directory
    and each member's ``.npy`` header. ``.pt``: the whole file, loaded with
    ``torch.load(weights_only=True)``.

    Parameters
    ----------
    url
        The file's path or URL.
    storage_options
        fsspec options for ``url``.
    size
        The file's size if known (from :func:`list_array_files`); else looked up.

    Returns
    -------
    FileHeader

    Raises
    ------
    SchemaError
        The file is not a readable array file, holds Python objects (refused, not
        unpickled), or a ``.pt`` holds something other than a tensor or a dict of tensors.
    SourceNotFoundError
        The file does not exist.
    """
    fs, path = filesystem(url, storage_options)
    with _reading(url, storage_options):
        if size is None:
            size = int(fs.size(path))
        if size == 0:
            raise SchemaError(f"{url} is empty (0 bytes). Remove it or write it again.")
        suffix = _suffix(url)
        if suffix == ".npy":
            variables = {DATA_VARIABLE: _npy_file_header(fs, path, url)}
        elif suffix == ".npz":
            variables = _npz_header(fs, path, url, size)
        else:
            variables = {k: _spec_of_tensor(v, url, k) for k, v in _load_pt(fs, path, url).items()}
    return FileHeader(url=url, size=size, variables=variables)


def _npy_file_header(fs: Any, path: str, url: str) -> ArraySpec:
    head = fs.cat_file(path, start=0, end=_NPY_HEAD_BYTES)
    needed = _npy_header_length(head)
    if needed > len(head):
        head = fs.cat_file(path, start=0, end=needed)
    return _parse_npy_header(io.BytesIO(head), url)


def _npy_header_length(head: bytes) -> int:
    """Bytes up to the end of the .npy header (or ``len(head)`` if not a .npy: parsed later)."""
    if len(head) < npy_format.MAGIC_LEN + 4 or head[:6] != npy_format.MAGIC_PREFIX:
        return len(head)
    major = head[6]
    width = 2 if major == 1 else 4
    start = npy_format.MAGIC_LEN + width
    return start + int.from_bytes(head[npy_format.MAGIC_LEN : start], "little")


def _parse_npy_header(fh: IO[bytes], url: str, member: str | None = None) -> ArraySpec:
    """Shape and dtype from the .npy header at ``fh``'s position; refuses object dtypes."""
    where = url if member is None else f"{url} (member {member})"
    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(fh)
        else:
            shape, dtype = _read_header_3_0(fh)
    except (ValueError, EOFError, SyntaxError, KeyError, TypeError) as exc:
        raise SchemaError(
            f"{where} is not a readable .npy array ({exc}). Is it truncated? "
            "Write it again with numpy.save / numpy.savez, or remove it."
        ) from exc
    if dtype.hasobject:
        raise _object_dtype_error(where)
    return ArraySpec(tuple(int(n) for n in shape), dtype)


def _read_header_3_0(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """Version 3.0 (utf-8 header): the 2.0 layout; numpy has no public reader for it."""
    length = int.from_bytes(fh.read(4), "little")
    header = ast.literal_eval(fh.read(length).decode("utf8"))
    return tuple(header["shape"]), npy_format.descr_to_dtype(header["descr"])


def _object_dtype_error(where: str) -> SchemaError:
    return SchemaError(
        f"{where} holds Python objects (dtype=object), which need unpickling: {_REFUSED}. "
        "Store numeric or fixed-width string arrays (e.g. arr.astype('U') or a numeric dtype)."
    )


def _npz_header(fs: Any, path: str, url: str, size: int) -> dict[str, ArraySpec]:
    opener = (
        fs.open(path, "rb")
        if is_local(url)
        else fs.open(path, "rb", block_size=_NPZ_BLOCK_BYTES, cache_type="blockcache", size=size)
    )
    with opener as raw, _zip_errors(url), zipfile.ZipFile(raw) as archive:
        return {
            _npz_key(name, url): _npz_member_header(archive, name, url)
            for name in archive.namelist()
        }


def _npz_key(member: str, url: str) -> str:
    if not member.endswith(".npy"):
        raise SchemaError(
            f"{url} holds a member '{member}' that is not a .npy array. An .npz must hold only "
            "arrays (numpy.savez); remove the member or the file."
        )
    return member[: -len(".npy")]


def _npz_member_header(archive: zipfile.ZipFile, member: str, url: str) -> ArraySpec:
    with archive.open(member) as fh:
        return _parse_npy_header(fh, url, member)


@contextlib.contextmanager
def _zip_errors(url: str) -> Iterator[None]:
    """A truncated or damaged .npz becomes a :class:`SchemaError` naming it."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise SchemaError(
            f"{url} is not a readable .npz archive ({exc}). Is it truncated (an interrupted "
            "copy)? Copy or write it again with numpy.savez, or remove it."
        ) from exc


@contextlib.contextmanager
def _reading(url: str, storage_options: dict[str, Any] | None) -> Iterator[None]:
    """Storage errors as the platform's errors; a missing file as :class:`SourceNotFoundError`."""
    try:
        with storage_errors(url, storage_options):
            yield
    except CubeError:
        raise
    except FileNotFoundError as exc:
        raise SourceNotFoundError(
            f"{url} does not exist (was it removed since SRC was listed?). List SRC again."
        ) from exc


# --- whole files -----------------------------------------------------------------------


def read_file(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Every variable of one array file, read whole (one GET for a remote file).

    Parameters
    ----------
    url
        The file's path or URL (``.npy``, ``.npz``, ``.pt`` or ``.pth``).
    storage_options
        fsspec options for ``url``.

    Returns
    -------
    dict
        ``{variable: array}`` as stored (a batch keeps its first axis).

    Raises
    ------
    SchemaError
        The file is damaged, or would need unpickling arbitrary objects (refused, never
        executed), or a ``.pt`` holds something other than a tensor or a dict of tensors.
    SourceNotFoundError
        The file does not exist.
    CubeError
        A ``.pt`` file and no torch installed.

    Examples
    --------
    >>> read_file("s3://bkt/samples/sample_7.npz")["image"].shape  # doctest: +SKIP
    (3, 32, 32)
    """
    fs, path = filesystem(url, storage_options)
    suffix = _suffix(url)
    if suffix in (".pt", ".pth"):
        with _reading(url, storage_options):
            tensors = _load_pt(fs, path, url)
        return {key: _tensor_to_numpy(value, url, key) for key, value in tensors.items()}
    with _reading(url, storage_options), _open_whole(fs, path, url) as fh:
        return _load_numpy(fh, url)


@contextlib.contextmanager
def _open_whole(fs: Any, path: str, url: str) -> Iterator[IO[bytes]]:
    """The file itself where local; else its bytes from one GET."""
    if is_local(url):
        with open(path, "rb") as fh:
            yield fh
    else:
        yield io.BytesIO(_cat_whole(fs, path))


def _cat_whole(fs: Any, path: str) -> bytes:
    """One object in one GET: with ``max_concurrency`` > 1 s3fs would first HEAD it."""
    if getattr(fs, "max_concurrency", 1) > 1:
        return bytes(fs.cat_file(path, max_concurrency=1))
    return bytes(fs.cat_file(path))


def _load_numpy(fh: IO[bytes], url: str) -> dict[str, np.ndarray]:
    with _zip_errors(url), _numpy_errors(url, None):
        loaded = np.load(fh, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {DATA_VARIABLE: loaded}
    with loaded, _zip_errors(url):
        return {key: _npz_member(loaded, key, url) for key in loaded.files}


def _npz_member(npz: Any, key: str, url: str) -> np.ndarray:
    with _numpy_errors(url, key):
        value = npz[key]
    if not isinstance(value, np.ndarray):
        raise SchemaError(
            f"{url} holds a member '{key}' that is not a .npy array. An .npz must hold only "
            "arrays (numpy.savez); remove the member or the file."
        )
    return value


@contextlib.contextmanager
def _numpy_errors(url: str, key: str | None) -> Iterator[None]:
    """``np.load``'s refusals and parse errors as :class:`SchemaError` naming the file."""
    where = url if key is None else f"{url} (member {key})"
    try:
        yield
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise _object_dtype_error(where) from exc
        if "pickle" in str(exc):
            raise SchemaError(
                f"{where} is neither a .npy nor an .npz file; numpy would have to unpickle it: "
                f"{_REFUSED}. Write it again with numpy.save / numpy.savez, or remove it."
            ) from exc
        raise SchemaError(
            f"{where} is not a readable .npy/.npz array ({exc}). Is it truncated? "
            "Write it again with numpy.save / numpy.savez, or remove it."
        ) from exc


def _import_torch(url: str) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise CubeError(
            f"{url} is a PyTorch file, and reading it needs torch, which is not installed. "
            "Run `pip install torch`, or convert the files to .npy/.npz."
        ) from exc
    return torch


def _load_pt(fs: Any, path: str, url: str) -> dict[str, Any]:
    """The tensors of a .pt file, loaded with ``weights_only=True`` (no arbitrary objects)."""
    torch = _import_torch(url)
    with _open_whole(fs, path, url) as fh:
        try:
            obj = torch.load(fh, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as exc:
            if "weights only" in str(exc).lower() or "weights_only" in str(exc):
                raise SchemaError(
                    f"{url} holds objects other than tensors, containers and numbers, which "
                    f"torch.load(weights_only=True) does not unpickle: {_REFUSED}. Save plain "
                    "tensors or a dict of tensors (torch.save({'image': t, ...}))."
                ) from exc
            raise _corrupt_pt(url, exc) from exc
        except (RuntimeError, EOFError, ValueError, OSError) as exc:
            raise _corrupt_pt(url, exc) from exc
    return _tensor_dict(obj, url, torch)


def _corrupt_pt(url: str, exc: BaseException) -> SchemaError:
    return SchemaError(
        f"{url} is not a readable PyTorch file ({type(exc).__name__}: {exc}). Is it truncated? "
        "Save it again with torch.save, or remove it."
    )


def _tensor_dict(obj: Any, url: str, torch: Any) -> dict[str, Any]:
    if isinstance(obj, torch.Tensor):
        return {DATA_VARIABLE: obj}
    if not isinstance(obj, Mapping):
        raise SchemaError(
            f"{url} holds a {type(obj).__name__}; a .pt file must hold a tensor or a dict of "
            "tensors. Save it again as torch.save({'name': tensor, ...})."
        )
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise SchemaError(
                f"{url} holds entry {key!r} of type {type(value).__name__}; a .pt file must "
                "hold a tensor or a dict of tensors with string keys. Convert the entry to a "
                "tensor or drop it."
            )
    return dict(obj)


def _spec_of_tensor(tensor: Any, url: str, key: str) -> ArraySpec:
    import torch

    probe = torch.empty(0, dtype=tensor.dtype)
    return ArraySpec(tuple(int(n) for n in tensor.shape), _tensor_to_numpy(probe, url, key).dtype)


def _tensor_to_numpy(tensor: Any, url: str, key: str) -> np.ndarray:
    try:
        return np.asarray(tensor.detach().numpy(force=True))
    except (TypeError, RuntimeError) as exc:
        raise SchemaError(
            f"{url}: tensor '{key}' ({tensor.dtype}, {tensor.layout}) has no NumPy equivalent "
            f"({exc}). Convert it before saving (e.g. t.float() for bfloat16, t.to_dense())."
        ) from exc


# --- planning --------------------------------------------------------------------------


def plan_samples(
    headers: Sequence[FileHeader], *, batched: bool | Literal["auto"] = False
) -> ArraysCatalog:
    """Number the samples of the files and check that they all have the same variables.

    Parameters
    ----------
    headers
        One :class:`FileHeader` per file, in sample order (as listed).
    batched
        ``False``: each file is one sample. ``True``: each file is a batch along the first
        axis of every variable (which must agree within the file). ``"auto"``: one sample
        per file if that reading fits every file, else batches if that one fits.

    Returns
    -------
    ArraysCatalog

    Raises
    ------
    SchemaError
        A file lacks a variable or has an extra one, or a variable's per-sample shape or
        dtype differs from the first file's; the message names the file and the variable.
    """
    if not headers:
        raise SchemaError("No array files to plan. List SRC first (list_array_files).")
    if batched != "auto":
        return _plan(headers, bool(batched))
    try:
        return _plan(headers, False)
    except SchemaError as single:
        try:
            catalog = _plan(headers, True)
        except SchemaError as as_batches:
            raise SchemaError(
                f"{single}\nRead as batches along the first axis, the files do not fit "
                f"either: {as_batches}"
            ) from None
    logger.info("Files differ in their first axis only: read as batches along it")
    return catalog


def _plan(headers: Sequence[FileHeader], batched: bool) -> ArraysCatalog:
    first = headers[0]
    count, reference = _sample_specs(first, batched)
    files, start = [FileSamples(first.url, first.size, 0, count)], count
    for header in headers[1:]:
        count, specs = _sample_specs(header, batched)
        _check_matches(header, specs, first.url, reference, batched)
        files.append(FileSamples(header.url, header.size, start, start + count))
        start += count
    return ArraysCatalog(
        variables=reference,
        files=tuple(files),
        batched=batched,
        fingerprint=_fingerprint(headers, batched),
    )


def _sample_specs(header: FileHeader, batched: bool) -> tuple[int, dict[str, ArraySpec]]:
    """Samples in the file and each variable's per-sample spec (native byte order)."""
    if not header.variables:
        raise SchemaError(f"{header.url} holds no arrays. Remove it, or write its arrays again.")
    if not batched:
        return 1, {k: ArraySpec(v.shape, _native(v.dtype)) for k, v in header.variables.items()}
    lengths = {k: (v.shape[0] if v.shape else None) for k, v in header.variables.items()}
    if None in lengths.values() or len(set(lengths.values())) > 1:
        found = ", ".join(f"'{k}' {v.shape}" for k, v in header.variables.items())
        raise SchemaError(
            f"{header.url} is not a batch: its variables do not share a first axis ({found}). "
            "In batched mode every variable's first axis counts the file's samples; fix the "
            "file, or read each file as one sample (drop --batched)."
        )
    specs = {k: ArraySpec(v.shape[1:], _native(v.dtype)) for k, v in header.variables.items()}
    return int(next(iter(lengths.values())) or 0), specs


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder in "<>" else dtype


def _check_matches(
    header: FileHeader,
    specs: dict[str, ArraySpec],
    first_url: str,
    reference: dict[str, ArraySpec],
    batched: bool,
) -> None:
    missing = [k for k in reference if k not in specs]
    extra = [k for k in specs if k not in reference]
    if missing or extra:
        has = f"lacks {missing}" if missing else f"has {extra} besides"
        raise SchemaError(
            f"{header.url} {has} the variables of the first file {first_url} "
            f"({list(reference)}). Every file must hold the same keys: fix or remove "
            f"{header.url}."
        )
    for name, ref in reference.items():
        got = specs[name]
        if got != ref:
            hint = (
                "" if batched else " If the files are batches along the first axis, pass --batched."
            )
            raise SchemaError(
                f"{header.url}: variable '{name}' is {got.shape} {got.dtype} per sample; the "
                f"first file {first_url} has {ref.shape} {ref.dtype}. Every sample must share "
                f"each variable's shape and dtype: convert or remove {header.url}.{hint}"
            )


def _fingerprint(headers: Sequence[FileHeader], batched: bool) -> str:
    """sha256 of the URLs, sizes, shapes and dtypes (and the batched flag)."""
    described = [
        [h.url, h.size, {k: [list(v.shape), v.dtype.str] for k, v in h.variables.items()}]
        for h in headers
    ]
    text = json.dumps({"batched": batched, "files": described}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
