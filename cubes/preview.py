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

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from cubes.drawing import (
    BACKGROUND,
    MIN_TILE,
    MISSING,
    Preview,
    lazy_open,
    mark,
    new_figure,
    save,
    write_png,
)
from cubes.errors import ArgumentError, IncompleteCubeWarning
from cubes.layout import Layout
from cubes.metadata import RootMetadata, iso_time
from cubes.montage import COLOURS, THUMBNAIL, plate_montage
from cubes.open import read_cube_root
from cubes.store import storage_errors

__all__ = ["COLOURS", "MISSING", "Preview", "preview_cube"]


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

    Warns
    -----
    IncompleteCubeWarning
        The cube's ingest has not finished.

    Raises
    ------
    ArgumentError
        An option that does not fit the cube (a variable, channel, field or
        time it lacks, or one that does not apply to its kind).
    SourceNotFoundError, SchemaError, StorageError
        As :func:`cubes.open_cube`.
    """
    root = read_cube_root(url, storage_options)
    if not root.complete:
        warnings.warn(
            f"The cube at {url} is incomplete: its ingest has not finished, so the preview shows "
            "the fill value where nothing is written yet. Re-run the ingest to complete it.",
            IncompleteCubeWarning,
            stacklevel=2,
        )
    layout = root.layout()
    ds = lazy_open(root, storage_options)  # metadata and coordinates; pixels when drawn
    if THUMBNAIL in ds and layout.channel_dim is not None:
        _refuse(url, "a plate", variable=variable, time=time, level=level)
        return plate_montage(root, layout, ds, out, storage_options, channels, fields)
    _refuse(url, f"a {root.kind} cube", channels=channels, fields=fields)
    if layout.time_dim is not None and len(layout.window_dims) == 2:
        return _map(root, layout, ds, out, storage_options, variable, time, level)
    _refuse(url, f"a {root.kind} cube without a time axis", time=time, level=level)
    return _sheet(root, layout, ds, out, storage_options, variable, count)


def _refuse(url: str, what: str, **given: Any) -> None:
    for name, value in given.items():
        if value is not None and value != []:
            raise ArgumentError(
                f"--{name} does not apply to {url}: it is {what}. Leave it out "
                "(see 'python -m cubes preview --help' for what applies to each kind)."
            )


def _map(
    root: RootMetadata,
    layout: Layout,
    ds: Any,
    out: str,
    options: dict[str, Any] | None,
    variable: str | None,
    time: str | None,
    level: float | None,
) -> Preview:
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
    fig = new_figure(8.0, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    mesh = ax.pcolormesh(
        ds[xdim].values, ds[ydim].values, values, shading="auto", vmin=vmin, vmax=vmax
    )
    fig.colorbar(mesh, ax=ax, label=str(var.attrs.get("units", "")))
    title = where + (" — missing: no data at this step" if missing else "")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xdim)
    ax.set_ylabel(ydim)
    width, height = save(fig, out, options)
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


def _sheet(
    root: RootMetadata,
    layout: Layout,
    ds: Any,
    out: str,
    options: dict[str, Any] | None,
    variable: str | None,
    count: int,
) -> Preview:
    name = _variable(root.url, ds, layout, variable, min_dims=2)
    sdim = layout.sample_dims[0]
    n = min(max(count, 1), ds.sizes[sdim])
    with storage_errors(root.url, options):
        data = np.asarray(ds[name].isel({sdim: slice(0, n)}).values, dtype=np.float32)
        present = np.asarray(ds[layout.mask].values[:n], bool) if layout.mask else np.ones(n, bool)
        lo, hi = _range(ds, layout, name, {}, data)
    images = [_as_image(np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)) for a in data]
    th, tw = images[0].shape[:2]
    zoom = max(1, 2 * MIN_TILE // max(th, tw, 1))
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
        mark(canvas[y : y + sh, x : x + sw], np.array([present[i]]))
        tiles[f"{sdim} {i}"] = (y, x, sh, sw)
        texts.append((y - 7, x, f"{sdim} {i}", "white", "left"))
    title = f"{name}: the first {n} of {ds.sizes[sdim]} {sdim}s, scaled {lo:.4g}–{hi:.4g}"
    width, height = write_png(canvas, [(10, 8, title, "white", "left"), *texts], out, options)
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
