"""Cell profiles: nuclei segmented on DNA, per-cell area and mean intensity per channel.

One row per cell, the shape of a JUMP/CellProfiler profile table::

    python -m ingest recipe plate.zarr profiles --recipe examples/recipes/cell_profiles.py
    python -c "import pandas as pd; print(pd.read_parquet('profiles'))"

and one row per well with the medians of its cells over all its fields
(``--unit well``: a unit is the whole well)::

    python -m ingest recipe plate.zarr wells --recipe examples/recipes/cell_profiles.py:well \\
        --unit well

The runner adds the unit's coords (``well``, ``field``) as the first columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from skimage import filters, measure, morphology, segmentation

NUCLEUS_CHANNEL = "DNA"
MIN_AREA_UM2 = 20.0  # smaller objects are noise, not nuclei


def segment_nuclei(dna: np.ndarray, pixel_um: float) -> np.ndarray:
    """Label image of the nuclei: Li threshold of the smoothed DNA stain, small objects out."""
    smooth = filters.gaussian(dna.astype(np.float32), sigma=1.0, preserve_range=True)
    mask = smooth > filters.threshold_li(smooth)
    min_pixels = max(1, int(MIN_AREA_UM2 / pixel_um**2))
    mask = morphology.remove_small_objects(mask, max_size=min_pixels)
    labels = measure.label(mask)
    return np.asarray(segmentation.clear_border(labels))


def field_cells(images: xr.DataArray) -> pd.DataFrame:
    """Per-cell rows of one field ``(channel, y, x)``: label, area (µm²), centroid, means."""
    channels = [str(c) for c in images["channel"].values]
    pixel_um = float(images["x"][1] - images["x"][0]) if images.sizes["x"] > 1 else 1.0
    labels = segment_nuclei(images.sel(channel=NUCLEUS_CHANNEL).values, pixel_um)
    props = measure.regionprops_table(
        labels,
        intensity_image=np.moveaxis(images.values, 0, -1),
        properties=("label", "area", "centroid", "intensity_mean"),
    )
    table = pd.DataFrame(
        {
            "cell": props["label"].astype("int64"),
            "area_um2": props["area"] * pixel_um**2,
            "centroid_y": props["centroid-0"],
            "centroid_x": props["centroid-1"],
        }
    )
    for i, name in enumerate(channels):
        table[f"mean_{name}"] = props[f"intensity_mean-{i}"]
    return table


def recipe(ds: xr.Dataset) -> pd.DataFrame:
    """One field (``ds.images``: channel, y, x) -> one row per cell."""
    table = field_cells(ds["images"])
    table.insert(0, "plate", str(ds.attrs.get("plate", "")))
    return table


def well(ds: xr.Dataset) -> pd.DataFrame:
    """One well (``--unit well``; ``ds.images``: field, channel, y, x) -> medians of its cells."""
    fields = [field_cells(ds["images"].isel(field=i)) for i in range(ds.sizes["field"])]
    cells = pd.concat(fields, ignore_index=True)
    medians = cells.drop(columns=["cell", "centroid_y", "centroid_x"]).median().to_frame().T
    medians.insert(0, "plate", str(ds.attrs.get("plate", "")))
    medians.insert(1, "n_cells", len(cells))
    return medians
