"""Drawing helpers of the previews: what a preview returns, tiles, marks and writing PNGs.

A montage or contact sheet is composed as an RGB array, pixel for pixel, and
written with its labels through matplotlib (imported when a preview is made),
so that every tile is where :class:`Preview` says it is.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cubes.errors import CubeError
from cubes.metadata import RootMetadata, single_get
from cubes.store import filesystem, storage_errors, zarr_store

__all__ = [
    "BACKGROUND",
    "MIN_TILE",
    "MISSING",
    "MISSING_FILL",
    "Preview",
    "new_figure",
    "lazy_open",
    "mark",
    "save",
    "write_png",
]

MISSING = (255, 0, 0)  # the frame of a tile with missing images
MISSING_FILL = (90, 0, 0)  # a tile with none of its drawn images
BACKGROUND = (24, 24, 24)
MIN_TILE = 48  # small images are enlarged to about this many pixels


@dataclass
class Preview:
    """What :func:`preview_cube` drew.

    Attributes
    ----------
    path
        Where the PNG is.
    width, height
        Its size in pixels.
    what
        One sentence: what is drawn and how it is scaled.
    tiles
        Where each drawn item is in the PNG: ``label -> (top, left, height,
        width)`` in pixels (a plate: ``"A01/1"`` for well A01, field 1; a
        contact sheet: ``"sample 3"``; a map: none).
    """

    path: str
    width: int
    height: int
    what: str
    tiles: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


def lazy_open(root: RootMetadata, options: dict[str, Any] | None) -> Any:
    """The cube with lazily indexed (not dask) variables: a selection reads only its chunks."""
    import xarray as xr

    store = zarr_store(root.url, single_get(root.url, options), read_only=True)
    with storage_errors(root.url, options):
        return xr.open_zarr(store, consolidated=root.consolidated, zarr_format=3, chunks=None)


def mark(tile: np.ndarray, present: np.ndarray) -> None:
    """Fill a field with none of its drawn images; frame one that lacks some."""
    if present.all():
        return
    if not present.any():
        tile[...] = MISSING_FILL
    t = max(1, min(tile.shape[0], tile.shape[1]) // 16)
    for region in (tile[:t], tile[-t:], tile[:, :t], tile[:, -t:]):
        region[...] = MISSING


def new_figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is in the test extra
        raise CubeError(
            "A preview is drawn with matplotlib, which is not installed: pip install matplotlib"
        ) from exc
    return Figure(figsize=(width, height), dpi=100)


def write_png(
    canvas: np.ndarray, texts: list[tuple], out: str, options: dict[str, Any] | None
) -> tuple[int, int]:
    """The canvas pixel for pixel, with text ``(y, x, text, colour, align)`` over it."""
    height, width = canvas.shape[:2]
    fig = new_figure(width / 100, height / 100)
    fig.figimage(canvas, xo=0, yo=0, origin="upper")
    for y, x, text, colour, align in texts:
        fig.text(x / width, 1 - y / height, text, color=colour, fontsize=7, ha=align, va="center")
    return save(fig, out, options)


def save(figure: Any, out: str, options: dict[str, Any] | None) -> tuple[int, int]:
    """Write ``figure`` as a PNG to ``out`` (a local path or URL); its (width, height) in pixels."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    fs, path = filesystem(out, options)
    with storage_errors(out, options):
        fs.pipe_file(path, buffer.getvalue())
    width, height = (int(round(v)) for v in figure.get_size_inches() * 100)
    return width, height
