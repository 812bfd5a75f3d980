"""Appending time steps to a climate cube: in place, exact, idempotent; overlaps refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import cubes
from ingest.cli import main
from ingest.journal import journal_url


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Monthly files of 2000 and 2001 (days, then hours since their year: units differ)."""
    from ingest.sources.netcdf.synth import write_synth_climate

    root = tmp_path_factory.mktemp("append-src")
    synth = write_synth_climate(str(root), years=2, grid=(4, 8), seed=7, drop_steps=["2001-01-05"])
    return [Path(u) for u in synth.urls]


def _run(*args: str) -> int:
    return main(["netcdf", *args, "--no-progress", "--steps-per-shard", "8"])


def _folder(root: Path, files: list[Path]) -> str:
    root.mkdir(exist_ok=True)
    for f in files:
        shutil.copy(f, root / f.name)
    return str(root)


def test_new_files_extend_the_time_axis_exactly(months, tmp_path, capsys, caplog):
    src = _folder(tmp_path / "src", months[:11])  # Jan..Nov 2000: 334 steps, last shard partial
    dest = str(tmp_path / "cube.zarr")
    assert _run(src, dest) == 0
    assert cubes.open_cube(dest).sizes["time"] == 334
    _folder(tmp_path / "src", months[11:13])  # Dec 2000, Jan 2001 (hours since 2001-01-01)
    assert _run(src, dest) == 0
    assert "appending 62 steps to the 334 stored" in caplog.text
    appended = cubes.open_cube(dest, require_complete=True).load()
    assert appended.sizes["time"] == 365 + 31
    whole = str(tmp_path / "whole.zarr")
    assert _run(_folder(tmp_path / "all", months[:13]), whole) == 0
    fresh = cubes.open_cube(whole, require_complete=True).load()
    xr.testing.assert_identical(appended.drop_attrs(), fresh.drop_attrs())  # statistics too
    assert str(appended.time.values[-1])[:10] == "2001-01-31"
    assert not appended.present.sel(time="2001-01-05").item()
    capsys.readouterr()  # run again: nothing written
    assert _run(src, dest) == 0
    assert "up to date" in capsys.readouterr().out


def test_only_the_new_steps_are_written(months, tmp_path):
    src = _folder(tmp_path / "src", months[:11])  # Jan..Nov: 334 steps, shards of 8
    dest = tmp_path / "cube.zarr"
    assert _run(src, str(dest)) == 0
    shards = dest / "T_surf" / "c"
    before = {p: p.stat().st_mtime_ns for p in shards.rglob("*") if p.is_file()}
    _folder(tmp_path / "src", months[11:12])  # December: steps 334..364
    assert _run(src, str(dest)) == 0
    after = {p: p.stat().st_mtime_ns for p in shards.rglob("*") if p.is_file()}
    rewritten = sorted(int(p.parts[-3]) for p in before if after[p] != before[p])
    # tasks span 64 steps (two monthly files): the task holding the old last step (333),
    # steps 320..383 = shards 40..47, is redone; of the stored shards that is 40 and 41
    assert rewritten == [40, 41]
    assert len(after) == -(-365 // 8)
    assert (dest.parent / journal_url(dest.name) / "done").exists()  # the ledger stays


def test_steps_overlapping_the_stored_ones_are_refused(months, tmp_path, capsys):
    src = tmp_path / "src"
    _folder(src, months[:2])
    dest = str(tmp_path / "cube.zarr")
    assert _run(str(src), dest) == 0
    (src / months[0].name).unlink()  # January gone: the axis no longer starts where it did
    _folder(src, months[2:3])
    capsys.readouterr()
    assert _run(str(src), dest) == 2
    err = capsys.readouterr().err
    assert "differ from the stored ones" in err and "--overwrite" in err
    assert cubes.open_cube(dest, require_complete=True).sizes["time"] == 59  # untouched


def test_another_shard_size_is_not_an_append(months, tmp_path, capsys):
    src = _folder(tmp_path / "src", months[:1])
    dest = str(tmp_path / "cube.zarr")
    assert _run(src, dest) == 0
    _folder(tmp_path / "src", months[1:2])
    capsys.readouterr()
    args = ["netcdf", src, dest, "--no-progress", "--steps-per-shard", "4"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    np.testing.assert_equal(cubes.open_cube(dest).sizes["time"], 31)


@pytest.mark.s3
def test_append_on_s3(months, bucket, tmp_path, capsys):
    fs = bucket.fs()
    for f in months[:2]:
        fs.put(str(f), f"{bucket.name}/src/{f.name}")
    src, dest = f"{bucket.url}/src/", f"{bucket.url}/cube.zarr"
    assert _run(src, dest) == 0
    fs.put(str(months[2]), f"{bucket.name}/src/{months[2].name}")
    assert _run(src, dest) == 0
    appended = cubes.open_cube(dest, require_complete=True).load()
    whole = str(tmp_path / "whole.zarr")
    assert _run(_folder(tmp_path / "all", months[:3]), whole) == 0
    xr.testing.assert_identical(appended.drop_attrs(), cubes.open_cube(whole).load().drop_attrs())
    capsys.readouterr()
    assert _run(src, dest) == 0
    assert "up to date" in capsys.readouterr().out
