"""``python -m cubes preview``: PNGs of a plate, a climate cube and an arrays cube, reading only
what they draw; wells, channels and samples land where the preview says."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import zarr

import cubes
from cubes.cli import main
from cubes.preview import COLOURS, MISSING, preview_cube
from tests.cubes.conftest import npz_images
from tests.cubes.test_cli_ls import _Recorder


def _preview(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["preview", *args])
    out, err = capsys.readouterr()
    return status, out, err


def _png(path: Path | str) -> np.ndarray:
    """The PNG as (H, W, 3) uint8."""
    return np.round(matplotlib.image.imread(str(path))[..., :3] * 255).astype(np.uint8)


def _tile(png: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, left, height, width = box
    return png[top : top + height, left : left + width]


def _border(tile: np.ndarray) -> np.ndarray:
    return np.concatenate([tile[0], tile[-1], tile[:, 0], tile[:, -1]])


def test_plate_montage_wells_channels_and_missing(cube_prefix: Path, tmp_path: Path) -> None:
    url = str(cube_prefix / "P1.zarr")
    result = preview_cube(url, str(tmp_path / "p1.png"))
    png = _png(result.path)
    assert png.shape == (result.height, result.width, 3)
    assert sorted(result.tiles) == ["A01/1", "A01/2", "A02/1", "A02/2", "B05/1", "B05/2"]
    (a1, l1), (a2, l2), (b5, l5) = (result.tiles[f"{w}/1"][:2] for w in ("A01", "A02", "B05"))
    assert a1 == a2 < b5 and l1 < l2 < l5  # rows down, columns across, as on the plate
    assert result.tiles["A01/1"][0] == result.tiles["A01/2"][0]  # fields side by side
    # The composite: each stain scaled between its stored p01 and p99, in its colour.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = cubes.open_cube(url)
    names = list(ds.channel.values)
    idx = [names.index(c) for c in COLOURS]
    thumb = ds.thumbnail.isel(well=0, field=0, channel=idx).values.astype(float)
    lo, hi = ds.channel_p01.values[idx], ds.channel_p99.values[idx]
    scaled = np.clip((thumb - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1)
    expected = np.clip(np.einsum("cyx,ck->yxk", scaled, np.array(list(COLOURS.values()))), 0, 1)
    tile = _tile(png, result.tiles["A01/1"])
    zoom = tile.shape[0] // thumb.shape[-2]
    np.testing.assert_allclose(tile[::zoom, ::zoom], expected * 255, atol=1.5)
    # B05 field 2 lacks its DNA image: framed in red; the others are not.
    assert (_border(_tile(png, result.tiles["B05/2"])) == MISSING).all()
    for label in ("A01/1", "B05/1"):
        assert not (_border(_tile(png, result.tiles[label])) == MISSING).all(axis=1).any()


def test_plate_a_bright_channel_colours_its_tile(cube_prefix: Path, tmp_path: Path) -> None:
    copy = tmp_path / "P1.zarr"
    shutil.copytree(cube_prefix / "P1.zarr", copy)
    group = zarr.open_group(str(copy), mode="r+")
    names = [str(c) for c in group["channel"][:]]
    p01, p99 = group["channel_p01"][:], group["channel_p99"][:]
    thumbnail = group["thumbnail"]
    block = np.broadcast_to(p01[:, None, None], thumbnail.shape[2:]).copy()
    block[names.index("DNA")] = p99[names.index("DNA")]
    thumbnail[1, 0] = block.astype(thumbnail.dtype)  # A02, field 1: only DNA, at its p99
    result = preview_cube(str(copy), str(tmp_path / "bright.png"))
    tile = _tile(_png(result.path), result.tiles["A02/1"]).reshape(-1, 3).astype(int)
    assert (tile[:, 2] >= 250).all() and (tile[:, :2] <= 5).all()  # DNA is blue
    other = _tile(_png(result.path), result.tiles["A02/2"]).reshape(-1, 3).astype(int)
    assert (other[:, :2] > 50).any()


def test_plate_channels_and_fields_options(cube_prefix: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mito.png"
    status, stdout, err = _preview(
        capsys, str(cube_prefix / "P1.zarr"), "--out", str(out), "--channels", "Mito",
        "--fields", "2",
    )  # fmt: skip
    assert status == 0, err
    assert stdout.startswith(f"Wrote {out} (") and "channels Mito magenta" in stdout
    result = preview_cube(str(cube_prefix / "P1.zarr"), str(out), channels=["Mito"], fields=[2])
    assert sorted(result.tiles) == ["A01/2", "A02/2", "B05/2"]  # B05/2 lacks DNA, not Mito
    pixels = np.concatenate([_tile(_png(out), box).reshape(-1, 3) for box in result.tiles.values()])
    assert (pixels[:, 1] == 0).all() and (pixels[:, 0] == pixels[:, 2]).all()  # magenta only
    assert pixels[:, 0].max() > 100
    status, _, err = _preview(
        capsys, str(cube_prefix / "P1.zarr"), "--out", str(out), "--channels", "DNA,Hoechst"
    )
    assert status == 2
    assert err.startswith("error: --channels Hoechst: the plate ") and "DNA, HighZBF" in err


def test_climate_map_time_level_and_missing_step(cube_prefix: Path, tmp_path: Path, capsys):
    url, out = str(cube_prefix / "climate.zarr"), tmp_path / "t.png"
    args = ("--variable", "T", "--level", "50000", "--time", "2000-02-10")
    status, stdout, err = _preview(capsys, url, "--out", str(out), *args)
    assert status == 0, err
    assert "(800x480 px): a map of T at 2000-02-10T12:00, plev 50000, coloured between" in stdout
    png = _png(out)
    assert png.shape == (480, 800, 3) and len(np.unique(png.reshape(-1, 3), axis=0)) > 20
    status, stdout, err = _preview(capsys, url, "--out", str(out), "--time", "2000-01-05")
    assert status == 0 and "T_surf at 2000-01-05T12:00" in stdout and "a missing step" in stdout
    for bad, message in (
        (("--variable", "nope"), "--variable nope: .* has no such variable; its variables are "
                                 "T_surf, q_H2O, cldfrac, T"),
        (("--time", "1999-05-01"), r"--time 1999-05-01: no step .* \(2000-01-01T12:00 – "
                                   "2000-02-28T12:00, 59 steps\\)"),
        (("--channels", "DNA"), "--channels does not apply to .*: it is a climate cube"),
        (("--level", "500", "--variable", "T_surf"), "--level: T_surf of .* has no level dim"),
    ):  # fmt: skip
        status, stdout, err = _preview(capsys, url, "--out", str(out), *bad)
        assert status == 2 and stdout == "" and len(err.splitlines()) == 1
        assert pytest.importorskip("re").match(f"error: {message}", err), err


def test_arrays_contact_sheet(cube_prefix: Path, tmp_path: Path) -> None:
    url = str(cube_prefix / "arrays.zarr")
    result = preview_cube(url, str(tmp_path / "sheet.png"), count=4)
    assert sorted(result.tiles) == [f"sample {i}" for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = cubes.open_cube(url)
    lo, hi = float(ds.image_min), float(ds.image_max)
    png = _png(result.path)
    for i, image in enumerate(npz_images(cube_prefix)[:4]):
        tile = _tile(png, result.tiles[f"sample {i}"])
        zoom = tile.shape[0] // image.shape[1]
        expected = (image.transpose(1, 2, 0) - lo) / (hi - lo) * 255  # channels first -> RGB
        np.testing.assert_allclose(tile[::zoom, ::zoom], expected, atol=1.5)
    with pytest.raises(cubes.ArgumentError, match="--variable label: label .* has no image"):
        preview_cube(url, str(tmp_path / "x.png"), variable="label")


@pytest.mark.s3
def test_preview_on_s3_reads_only_what_it_draws(
    s3_cubes, cube_prefix: Path, tmp_path: Path, capsys
) -> None:
    with _Recorder(s3_cubes.endpoint) as proxy:
        plate = f"{s3_cubes.url}/all/P1.zarr"
        status, _, err = _preview(
            capsys, plate, "--out", str(tmp_path / "s3.png"), "--endpoint-url", proxy.url
        )
        assert status == 0, err
        plate_paths = [path for _, path in proxy.requests]
        proxy.requests.clear()
        climate = f"{s3_cubes.url}/all/climate.zarr"
        args = ("--variable", "T", "--time", "2000-02-10", "--endpoint-url", proxy.url)
        status, _, err = _preview(capsys, climate, "--out", str(tmp_path / "map.png"), *args)
        assert status == 0, err
        climate_paths = [path for _, path in proxy.requests]
    assert not [p for p in plate_paths if "/images/" in p]
    assert [p for p in plate_paths if "/thumbnail/c/" in p]
    chunks = [p for p in climate_paths if "/c/" in p]
    assert [p for p in chunks if "/T/c/" in p] and len([p for p in chunks if "/T/c/" in p]) <= 2
    assert not [p for p in chunks if any(f"/{v}/c/" in p for v in ("T_surf", "q_H2O", "cldfrac"))]
    local = preview_cube(str(cube_prefix / "P1.zarr"), str(tmp_path / "local.png"))
    np.testing.assert_array_equal(_png(tmp_path / "s3.png"), _png(local.path))
