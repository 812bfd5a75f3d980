"""A PNG of a cube (``python -m cubes preview``), reading only what it draws.

- A plate: a montage of the stored thumbnails, wells where they sit on the
  plate (row letters down, column numbers across), the fields of a well side
  by side, the channels as a colour composite, each scaled between its stored
  1st and 99th percentiles (``channel_p01``/``channel_p99``). A field whose
  drawn channels are all missing is filled dark red, one missing some of them
  gets a red frame.
- A time series on a grid (climate): a map of one variable at one time step
  (and level), coloured between the variable's stored minimum and maximum.
- Anything else (arrays): a contact sheet of the first samples of one variable.

Pixels are read through xarray's lazy indexing (not dask), so that a selection
reads the chunks inside the shards that it covers and nothing more. Drawing
needs matplotlib, imported when a preview is made.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cubes.errors import ArgumentError, CubeError
from cubes.layout import Layout
from cubes.metadata import RootMetadata, iso_time
from cubes.open import read_cube_root
from cubes.store import filesystem, storage_errors, zarr_store

__all__ = ["COLOURS", "MISSING", "Preview", "preview_cube"]

# Stains to colours (RGB 0..1); the composite adds them. Brightfield is left out by default.
COLOURS: dict[str, tuple[float, float, float]] = {
    "DNA": (0.0, 0.0, 1.0),
    "ER": (0.0, 1.0, 0.0),
    "RNA": (1.0, 1.0, 0.0),
    "AGP": (1.0, 0.0, 0.0),
    "Mito": (1.0, 0.0, 1.0),
}
_FALLBACK = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]  # unknown names: R, G, B
MISSING = (255, 0, 0)  # the frame of a field with missing images
MISSING_FILL = (90, 0, 0)  # a field with none of its drawn images
BACKGROUND = (24, 24, 24)
_THUMBNAIL = "thumbnail"  # the plate's thumbnails (written by the cellpainting source)
_MAX_WIDTH = 4000  # pixels of a montage; bigger plates are subsampled
_MIN_TILE = 48  # small thumbnails are enlarged to about this many pixels


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


def preview_cube(
    url: str,
    out: str,
    *,
    storage_options: dict[str, Any] | None = None,
    variable: str | None = None,
    time: str | None = None,
    level: float | None = None,
    channels: Sequence[str] | None = None,
    fields: Sequence[int] | None = None,
    count: int = 16,
) -> Preview:
    """Draw the cube at ``url`` into the PNG ``out`` (a local path or URL).

    Parameters
    ----------
    url
        Local path or URL of the cube.
    out
        Where to write the PNG.
    storage_options
        fsspec options for ``url`` and ``out``.
    variable
        The variable of a map or contact sheet (default: the layout's first
        one that can be drawn).
    time
        A map's time step, as ISO text (``2000-03-01``; default: the first step
        present).
    level
        A map's level, the nearest coordinate value (default: the first level).
    channels
        A plate's channels to composite (default: the stains DNA, ER, RNA, AGP
        and Mito that it has; else its first three channels as red, green, blue).
    fields
        A plate's fields to draw (default: all).
    count
        Samples on a contact sheet.

    Raises
    ------
    ArgumentError
        An option that does not fit the cube (a variable, channel, field or
        time it lacks, or one that does not apply to its kind).
    SourceNotFoundError, SchemaError, StorageError
        As :func:`cubes.open_cube`.
    """
    root = read_cube_root(url, storage_options)
    layout = root.layout()
    if _THUMBNAIL in root.arrays and layout.channel_dim is not None:
        _refuse(url, "a plate", variable=variable, time=time, level=level)
        return _plate(root, layout, out, storage_options, channels, fields)
    _refuse(url, f"a {root.kind} cube", channels=channels, fields=fields)
    if layout.time_dim is not None and len(layout.window_dims) == 2:
        return _map(root, layout, out, storage_options, variable, time, level)
    _refuse(url, f"a {root.kind} cube without a time axis", time=time, level=level)
    return _sheet(root, layout, out, storage_options, variable, count)


def _refuse(url: str, what: str, **given: Any) -> None:
    for name, value in given.items():
        if value is not None and value != []:
            raise ArgumentError(
                f"--{name} does not apply to {url}: it is {what}. Leave it out "
                "(see 'python -m cubes preview --help' for what applies to each kind)."
            )


def _lazy(root: RootMetadata, options: dict[str, Any] | None) -> Any:
    """The cube with lazily indexed (not dask) variables: a selection reads only its chunks."""
    import xarray as xr

    store = zarr_store(root.url, options, read_only=True)
    with storage_errors(root.url, options):
        return xr.open_zarr(store, consolidated=root.consolidated, zarr_format=3, chunks=None)


# --- a plate: thumbnails --------------------------------------------------------------


def _plate(
    root: RootMetadata,
    layout: Layout,
    out: str,
    options: dict[str, Any] | None,
    channels: Sequence[str] | None,
    fields: Sequence[int] | None,
) -> Preview:
    ds = _lazy(root, options)
    dim = str(layout.channel_dim)
    names = [str(c) for c in ds[dim].values]
    chosen = _channels(root.url, names, channels)
    field_values = [int(f) for f in ds["field"].values]
    field_pos = _fields(root.url, field_values, fields)
    idx = [names.index(c) for c in chosen]
    with storage_errors(root.url, options):
        thumbs = ds[_THUMBNAIL].isel({dim: idx, "field": field_pos}).values.astype(np.float32)
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
    width, height = _write_png(canvas, [(8, 12, title, "white", "left"), *texts], out, options)
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
    zoom = max(1, _MIN_TILE // max(th, tw, 1))
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
            _mark(canvas[y : y + sh, x : x + sw], present[w, k])
            tiles[f"{well}/{field_values[field_pos[k]]}"] = (y, x, sh, sw)
    return canvas, tiles, texts


def _mark(tile: np.ndarray, present: np.ndarray) -> None:
    """Fill a field with none of its drawn images; frame one that lacks some."""
    if present.all():
        return
    if not present.any():
        tile[...] = MISSING_FILL
    t = max(1, min(tile.shape[0], tile.shape[1]) // 16)
    for region in (tile[:t], tile[-t:], tile[:, :t], tile[:, -t:]):
        region[...] = MISSING


def _colour_name(rgb: tuple[float, float, float]) -> str:
    names = {
        (0.0, 0.0, 1.0): "blue",
        (0.0, 1.0, 0.0): "green",
        (1.0, 1.0, 0.0): "yellow",
        (1.0, 0.0, 0.0): "red",
        (1.0, 0.0, 1.0): "magenta",
    }
    return names.get(tuple(rgb), str(rgb))  # type: ignore[arg-type]


# --- a time series on a grid: a map -----------------------------------------------------


def _map(
    root: RootMetadata,
    layout: Layout,
    out: str,
    options: dict[str, Any] | None,
    variable: str | None,
    time: str | None,
    level: float | None,
) -> Preview:
    ds = _lazy(root, options)
    name = _variable(root.url, ds, layout, variable, min_dims=2)
    var = ds[name]
    tdim = str(layout.time_dim)
    t = _time_position(root.url, ds, layout, tdim, time)
    extra = [d for d in var.dims if d != tdim and d not in layout.window_dims]
    if level is not None and not extra:
        raise ArgumentError(f"--level: {name} of {root.url} has no level dim ({var.dims}).")
    select: dict[str, int] = {tdim: t}
    where = f"{name} at {iso_time(ds[tdim].values[t])}"
    for d in extra:
        values = np.asarray(ds[d].values) if d in ds.coords else np.arange(ds.sizes[d])
        k = int(np.argmin(np.abs(values - level))) if level is not None else 0
        select[d] = k
        where += f", {d} {values[k]:g}"
    with storage_errors(root.url, options):
        values = np.asarray(var.isel(select).values, dtype=np.float64)
        missing = layout.mask is not None and not bool(ds[layout.mask].values[t])
        vmin, vmax = _range(ds, layout, name, select, values)
    ydim, xdim = layout.window_dims
    figure = _figure(8.0, 4.8)
    ax = figure.add_subplot(1, 1, 1)
    mesh = ax.pcolormesh(
        ds[xdim].values, ds[ydim].values, values, shading="auto", vmin=vmin, vmax=vmax
    )
    figure.colorbar(mesh, ax=ax, label=str(var.attrs.get("units", "")))
    title = where + (" — missing: no data at this step" if missing else "")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xdim)
    ax.set_ylabel(ydim)
    width, height = _save(figure, out, options)
    what = f"a map of {where}, coloured between the stored min {vmin:.4g} and max {vmax:.4g}"
    return Preview(out, width, height, what + (" (a missing step)" if missing else ""))


def _time_position(url: str, ds: Any, layout: Layout, tdim: str, time: str | None) -> int:
    index = ds.indexes[tdim]
    span = f"{iso_time(index[0])} – {iso_time(index[-1])}, {len(index)} steps"
    if time is None:
        present = np.asarray(ds[layout.mask].values) if layout.mask else np.ones(len(index))
        return int(np.argmax(present)) if present.any() else 0
    try:
        loc = index.get_loc(time)
    except (KeyError, ValueError, TypeError) as exc:
        raise ArgumentError(
            f"--time {time}: no step of {url} at that time ({span}). Give a date or time in "
            "that range, e.g. the first one."
        ) from exc
    if isinstance(loc, slice):
        return int(loc.start)
    if isinstance(loc, np.ndarray):
        return int(np.flatnonzero(loc)[0])
    return int(loc)


def _range(
    ds: Any, layout: Layout, name: str, select: dict[str, int], values: np.ndarray
) -> tuple[float, float]:
    """The stored min and max of ``name`` (at the drawn level), else those of the map."""
    spec = layout.statistics.get(name)
    if spec is not None and spec.var("min") in ds and spec.var("max") in ds:
        at = {d: select[d] for d in spec.dims if d in select}
        lo = float(ds[spec.var("min")].isel(at).values)
        hi = float(ds[spec.var("max")].isel(at).values)
        if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
            return lo, hi
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def _variable(url: str, ds: Any, layout: Layout, variable: str | None, *, min_dims: int) -> str:
    """The variable to draw: the one asked for, else the first with ``min_dims`` to draw."""
    sample = set(layout.sample_dims)
    drawable = [v for v in layout.variables if len(set(ds[v].dims) - sample) >= min_dims]
    if variable is None:
        if not drawable:
            raise ArgumentError(
                f"{url} has no variable with {min_dims} dims to draw besides "
                f"{', '.join(layout.sample_dims)} (its variables: "
                f"{', '.join(f'{v} {ds[v].dims}' for v in layout.variables)})."
            )
        return drawable[0]
    if variable not in ds.data_vars:
        raise ArgumentError(
            f"--variable {variable}: {url} has no such variable; its variables are "
            f"{', '.join(layout.variables)}."
        )
    if variable not in drawable:
        raise ArgumentError(
            f"--variable {variable}: {variable} {ds[variable].dims} of {url} has no image to "
            f"draw; pick one of {', '.join(drawable) or '(none)'}."
        )
    return variable


# --- anything else: a contact sheet ----------------------------------------------------


def _sheet(
    root: RootMetadata,
    layout: Layout,
    out: str,
    options: dict[str, Any] | None,
    variable: str | None,
    count: int,
) -> Preview:
    ds = _lazy(root, options)
    name = _variable(root.url, ds, layout, variable, min_dims=2)
    sdim = layout.sample_dims[0]
    n = min(max(count, 1), ds.sizes[sdim])
    with storage_errors(root.url, options):
        data = np.asarray(ds[name].isel({sdim: slice(0, n)}).values, dtype=np.float32)
        present = np.asarray(ds[layout.mask].values[:n], bool) if layout.mask else np.ones(n, bool)
        lo, hi = _range(ds, layout, name, {}, data)
    images = [_as_image(np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)) for a in data]
    th, tw = images[0].shape[:2]
    zoom = max(1, 2 * _MIN_TILE // max(th, tw, 1))
    sh, sw = th * zoom, tw * zoom
    ncol = math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    label_h, gap, top = 14, 6, 24
    canvas = np.empty((top + nrow * (sh + label_h + gap), 8 + ncol * (sw + gap), 3), np.uint8)
    canvas[...] = BACKGROUND
    tiles, texts = {}, []
    for i, image in enumerate(images):
        y = top + (i // ncol) * (sh + label_h + gap) + label_h
        x = 8 + (i % ncol) * (sw + gap)
        tile = np.repeat(np.repeat((image * 255).astype(np.uint8), zoom, 0), zoom, 1)
        canvas[y : y + sh, x : x + sw] = tile
        _mark(canvas[y : y + sh, x : x + sw], np.array([present[i]]))
        tiles[f"{sdim} {i}"] = (y, x, sh, sw)
        texts.append((y - 7, x, f"{sdim} {i}", "white", "left"))
    title = f"{name}: the first {n} of {ds.sizes[sdim]} {sdim}s, scaled {lo:.4g}–{hi:.4g}"
    width, height = _write_png(canvas, [(10, 8, title, "white", "left"), *texts], out, options)
    return Preview(out, width, height, f"a contact sheet of {title}", tiles)


def _as_image(a: np.ndarray) -> np.ndarray:
    """One sample as (H, W, 3): grey, channels first (1, 3 or 4) or last (3 or 4)."""
    while a.ndim > 3 or (a.ndim == 3 and a.shape[0] not in (1, 3, 4) and a.shape[-1] not in (3, 4)):
        a = a[0]  # the first slice along the leading dims
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=-1)
    if a.shape[0] in (1, 3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a[..., :3]


# --- writing ----------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is in the test extra
        raise CubeError(
            "A preview is drawn with matplotlib, which is not installed: pip install matplotlib"
        ) from exc
    return Figure(figsize=(width, height), dpi=100)


def _write_png(
    canvas: np.ndarray, texts: list[tuple], out: str, options: dict[str, Any] | None
) -> tuple[int, int]:
    """The canvas pixel for pixel, with text ``(y, x, text, colour, align)`` over it."""
    height, width = canvas.shape[:2]
    figure = _figure(width / 100, height / 100)
    figure.figimage(canvas, xo=0, yo=0, origin="upper")
    for y, x, text, colour, align in texts:
        figure.text(
            x / width, 1 - y / height, text, color=colour, fontsize=7, ha=align, va="center"
        )
    return _save(figure, out, options)


def _save(figure: Any, out: str, options: dict[str, Any] | None) -> tuple[int, int]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    fs, path = filesystem(out, options)
    with storage_errors(out, options):
        fs.pipe_file(path, buffer.getvalue())
    width, height = (int(round(v)) for v in figure.get_size_inches() * 100)
    return width, height
