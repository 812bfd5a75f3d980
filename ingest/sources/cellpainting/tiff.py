"""Reading the plate's TIFFs: headers while planning, whole fields in the write tasks.

Each write task reads the channels of one field into a ``(channel, y, x)``
block, decoded straight into it (no copy of a local file in memory; one
whole-object GET for a remote one).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import tifffile

from cubes.errors import InvalidImageError
from cubes.store import filesystem, is_local, storage_errors
from ingest.plan import Block, ShardTask
from ingest.sources.cellpainting.layout import IMAGES

__all__ = ["ReadContext", "describe", "first_header", "read_block"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadContext:
    """What a write task needs to read its images (picklable; no open handles)."""

    storage_options: dict[str, Any]
    shape: tuple[int, int]
    dtype: str
    n_channels: int
    on_error: str = "fail"


@contextlib.contextmanager
def _open_image(url: str, storage_options: dict[str, Any]) -> Iterator[BinaryIO]:
    """The TIFF's bytes as a file: local files opened (decoded straight into the block,
    no copy of the file in memory), others fetched whole (one GET, not ranged reads)."""
    fs, path = filesystem(url, storage_options)
    with contextlib.ExitStack() as stack:
        with storage_errors(url, storage_options):
            if is_local(url):
                fh: BinaryIO = stack.enter_context(open(path, "rb"))
            else:
                fh = io.BytesIO(_cat_whole(fs, path))
        yield fh


def _cat_whole(fs: Any, path: str) -> bytes:
    """One object in one GET: s3fs (``max_concurrency`` > 1) would first HEAD every object to
    decide whether to split it into ranged GETs (only above 50 MB): a round trip per image."""
    if getattr(fs, "max_concurrency", 1) > 1:
        return fs.cat_file(path, max_concurrency=1)
    return fs.cat_file(path)


def _read_image_into(
    url: str, storage_options: dict[str, Any], out: np.ndarray
) -> tuple[tuple[int, ...], np.dtype]:
    """Decode one TIFF image into ``out`` if it has ``out``'s shape and dtype.

    Returns the image's shape and dtype (``out`` is left untouched when they
    differ); raises :class:`InvalidImageError` naming ``url`` if it is not a
    readable TIFF (``out`` may then hold part of it).
    """
    with _open_image(url, storage_options) as fh:
        try:
            with tifffile.TiffFile(fh) as tif:
                series = tif.series[0]
                shape, dtype = tuple(series.shape), np.dtype(series.dtype)
                if shape == out.shape and dtype == out.dtype:
                    tif.asarray(out=out)
                else:  # decoded all the same: a corrupt image is unreadable, not mismatched
                    tif.asarray()
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for corrupt input
            raise _not_a_tiff(url, exc) from exc
    return shape, dtype


def _read_header(url: str, storage_options: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the first page of a TIFF, reading its header only."""
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options), fs.open(path, "rb") as fh:
        try:
            with tifffile.TiffFile(fh) as tif:
                page = tif.pages.first
                return tuple(page.shape), np.dtype(page.dtype)
        except Exception as exc:  # noqa: BLE001 - see _read_image_into
            raise _not_a_tiff(url, exc) from exc


def first_header(
    urls: list[str], on_error: str, options: dict[str, Any]
) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the plate: the first image's, or under skip the first readable one's."""
    candidates = urls if on_error == "skip" else urls[:1]
    for url in candidates[:-1]:
        try:
            return _read_header(url, options)
        except InvalidImageError as exc:
            logger.warning("Skipped while planning: %s", exc)
    return _read_header(candidates[-1], options)


def _not_a_tiff(url: str, exc: Exception) -> InvalidImageError:
    return InvalidImageError(
        f"{url} is named like a Cell Painting image but is not a readable TIFF "
        f"({type(exc).__name__}: {exc}). Replace it with a valid TIFF, remove it from SRC, or "
        "pass --on-error skip."
    )


def read_block(task: ShardTask, ctx: ReadContext) -> Block:
    """Read the channels of one field into a ``(channel, y, x)`` block.

    Under ``on_error="skip"`` an unreadable or mismatched image is left out
    (``present`` False, listed in ``skipped``) instead of failing the task.
    """
    block = np.zeros((ctx.n_channels, *ctx.shape), dtype=ctx.dtype)
    present = np.zeros(ctx.n_channels, dtype=bool)
    skipped: list[tuple[str, str]] = []
    for position, url in task.inputs:
        kind = "unreadable"
        try:
            shape, dtype = _read_image_into(url, ctx.storage_options, block[position])
            if shape != ctx.shape or dtype != np.dtype(ctx.dtype):
                kind = "mismatched"
                raise InvalidImageError(
                    f"Image {url} is {describe(shape, dtype)}; the plate's images "
                    f"are {describe(ctx.shape, ctx.dtype)}. Fix or remove it from SRC, or pass "
                    "--on-error skip."
                )
        except InvalidImageError as exc:
            block[position] = 0  # what a failed decode left there
            if ctx.on_error != "skip":
                raise
            logger.warning("Skipped: %s", exc)
            skipped.append((kind, url))
            continue
        present[position] = True
    return Block({IMAGES: block}, present, skipped)


def describe(shape: tuple[int, ...], dtype: Any) -> str:
    return f"{'x'.join(str(s) for s in shape)} {np.dtype(dtype).name}"
