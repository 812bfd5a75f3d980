"""``python -m ingest netcdf``: synthetic climate files -> a cube, checked against xarray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import cubes
from ingest.cli import main

VARIABLES = ("T_surf", "q_H2O", "cldfrac", "T")
DROPPED = "2000-01-10"


@pytest.fixture(scope="module")
def climate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Two monthly files (Jan, Feb 2000, noleap, one step dropped) named by a URL list."""
    from ingest.sources.netcdf.synth import write_synth_climate

    root = tmp_path_factory.mktemp("climate")
    synth = write_synth_climate(str(root / "src"), years=1, grid=(8, 16), drop_steps=[DROPPED])
    files = list(synth.urls[:2])
    (root / "urls.txt").write_text("\n".join(files) + "\n")
    return root, files


@pytest.fixture(scope="module")
def cube(climate: tuple[Path, list[str]]) -> xr.Dataset:
    root, _ = climate
    assert main(["netcdf", str(root / "urls.txt"), str(root / "cube.zarr"), "--no-progress"]) == 0
    return cubes.open_cube(str(root / "cube.zarr")).load()


def _reference(files: list[str]) -> xr.Dataset:
    with xr.open_mfdataset(files, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
        return ds.load()


def _assert_values(cube: xr.Dataset, files: list[str], names: tuple[str, ...]) -> None:
    ref = _reference(files)
    for name in names:
        expected = ref[name].reindex(time=cube.time.values)
        np.testing.assert_allclose(cube[name].values, expected.values, rtol=1e-6, equal_nan=True)


def test_values_equal_xarray(cube: xr.Dataset, climate: tuple[Path, list[str]]) -> None:
    _assert_values(cube, climate[1], VARIABLES)
    assert cube["T"].dims == ("time", "plev", "lat", "lon")
    assert cube["T"].dtype == np.float32
    assert cube.attrs["cube_kind"] == "climate"
    assert cube.attrs["provenance"]["n_files"] == 2


def test_time_axis_and_gap(cube: xr.Dataset, climate: tuple[Path, list[str]]) -> None:
    import json

    times = cube.time.values
    assert len(times) == 59 and times[0].calendar == "noleap"
    gap = [i for i, t in enumerate(times) if t.strftime("%Y-%m-%d") == DROPPED]
    assert gap and not cube.present.values[gap[0]] and cube.present.values.sum() == 58
    assert np.isnan(cube["T_surf"].values[gap[0]]).all()
    report = json.loads((climate[0] / "cube.quality.json").read_text())
    assert report["counts"]["missing"] == 1
    assert DROPPED in json.dumps(report["absent"])


def test_statistics_equal_numpy(cube: xr.Dataset) -> None:
    present = cube.present.values
    for name in VARIABLES:
        values = cube[name].values[present].astype(np.float64)
        axes = (0, 2, 3) if name == "T" else None  # T: per level
        expected = {
            "mean": np.nanmean(values, axis=axes),
            "std": np.nanstd(values, axis=axes),
            "min": np.nanmin(values, axis=axes),
            "max": np.nanmax(values, axis=axes),
            "nan_count": np.isnan(values).sum(axis=axes),
        }
        for stat, value in expected.items():
            got = cube[f"{name}_{stat}"].values
            np.testing.assert_allclose(got, value, rtol=1e-5, err_msg=f"{name}_{stat}")


def test_variables_select_and_rerun(
    climate: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, files = climate
    dest = str(root / "sel.zarr")
    args = ["netcdf", str(root / "urls.txt"), dest, "--variables", "T", "--no-progress"]
    assert main(args) == 0
    ds = cubes.open_cube(dest)
    assert [v for v in ds.data_vars if ds[v].ndim > 1] == ["T"]
    _assert_values(ds.load(), files, ("T",))
    capsys.readouterr()
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out


def test_unknown_variable_and_missing_src(
    climate: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = climate
    src, dest = str(root / "urls.txt"), str(root / "bad.zarr")
    assert main(["netcdf", src, dest, "--variables", "T,nope", "--no-progress"]) == 2
    assert "nope" in capsys.readouterr().err
    missing = str(root / "no-such-folder")
    assert main(["netcdf", missing, dest, "--no-progress"]) == 2
    assert missing in capsys.readouterr().err


def test_folder_and_glob_sources(climate: tuple[Path, list[str]]) -> None:
    from ingest.sources.netcdf.planning import list_files

    root, _ = climate
    assert len(list_files(str(root / "src"), {})) == 12
    assert len(list_files(str(root / "src" / "*_2000-0[12].nc"), {})) == 2


@pytest.mark.parametrize("variables", ["T", "T_surf,T"])
def test_array_slices_then_finalize(
    climate: tuple[Path, list[str]], cube: xr.Dataset, variables: str
) -> None:
    root, files = climate
    dest = str(root / f"slices-{variables.replace(',', '-')}.zarr")
    base = ["netcdf", str(root / "urls.txt"), dest, "--variables", variables, "--no-progress"]
    assert main([*base, "--task-index", "0", "--task-count", "2"]) == 0
    assert main([*base, "--task-index", "1", "--task-count", "2"]) == 0
    assert main(["finalize", dest]) == 0
    ds = cubes.open_cube(dest).load()
    names = tuple(variables.split(","))
    _assert_values(ds, files, names)
    np.testing.assert_array_equal(ds.present.values, cube.present.values)
    for name in names:
        for stat in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(ds[f"{name}_{stat}"], cube[f"{name}_{stat}"], rtol=1e-9)


def test_s3_roundtrip(climate: tuple[Path, list[str]], bucket, cube: xr.Dataset) -> None:  # noqa: ANN001
    root, files = climate
    fs = bucket.fs()
    for path in files:
        fs.put(path, f"{bucket.name}/src/{Path(path).name}")
    src, dest = f"{bucket.url}/src/", f"{bucket.url}/cube.zarr"
    assert main(["netcdf", src, dest, "--no-progress"]) == 0
    ds = cubes.open_cube(dest, storage_options=bucket.storage_options).load()
    _assert_values(ds, files, VARIABLES)
    assert ds.time.values[0].calendar == "noleap"
    assert fs.exists(f"{bucket.name}/cube.quality.json")


def test_steps_per_shard_and_stats_period(
    climate: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    import zarr

    root, files = climate
    dest = str(root / "s5.zarr")
    src = str(root / "urls.txt")
    assert main(["netcdf", src, dest, "--steps-per-shard", "5", "--no-progress"]) == 0
    array = zarr.open_array(dest, path="T", mode="r")
    assert array.shards == (5, 4, 8, 16) and array.chunks == (1, 4, 8, 16)
    assert zarr.open_array(dest, path="time", mode="r").attrs["calendar"] == "noleap"
    _assert_values(cubes.open_cube(dest).load(), files, ("T", "cldfrac"))
    tiled = str(root / "tiled.zarr")
    assert main(["netcdf", src, tiled, "--chunks", "time=1,lat=3,lon=8", "--no-progress"]) == 0
    array = zarr.open_array(tiled, path="T", mode="r")
    assert array.chunks == (1, 4, 3, 8) and array.shards[2:] == (9, 16)
    _assert_values(cubes.open_cube(tiled).load(), files, ("T", "T_surf"))
    capsys.readouterr()
    assert main(["netcdf", src, str(root / "x.zarr"), "--chunks", "latitude=3"]) == 2
    assert "latitude" in capsys.readouterr().err
    period = str(root / "period.zarr")
    args = ["netcdf", src, period, "--stats-period", "2000-01-20/2000-02-05", "--no-progress"]
    assert main(args) == 0
    ds = cubes.open_cube(period).load()
    inside = ds.sel(time=slice("2000-01-20", "2000-02-05"))
    assert inside.sizes["time"] == 17
    for name in ("T_surf", "cldfrac"):
        values = inside[name].values
        assert float(ds[f"{name}_mean"]) == pytest.approx(np.nanmean(values), rel=1e-6)
        assert float(ds[f"{name}_max"]) == np.nanmax(values)
        assert ds[f"{name}_mean"].attrs["period"] == "2000-01-20/2000-02-05"
    np.testing.assert_allclose(
        ds["T_mean"].values, np.nanmean(inside["T"].values, axis=(0, 2, 3)), rtol=1e-6
    )
    assert ds.sizes["time"] == 59  # every step stored; only the period counted
    capsys.readouterr()
    bad = ["netcdf", src, str(root / "bad.zarr"), "--stats-period", "2010-01-01/2011-01-01"]
    assert main(bad) == 2
    assert "holds no step" in capsys.readouterr().err
