"""Merge the record coordinates of many files into one regular axis with gaps.

Each file's time values are decoded with that file's own ``units`` and
``calendar`` (:func:`cftime.num2date`), so files whose units differ merge right.
The steps are sorted whatever the order of the files; a step held twice is
refused; the frequency is the most common difference between consecutive steps
(calendar months when every step falls on the same day and time of its month),
and the axis runs from the first step to the last at that frequency, with the
steps no file holds marked absent.

A record coordinate without CF time units (``month = 1, 7``) gives a numeric
axis handled the same way; no record coordinate at all gives integer steps in
file order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cftime
import numpy as np

from cubes.errors import SchemaError

__all__ = ["RecordCoord", "TimeAxis", "merge_axis"]

_CALENDARS = {"gregorian": "standard", "365_day": "noleap", "366_day": "all_leap"}
_NUMPY_CALENDARS = ("standard", "proleptic_gregorian")
_MAX_STRETCH = 10  # an axis this many times longer than the steps held is called irregular


@dataclass(frozen=True)
class RecordCoord:
    """One file's record coordinate: raw values and attributes (``None``: no coordinate)."""

    url: str
    length: int
    values: np.ndarray | None
    attrs: dict[str, Any]


@dataclass(frozen=True, eq=False)
class TimeAxis:
    """The cube's record axis.

    Attributes
    ----------
    dim
        The record dimension's name.
    values
        ``datetime64[ns]`` for the standard calendars, :mod:`cftime` dates for the
        others, the coordinate's own numbers without CF time units, or ``0..n-1``.
    numbers
        The values encoded in ``units`` (the raw numbers where there are no units).
    units, calendar
        CF ``units`` (``days since <first step>``) and calendar; ``None`` when not time.
    present
        ``True`` where a file holds the step.
    step
        The inferred frequency: ``"1 days"``, ``"1 months"``, ``"6"`` or ``"irregular"``.
    """

    dim: str
    values: np.ndarray
    numbers: np.ndarray
    units: str | None
    calendar: str | None
    present: np.ndarray
    step: str

    @property
    def gaps(self) -> tuple[int, ...]:
        """Indices of the absent steps."""
        return tuple(int(i) for i in np.flatnonzero(~self.present))

    def __len__(self) -> int:
        return len(self.present)


def _calendar(coord: RecordCoord) -> str:
    name = str(coord.attrs.get("calendar", "standard")).lower()
    return _CALENDARS.get(name, name)


def _is_time(coord: RecordCoord) -> bool:
    return coord.values is not None and " since " in str(coord.attrs.get("units", ""))


def merge_axis(dim: str, coords: Sequence[RecordCoord]) -> tuple[TimeAxis, list[np.ndarray]]:
    """Merge per-file record coordinates; returns the axis and each file's axis indices."""
    if not coords:
        raise SchemaError("No files to plan from: the list of NetCDF URLs is empty.")
    if any(c.values is None for c in coords):
        return _index_axis(dim, coords)
    if all(_is_time(c) for c in coords):
        return _time_axis(dim, coords)
    mixed = [c.url for c in coords if _is_time(c)]
    if mixed:
        other = next(c.url for c in coords if not _is_time(c))
        raise SchemaError(
            f"The record coordinate '{dim}' has CF time units in {mixed[0]} but not in {other}. "
            "Give every file the same kind of time coordinate."
        )
    keys = [np.asarray(c.values, dtype=np.float64) for c in coords]
    found, order, pos = _sorted_steps(dim, coords, keys)
    step, index = _regular(found)
    values = found[0] + np.arange(index[-1] + 1) * step if step else found
    values = values.astype(np.result_type(*[c.values for c in coords if c.values is not None]))
    axis = TimeAxis(
        dim,
        values,
        values.astype(np.float64),
        None,
        None,
        _present(index),
        f"{step:g}" if step else "irregular",
    )
    return axis, _per_file(coords, order, pos, index)


def _index_axis(dim: str, coords: Sequence[RecordCoord]) -> tuple[TimeAxis, list[np.ndarray]]:
    starts = np.cumsum([0] + [c.length for c in coords])
    values = np.arange(starts[-1])
    axis = TimeAxis(
        dim, values, values.astype(np.float64), None, None, np.ones(len(values), bool), "1"
    )
    return axis, [np.arange(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _decode(coord: RecordCoord, calendar: str) -> np.ndarray:
    try:
        dates = cftime.num2date(
            np.asarray(coord.values, np.float64),
            str(coord.attrs["units"]),
            calendar,
            only_use_cftime_datetimes=True,
        )
    except (ValueError, TypeError) as exc:
        raise SchemaError(
            f"{coord.url}: cannot decode the time values with units "
            f"'{coord.attrs['units']}' and calendar '{calendar}' ({exc}). Fix the file's time "
            "attributes."
        ) from exc
    return np.atleast_1d(np.asarray(dates, dtype=object))


def _time_axis(dim: str, coords: Sequence[RecordCoord]) -> tuple[TimeAxis, list[np.ndarray]]:
    calendar = _calendar(coords[0])
    for coord in coords[1:]:
        if _calendar(coord) != calendar:
            raise SchemaError(
                f"{coord.url} uses the '{_calendar(coord)}' calendar, {coords[0].url} the "
                f"'{calendar}' calendar; the files of one cube must share a calendar. "
                "Ingest them as separate cubes, or convert one set first."
            )
    dates = [_decode(c, calendar) for c in coords]
    first = min(d.min() for d in dates if len(d))
    ref = f"seconds since {first.strftime('%Y-%m-%d %H:%M:%S')}"
    monthly = _monthly(dates)
    if monthly:
        keys = [np.array([d.year * 12 + d.month - 1 for d in ds], np.float64) for ds in dates]
    else:
        keys = [np.atleast_1d(cftime.date2num(list(ds), ref, calendar)) for ds in dates]
    found, order, pos = _sorted_steps(dim, coords, keys)
    step, index = _regular(found)
    if step and monthly:
        months = found[0] + np.arange(index[-1] + 1) * step
        d = next(ds[0] for ds in dates if len(ds))
        axis_dates = [
            cftime.datetime(
                m // 12, m % 12 + 1, d.day, d.hour, d.minute, d.second, calendar=calendar
            )
            for m in months.astype(int).tolist()
        ]
    elif step:
        seconds = found[0] + np.arange(index[-1] + 1) * step
        axis_dates = list(np.atleast_1d(cftime.num2date(seconds, ref, calendar)))
    else:
        axis_dates = list(np.concatenate(dates)[order])
    units, numbers = _cube_units(axis_dates, calendar)
    values = _as_values(axis_dates, calendar)
    label = "irregular" if not step else f"{step:g} months" if monthly else _step_label(step)
    axis = TimeAxis(dim, values, numbers, units, calendar, _present(index), label)
    return axis, _per_file(coords, order, pos, index)


def _monthly(dates: list[np.ndarray]) -> bool:
    """True when every step falls on the same day and time of its month, months apart."""
    flat = [d for ds in dates for d in ds]
    if len(flat) < 2:
        return False
    stamp = {(d.day, d.hour, d.minute, d.second, d.microsecond) for d in flat}
    if len(stamp) != 1:
        return False
    spans = {(b - a).days for a, b in zip(sorted(flat)[:-1], sorted(flat)[1:], strict=True)}
    return len(spans) > 1  # equal spans (360_day, or all steps 31 days apart): plain seconds


def _sorted_steps(
    dim: str, coords: Sequence[RecordCoord], keys: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted keys, the order, and each sorted step's file; refuses duplicates."""
    flat = np.concatenate(keys)
    owner = np.concatenate([np.full(len(k), i) for i, k in enumerate(keys)])
    order = np.argsort(flat, kind="stable")
    found = flat[order]
    dup = np.flatnonzero(np.diff(found) == 0)
    if dup.size:
        a, b = coords[owner[order[dup[0]]]].url, coords[owner[order[dup[0] + 1]]].url
        where = f"{a} and {b} both hold" if a != b else f"{a} holds twice"
        raise SchemaError(
            f"{where} the same '{dim}' step (sorted position {dup[0] + 1}): the files overlap. "
            "Remove the duplicate file(s) or the overlapping steps."
        )
    return found, order, owner


def _regular(found: np.ndarray) -> tuple[float, np.ndarray]:
    """The most common step and each sorted step's index on the regular axis (0: irregular)."""
    if len(found) < 2:
        return 0.0, np.arange(len(found))
    diffs = np.diff(found)
    values, counts = np.unique(diffs, return_counts=True)
    step = float(values[np.argmax(counts)])
    k = (found - found[0]) / step
    index = np.round(k).astype(np.int64)
    if np.allclose(k, index, atol=1e-6) and index[-1] < _MAX_STRETCH * len(found) + 100:
        return step, index
    return 0.0, np.arange(len(found))


def _present(index: np.ndarray) -> np.ndarray:
    present = np.zeros(int(index[-1]) + 1 if len(index) else 0, bool)
    present[index] = True
    return present


def _per_file(
    coords: Sequence[RecordCoord], order: np.ndarray, owner: np.ndarray, index: np.ndarray
) -> list[np.ndarray]:
    """Each file's axis indices, in the file's own order of steps."""
    flat_index = np.empty(len(order), np.int64)
    flat_index[order] = index
    return [flat_index[owner == i] for i in range(len(coords))]


def _cube_units(dates: list[Any], calendar: str) -> tuple[str, np.ndarray]:
    first = dates[0].strftime("%Y-%m-%d %H:%M:%S")
    seconds = np.atleast_1d(cftime.date2num(dates, f"seconds since {first}", calendar))
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if np.all(seconds % size == 0):
            return f"{unit} since {first}", (seconds / size).astype(np.float64)
    return f"seconds since {first}", seconds.astype(np.float64)


def _as_values(dates: list[Any], calendar: str) -> np.ndarray:
    if calendar in _NUMPY_CALENDARS:
        return np.array([np.datetime64(d.isoformat()) for d in dates], "datetime64[ns]")
    out = np.empty(len(dates), object)
    out[:] = dates
    return out


def _step_label(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"
