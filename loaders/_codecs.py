"""Chunk codecs for the fast read path of :mod:`loaders.reader`.

Maps a Zarr v3 bytes-to-bytes codec (Blosc, Zstd, gzip, zlib, crc32c) to a
function that decodes raw bytes; a codec not decoded here maps to ``None`` and
the array is read through zarr instead. Also the byte order of a ``bytes``
codec and the native dtype of an array's metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from cubes.errors import StorageError
from loaders.storage import Buffer

__all__ = ["byteorder", "crc32c", "decoder", "native_dtype", "strip_crc32c"]


def byteorder(bytes_codec: Any) -> Literal["<", ">"]:
    """The numpy byte order a ``bytes`` codec writes."""
    endian = getattr(bytes_codec, "endian", None)
    return ">" if endian is not None and endian.value == "big" else "<"


def decoder(codec: Any) -> Callable[[Buffer], Buffer] | None:
    """The decode function of a bytes-to-bytes codec, or None if not decoded here."""
    import numcodecs
    from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

    if isinstance(codec, BloscCodec):
        from numcodecs import blosc

        return blosc.decompress  # type: ignore[no-any-return]
    if isinstance(codec, ZstdCodec):
        return numcodecs.Zstd().decode  # type: ignore[no-any-return]
    if isinstance(codec, GzipCodec):
        return numcodecs.GZip().decode  # type: ignore[no-any-return]
    if isinstance(codec, Crc32cCodec):
        return strip_crc32c
    name = str(codec.to_dict().get("name", "")) if hasattr(codec, "to_dict") else ""
    if name in ("numcodecs.blosc", "numcodecs.zstd", "numcodecs.gzip", "numcodecs.zlib"):
        config = dict(codec.to_dict().get("configuration", {}))
        return numcodecs.get_codec({"id": name.split(".", 1)[1], **config}).decode  # type: ignore[no-any-return]
    return None


def crc32c(data: np.ndarray) -> int:
    """The crc32c checksum of ``data``."""
    import google_crc32c

    return int(google_crc32c.value(data))


def strip_crc32c(buf: Buffer) -> Buffer:
    """``buf`` without its trailing crc32c, which is checked."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    if crc32c(raw[:-4]) != int(np.frombuffer(raw[-4:], dtype="<u4")[0]):
        raise StorageError("A chunk fails its crc32c check: the object is damaged.")
    return raw[:-4]


def native_dtype(meta: Any) -> np.dtype:
    """The array's dtype in native byte order."""
    dtype = meta.data_type.to_native_dtype() if hasattr(meta, "data_type") else meta.dtype
    return np.dtype(dtype).newbyteorder("=")
