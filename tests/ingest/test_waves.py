"""A batch runs in waves of plates: bounded graphs; plates done before a failure stay done."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cubes
from cubes.errors import InvalidImageError
from ingest.runner import Runner
from ingest.sources import cellpainting
from ingest.sources.cellpainting.synth import parse_wells, write_synth_plate
from ingest.writer import _waves, write_cubes

PLATES = ("BR00000001", "BR00000002", "BR00000003")


@given(st.lists(st.integers(0, 9), max_size=12), st.integers(1, 12))
def test_waves_are_consecutive_bounded_and_complete(sizes, limit):
    waves = _waves(sizes, limit)
    assert [k for wave in waves for k in wave] == list(range(len(sizes)))
    for wave in waves:
        total = sum(sizes[k] for k in wave)
        assert total <= limit or len(wave) == 1 or total - sizes[wave[0]] == 0
    for before, after in zip(waves, waves[1:], strict=False):  # each wave as full as it can be
        assert sum(sizes[k] for k in before) + sizes[after[0]] > limit


def _ingest(src, dest, on_error: str, wave_tasks: int):
    options = cellpainting.CellPaintingOptions(on_error=on_error)
    plans = cellpainting.plan(str(src), str(dest), options)
    runner = Runner(threads=2, progress=False)
    return write_cubes(plans, {}, runner=runner, wave_tasks=wave_tasks)


def test_plates_finished_in_earlier_waves_stay_complete(tmp_path):
    src = tmp_path / "images"
    for seed, plate in enumerate(PLATES):
        write_synth_plate(str(src), wells=parse_wells("A01,A02"), fields=2, size=32, seed=seed,
                          plate=plate)  # fmt: skip
    bad = next(src.glob(f"{PLATES[1]}__*/Images/r01c01f02p01-ch3sk1fk1fl1.tiff"))
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"")
    dest = tmp_path / "cubes"

    with pytest.raises(InvalidImageError, match=str(bad)):
        _ingest(src, dest, "fail", wave_tasks=4)  # a plate (4 fields) per wave
    cubes.open_cube(str(dest / f"{PLATES[0]}.zarr"), require_complete=True)
    with pytest.raises(cubes.IncompleteCubeError):
        cubes.open_cube(str(dest / f"{PLATES[1]}.zarr"), require_complete=True)
    assert not (dest / f"{PLATES[2]}.zarr").exists()  # its wave never started

    bad.write_bytes(good_bytes)  # fixed: the same command finishes the batch
    results = _ingest(src, dest, "fail", wave_tasks=4)
    assert [r.n_tasks for r in results] == [0, 4, 4]  # the first plate was up to date

    one_wave = _ingest(src, tmp_path / "one-wave", "fail", wave_tasks=4096)
    assert [r.n_tasks for r in one_wave] == [4, 4, 4]
    for plate in PLATES:
        waved = cubes.open_cube(str(dest / f"{plate}.zarr"), require_complete=True)
        whole = cubes.open_cube(str(tmp_path / "one-wave" / f"{plate}.zarr"))
        for name in ("images", "thumbnail", "present", "channel_mean", "channel_p99"):
            np.testing.assert_array_equal(waved[name].values, whole[name].values, err_msg=name)
