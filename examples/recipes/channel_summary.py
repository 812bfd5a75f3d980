"""A light recipe: each channel's mean and maximum in one field of a plate cube.

    python -m ingest recipe demo-data/plate.zarr demo-data/summary \
        --recipe examples/recipes/channel_summary.py
"""

import pandas as pd


def recipe(ds):
    """One row per channel of the unit (a plate's field, loaded in memory)."""
    images = ds["images"].astype("float64")
    return pd.DataFrame(
        {
            "channel": [str(c) for c in ds["channel"].values],
            "mean": images.mean(dim=["y", "x"]).values,
            "max": images.max(dim=["y", "x"]).values,
        }
    )
