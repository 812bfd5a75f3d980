"""The codecs a cube's data may be written with (``--codec NAME``), by name, in one place.

The default depends on the data's dtype only (:func:`default_codec`): integers
(image pixels) and floats (climate fields) each have the codec chosen by
measurement on real data (``benchmarks/codecs.py``; the tables and the rule are in
``docs/codecs.md``); ``--codec`` picks another from :data:`CODECS`, for every
source. The cube records its codec in its own zarr
metadata, so readers need nothing from here; a resumed, re-run or appended cube
keeps the codec it was written with (:func:`stored_codec`, checked by
:mod:`ingest.dest`).

Names: ``{cname}{level}-{shuffle}`` for Blosc (``zstd1-shuffle``; plain ``lz4-…``
is Blosc lz4 at its default level 5, whose level only sets Blosc's block size),
with ``-1M`` for 1 MiB Blosc blocks instead of Blosc's choice (32 KiB for zstd 1);
``zstd{level}`` for plain zstd (no Blosc, no shuffle).

Lossy, and only on request (the NetCDF source's ``--keep-bits N``):
:func:`keep_bits` rounds float32 values to ``N`` mantissa bits, as
``numcodecs.BitRound`` and xbitinfo do, before they are encoded; the cube then
holds plain float32 values (no filter to decode) and the variable's attrs say
``keep_bits``.
"""

from __future__ import annotations

import argparse
import functools
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    CODECS: dict[str, Any]  # built on first use, by __getattr__ below

__all__ = [
    "CODECS",
    "CODEC_NAMES",
    "FLOAT_DEFAULT",
    "INTEGER_DEFAULT",
    "codec",
    "codec_choice",
    "codec_name",
    "compressor",
    "default_codec",
    "keep_bits",
    "stored_codec",
]

_LZ4_DEFAULT_LEVEL = 5
_MIB = 2**20
MANTISSA_BITS = 23  # of float32

_SPECS: dict[str, dict[str, Any]] = {
    "lz4-shuffle": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"},
    "lz4-bitshuffle": {"cname": "lz4", "clevel": 5, "shuffle": "bitshuffle"},
    "lz4hc1-bitshuffle": {"cname": "lz4hc", "clevel": 1, "shuffle": "bitshuffle"},
    "zstd1-shuffle": {"cname": "zstd", "clevel": 1, "shuffle": "shuffle"},
    "zstd1-bitshuffle": {"cname": "zstd", "clevel": 1, "shuffle": "bitshuffle"},
    "zstd1-shuffle-1M": {"cname": "zstd", "clevel": 1, "shuffle": "shuffle", "blocksize": _MIB},
    "zstd1-bitshuffle-1M": {
        "cname": "zstd",
        "clevel": 1,
        "shuffle": "bitshuffle",
        "blocksize": _MIB,
    },
    "zstd3-bitshuffle-1M": {
        "cname": "zstd",
        "clevel": 3,
        "shuffle": "bitshuffle",
        "blocksize": _MIB,
    },
    "zstd3": {"level": 3},  # plain zstd: no Blosc, no shuffle
}

CODEC_NAMES: tuple[str, ...] = tuple(_SPECS)
"""``--codec`` choices, without importing zarr (the command line's ``--help`` needs only these)."""


@functools.cache
def _codecs() -> dict[str, Any]:
    """:data:`CODECS`, built on first use: importing zarr costs ~0.2 s of start-up."""
    from zarr.codecs import BloscCodec, ZstdCodec

    return {
        name: ZstdCodec(**spec) if "cname" not in spec else BloscCodec(**spec)
        for name, spec in _SPECS.items()
    }


def __getattr__(name: str) -> Any:
    """``CODECS``: name -> zarr v3 codec (typesize set by zarr from the dtype)."""
    if name == "CODECS":
        return _codecs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


INTEGER_DEFAULT = "lz4hc1-bitshuffle"
"""Integers (plates' uint16 pixels): by the rule of ``docs/codecs.md`` on real images."""
FLOAT_DEFAULT = "zstd1-shuffle-1M"
"""Floats (climate fields): by the same rule on ERA-Interim, decoded to float32."""


def default_codec(dtype: Any) -> str:
    """The name of the codec a cube's ``dtype`` data is written with unless ``--codec``."""
    return FLOAT_DEFAULT if np.dtype(dtype).kind in "fc" else INTEGER_DEFAULT


def compressor(dtype: Any, name: str | None = None) -> Any:
    """The codec to write ``dtype`` data with: ``name``'s, else :func:`default_codec`'s."""
    return codec(name or default_codec(dtype))


def codec_choice(text: str) -> str:
    """An argparse ``type=``: a name in :data:`CODECS`."""
    if text not in CODEC_NAMES:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected one of {', '.join(CODEC_NAMES)} (docs/codecs.md)"
        )
    return text


def codec(name: str, *, option: str = "--codec") -> Any:
    """The codec named ``name`` in :data:`CODECS`.

    Raises
    ------
    ArgumentError
        ``name`` is not one of them (the message lists them).

    Examples
    --------
    >>> codec("zstd1-shuffle").cname.value
    'zstd'
    """
    from ingest.sources.base import ArgumentError  # not at the top: the sources import us

    try:
        return _codecs()[name]
    except KeyError:
        raise ArgumentError(
            f"{option} {name!r} is not a codec this project writes; choose one of "
            f"{', '.join(CODEC_NAMES)} (docs/codecs.md says what each costs)."
        ) from None


def codec_name(compressor: Any) -> str:
    """A codec's name as :data:`CODECS` spells it (any Blosc or zstd codec has one).

    Examples
    --------
    >>> codec_name(BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"))
    'zstd3-bitshuffle'
    """
    from zarr.codecs import BloscCodec, ZstdCodec

    if isinstance(compressor, BloscCodec):
        cname, level = compressor.cname.value, compressor.clevel
        stem = "lz4" if (cname, level) == ("lz4", _LZ4_DEFAULT_LEVEL) else f"{cname}{level}"
        size = compressor.blocksize
        blocks = f"-{size // _MIB}M" if size and not size % _MIB else f"-{size // 1024}k"
        blocks = blocks if size else ""
        return f"{stem}-{compressor.shuffle.value}{blocks}"
    if isinstance(compressor, ZstdCodec):
        return f"zstd{compressor.level}" + ("-checksum" if compressor.checksum else "")
    name = compressor.to_dict().get("name") if hasattr(compressor, "to_dict") else None
    return str(name or type(compressor).__name__)


def stored_codec(array: Any) -> str | None:
    """The name of the codec a stored zarr array's chunks are compressed with; None: none."""
    compressors = array.compressors
    return codec_name(compressors[0]) if compressors else None


def keep_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` (float32) rounded to ``bits`` mantissa bits, to nearest, ties to even.

    The error is at most half a unit in the last kept place: ``|r - x| <= |x| *
    2**-(bits + 1)`` (for subnormal ``x``, ``2**-126`` in place of ``|x|``). NaN and
    infinities pass unchanged, as does a finite value that would round to infinity.
    ``bits`` >= 23 returns ``values`` as they are.

    Examples
    --------
    >>> float(keep_bits(np.array([1.2345678], np.float32), 7)[0])
    1.234375
    """
    values = np.asarray(values, dtype=np.float32)
    drop = MANTISSA_BITS - bits
    if drop <= 0:
        return values
    raw = values.view(np.uint32)
    half = np.uint32((1 << (drop - 1)) - 1)
    odd = (raw >> np.uint32(drop)) & np.uint32(1)
    rounded = ((raw + half + odd) & np.uint32(0xFFFFFFFF << drop & 0xFFFFFFFF)).view(np.float32)
    keep = np.isfinite(rounded) | ~np.isfinite(values)
    return np.where(keep & np.isfinite(values), rounded, values)
