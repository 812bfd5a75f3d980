"""Time windows of forecasting datasets: which windows exist, in which order, reading what.

Pure planning on numpy arrays, as :mod:`loaders.order`: nothing here reads a
cube or imports torch, so every rank and worker computes the same plan.

A *window* starting at step ``t`` of a cube's record axis (``time``) has
``k = input_steps`` input steps and ``m = target_steps`` target steps::

    inputs   t, t+1, ..., t+k-1
    targets  t+k-1+lead, ..., t+k-1+lead+m-1

The first target is ``lead`` steps after the **last** input step, so the
target's time is the last input's time plus the lead time. On a 6-hourly axis
with ``k=2, m=1, lead="1D"`` (4 steps) the window at ``t=0`` reads inputs
``0, 1`` (00h and 06h of day 1) and target ``5`` (06h of day 2); ``lead=1``
is the next step (``k=2, m=1, lead=1``: inputs ``0, 1``, target ``2``).

A window *needs* its input and target steps only: the steps between the last
input and the first target (``lead > 1``) need not be present. A window is
produced when every step it needs is inside the axis and present (``present``
``True``); one that needs a missing step (one that crosses a gap) never is.

Windows are listed once, by start, on the grid ``0, stride, 2*stride, ...``
of the axis; :func:`select_time_range` keeps those whose first input step lies
in a period, so splits by time are disjoint. Several cubes (ensemble members,
years) make one table of ``(cube, start)`` rows (:func:`window_table`), which
:func:`windows_epoch_order` orders and deals to ranks with the functions of
:mod:`loaders.order`: every window once per epoch over all ranks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import cftime
import numpy as np
import pandas as pd
import xarray as xr

from cubes.errors import SchemaError
from loaders import order

__all__ = [
    "lead_steps",
    "read_plan",
    "select_time_range",
    "valid_windows",
    "window_span",
    "window_steps",
    "window_table",
    "windows_epoch_order",
]

TimeRange = tuple[str | None, str | None]


def lead_steps(lead: int | str, times: Any = None) -> int:
    """The lead time in steps of the record axis ``times``.

    Parameters
    ----------
    lead
        Steps (an int >= 1), or a duration pandas reads (``"6h"``, ``"1D"``,
        ``"3 days"``, ``"12H"``, ``"30min"``) that is a whole number of steps.
    times
        The record axis, gap steps included: ``datetime64`` or :mod:`cftime`
        values (any calendar). Its step is the most common difference between
        consecutive values. Needed for a duration; for an int, bounds it.

    Returns
    -------
    int
        The lead in steps, at least 1 and less than ``len(times)``.

    Raises
    ------
    SchemaError
        A lead < 1, a duration that is not a multiple of the step or not a
        duration, an axis that is not time or is irregular (calendar months),
        or a lead as long as the record.

    Examples
    --------
    >>> six_hourly = np.arange(0, 48, 6).astype("datetime64[h]")
    >>> lead_steps("1D", six_hourly), lead_steps(2, six_hourly)
    (4, 2)
    """
    if isinstance(lead, str):
        steps = _duration_steps(lead, times)
    elif isinstance(lead, int | np.integer) and not isinstance(lead, bool):
        steps = int(lead)
    else:
        raise SchemaError(f"lead={lead!r}: give a number of steps (int) or a duration ('6h').")
    if steps < 1:
        raise SchemaError(
            f"lead={lead!r} is {steps} steps: the first target must come after the last "
            "input. Give a lead of 1 step or more."
        )
    if times is not None and steps >= len(times):
        raise SchemaError(
            f"lead={lead!r} is {steps} steps, longer than the record of {len(times)} steps; "
            "no window fits. Give a shorter lead."
        )
    return steps


def _duration_steps(lead: str, times: Any) -> int:
    """Steps of the duration ``lead`` on the axis ``times``."""
    if times is None:
        raise SchemaError(
            f"lead={lead!r} is a duration: give the cube's time axis to convert it to steps."
        )
    text = re.sub(r"(?<=[\d\s])H\b", "h", lead.strip())  # pandas 3 refuses 'H' for hours
    try:
        duration = pd.to_timedelta(text)
    except ValueError as exc:
        raise SchemaError(
            f"lead={lead!r} is not a duration ({exc}). Give steps (int) or a fixed duration "
            "such as '6h', '1D', '3 days', '30min'."
        ) from exc
    step = _axis_step(times)
    steps, rest = divmod(duration.as_unit("ns").value, step.as_unit("ns").value)
    if rest:
        raise SchemaError(
            f"lead={lead!r} ({duration}) is not a whole number of steps of the time axis "
            f"({step}). Give a multiple of {step}, or the lead in steps."
        )
    return int(steps)


def _axis_step(times: Any) -> pd.Timedelta:
    """The most common difference between consecutive values of a regular time axis."""
    index = _time_index(times)
    if len(index) < 2:
        raise SchemaError(
            f"The time axis has {len(index)} step(s): no step to convert a duration with. "
            "Give the lead in steps."
        )
    diffs = np.asarray(pd.to_timedelta(index[1:] - index[:-1]).as_unit("ns").asi8)
    values, counts = np.unique(diffs, return_counts=True)
    step = int(values[np.argmax(counts)])
    if step <= 0 or np.any(diffs % step) or np.any(diffs <= 0):
        shown = ", ".join(str(pd.Timedelta(int(v), unit="ns")) for v in values[:3])
        raise SchemaError(
            f"The time axis is not regular (steps of {shown}; calendar months or unsorted "
            "times): a duration has no fixed number of steps. Give the lead in steps."
        )
    return pd.Timedelta(step, unit="ns")


def _time_index(times: Any) -> pd.Index:
    """``times`` as an index xarray selects on: CFTimeIndex or DatetimeIndex."""
    values = np.asarray(times)
    if np.issubdtype(values.dtype, np.datetime64):
        return pd.DatetimeIndex(values)
    if values.dtype == object and len(values) and isinstance(values[0], cftime.datetime):
        return xr.CFTimeIndex(values)
    if values.dtype == object and len(values):
        try:
            return pd.DatetimeIndex(values)
        except (TypeError, ValueError):
            pass
    raise SchemaError(
        f"The record axis holds {values.dtype} values ({values[:3].tolist()} ...), not "
        "times: durations and dates do not apply. Give the lead in steps and no time_range."
    )


def _check_window(input_steps: int, target_steps: int, lead: int, stride: int) -> None:
    """Refuse window shapes that make no sense, naming the argument."""
    for name, value, least in (
        ("input_steps", input_steps, 1),
        ("target_steps", target_steps, 0),
        ("lead", lead, 1),
        ("stride", stride, 1),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
            raise SchemaError(f"{name}={value!r}: give an integer >= {least}.")


def window_span(input_steps: int, target_steps: int = 0, lead: int = 1) -> int:
    """Steps from a window's first input to its last needed step, inclusive."""
    if target_steps == 0:
        return input_steps
    return input_steps - 1 + lead + target_steps


def window_steps(
    starts: np.ndarray, *, input_steps: int, target_steps: int = 0, lead: int = 1
) -> np.ndarray:
    """Step indices ``(N, k + m)`` each window needs: its inputs, then its targets.

    >>> window_steps(np.array([0, 3]), input_steps=2, target_steps=1, lead=2).tolist()
    [[0, 1, 3], [3, 4, 6]]
    """
    _check_window(input_steps, target_steps, lead, 1)
    offsets = np.concatenate(
        [np.arange(input_steps), input_steps - 1 + lead + np.arange(target_steps)]
    )
    return np.asarray(starts, dtype=np.int64).reshape(-1, 1) + offsets


def valid_windows(
    present: np.ndarray,
    *,
    input_steps: int,
    target_steps: int = 0,
    lead: int = 1,
    stride: int = 1,
) -> np.ndarray:
    """Start steps of the windows whose every needed step is inside the axis and present.

    Parameters
    ----------
    present
        Bool ``(n,)``: ``True`` where the cube holds the step.
    input_steps, target_steps
        ``k >= 1`` input and ``m >= 0`` target steps per window.
    lead
        Steps from the last input to the first target (see the module notes),
        converted from a duration by :func:`lead_steps`. Unused when ``m == 0``.
    stride
        Starts lie on ``0, stride, 2*stride, ...`` of the axis.

    Returns
    -------
    numpy.ndarray
        Increasing int64 start steps, O(n) time (cumulative sums of the gaps).

    Raises
    ------
    SchemaError
        A bad window shape, or a window longer than the record.

    Examples
    --------
    >>> present = np.array([1, 1, 1, 0, 1, 1, 1, 1], dtype=bool)
    >>> valid_windows(present, input_steps=2, target_steps=1, lead=1).tolist()
    [0, 4, 5]
    >>> valid_windows(present, input_steps=1, target_steps=1, lead=2).tolist()
    [0, 2, 4, 5]
    """
    _check_window(input_steps, target_steps, lead, stride)
    present = np.asarray(present, dtype=bool).reshape(-1)
    n, span = len(present), window_span(input_steps, target_steps, lead)
    if span > n:
        raise SchemaError(
            f"A window of {input_steps} input, {target_steps} target steps and lead {lead} "
            f"spans {span} steps, longer than the record of {n} steps. Shorten the window."
        )
    missing = np.concatenate([[0], np.cumsum(~present)])
    starts = np.arange(0, n - span + 1, stride, dtype=np.int64)
    ok = missing[starts + input_steps] == missing[starts]
    if target_steps:
        first = starts + input_steps - 1 + lead
        ok &= missing[first + target_steps] == missing[first]
    return starts[ok]


def select_time_range(starts: np.ndarray, times: Any, time_range: TimeRange | None) -> np.ndarray:
    """The windows whose first input step's time lies in ``time_range``, ends included.

    Dates are strings compared as ``ds.sel(time=slice(start, end))`` does, on
    ``datetime64`` or :mod:`cftime` axes: ``("2000-01-01", "2008-12-31")``
    keeps every step of 31 December 2008, ``("2000", "2008")`` the same
    years. ``None`` (or a ``None`` end) leaves that side open.

    Each window is placed by one time, its first input's, so periods that do
    not overlap give disjoint sets of windows: train, validation and test
    split by time never share a window (a window's targets may lie after the
    end of its period; the windows of the next period start after it).

    Raises
    ------
    SchemaError
        The axis is not time, is not sorted, or a date cannot be read.
    """
    starts = np.asarray(starts, dtype=np.int64)
    if time_range is None:
        return starts
    index = _time_index(times)
    if not index.is_monotonic_increasing:
        raise SchemaError("The time axis is not sorted: a time_range selects nothing sure.")
    try:
        chosen = index.slice_indexer(time_range[0], time_range[1])
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(
            f"time_range={time_range!r} is not a period of the time axis "
            f"({index[0]} .. {index[-1]}): {exc}. Give ISO dates ('2000-01-01')."
        ) from exc
    first, stop, _ = chosen.indices(len(index))
    return starts[(starts >= first) & (starts < stop)]


def window_table(
    cubes_present: Sequence[np.ndarray],
    *,
    input_steps: int,
    target_steps: int = 0,
    lead: int | str = 1,
    stride: int = 1,
    times: Sequence[Any] | None = None,
    time_range: TimeRange | None = None,
) -> np.ndarray:
    """The windows of several cubes as one table of ``(cube, start)`` rows.

    Parameters
    ----------
    cubes_present
        Each cube's ``present`` mask over its record axis.
    input_steps, target_steps, lead, stride
        As in :func:`valid_windows`; a duration ``lead`` is converted per cube.
    times
        Each cube's time axis (needed for a duration ``lead`` or a ``time_range``).
    time_range
        Keep the windows whose first input lies in it (:func:`select_time_range`).

    Returns
    -------
    numpy.ndarray
        int64 ``(N, 2)``: cube index, start step; cube order, then time order.
    """
    if times is not None and len(times) != len(cubes_present):
        raise SchemaError(
            f"times holds {len(times)} axes for {len(cubes_present)} cubes: give one per cube."
        )
    if times is None and (isinstance(lead, str) or time_range is not None):
        raise SchemaError(
            "A duration lead or a time_range needs each cube's time axis: pass times=[...]."
        )
    parts = [np.zeros((0, 2), dtype=np.int64)]
    for cube, present in enumerate(cubes_present):
        axis = None if times is None else times[cube]
        steps = lead_steps(lead, axis) if isinstance(lead, str) else lead
        starts = valid_windows(
            present, input_steps=input_steps, target_steps=target_steps, lead=steps, stride=stride
        )
        starts = select_time_range(starts, axis, time_range)
        parts.append(np.stack([np.full(len(starts), cube, dtype=np.int64), starts], axis=1))
    return np.concatenate(parts)


def windows_epoch_order(
    table: np.ndarray,
    *,
    seed: int,
    epoch: int,
    batch_size: int,
    shuffle: bool = True,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    uneven: order.Uneven = "pad",
    shard_steps: int = 1,
    shuffle_buffer: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One rank's batches of windows for one epoch: a pure function of ``(seed, epoch)``.

    The two-level shuffle of :func:`loaders.order.epoch_order`, over shards of
    the windows of one cube whose starts lie in one block of ``shard_steps``
    steps (``1``: every window its own shard, a uniform shuffle; the time
    chunk size: a batch's windows share chunks). Batches are dealt to ranks
    round-robin and padded or dropped as :func:`loaders.order.batch_counts`
    says, so over all ranks every window comes once per epoch (with
    ``uneven="pad"`` and not ``drop_last``), plus flagged repeats.

    Parameters
    ----------
    table
        ``(N, 2)`` rows ``(cube, start)`` sorted as :func:`window_table` gives.
    seed, epoch, shuffle, batch_size, rank, world_size, drop_last, uneven, shuffle_buffer
        As for :class:`loaders.CubeBatchDataset` (see :mod:`loaders.order`).
    shard_steps
        Steps per shard block (see above).

    Returns
    -------
    list of (rows, padding)
        Per batch of this rank: the table's rows ``(B, 2)`` and a bool mask,
        ``True`` for a padding repeat.
    """
    table = _check_table(table)
    _check_order(seed, epoch, batch_size, rank, world_size, uneven, shard_steps)
    keys = np.stack([table[:, 0], table[:, 1] // shard_steps], axis=1)
    sizes = order.shard_sizes(keys) if len(table) else np.zeros(0, dtype=np.int64)
    largest = int(sizes.max()) if len(sizes) else 1
    buffer = order.effective_buffer(shuffle_buffer, batch_size, largest)
    the_order = order.epoch_order(sizes, seed=seed, epoch=epoch, shuffle=shuffle, buffer=buffer)
    counts = order.batch_counts(
        len(table), batch_size, world_size, drop_last=drop_last, uneven=uneven
    )
    batches = []
    for i in range(counts.per_rank):
        rows, padding = order.rank_batch(
            the_order, i, batch_size=batch_size, rank=rank, world_size=world_size, counts=counts
        )
        batches.append((table[rows], padding))
    return batches


def _check_table(table: np.ndarray) -> np.ndarray:
    table = np.asarray(table, dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 2:
        raise SchemaError(
            f"The window table has shape {table.shape}; expected (N, 2) rows (cube, start) "
            "as window_table gives."
        )
    cube_step, start_step = np.diff(table[:, 0]), np.diff(table[:, 1])
    if np.any((cube_step < 0) | ((cube_step == 0) & (start_step <= 0))):
        raise SchemaError(
            "The window table is not in cube order then time order (or repeats a row); "
            "build it with window_table."
        )
    return table


def _check_order(
    seed: int, epoch: int, batch_size: int, rank: int, world_size: int, uneven: str, blocks: int
) -> None:
    for name, value, least in (
        ("seed", seed, 0),
        ("epoch", epoch, 0),
        ("batch_size", batch_size, 1),
        ("world_size", world_size, 1),
        ("shard_steps", blocks, 1),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
            raise SchemaError(f"{name}={value!r}: give an integer >= {least}.")
    if not 0 <= rank < world_size:
        raise SchemaError(
            f"rank={rank} with world_size={world_size}: rank must be in 0 .. {world_size - 1}."
        )
    if uneven not in order.UNEVEN:
        raise SchemaError(
            f"uneven={uneven!r}: give 'pad' (repeat windows so every rank has as many "
            "batches) or 'drop' (drop the last batches)."
        )


def read_plan(
    starts: np.ndarray,
    input_steps: int,
    target_steps: int = 0,
    lead: int = 1,
    steps_per_chunk: int = 1,
) -> np.ndarray:
    """The time chunks a batch of windows of one cube needs, each once.

    Consecutive windows share most of their steps, so a batch of windows
    reads the union of their chunks once: ``B`` consecutive windows of ``k``
    inputs read ``k + B - 1`` one-step chunks, not ``B * k``.

    Parameters
    ----------
    starts
        The windows' start steps (one cube).
    input_steps, target_steps, lead
        The window (see :func:`valid_windows`).
    steps_per_chunk
        Time steps per chunk of the cube's variables.

    Returns
    -------
    numpy.ndarray
        Sorted unique int64 chunk indices along the record axis.

    Examples
    --------
    >>> read_plan(np.array([0, 1, 2]), 2, 1, lead=1, steps_per_chunk=1).tolist()
    [0, 1, 2, 3, 4]
    """
    if not isinstance(steps_per_chunk, int | np.integer) or steps_per_chunk < 1:
        raise SchemaError(f"steps_per_chunk={steps_per_chunk!r}: give an integer >= 1.")
    steps = window_steps(starts, input_steps=input_steps, target_steps=target_steps, lead=lead)
    return np.unique(steps // steps_per_chunk).astype(np.int64)
