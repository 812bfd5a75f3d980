"""What one sample of :class:`~loaders.dataset.CubeBatchDataset` is, from the cube's layout.

The cube's recorded layout (:mod:`cubes.layout`) names its sample dims, its
window dims and its variables; the dataset's arguments pick from them:

- the **C axis** is a list of :class:`Field`: one per selected variable and
  position along that variable's channel dims (the layout's ``channel_dim``
  and the dims its statistics are computed per: a plate's ``channel``, a
  climate variable's pressure level). ``variables=`` picks variables,
  ``channels=`` picks fields by label (a plate's channel names; ``"T@85000"``
  for one level of ``T``);
- a sample is one position along the sample dims (a plate's ``well, field``;
  an array cube's ``sample``), or with ``input_steps`` a **time window**
  along the layout's ``time_dim`` (:mod:`loaders.windows`), times one
  ``input_dims`` patch of the window dims;
- every other dim of a variable is read whole.

Nothing here names a particular kind's dims: :func:`resolve_space` reads them
from the layout, and :class:`Space` tells the read path
(:mod:`loaders._batch`) how to build each variable's selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import xarray as xr

from cubes import conventions as cv
from cubes.errors import SchemaError
from cubes.layout import Layout, layout_of
from loaders.windows import TimeRange

__all__ = ["Field", "Space", "TimeWindows", "cube_layout", "field_labels", "resolve_space"]


@dataclass(frozen=True)
class Field:
    """One entry of the C axis: a variable at one position of its channel dims."""

    variable: str
    label: str
    key: tuple[Any, ...]  # coordinate values along the variable's channel dims


@dataclass(frozen=True)
class TimeWindows:
    """``input_steps`` inputs, then ``target_steps`` targets ``lead`` after the last input."""

    dim: str
    input_steps: int
    target_steps: int
    lead: int | str


@dataclass(frozen=True)
class Space:
    """The sample space of a dataset: shared by all its cubes."""

    layout: Layout
    window: dict[str, int]  # sample extent along each window dim
    overlap: dict[str, int]
    inputs: tuple[Field, ...]
    targets: tuple[Field, ...]
    windows: TimeWindows | None
    time_range: TimeRange | None = None  # by the time of the sample's (first input) step
    channel_dims: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per variable
    # The dims of one sample of the inputs (targets), in the first field's variable's order:
    # its window and whole dims, found once here rather than for every batch.
    input_shape_dims: tuple[str, ...] = ()
    target_shape_dims: tuple[str, ...] = ()

    @property
    def sample_dims(self) -> tuple[str, ...]:
        return self.layout.sample_dims

    @property
    def window_dims(self) -> tuple[str, ...]:
        return tuple(self.window)

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables read: those of the inputs, then those only in the targets."""
        seen = dict.fromkeys(f.variable for f in self.inputs + self.targets)
        return tuple(seen)

    def role(self, dim: str) -> str:
        """How a variable's dim is selected: time, sample, channel, window or whole."""
        if self.windows is not None and dim == self.windows.dim:
            return "time"
        if dim in self.layout.sample_dims:
            return "sample"
        if dim in self.window:
            return "window"
        return "whole"


def cube_layout(ds: xr.Dataset) -> Layout:
    """The layout ``ds`` records; a Dataset built by hand with a plate's variables is a plate."""
    url = str(ds.encoding.get("source", ""))
    try:
        return layout_of(ds.attrs, url)
    except SchemaError:
        if cv.ATTR_KIND not in ds.attrs and "images" in ds.data_vars and "channel" in ds.dims:
            return layout_of({cv.ATTR_KIND: "cellpainting-plate"})
        raise


def _channel_dims(layout: Layout, ds: xr.Dataset, variable: str) -> tuple[str, ...]:
    """The variable's dims that are channels: the layout's channel dim and its statistics' dims."""
    dims = ds[variable].dims
    spec = layout.statistics.get(variable)
    wanted = ([layout.channel_dim] if layout.channel_dim else []) + list(spec.dims if spec else [])
    skip = set(layout.sample_dims) | set(layout.window_dims)
    return tuple(dict.fromkeys(d for d in wanted if d in dims and d not in skip))


def _label(layout: Layout, variable: str, dims: tuple[str, ...], key: tuple[Any, ...]) -> str:
    if not dims:
        return variable
    if dims == (layout.channel_dim,):
        return str(key[0])
    parts = [f"{v:g}" if isinstance(v, float | np.floating) else str(v) for v in key]
    return f"{variable}@{','.join(parts)}"


def field_labels(layout: Layout, ds: xr.Dataset, variable: str) -> list[Field]:
    """Every field of ``variable`` in ``ds``, in its stored order."""
    dims = _channel_dims(layout, ds, variable)
    values = [
        [v.item() if hasattr(v, "item") else v for v in np.asarray(ds[d].values)]
        if d in ds.coords
        else list(range(ds.sizes[d]))
        for d in dims
    ]
    keys: list[tuple[Any, ...]] = [()]
    for column in values:
        keys = [k + (v,) for k in keys for v in column]
    return [Field(variable, _label(layout, variable, dims, k), k) for k in keys]


def _pick_variables(
    layout: Layout, ds: xr.Dataset, names: Sequence[str] | None, what: str
) -> list[str]:
    if names is None:
        return list(layout.variables)
    if isinstance(names, str):
        names = [names]
    unknown = [v for v in names if v not in layout.variables or v not in ds.data_vars]
    if unknown or not names:
        problem = f"unknown {unknown}" if unknown else "empty selection"
        raise SchemaError(
            f"{what}={list(names)}: {problem}; the cube's variables are {list(layout.variables)}. "
            f"Pick names from that list, or pass {what}=None for all."
        )
    return list(names)


def _pick_fields(
    layout: Layout, ds: xr.Dataset, variables: list[str], channels: Sequence[str] | None
) -> list[Field]:
    every = [f for v in variables for f in field_labels(layout, ds, v)]
    if channels is None:
        return every
    if isinstance(channels, str):
        channels = [channels]
    by_label = {f.label: f for f in every}
    unknown = [c for c in channels if c not in by_label]
    if unknown or not channels:
        problem = f"unknown {unknown}" if unknown else "empty selection"
        raise SchemaError(
            f"channels={list(channels)}: {problem}; the cube has {list(by_label)}. Pick names "
            "from that list, or pass channels=None for all."
        )
    return [by_label[c] for c in channels]


def _check_window_dims(
    layout: Layout,
    sizes: dict[str, int],
    input_dims: dict[str, int] | None,
    overlap: dict[str, int] | None,
) -> tuple[dict[str, int], dict[str, int]]:
    window_dims = layout.window_dims
    dims = dict(input_dims or {})
    for name, given in (("input_dims", dims), ("input_overlap", dict(overlap or {}))):
        unknown = [d for d in given if d not in window_dims]
        if unknown:
            raise SchemaError(
                f"{name} has {unknown}; this {layout.kind} cube's windows are along "
                f"{list(window_dims)} (each sample is one position of {list(layout.sample_dims)}"
                "). Remove the other keys."
            )
    window = {d: int(dims.get(d, sizes[d])) for d in window_dims}
    for dim, size in window.items():
        if not 1 <= size <= sizes[dim]:
            raise SchemaError(
                f"input_dims['{dim}'] = {size}, but the cube's '{dim}' has {sizes[dim]} pixels; "
                f"give a window of 1 to {sizes[dim]}."
            )
    over = {d: int(v) for d, v in (overlap or {}).items()}
    for dim, value in over.items():
        if not 0 <= value < window[dim]:
            raise SchemaError(
                f"input_overlap['{dim}'] = {value}: give 0 to {window[dim] - 1} (less than "
                "the window)."
            )
    return window, over


def _shape_dims(
    ds: xr.Dataset, space: Space, fields: tuple[Field, ...], what: str
) -> tuple[str, ...]:
    """The dims of one sample of ``fields`` (the first's); the fields must stack: one shape."""
    dims: dict[str, tuple[str, ...]] = {}
    shapes = {}
    for f in fields:
        dims[f.variable] = tuple(
            str(d)
            for d in ds[f.variable].dims
            if space.role(str(d)) not in ("time", "sample")
            and d not in space.channel_dims[f.variable]
        )
        shapes[f.variable] = tuple(
            space.window[d] if d in space.window else ds.sizes[d] for d in dims[f.variable]
        )
    if len(set(shapes.values())) > 1:
        raise SchemaError(
            f"The {what}= variables have different sample shapes {shapes}; they cannot stack on "
            f"one channel axis. Give {what}= variables of one shape."
        )
    return dims[fields[0].variable]


def resolve_space(
    ds: xr.Dataset,
    *,
    variables: Sequence[str] | None,
    channels: Sequence[str] | None,
    target_variables: Sequence[str] | None,
    input_dims: dict[str, int] | None,
    input_overlap: dict[str, int] | None,
    input_steps: int | None,
    target_steps: int,
    lead: int | str,
    time_range: TimeRange | None,
) -> Space:
    """The sample space the arguments give on the first cube ``ds``; errors name the argument."""
    layout = cube_layout(ds)
    where = ds.encoding.get("source", "The cube")
    if layout.time_dim is None and (input_steps is not None or time_range is not None):
        given = "input_steps" if input_steps is not None else "time_range"
        raise SchemaError(
            f"{given} given, but {where} is a cube of kind {layout.kind!r} with no time axis "
            f"(samples over {list(layout.sample_dims)}). Remove {given}."
        )
    if input_steps is None and target_steps:
        raise SchemaError(
            f"target_steps={target_steps} needs input_steps (the window's input steps)."
        )
    windows = None
    if input_steps is not None:
        if not isinstance(input_steps, int) or isinstance(input_steps, bool) or input_steps < 1:
            raise SchemaError(f"input_steps={input_steps!r}: give an integer >= 1.")
        if not isinstance(target_steps, int) or target_steps < 0:
            raise SchemaError(f"target_steps={target_steps!r}: give an integer >= 0.")
        if target_variables is not None and target_steps == 0:
            raise SchemaError(
                "target_variables given with target_steps=0: give target_steps >= 1 (the "
                "steps to predict), or no target_variables."
            )
        windows = TimeWindows(str(layout.time_dim), input_steps, target_steps, lead)
    names = _pick_variables(layout, ds, variables, "variables")
    inputs = tuple(_pick_fields(layout, ds, names, channels))
    targets: tuple[Field, ...] = ()
    if target_variables is not None:
        targets = tuple(
            _pick_fields(
                layout, ds, _pick_variables(layout, ds, target_variables, "target_variables"), None
            )
        )
    elif windows is not None and windows.target_steps:
        targets = inputs
    sizes = {str(d): int(n) for d, n in ds.sizes.items()}
    window, overlap = _check_window_dims(layout, sizes, input_dims, input_overlap)
    channel_dims = {
        v: _channel_dims(layout, ds, v) for v in dict.fromkeys(f.variable for f in inputs + targets)
    }
    space = Space(
        layout,
        window,
        overlap,
        inputs,
        targets,
        windows,
        time_range=time_range,
        channel_dims=channel_dims,
    )
    return replace(
        space,
        input_shape_dims=_shape_dims(ds, space, inputs, "variables"),
        target_shape_dims=_shape_dims(ds, space, targets, "target_variables") if targets else (),
    )
