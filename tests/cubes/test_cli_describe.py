"""``python -m cubes describe``: layout, variables, statistics, provenance, quality."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import cubes
from cubes.cli import main


def _describe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["describe", *args])
    out, err = capsys.readouterr()
    return status, out, err


def _open(url: str, **kw) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cubes.open_cube(url, **kw)


def test_describe_plate_text(cube_prefix: Path, capsys) -> None:
    url = str(cube_prefix / "P1.zarr")
    status, out, err = _describe(capsys, url)
    assert status == 0, err
    ds = _open(url)
    lines = out.splitlines()
    assert lines[0] == f"{url}: cellpainting-plate cube, complete (convention 1)"
    assert "  samples   well 3 × field 2 = 6" in lines
    assert "  channels  channel 8: Mito AGP RNA ER DNA HighZBF LowZBF Brightfield" in lines
    (images,) = [line.split() for line in lines if line.startswith("  images ")]
    assert images[:6] == ["images", "data", "well×field×channel×y×x", "uint16", "1×1×1×32×32",
                          "1×1×8×32×32"]  # fmt: skip
    assert images[6].startswith("blosc(")
    header = next(i for i, line in enumerate(lines) if line == "statistics") + 1
    assert lines[header].split() == ["mean", "std", "min", "max", "p01", "p99", "saturated"]
    dna = lines[header + 1 + list(ds.channel.values).index("DNA")].split()
    assert dna[0] == "DNA" and float(dna[1]) == pytest.approx(float(ds.channel_mean[4]), 1e-3)
    assert f"  inputs sha256  {ds.attrs['ingest_inputs_sha256']}" in lines
    assert any(line.startswith("  source         cellpainting ") for line in lines)
    assert "  47/48 images found, 1 missing, 0 unreadable, 0 mismatched" in lines
    assert "  absent: well B05, field 2, channel DNA" in lines
    assert f"  report: {cube_prefix / 'P1.quality.json'}" in lines


def test_describe_climate_json(cube_prefix: Path, capsys) -> None:
    url = str(cube_prefix / "climate.zarr")
    status, out, err = _describe(capsys, url, "--json")
    assert status == 0, err
    d = json.loads(out)
    ds = _open(url)
    assert (d["kind"], d["complete"], d["dims"]["time"]) == ("climate", True, 59)
    assert d["layout"]["sample_dims"] == ["time"]
    assert d["channels"] == ["T_surf", "q_H2O", "cldfrac", "T"]
    assert d["time_range"] == ["2000-01-01T12:00", "2000-02-28T12:00"]
    variables = {v["name"]: v for v in d["variables"]}
    assert variables["T"]["dims"] == ["time", "plev", "lat", "lon"]
    assert variables["T"]["shards"][0] == 32 and variables["T"]["chunks"][0] == 1
    assert variables["present"]["role"] == "mask" and variables["present"]["shards"] is None
    assert "T_mean" not in variables  # statistics are in their own table
    rows = {r["label"]: r for r in d["statistics"]["rows"]}
    assert d["statistics"]["columns"] == ["mean", "std", "min", "max", "nan_count"]
    assert len([k for k in rows if k.startswith("T[")]) == 4  # one row per pressure level
    assert rows["T_surf"]["mean"] == pytest.approx(float(ds.T_surf_mean))
    np.testing.assert_allclose([r["max"] for k, r in rows.items() if k.startswith("T[")],
                               ds.T_max.values)  # fmt: skip
    assert d["provenance"]["source_format"] == "netcdf"
    assert d["inputs_sha256"] == ds.attrs["ingest_inputs_sha256"]
    assert d["software"].startswith("cellcubes ")
    assert d["quality"]["counts"]["missing"] == 1
    assert d["quality"]["absent"] == [{"time": "2000-01-05 12:00:00"}]


@pytest.mark.s3
def test_describe_on_s3_matches_local(s3_cubes, cube_prefix: Path, capsys) -> None:
    status, out, err = _describe(
        capsys, f"{s3_cubes.url}/all/arrays.zarr", "--json", "--endpoint-url", s3_cubes.endpoint
    )
    assert status == 0, err
    remote = json.loads(out)
    status, out, _ = _describe(capsys, str(cube_prefix / "arrays.zarr"), "--json")
    local = json.loads(out)
    for key in ("kind", "layout", "dims", "variables", "statistics", "inputs_sha256", "quality"):
        if key == "quality":
            assert remote[key]["counts"] == local[key]["counts"]
        else:
            assert remote[key] == local[key], key
    assert remote["quality"]["report"] == f"{s3_cubes.url}/all/arrays.quality.json"
    assert [v["name"] for v in remote["variables"]] == ["image", "label", "present"]


def test_describe_not_a_cube(cube_prefix: Path, capsys) -> None:
    status, out, err = _describe(capsys, str(cube_prefix))
    assert status == 2 and out == ""
    assert err.startswith(f"error: No cube at {cube_prefix}: it is a batch prefix")
    assert len(err.splitlines()) == 1
    status, _, err = _describe(capsys, str(cube_prefix / "P1.zarr" / "images"))
    assert status == 2 and "is a Zarr array (3x2x8x32x32 uint16), not a cube" in err
