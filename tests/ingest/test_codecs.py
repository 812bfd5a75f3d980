"""``--codec``: the named codecs, the defaults per dtype, and a cube that keeps its codec."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr

import cubes
from ingest.cli import main
from ingest.codecs import (
    CODECS,
    FLOAT_DEFAULT,
    INTEGER_DEFAULT,
    codec,
    codec_name,
    default_codec,
    stored_codec,
)
from ingest.output import CubeOutput
from ingest.sources import ArgumentError, cellpainting
from tests.helpers import source_images


def _stored(dest: str | Path, name: str) -> str | None:
    return stored_codec(zarr.open_group(str(dest), mode="r")[name])


def test_every_codec_is_named_as_the_table_names_it() -> None:
    assert {codec_name(c) for c in CODECS.values()} == set(CODECS)
    for name, value in CODECS.items():
        assert codec_name(value) == name


def test_the_default_follows_the_dtype() -> None:
    assert default_codec(np.uint16) == default_codec(np.int64) == INTEGER_DEFAULT
    assert default_codec(np.float32) == default_codec(np.float64) == FLOAT_DEFAULT
    assert cellpainting.COMPRESSOR is CODECS[INTEGER_DEFAULT]


def test_an_unknown_codec_is_refused_naming_the_choices(capsys, local_plate, tmp_path) -> None:
    dest = tmp_path / "out.zarr"
    assert main(["cellpainting", str(local_plate), str(dest), "--codec", "zstd9"]) == 2
    err = capsys.readouterr().err
    assert "--codec: got 'zstd9'; expected one of lz4-shuffle, " in err
    assert INTEGER_DEFAULT in err and FLOAT_DEFAULT in err
    assert not dest.exists()
    with pytest.raises(ArgumentError, match=r"codec='zstd9': expected one of .*zstd3"):
        cellpainting.CellPaintingOptions(codec="zstd9")
    with pytest.raises(ArgumentError, match=r"--codec 'gzip' is not a codec .*lz4hc1-bitshuffle"):
        codec("gzip")


@pytest.mark.parametrize("name", [None, "zstd3", "lz4-shuffle", "zstd1-bitshuffle-1M"])
def test_a_plate_is_written_with_the_codec_pixel_for_pixel(local_plate, tmp_path, name) -> None:
    dest = tmp_path / "plate.zarr"
    args = ["cellpainting", str(local_plate), str(dest), "--no-progress"]
    assert main([*args, *(["--codec", name] if name else [])]) == 0
    assert _stored(dest, "images") == _stored(dest, "thumbnail") == (name or INTEGER_DEFAULT)
    ds = cubes.open_cube(str(dest), require_complete=True)
    truth = source_images(fsspec.filesystem("file"), str(local_plate))
    for (well, field, channel), image in truth.items():
        got = ds.images.sel(well=well, field=field, channel=channel).values
        np.testing.assert_array_equal(got, image, err_msg=f"{well} {field} {channel}")
    assert len(truth) == ds.images.shape[0] * ds.images.shape[1] * ds.images.shape[2]


def _interrupted(local_plate: Path, dest: Path, name: str | None) -> None:
    """The schema of a cube written with codec ``name``, as an interrupted run leaves it."""
    options = cellpainting.CellPaintingOptions(codec=name)
    (plan,) = cellpainting.plan(str(local_plate), str(dest), options)
    CubeOutput().create(plan, {})


def test_a_resume_without_codec_keeps_the_stored_one(local_plate, local_cube, tmp_path) -> None:
    dest = tmp_path / "c.zarr"
    _interrupted(local_plate, dest, "zstd1-shuffle")  # the default before 2026-12
    assert main(["cellpainting", str(local_plate), str(dest), "--no-progress"]) == 0
    assert _stored(dest, "images") == "zstd1-shuffle"
    ds = cubes.open_cube(str(dest), require_complete=True).load()
    clean = cubes.open_cube(str(local_cube)).load()
    np.testing.assert_array_equal(ds.images.values, clean.images.values)


def test_a_resume_with_another_codec_is_refused(local_plate, capsys, tmp_path) -> None:
    dest = tmp_path / "c.zarr"
    _interrupted(local_plate, dest, None)
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    args = ["cellpainting", str(local_plate), str(dest), "--no-progress", "--codec", "zstd3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        f"holds a cube whose 'images' is written with codec {INTEGER_DEFAULT}, not --codec "
        "zstd3: a cube keeps one codec. Leave --codec out" in err
    )
    assert "--overwrite to rewrite it with zstd3" in err
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
    assert main([*args[:-2], "--codec", INTEGER_DEFAULT]) == 0  # naming the stored one resumes
    assert cubes.open_cube(str(dest), require_complete=True).attrs["cube_complete"]
    assert main([*args, "--overwrite"]) == 0
    assert _stored(dest, "images") == "zstd3"


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from ingest.sources.netcdf.synth import write_synth_climate

    root = tmp_path_factory.mktemp("codec-months")
    return [Path(u) for u in write_synth_climate(str(root), years=1, grid=(4, 8), seed=3).urls]


def test_an_append_keeps_the_stored_codec(months, capsys, tmp_path) -> None:
    src, dest = tmp_path / "src", str(tmp_path / "cube.zarr")
    src.mkdir()
    for f in months[:2]:
        shutil.copy(f, src / f.name)
    args = ["netcdf", str(src), dest, "--no-progress", "--steps-per-shard", "8"]
    assert main([*args, "--codec", "zstd3"]) == 0
    assert _stored(dest, "T_surf") == "zstd3"
    shutil.copy(months[2], src / months[2].name)
    assert main([*args, "--codec", FLOAT_DEFAULT]) == 2  # would resize: refused first
    assert f"written with codec zstd3, not --codec {FLOAT_DEFAULT}" in capsys.readouterr().err
    assert cubes.open_cube(dest).sizes["time"] == 31 + 28
    assert main(args) == 0
    assert cubes.open_cube(dest, require_complete=True).sizes["time"] == 31 + 28 + 31
    assert _stored(dest, "T_surf") == "zstd3"


def test_a_climate_cube_gets_the_float_default(months, tmp_path) -> None:
    dest = str(tmp_path / "cube.zarr")
    assert main(["netcdf", str(months[0]), dest, "--no-progress"]) == 0
    assert _stored(dest, "T_surf") == _stored(dest, "T") == FLOAT_DEFAULT


def test_arrays_get_the_default_of_each_dtype_or_the_codec(tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(
            src / f"s{i}.npz",
            image=rng.integers(0, 4096, (16, 16), dtype=np.uint16),
            feature=rng.normal(size=8).astype(np.float32),
        )
    dest = tmp_path / "a.zarr"
    assert main(["arrays", str(src), str(dest), "--no-progress"]) == 0
    assert (_stored(dest, "image"), _stored(dest, "feature")) == (INTEGER_DEFAULT, FLOAT_DEFAULT)
    other = tmp_path / "b.zarr"
    assert main(["arrays", str(src), str(other), "--no-progress", "--codec", "lz4-shuffle"]) == 0
    assert _stored(other, "image") == _stored(other, "feature") == "lz4-shuffle"
