"""Read one NetCDF file's header: dims, variables, attributes and coordinate values.

Only metadata and the values of 1-D coordinate variables are read, through an
fsspec file object (local or S3), never a data variable's values:

- HDF5 (NetCDF-4) files are read with h5py directly (10x faster than through
  xarray, and h5py holds a global lock): dims from dimension scales, attributes
  normalised as xarray's ``h5netcdf`` backend gives them, 1-D coordinate values;
- classic files (``CDF\\x01``, ``CDF\\x02``, ``CDF\\x05``) are parsed here, because
  ``scipy.io.netcdf_file`` reads every variable's bytes when it cannot memory-map
  (any file object, so any S3 object): the header is a few KiB at the start of
  the file, and a record coordinate is read one value per record.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from cubes.errors import SchemaError, SourceNotFoundError
from cubes.store import filesystem, storage_errors

__all__ = ["FileHeader", "VarHeader", "hdf5_attrs", "hdf5_variables", "read_header", "sniff_engine"]

_MAGIC = {b"CDF\x01": "scipy", b"CDF\x02": "scipy", b"\x89HDF": "h5netcdf"}
_HEADER_BLOCK = 64 * 1024
_NOT_A_VARIABLE = b"This is a netCDF dimension but not a netCDF variable"
_HIDDEN_ATTRS = frozenset(
    {"REFERENCE_LIST", "CLASS", "DIMENSION_LIST", "NAME", "_Netcdf4Dimid", "_Netcdf4Coordinates",
     "_nc3_strict", "_NCProperties"}
)  # fmt: skip
_CDF_TYPES = {1: ">i1", 2: "S1", 3: ">i2", 4: ">i4", 5: ">f4", 6: ">f8", 7: ">u1", 8: ">u2",
              9: ">u4", 10: ">i8", 11: ">u8"}  # fmt: skip


@dataclass(frozen=True)
class VarHeader:
    """One variable as the file declares it (values not read)."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    attrs: dict[str, Any]


@dataclass(frozen=True)
class FileHeader:
    """What planning knows of one file."""

    url: str
    engine: str
    size: int
    etag: str | None
    dims: dict[str, int]
    unlimited: tuple[str, ...]
    variables: dict[str, VarHeader]
    coords: dict[str, np.ndarray] = field(default_factory=dict)  # 1-D coordinate values
    attrs: dict[str, Any] = field(default_factory=dict)


def sniff_engine(url: str, magic: bytes) -> str:
    """The xarray engine for a file starting with ``magic``, or :class:`SchemaError`."""
    engine = _MAGIC.get(magic[:4])
    if magic[:4] == b"CDF\x05":
        raise SchemaError(
            f"{url} is a CDF-5 (64-bit data) classic file, which this reader does not support. "
            "Convert it to NetCDF-4 (nccopy -k nc4 IN OUT) or exclude it (on_error='skip')."
        )
    if engine is None:
        raise SchemaError(
            f"{url} is not a NetCDF/HDF5 file (it starts with {magic[:4]!r}; expected CDF or "
            "\\x89HDF). Remove it from the input or exclude it (on_error='skip')."
        )
    return engine


@contextlib.contextmanager
def _open(url: str, storage_options: dict[str, Any] | None) -> Iterator[tuple[IO[bytes], Any]]:
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options):
        try:
            handle = fs.open(path, "rb", block_size=_HEADER_BLOCK, cache_type="readahead")
        except FileNotFoundError as exc:
            raise SourceNotFoundError(
                f"NetCDF file {url} does not exist. Check the URL or list the prefix again."
            ) from exc
        with handle:
            yield handle, fs


def read_header(url: str, storage_options: dict[str, Any] | None = None) -> FileHeader:
    """Read ``url``'s header (see the module docstring); errors name the URL."""
    with _open(url, storage_options) as (handle, fs):
        size, etag = _identity(handle, fs, url)
        engine = sniff_engine(url, handle.read(4))
        handle.seek(0)
        try:
            if engine == "h5netcdf":
                return _hdf5_header(url, handle, size, etag)
            return _cdf_header(url, handle, size, etag)
        except SchemaError:
            raise
        except (OSError, ValueError, KeyError, TypeError, struct.error, EOFError) as exc:
            kind = "HDF5/NetCDF-4" if engine == "h5netcdf" else "classic NetCDF"
            raise SchemaError(
                f"{url} cannot be read as a {kind} file ({type(exc).__name__}: {exc}); it is "
                "probably truncated or corrupt. Copy it again from its source, or exclude it "
                "(on_error='skip')."
            ) from exc


def _identity(handle: Any, fs: Any, url: str) -> tuple[int, str | None]:
    details = getattr(handle, "details", None) or fs.info(handle.path)
    etag = details.get("ETag") or details.get("etag") or details.get("mtime")
    return int(details.get("size") or 0), None if etag is None else str(etag)


def _hdf5_header(url: str, handle: IO[bytes], size: int, etag: str | None) -> FileHeader:
    import h5py

    with h5py.File(handle, "r") as f:
        variables, datasets = hdf5_variables(f)
        dims: dict[str, int] = {}
        for var in variables.values():
            for dim, length in zip(var.dims, var.shape, strict=True):
                dims.setdefault(dim, int(length))
        unlimited = tuple(sorted(n for n, ds in _scales(f).items() if ds.maxshape == (None,)))
        coords = {n: _values(datasets[n]) for n, v in variables.items() if v.dims == (n,)}
        return FileHeader(
            url, "h5netcdf", size, etag, dims, unlimited, variables, coords, hdf5_attrs(f.attrs)
        )


def hdf5_variables(f: Any) -> tuple[dict[str, VarHeader], dict[str, Any]]:
    """The netCDF variables of an open ``h5py.File``'s root group, as xarray sees them.

    Returns
    -------
    tuple
        ``({name: VarHeader}, {name: h5py.Dataset})``: in the file's order, index
        coordinates last (as xarray orders them); dimensions without a coordinate
        variable are left out.
    """
    scales = _scales(f)
    headers, datasets = {}, {}
    for key, ds in _datasets(f).items():
        if _NOT_A_VARIABLE in ds.attrs.get("NAME", b""):
            continue
        name = key.replace("_nc4_non_coord_", "")
        dims = _dims(f, key, ds, scales)
        headers[name] = VarHeader(name, dims, ds.shape, str(ds.dtype), hdf5_attrs(ds.attrs))
        datasets[name] = ds
    order = sorted(headers, key=lambda n: headers[n].dims == (n,))  # xarray: indexes last
    return {n: headers[n] for n in order}, datasets


def _datasets(f: Any) -> dict[str, Any]:
    import h5py

    return {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}


def _scales(f: Any) -> dict[str, Any]:
    """The root group's dimension scales (netCDF dimensions), in the file's order."""
    return {k: v for k, v in _datasets(f).items() if v.attrs.get("CLASS") == b"DIMENSION_SCALE"}


def _dims(f: Any, key: str, ds: Any, scales: dict[str, Any]) -> tuple[str, ...]:
    """A dataset's dimension names, found as h5netcdf finds them."""
    attrs = ds.attrs
    if "_Netcdf4Coordinates" in attrs and key in scales:  # a multi-dim coordinate variable
        ids = {int(s.attrs.get("_Netcdf4Dimid", i)): n for i, (n, s) in enumerate(scales.items())}
        return tuple(ids[int(i)] for i in np.atleast_1d(attrs["_Netcdf4Coordinates"]))
    refs = list(attrs["DIMENSION_LIST"]) if "DIMENSION_LIST" in attrs else []
    if refs and all(len(r) for r in refs):
        return tuple(f[r[-1]].name.split("/")[-1] for r in refs)
    if key in scales:
        return (key,)
    return tuple(
        d[len(d) - 1].name.split("/")[-1] if len(d) else f"phony_dim_{i}"
        for i, d in enumerate(ds.dims)
    )


def _values(ds: Any) -> np.ndarray:
    """A coordinate's values; variable-length strings as ``str``, as xarray gives them."""
    import h5py

    info = h5py.check_string_dtype(ds.dtype)
    if info is not None and info.length is None:
        return np.asarray(ds.asstr()[()], dtype=object)
    return np.asarray(ds[()])


def hdf5_attrs(attrs: Any) -> dict[str, Any]:
    """h5py attributes as xarray's ``h5netcdf`` backend gives them.

    netCDF-4 bookkeeping attributes are hidden, strings decoded, one-element
    arrays made scalars (numpy scalars, as in xarray).
    """
    return {k: _attr(attrs, k) for k in attrs if k not in _HIDDEN_ATTRS}


def _attr(attrs: Any, key: str) -> Any:
    import h5py

    value = attrs[key]
    if isinstance(value, h5py.Empty):
        info = h5py.check_string_dtype(value.dtype)
        value = b"" if info and info.length == 1 else np.array([], dtype=value.dtype)
    else:
        numeric = isinstance(value, np.ndarray | np.generic) and value.dtype.kind not in "OSU"
        if not numeric:
            value = _strings(value, attrs.get_id(key).dtype)
        if isinstance(value, np.ndarray | list) and len(value) == 1:
            value = value[0]
    if key not in ("_FillValue", "missing_value") and isinstance(value, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            value = value.decode("utf-8")
    return value


def _strings(value: Any, dtype: np.dtype[Any]) -> Any:
    """Fixed-length strings decoded, string arrays as lists (as h5netcdf does)."""
    import h5py

    info = h5py.check_string_dtype(dtype)
    if info is None:
        return value
    if info.length is not None and info.length > 1:
        if isinstance(value, np.ndarray):
            return [b.decode(info.encoding, "surrogateescape") for b in value.flat]
        return value.decode(info.encoding, "surrogateescape")
    return value.tolist() if isinstance(value, np.ndarray) else value


# --- classic NetCDF (CDF-1, CDF-2, CDF-5) -------------------------------------------------


class _Cursor:
    """Sequential big-endian reads over a file object, fetched in blocks."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.buf = b""
        self.pos = 0

    def take(self, n: int) -> bytes:
        while self.pos + n > len(self.buf):
            more = self.handle.read(max(_HEADER_BLOCK, n))
            if not more:
                raise EOFError("the header ends before it is complete")
            self.buf += more
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big", signed=size == 4)

    def name(self, count_size: int) -> str:
        n = self.number(count_size)
        text = self.take(n).decode("utf-8")
        self.take(-n % 4)
        return text


def _cdf_header(url: str, handle: IO[bytes], size: int, etag: str | None) -> FileHeader:
    cur = _Cursor(handle)
    version = cur.take(4)[3]
    count = 8 if version == 5 else 4  # NON_NEG
    offset = 4 if version == 1 else 8  # OFFSET
    numrecs = cur.number(count)
    dims = _cdf_dims(cur, count)
    attrs = _cdf_attrs(cur, count)
    names = list(dims)
    unlimited = tuple(n for n, length in dims.items() if length == 0)
    variables, layout = _cdf_vars(cur, count, offset, names, dims)
    record_vars = [n for n, (_, _, is_rec) in layout.items() if is_rec]
    recsize = _record_size(variables, layout, record_vars)
    if numrecs == 0xFFFFFFFF or (count == 8 and numrecs == 2**64 - 1):  # streaming
        first = min((layout[n][0] for n in record_vars), default=size)
        numrecs = (size - first) // recsize if recsize else 0
    sizes = {n: (numrecs if length == 0 else length) for n, length in dims.items()}
    variables = {
        n: VarHeader(n, v.dims, tuple(sizes[d] for d in v.dims), v.dtype, v.attrs)
        for n, v in variables.items()
    }
    _check_size(url, size, variables, layout, numrecs, recsize)
    coords = {
        n: _cdf_values(handle, variables[n], layout[n], numrecs, recsize)
        for n, v in variables.items()
        if v.dims == (n,)
    }
    return FileHeader(url, "scipy", size, etag, sizes, unlimited, variables, coords, attrs)


def _cdf_dims(cur: _Cursor, count: int) -> dict[str, int]:
    tag, n = cur.number(4), cur.number(count)
    if tag not in (0, 10):
        raise ValueError(f"bad dimension list tag {tag}")
    return dict((cur.name(count), cur.number(count)) for _ in range(n))


def _cdf_attrs(cur: _Cursor, count: int) -> dict[str, Any]:
    tag, n = cur.number(4), cur.number(count)
    if tag not in (0, 12):
        raise ValueError(f"bad attribute list tag {tag}")
    attrs: dict[str, Any] = {}
    for _ in range(n):
        name, nc_type, nelems = cur.name(count), cur.number(4), cur.number(count)
        dtype = np.dtype(_CDF_TYPES[nc_type])
        raw = cur.take(nelems * dtype.itemsize)
        cur.take(-(nelems * dtype.itemsize) % 4)
        if nc_type == 2:
            attrs[name] = raw.rstrip(b"\x00").decode("utf-8", errors="replace")
        else:
            values = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
            attrs[name] = values[0] if values.size == 1 else values
    return attrs


def _cdf_vars(
    cur: _Cursor, count: int, offset: int, names: list[str], dims: dict[str, int]
) -> tuple[dict[str, VarHeader], dict[str, tuple[int, int, bool]]]:
    """Variables and their layout: name -> (begin, vsize, is_record)."""
    tag, n = cur.number(4), cur.number(count)
    if tag not in (0, 11):
        raise ValueError(f"bad variable list tag {tag}")
    variables, layout = {}, {}
    for _ in range(n):
        name = cur.name(count)
        var_dims = tuple(names[cur.number(count)] for _ in range(cur.number(count)))
        attrs = _cdf_attrs(cur, count)
        dtype = np.dtype(_CDF_TYPES[cur.number(4)]).newbyteorder("=")
        vsize, begin = cur.number(count), cur.number(offset)
        is_record = bool(var_dims) and dims[var_dims[0]] == 0
        variables[name] = VarHeader(name, var_dims, (), str(dtype), attrs)
        layout[name] = (begin, vsize, is_record)
    return variables, layout


def _record_size(
    variables: dict[str, VarHeader], layout: dict[str, tuple[int, int, bool]], record: list[str]
) -> int:
    if len(record) == 1:  # a single record variable is not padded
        var = variables[record[0]]
        return layout[record[0]][1] if len(var.dims) > 1 else np.dtype(var.dtype).itemsize
    return sum(layout[n][1] for n in record)


def _check_size(
    url: str,
    size: int,
    variables: dict[str, VarHeader],
    layout: dict[str, tuple[int, int, bool]],
    numrecs: int,
    recsize: int,
) -> None:
    needed = 0
    for name, (begin, _, is_record) in layout.items():
        var = variables[name]
        nbytes = (
            int(np.prod(var.shape[1:] if is_record else var.shape)) * np.dtype(var.dtype).itemsize
        )
        last = begin + (numrecs - 1) * recsize + nbytes if is_record else begin + nbytes
        if not is_record or numrecs:
            needed = max(needed, last)
    if size and needed > size:
        raise SchemaError(
            f"{url} is truncated: its header describes {needed} bytes but the file holds "
            f"{size}. Copy it again from its source, or exclude it (on_error='skip')."
        )


def _cdf_values(
    handle: IO[bytes],
    var: VarHeader,
    layout: tuple[int, int, bool],
    numrecs: int,
    recsize: int,
) -> np.ndarray:
    """A 1-D coordinate's values: one read, or one small read per record."""
    begin, _, is_record = layout
    dtype = np.dtype(var.dtype).newbyteorder(">")
    if not is_record:
        handle.seek(begin)
        raw = handle.read(var.shape[0] * dtype.itemsize)
    else:
        parts = []
        for i in range(numrecs):
            handle.seek(begin + i * recsize)
            parts.append(handle.read(dtype.itemsize))
        raw = b"".join(parts)
    return np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
