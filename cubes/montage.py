"""The preview of a plate: a montage of its stored thumbnails as a colour composite.

Wells sit where they are on the plate (row letters down, column numbers
across), the fields of a well side by side; each channel is scaled between its
stored 1st and 99th percentiles (``channel_p01``/``channel_p99``, else min and
max) and added in its colour. A field whose drawn channels are all missing is
filled dark red, one missing some of them gets a red frame. Only the
thumbnails of the drawn fields are read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cubes.drawing import BACKGROUND, MIN_TILE, Preview, mark, write_png
from cubes.errors import ArgumentError
from cubes.layout import Layout
from cubes.metadata import RootMetadata
from cubes.store import storage_errors

__all__ = ["COLOURS", "THUMBNAIL", "plate_montage"]

# Stains to colours (RGB 0..1); the composite adds them. Brightfield is left out by default.
COLOURS: dict[str, tuple[float, float, float]] = {
    "DNA": (0.0, 0.0, 1.0),
    "ER": (0.0, 1.0, 0.0),
    "RNA": (1.0, 1.0, 0.0),
    "AGP": (1.0, 0.0, 0.0),
    "Mito": (1.0, 0.0, 1.0),
}
_FALLBACK = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]  # unknown names: R, G, B
THUMBNAIL = "thumbnail"  # the plate's thumbnails (written by the cellpainting source)
_MAX_WIDTH = 4000  # pixels of a montage; bigger plates are subsampled


def plate_montage(
    root: RootMetadata,
    layout: Layout,
    ds: Any,
    out: str,
    options: dict[str, Any] | None,
    channels: Sequence[str] | None,
    fields: Sequence[int] | None,
) -> Preview:
    """Draw the plate ``root`` into the PNG ``out``: its thumbnails, channels as a composite.

    Raises
    ------
    ArgumentError
        ``channels`` or ``fields`` that the plate lacks.
    """
    dim = str(layout.channel_dim)
    names = [str(c) for c in ds[dim].values]
    chosen = _channels(root.url, names, channels)
    field_values = [int(f) for f in ds["field"].values]
    field_pos = _fields(root.url, field_values, fields)
    idx = [names.index(c) for c in chosen]
    with storage_errors(root.url, options):
        thumbs = ds[THUMBNAIL].isel({dim: idx, "field": field_pos}).values.astype(np.float32)
        present = ds[layout.mask].isel({dim: idx, "field": field_pos}).values.astype(bool)
        lo, hi = _windows(ds, layout, idx)
        rows = [str(r) for r in ds["row"].values]
        cols = [int(c) for c in ds["column"].values]
    colours = [COLOURS.get(c) or _FALLBACK[i % 3] for i, c in enumerate(chosen)]
    scaled = np.clip((thumbs - lo[:, None, None]) / (hi - lo)[:, None, None], 0.0, 1.0)
    rgb = np.einsum("wfcyx,ck->wfyxk", scaled, np.asarray(colours, dtype=np.float32))
    rgb8 = (np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    wells = [str(w) for w in ds["well"].values]
    legend = ", ".join(f"{c} {_colour_name(k)}" for c, k in zip(chosen, colours, strict=True))
    plate = str(root.attrs.get("plate") or root.url)
    title = f"{plate}: {len(wells)} wells × {len(field_pos)} fields; {legend}; p01–p99"
    canvas, tiles, texts = _montage(
        rgb8, present, wells, rows, cols, field_values, field_pos, min_width=6 * len(title) + 16
    )
    width, height = write_png(canvas, [(8, 12, title, "white", "left"), *texts], out, options)
    what = (
        f"{len(wells)} wells × {len(field_pos)} fields of {plate}, channels {legend}, each "
        "scaled between its stored p01 and p99; missing images framed in red"
    )
    return Preview(out, width, height, what, tiles)


def _channels(url: str, names: list[str], channels: Sequence[str] | None) -> list[str]:
    if channels:
        unknown = [c for c in channels if c not in names]
        if unknown:
            raise ArgumentError(
                f"--channels {','.join(unknown)}: the plate {url} has no such channel; its "
                f"channels are {', '.join(names)}."
            )
        return list(channels)
    known = [c for c in COLOURS if c in names]
    return known or names[:3]


def _fields(url: str, values: list[int], fields: Sequence[int] | None) -> list[int]:
    if not fields:
        return list(range(len(values)))
    unknown = [f for f in fields if f not in values]
    if unknown:
        raise ArgumentError(
            f"--fields {','.join(map(str, unknown))}: the plate {url} has fields "
            f"{', '.join(map(str, values))}."
        )
    return [values.index(f) for f in fields]


def _windows(ds: Any, layout: Layout, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each drawn channel's stored p01 and p99 (min and max where those are absent)."""
    variable = layout.variables[0]
    bounds = []
    for low, high in (("p01", "p99"), ("min", "max")):
        names = [layout.stat_var(variable, low), layout.stat_var(variable, high)]
        if all(n in ds for n in names):
            bounds = [np.asarray(ds[n].values, dtype=np.float32)[idx] for n in names]
            break
    if not bounds:
        return np.zeros(len(idx), np.float32), np.full(len(idx), 65535.0, np.float32)
    lo, hi = bounds
    lo = np.nan_to_num(lo, nan=0.0)
    hi = np.where(np.isfinite(hi) & (hi > lo), hi, lo + 1.0)
    return lo, hi


def _montage(
    rgb: np.ndarray,
    present: np.ndarray,
    wells: list[str],
    rows: list[str],
    cols: list[int],
    field_values: list[int],
    field_pos: list[int],
    *,
    min_width: int = 0,
) -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]], list[tuple]]:
    """The plate map: one cell per well at its row and column, its fields in a grid."""
    n_fields, th, tw = rgb.shape[1], rgb.shape[2], rgb.shape[3]
    zoom = max(1, MIN_TILE // max(th, tw, 1))
    row_names = sorted(set(rows), key=lambda r: (len(r), r))
    col_names = sorted(set(cols))
    fc = math.ceil(math.sqrt(n_fields))
    fr = math.ceil(n_fields / fc)
    step = max(1, math.ceil(len(col_names) * fc * tw * zoom / _MAX_WIDTH))
    sh, sw = len(range(0, th, step)) * zoom, len(range(0, tw, step)) * zoom
    cell_h, cell_w = fr * sh + (fr - 1), fc * sw + (fc - 1)
    gap, left, top, bottom = 6, 30, 40, 8
    height = top + len(row_names) * (cell_h + gap) + bottom
    width = max(left + len(col_names) * (cell_w + gap) + 8, min_width)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[...] = BACKGROUND
    tiles: dict[str, tuple[int, int, int, int]] = {}
    texts: list[tuple] = []
    for r, name in enumerate(row_names):
        texts.append((top + r * (cell_h + gap) + cell_h // 2, 14, name, "white", "center"))
    for c, number in enumerate(col_names):
        texts.append((30, left + c * (cell_w + gap) + cell_w // 2, str(number), "white", "center"))
    for w, well in enumerate(wells):
        y0 = top + row_names.index(rows[w]) * (cell_h + gap)
        x0 = left + col_names.index(cols[w]) * (cell_w + gap)
        for k in range(n_fields):
            y, x = y0 + (k // fc) * (sh + 1), x0 + (k % fc) * (sw + 1)
            image = rgb[w, k, ::step, ::step]
            tile = np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)
            canvas[y : y + sh, x : x + sw] = tile
            mark(canvas[y : y + sh, x : x + sw], present[w, k])
            tiles[f"{well}/{field_values[field_pos[k]]}"] = (y, x, sh, sw)
    return canvas, tiles, texts


def _colour_name(rgb: tuple[float, float, float]) -> str:
    names = {
        (0.0, 0.0, 1.0): "blue",
        (0.0, 1.0, 0.0): "green",
        (1.0, 1.0, 0.0): "yellow",
        (1.0, 0.0, 0.0): "red",
        (1.0, 0.0, 1.0): "magenta",
    }
    return names.get(tuple(rgb), str(rgb))  # type: ignore[arg-type]
