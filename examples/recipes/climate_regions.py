"""Area-weighted regional means per time step of a climate cube -> one row per time step.

::

    python -m ingest recipe climate.zarr regions --recipe examples/recipes/climate_regions.py
    python -c "import pandas as pd; print(pd.read_parquet('regions'))"

Each grid cell is weighted by cos(latitude) (its area on a regular lat/lon
grid). Regions are latitude bands; every 2-D variable ``(lat, lon)`` of the
step gets a column per region (``T_surf_tropics``…); variables with a
vertical level are averaged per level (``T_85000_tropics``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

REGIONS = {  # latitude bands, degrees
    "global": (-90.0, 90.0),
    "tropics": (-23.5, 23.5),
    "north_extratropics": (23.5, 90.0),
    "south_extratropics": (-90.0, -23.5),
}


def regional_means(var: xr.DataArray) -> dict[str, float]:
    """``{region: cos(lat)-weighted mean}`` of one ``(lat, lon)`` field (NaNs left out)."""
    lat = var["lat"].values
    values = var.transpose("lat", "lon").values.astype(np.float64)
    weights = np.broadcast_to(np.cos(np.deg2rad(lat))[:, None], values.shape)
    valid = np.isfinite(values)
    out = {}
    for region, (south, north) in REGIONS.items():
        use = valid & ((lat >= south) & (lat <= north))[:, None]
        total = weights[use].sum()
        out[region] = float((values[use] * weights[use]).sum() / total) if total else np.nan
    return out


def recipe(ds: xr.Dataset) -> pd.DataFrame:
    """One time step -> one row: a column per variable (and level) and region."""
    row: dict[str, float] = {}
    for name, var in ds.data_vars.items():
        if not {"lat", "lon"} <= set(var.dims):
            continue  # the mask and the statistics
        levels = [d for d in var.dims if d not in ("lat", "lon")]
        if not levels:
            row.update({f"{name}_{r}": v for r, v in regional_means(var).items()})
            continue
        for value in var[levels[0]].values:
            means = regional_means(var.sel({levels[0]: value}))
            row.update({f"{name}_{value:g}_{r}": v for r, v in means.items()})
    return pd.DataFrame([row])
