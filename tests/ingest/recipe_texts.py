"""Recipe files the recipe tests write, and the plain loop their results must equal."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

import cubes

# Per channel: mean and max of one field. Counts its calls in $RECIPE_CALLS (one line per
# unit), sleeps $RECIPE_SLEEP seconds, and fails on the units listed in the file $RECIPE_FAIL.
LIGHT = """
import os
import time

import numpy as np
import pandas as pd


def recipe(ds):
    unit = "-".join(str(ds[d].item()) for d in ("well", "field"))
    if os.environ.get("RECIPE_CALLS"):
        with open(os.environ["RECIPE_CALLS"], "a") as f:
            f.write(unit + "\\n")
    time.sleep(float(os.environ.get("RECIPE_SLEEP", "0")))
    fail = os.environ.get("RECIPE_FAIL")
    if fail and os.path.exists(fail) and unit in open(fail).read().split():
        raise RuntimeError(f"no nuclei found in {unit}")
    return table(ds)


def table(ds):
    images = ds["images"].values.astype(np.float64)
    return pd.DataFrame({
        "channel": [str(c) for c in ds["channel"].values],
        "mean": images.mean(axis=(1, 2)),
        "max": images.max(axis=(1, 2)),
    })
"""


def write_recipe(folder: Path, text: str, name: str = "recipe.py") -> Path:
    """The recipe file ``name`` in ``folder``."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def light_table(ds: Any) -> pd.DataFrame:
    """What LIGHT's recipe returns for one unit (computed here, independently)."""
    images = ds["images"].values.astype("float64")
    return pd.DataFrame(
        {
            "channel": [str(c) for c in ds["channel"].values],
            "mean": images.mean(axis=(1, 2)),
            "max": images.max(axis=(1, 2)),
        }
    )


def plain_loop(
    url: str, function: Callable[[Any], pd.DataFrame], options: dict[str, Any] | None = None
) -> pd.DataFrame:
    """The table a user gets with a plain loop over the plate cube's fields, read with open_cube."""
    ds = cubes.open_cube(url, storage_options=options)
    frames = []
    for well in ds["well"].values:
        for field in ds["field"].values:
            unit = ds[["images", "present"]].sel(well=well, field=field).load()
            frame = function(unit)
            frame.insert(0, "well", str(well))
            frame.insert(1, "field", int(field))
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)
