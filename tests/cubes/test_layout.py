"""The layout a cube records, and the one older plate cubes imply."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cubes
from cubes.layout import ATTR_LAYOUT, Layout, StatSpec, layout_of
from loaders import CubeBatchDataset


def test_layout_round_trips_through_attrs():
    layout = Layout(
        kind="climate",
        sample_dims=("time",),
        window_dims=("lat", "lon"),
        variables=("T_surf", "T"),
        mask="present",
        mask_item="time step",
        statistics={"T_surf": StatSpec("T_surf"), "T": StatSpec("T", ("plev",), ("mean",))},
        time_dim="time",
    )
    again = layout_of({ATTR_LAYOUT: json.loads(json.dumps(layout.to_attrs()))})
    assert again == layout
    assert again.stat_var("T", "mean") == "T_mean"
    assert again.channels(None) == ["T_surf", "T"]


def test_a_group_without_layout_or_kind_is_refused():
    with pytest.raises(cubes.SchemaError, match="s3://b/x.zarr records no cube layout"):
        layout_of({"cube_kind": "something-else"}, "s3://b/x.zarr")


def test_plate_cube_written_before_layouts_still_opens_and_loads(local_cube, tmp_path):
    """A plate cube of convention 1 (no cube_layout attribute) opens and trains as before."""
    import shutil

    old = tmp_path / "old.zarr"
    shutil.copytree(local_cube, old)
    meta = json.loads((old / "zarr.json").read_text())
    assert ATTR_LAYOUT in meta["attributes"]
    del meta["attributes"][ATTR_LAYOUT]
    meta["consolidated_metadata"] = None
    (old / "zarr.json").write_text(json.dumps(meta))
    ds = cubes.open_cube(str(old))
    assert ATTR_LAYOUT not in ds.attrs
    layout = layout_of(ds.attrs)
    assert layout.sample_dims == ("well", "field") and layout.variables == ("images",)
    data = CubeBatchDataset(str(old), batch_size=2, normalize=True)
    batch = data[0]
    assert batch["inputs"].shape[:2] == (2, ds.sizes["channel"])
    assert np.isfinite(batch["inputs"].numpy()).all()
