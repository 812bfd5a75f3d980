"""Realistic synthetic climate model output: monthly NetCDF files of daily steps.

Made for demos, tests and benchmarks of the NetCDF source, with the traps real
model output sets: a non-standard calendar (``noleap`` by default), time units
that change between years (``days since 2000-01-01``, then ``hours since
2001-01-01``), int16 packing whose ``scale_factor``/``add_offset`` differ from
file to file, ``_FillValue`` and a few missing values, an unlimited time
dimension, 0-360 longitudes, pressure levels in Pa, and optional gaps.

Content is a pure function of the seed and the date: a latitude gradient and a
seasonal cycle plus smooth "weather" (a few random travelling waves whose
amplitudes follow an AR(1) process from day to day).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cftime
import numpy as np

from cubes.errors import SchemaError
from cubes.store import filesystem, is_local, join_url, storage_errors
from ingest.progress import CountBar

__all__ = [
    "PLEV_PA",
    "SynthClimate",
    "add_synth_climate_parser",
    "parse_grid",
    "parse_years",
    "write_synth_climate",
]

logger = logging.getLogger(__name__)

PLEV_PA = (85000.0, 70000.0, 50000.0, 25000.0)
FILL_INT16 = np.int16(-32767)
_N_WAVES = 8
_FORMATS = {"netcdf4": "NETCDF4", "netcdf3": "NETCDF3_64BIT_OFFSET"}

# name: (units, long_name, standard_name)
_ATTRS = {
    "T_surf": ("K", "Surface air temperature", "surface_temperature"),
    "q_H2O": ("kg kg-1", "Specific humidity near the surface", "specific_humidity"),
    "cldfrac": ("1", "Total cloud area fraction", "cloud_area_fraction"),
    "T": ("K", "Air temperature", "air_temperature"),
}


@dataclass(frozen=True)
class SynthClimate:
    """What :func:`write_synth_climate` wrote.

    Attributes
    ----------
    urls
        One file per month, in date order.
    n_steps
        Daily steps written (dropped steps excluded).
    years
        The years covered.
    calendar
        The CF calendar of the time axis.
    dropped
        Dates left out, as ISO strings ``YYYY-MM-DD``.
    variables
        The data variables on the time axis.
    """

    urls: tuple[str, ...]
    n_steps: int
    years: tuple[int, ...]
    calendar: str
    grid: tuple[int, int]
    fmt: str
    dropped: tuple[str, ...]
    variables: tuple[str, ...] = ("T_surf", "q_H2O", "cldfrac", "T")


def parse_years(spec: str | int | Iterable[int]) -> tuple[int, ...]:
    """Years from a count (``3``: 2000-2002), a year (``"2005"``) or a range (``"2000-2002"``)."""
    if isinstance(spec, int):
        return _count_years(spec)
    if not isinstance(spec, str):
        return tuple(int(y) for y in spec)
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", spec)
    if not match:
        raise SchemaError(f"--years {spec}: expected a count (3), a year (2005) or 2000-2002.")
    first, last = int(match.group(1)), match.group(2)
    if last is None:
        return _count_years(first) if first < 1000 else (first,)
    if int(last) < first:
        raise SchemaError(f"--years {spec}: the range ends before it starts; write {last}-{first}.")
    return tuple(range(first, int(last) + 1))


def _count_years(count: int) -> tuple[int, ...]:
    if count < 1:
        raise SchemaError(f"--years {count}: write at least one year.")
    return tuple(range(2000, 2000 + count))


def parse_grid(spec: str | tuple[int, int]) -> tuple[int, int]:
    """``(n_lat, n_lon)`` from ``"32x64"`` or a resolution in degrees (``"0.25"``: 721x1440)."""
    if isinstance(spec, tuple):
        return spec
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", spec)
    if match:
        return int(match.group(1)), int(match.group(2))
    try:
        step = float(spec)
    except ValueError:
        step = 0.0
    if step <= 0 or abs(180 / step - round(180 / step)) > 1e-9:
        raise SchemaError(f"--grid {spec}: expected NLATxNLON (32x64) or degrees dividing 180.")
    return round(180 / step) + 1, round(360 / step)


def write_synth_climate(
    dest: str,
    *,
    years: int | Iterable[int] = (2000,),
    grid: tuple[int, int] = (32, 64),
    seed: int = 0,
    fmt: str = "netcdf4",
    drop_steps: Iterable[str] = (),
    vary_units: bool = True,
    calendar: str = "noleap",
    prefix: str = "model",
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> SynthClimate:
    """Write monthly files ``<prefix>_YYYY-MM.nc`` of daily steps under ``dest``.

    Parameters
    ----------
    dest
        Local folder or ``s3://`` prefix.
    years
        A count (from 2000) or the years themselves.
    grid
        ``(n_lat, n_lon)``; an odd ``n_lat`` includes the poles (0.25°: 721x1440),
        an even one holds cell centres.
    fmt
        ``"netcdf4"`` (HDF5, zlib) or ``"netcdf3"`` (64-bit offset classic).
    drop_steps
        Dates ``YYYY-MM-DD`` left out of their file (a gap).
    vary_units
        The first year's time is in ``days since <year>-01-01``, later years' in
        ``hours since <year>-01-01``; ``False``: days for every year.
    calendar
        CF calendar: ``noleap`` (default), ``360_day``, ``standard``...
    progress
        Show a progress bar of the files written on stderr (:mod:`ingest.progress`).

    Returns
    -------
    SynthClimate

    Examples
    --------
    >>> write_synth_climate("/tmp/clim", years=2, drop_steps=["2000-03-04"])  # doctest: +SKIP
    """
    if fmt not in _FORMATS:
        raise SchemaError(f"fmt={fmt!r}: expected one of {sorted(_FORMATS)}.")
    year_list = parse_years(years)
    dropped = {str(d) for d in drop_steps}
    lat, lon = _grid_coords(*grid)
    options = storage_options or {}
    urls, n_steps = [], 0
    bar = CountBar(12 * len(year_list), enabled=progress)
    with tempfile.TemporaryDirectory() as tmp, bar:
        for year in year_list:
            units = (
                f"days since {year}-01-01"
                if year == year_list[0] or not vary_units
                else (f"hours since {year}-01-01 00:00:00")
            )
            weather = _Weather(seed, year, grid, calendar)
            for month in range(1, 13):
                days = _month_days(year, month, calendar, dropped)
                local = os.path.join(tmp, f"{prefix}_{year}-{month:02d}.nc")
                fields = weather.fields(days, lat, lon)
                _write_file(local, fmt, days, units, calendar, lat, lon, fields)
                urls.append(_upload(local, dest, options))
                n_steps += len(days)
                bar.advance()
    logger.info("Wrote %d files (%d daily steps) to %s", len(urls), n_steps, dest)
    return SynthClimate(
        tuple(urls), n_steps, tuple(year_list), calendar, grid, fmt, tuple(sorted(dropped))
    )


def _grid_coords(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    if n_lat % 2:
        lat = np.linspace(-90.0, 90.0, n_lat)
    else:
        lat = -90.0 + (np.arange(n_lat) + 0.5) * 180.0 / n_lat
    return lat, np.arange(n_lon) * 360.0 / n_lon


def _month_days(year: int, month: int, calendar: str, dropped: set[str]) -> list[cftime.datetime]:
    """The month's daily steps at 12:00, without the dropped dates."""
    first = cftime.datetime(year, month, 1, 12, calendar=calendar)
    nxt = cftime.datetime(year + month // 12, month % 12 + 1, 1, 12, calendar=calendar)
    count = (nxt - first).days
    days = [first + datetime.timedelta(days=i) for i in range(count)]
    return [d for d in days if d.strftime("%Y-%m-%d") not in dropped]


class _Weather:
    """Smooth weather for one year: travelling waves with AR(1) amplitudes."""

    def __init__(self, seed: int, year: int, grid: tuple[int, int], calendar: str) -> None:
        rng = np.random.default_rng([seed, year])
        n_days = 366
        shocks = rng.normal(size=(n_days, 2, _N_WAVES)).astype(np.float32)
        amp = np.empty_like(shocks)
        amp[0] = shocks[0]
        for t in range(1, n_days):  # AR(1) with ~5-day memory, unit variance
            amp[t] = 0.8 * amp[t - 1] + 0.6 * shocks[t]
        self.amp = amp
        self.k_lon = rng.integers(1, 7, size=(2, _N_WAVES))
        self.k_lat = rng.uniform(1.0, 4.0, size=(2, _N_WAVES))
        self.phase = rng.uniform(0, 2 * np.pi, size=(2, 2, _N_WAVES))
        self.speed = rng.uniform(-0.3, 0.3, size=(2, _N_WAVES))  # radians of lon per day
        self.mask_rng = np.random.default_rng([seed, year, 1])
        self.year_days = 360 if calendar == "360_day" else 365

    def _noise(self, which: int, doy: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``(time, lat, lon)`` float32 field of unit-ish variance."""
        lam, phi = np.deg2rad(lon), np.deg2rad(lat)
        k, ph = self.k_lon[which], self.phase[which]
        shift = doy[:, None] * self.speed[which][None, :]  # (t, wave)
        lon_part = np.cos(
            k[None, :, None] * lam[None, None, :] + ph[0][None, :, None] + shift[:, :, None]
        )  # (t, wave, lon)
        lat_part = np.cos(self.k_lat[which][:, None] * phi[None, :] + ph[1][:, None])  # (w, lat)
        amp = self.amp[doy, which]  # (t, wave)
        out = np.einsum("tw,wy,twx->tyx", amp, lat_part, lon_part, optimize=True)
        return (out / np.sqrt(_N_WAVES / 4)).astype(np.float32)

    def fields(
        self, days: Sequence[cftime.datetime], lat: np.ndarray, lon: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The four variables for ``days`` as float32, NaN where missing."""
        doy = np.array([d.timetuple().tm_yday - 1 for d in days], dtype=np.int64)
        season = np.cos(2 * np.pi * (doy - 15) / self.year_days)[:, None, None]
        sin_lat = np.sin(np.deg2rad(lat))[None, :, None]
        base = 300.0 - 55.0 * sin_lat**2 - 18.0 * season * sin_lat
        t_surf = (base + 4.0 * self._noise(0, doy, lat, lon)).astype(np.float32)
        cloud_drive = self._noise(1, doy, lat, lon) + 0.8 * np.cos(np.deg2rad(lat) * 3)[:, None]
        cldfrac = (1.0 / (1.0 + np.exp(-1.5 * cloud_drive))).astype(np.float32)
        q = np.minimum(0.012 * np.exp(0.05 * (t_surf - 300.0)) * (0.6 + 0.4 * cldfrac), 0.03)
        if cldfrac.size:  # a few missing values, written as _FillValue
            picks = self.mask_rng.choice(cldfrac.size, size=min(5, cldfrac.size), replace=False)
            cldfrac[np.unravel_index(picks, cldfrac.shape)] = np.nan
        ratio = (np.asarray(PLEV_PA, np.float32) / np.float32(101325.0)) ** np.float32(0.19)
        air = t_surf[:, None] * ratio[None, :, None, None]
        return {"T_surf": t_surf, "q_H2O": q.astype(np.float32), "cldfrac": cldfrac, "T": air}


def _pack(values: np.ndarray) -> tuple[np.ndarray, np.float32, np.float32]:
    """int16 packing from the data's own range: (packed, scale_factor, add_offset)."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scale = np.float32((hi - lo) / 65532.0 if hi > lo else 1.0)
    offset = np.float32((hi + lo) / 2.0)
    finite_mask = np.isfinite(values)
    scaled = np.round((np.where(finite_mask, values, offset).astype(np.float64) - offset) / scale)
    packed = np.clip(scaled, -32766, 32766).astype(np.int16)
    packed[~finite_mask] = FILL_INT16
    return packed, scale, offset


def _write_file(
    path: str,
    fmt: str,
    days: Sequence[cftime.datetime],
    units: str,
    calendar: str,
    lat: np.ndarray,
    lon: np.ndarray,
    fields: dict[str, np.ndarray],
) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "w", format=_FORMATS[fmt]) as nc:  # type: ignore[arg-type]
        nc.set_auto_maskandscale(False)
        nc.setncatts(
            {
                "Conventions": "CF-1.8",
                "title": "Synthetic daily climate model output",
                "source": "cellcubes ingest.sources.netcdf.synth",
                "frequency": "day",
            }
        )
        _write_coords(nc, days, units, calendar, lat, lon)
        compress = {"zlib": True, "complevel": 1} if fmt == "netcdf4" else {}
        for name, values in fields.items():
            dims = ("time", "plev", "lat", "lon") if values.ndim == 4 else ("time", "lat", "lon")
            var = nc.createVariable(name, "i2", dims, fill_value=FILL_INT16, **compress)  # type: ignore[call-overload]
            var.set_auto_maskandscale(False)
            packed, scale, offset = _pack(values)
            units_, long_name, standard_name = _ATTRS[name]
            var.setncatts(
                {
                    "units": units_,
                    "long_name": long_name,
                    "standard_name": standard_name,
                    "scale_factor": scale,
                    "add_offset": offset,
                }
            )
            var[:] = packed


def _write_coords(
    nc: Any,
    days: Sequence[cftime.datetime],
    units: str,
    calendar: str,
    lat: np.ndarray,
    lon: np.ndarray,
) -> None:
    nc.createDimension("time", None)
    nc.createDimension("plev", len(PLEV_PA))
    nc.createDimension("lat", len(lat))
    nc.createDimension("lon", len(lon))
    coords = {
        "time": (
            "time",
            cftime.date2num(list(days), units, calendar) if days else [],
            {
                "units": units,
                "calendar": calendar,
                "axis": "T",
                "standard_name": "time",
                "long_name": "time",
            },
        ),
        "plev": (
            "plev",
            PLEV_PA,
            {
                "units": "Pa",
                "axis": "Z",
                "positive": "down",
                "standard_name": "air_pressure",
                "long_name": "pressure",
            },
        ),
        "lat": (
            "lat",
            lat,
            {
                "units": "degrees_north",
                "axis": "Y",
                "standard_name": "latitude",
                "long_name": "latitude",
            },
        ),
        "lon": (
            "lon",
            lon,
            {
                "units": "degrees_east",
                "axis": "X",
                "standard_name": "longitude",
                "long_name": "longitude",
            },
        ),
    }
    for name, (dim, values, attrs) in coords.items():
        var = nc.createVariable(name, "f8", (dim,))
        var.setncatts(attrs)
        var[:] = np.asarray(values, dtype=np.float64)


def _upload(local: str, dest: str, options: dict[str, Any]) -> str:
    """Copy ``local`` to ``dest`` (a folder or prefix); return the file's URL."""
    url = join_url(dest, os.path.basename(local))
    fs, path = filesystem(url, options)
    with storage_errors(url, options):
        if is_local(dest):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        fs.put_file(local, path)
    return url


# --- command line ------------------------------------------------------------------------


SYNTH_EXAMPLES = (
    "python -m ingest synth-climate demo-data/climate --years 2 --grid 32x64",
    "python -m ingest synth-climate s3://bucket/clim --years 2000-2001 --grid 0.25 "
    "--format netcdf3 --drop-step 2000-03-04",
)


def add_synth_climate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``synth-climate DEST`` sub-command to an argparse ``subparsers`` object."""
    from ingest.checks import int_at_least
    from ingest.cli_common import (
        common_arguments,
        progress_argument,
        storage_arguments,
        sub_parser,
    )

    summary = "write realistic synthetic climate model output (monthly NetCDF files)"
    p = sub_parser(
        subparsers,
        "synth-climate",
        summary,
        "Write monthly NetCDF files of daily steps (noleap calendar, int16 packing per file, "
        "time units that change between years, T_surf, q_H2O, cldfrac and T on 4 pressure "
        "levels) to a local folder or an s3:// prefix.",
        SYNTH_EXAMPLES,
    )
    p.add_argument("dest", metavar="DEST", help="local folder or s3:// prefix")
    p.add_argument(
        "--years", default="1", help="a count from 2000 (3), a year (2005) or 2000-2002 (default 1)"
    )
    p.add_argument(
        "--grid", default="32x64", help="NLATxNLON (default 32x64) or degrees (0.25: 721x1440)"
    )
    p.add_argument(
        "--seed", type=int_at_least(0), default=0, help="seed of the weather noise (default 0)"
    )
    p.add_argument(
        "--format",
        choices=tuple(_FORMATS),
        default="netcdf4",
        dest="fmt",
        help="netcdf4 (HDF5, default) or netcdf3 (classic 64-bit offset)",
    )
    p.add_argument("--calendar", default="noleap", help="CF calendar (default noleap)")
    p.add_argument(
        "--drop-step",
        action="append",
        default=[],
        metavar="YYYY-MM-DD",
        help="leave this date out (a gap); repeatable",
    )
    p.add_argument(
        "--same-units", action="store_true", help="days since <year>-01-01 in every year"
    )
    progress_argument(p)
    storage_arguments(p, with_anon=False)
    common_arguments(p)
    p.set_defaults(handler=run_synth_climate)
    return p


def run_synth_climate(args: argparse.Namespace) -> None:
    """The ``synth-climate`` handler: write the files and print what was written."""
    from cubes.store import resolve_storage_options

    options = resolve_storage_options(args.dest, endpoint_url=args.endpoint_url)
    synth = write_synth_climate(
        args.dest,
        years=parse_years(args.years),
        grid=parse_grid(args.grid),
        seed=args.seed,
        fmt=args.fmt,
        drop_steps=args.drop_step,
        vary_units=not args.same_units,
        calendar=args.calendar,
        storage_options=options,
        progress=not args.no_progress,
    )
    n_lat, n_lon = synth.grid
    print(
        f"Wrote {len(synth.urls)} {synth.fmt} files ({synth.n_steps} daily steps, "
        f"{synth.calendar} calendar, {n_lat}x{n_lon} grid) to {args.dest}"
    )
    if synth.dropped:
        print(f"  left out: {', '.join(synth.dropped)}")
