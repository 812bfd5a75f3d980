"""Property: what goes in comes out, pixel for pixel, for any small plate (local disk)."""

from __future__ import annotations

import io
import uuid

import numpy as np
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cubes
from ingest.sources import cellpainting
from ingest.writer import write_cube

NAMES = st.tuples(st.integers(1, 16), st.integers(1, 24), st.integers(1, 12), st.integers(1, 8))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    images=st.sets(NAMES, min_size=1, max_size=12),
    shape=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    seed=st.integers(0, 1000),
)
def test_any_plate_round_trips(tmp_path, images, shape, dtype, seed):
    root = tmp_path / uuid.uuid4().hex
    (root / "Images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for row, col, fld, ch in images:
        data = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
        name = f"r{row:02d}c{col:02d}f{fld:02d}p01-ch{ch}sk1fk1fl1.tiff"
        buf = io.BytesIO()
        tifffile.imwrite(buf, data)
        (root / "Images" / name).write_bytes(buf.getvalue())
        truth[(cellpainting.well_name(row, col), fld, ch)] = data
    dest = str(root / "cube.zarr")
    (plan,) = cellpainting.plan(str(root), dest, cellpainting.CellPaintingOptions())
    write_cube(plan, {}, progress=False, threads=4)
    ds = cubes.open_cube(dest, require_complete=True)
    assert ds.images.dtype == dtype
    values, present = ds.images.values, ds.present.values
    assert present.sum() == len(truth)
    for w, well in enumerate(ds.well.values):
        for f, fld in enumerate(ds.field.values):
            for c, ch in enumerate(ds.channel_number.values):
                key = (str(well), int(fld), int(ch))
                assert present[w, f, c] == (key in truth)
                expected = truth.get(key, np.zeros(shape, dtype))
                np.testing.assert_array_equal(values[w, f, c], expected)
