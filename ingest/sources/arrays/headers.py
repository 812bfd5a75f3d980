"""Describing one ``arrays`` file: each variable's shape and dtype, reading little.

A ``.npy`` costs one ranged GET of its first KiB, an ``.npz`` the zip's central
directory plus each member's first bytes (through an fsspec file with small blocks, so
``zipfile`` fetches only what it reads). A ``.pt`` has no header apart from its pickle,
so it is loaded whole (:func:`.files.load_pt`, ``weights_only=True``). Object dtypes are
refused, never unpickled.
"""

from __future__ import annotations

import ast
import io
import zipfile
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

import numpy as np
from numpy.lib import format as npy_format

from cubes.errors import SchemaError
from cubes.store import filesystem, is_local
from ingest.sources.arrays.files import load_pt, tensor_to_numpy
from ingest.sources.arrays.formats import (
    DATA_VARIABLE,
    object_dtype_error,
    reading,
    suffix,
    zip_errors,
)

__all__ = ["ArraySpec", "FileHeader", "read_header"]

# A .npy header is 128 bytes in practice (64-byte aligned, ~60-120 chars of dict); one KiB
# covers it in one ranged GET. A longer header (huge structured dtypes) costs a second GET.
_NPY_HEAD_BYTES = 1024
# Block size of the fsspec file (block cache: zipfile reads the tail backwards) that zipfile
# reads an .npz through: the tail block holds the central directory, and each member's local
# header + .npy header fit in a block. On s3 that is a HEAD (s3fs pins the ETag its ranged
# GETs must match) and a GET of 64 KiB per block touched: 3 requests for a 50 MB 2-key .npz.
_NPZ_BLOCK_BYTES = 64 * 1024


class ArraySpec(NamedTuple):
    """The shape and dtype of one variable (of one file, or of one sample)."""

    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class FileHeader:
    """The variables of one array file, as stored (a batch keeps its first axis)."""

    url: str
    size: int
    variables: dict[str, ArraySpec]


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
        The file's size if known (from :func:`.listing.list_array_files`); else looked up.

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
    with reading(url, storage_options):
        if size is None:
            size = int(fs.size(path))
        if size == 0:
            raise SchemaError(f"{url} is empty (0 bytes). Remove it or write it again.")
        ending = suffix(url)
        if ending == ".npy":
            variables = {DATA_VARIABLE: _npy_file_header(fs, path, url)}
        elif ending == ".npz":
            variables = _npz_header(fs, path, url, size)
        else:
            variables = {k: _spec_of_tensor(v, url, k) for k, v in load_pt(fs, path, url).items()}
    return FileHeader(url=url, size=size, variables=variables)


# --- .npy ------------------------------------------------------------------------------


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
        raise object_dtype_error(where)
    return ArraySpec(tuple(int(n) for n in shape), dtype)


def _read_header_3_0(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """Version 3.0 (utf-8 header): the 2.0 layout; numpy has no public reader for it."""
    length = int.from_bytes(fh.read(4), "little")
    header = ast.literal_eval(fh.read(length).decode("utf8"))
    return tuple(header["shape"]), npy_format.descr_to_dtype(header["descr"])


# --- .npz ------------------------------------------------------------------------------


def _npz_header(fs: Any, path: str, url: str, size: int) -> dict[str, ArraySpec]:
    opener = (
        fs.open(path, "rb")
        if is_local(url)
        else fs.open(path, "rb", block_size=_NPZ_BLOCK_BYTES, cache_type="blockcache", size=size)
    )
    with opener as raw, zip_errors(url), zipfile.ZipFile(raw) as archive:
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


# --- .pt -------------------------------------------------------------------------------


def _spec_of_tensor(tensor: Any, url: str, key: str) -> ArraySpec:
    import torch

    probe = torch.empty(0, dtype=tensor.dtype)
    return ArraySpec(tuple(int(n) for n in tensor.shape), tensor_to_numpy(probe, url, key).dtype)
