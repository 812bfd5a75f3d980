"""``python -m cubes ls``: one line per cube, locally and on S3, in a bounded number of requests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cubes.cli import main
from tests.conftest import ROOT
from tests.faultproxy import FaultProxy


def _ls(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["ls", *args])
    out, err = capsys.readouterr()
    return status, out, err


def _du(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _lines(out: str) -> dict[str, str]:
    """The lines of the table, by the name of the cube (the header under 'URL')."""
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["URL", "KIND", "SAMPLES"]
    return {line.split()[0].rstrip("/").rsplit("/", 1)[-1]: line for line in lines[1:]}


def test_ls_local_one_line_per_cube(cube_prefix: Path, capsys) -> None:
    status, out, err = _ls(capsys, str(cube_prefix))
    assert status == 0, err
    lines = _lines(out)
    assert sorted(lines) == ["P1.zarr", "P2.zarr", "arrays.zarr", "climate.zarr"]
    p1 = lines["P1.zarr"]
    assert str(cube_prefix / "P1.zarr") in p1
    assert "cellpainting-plate" in p1 and "3 wells × 2 fields" in p1 and "uint16" in p1
    assert "8: Mito AGP RNA ER DNA HighZBF LowZBF Brightfield" in p1
    assert "complete, 1/48 absent" in p1  # the missing DNA image of B05, field 2
    assert "1 well × 1 field" in lines["P2.zarr"] and "complete " in lines["P2.zarr"]
    climate = lines["climate.zarr"]
    assert "59 steps (2000-01-01T12:00 – 2000-02-28T12:00)" in climate
    assert "4: T_surf q_H2O cldfrac T" in climate and "float32" in climate
    assert "complete, 1/59 absent" in climate
    assert "5 samples" in lines["arrays.zarr"] and "int64,uint8" in lines["arrays.zarr"]


def test_ls_json_uses_the_batch_index_and_says_what_is_absent(
    cube_prefix: Path, tmp_path: Path, capsys
) -> None:
    prefix = tmp_path / "copy"
    shutil.copytree(cube_prefix, prefix)
    shutil.rmtree(prefix / "P2.zarr")  # plates.csv still lists it
    status, out, err = _ls(capsys, str(prefix), "--json", "--sizes")
    assert status == 0, err
    by_name = {Path(e["url"]).name: e for e in json.loads(out)}
    p1, p2, climate = by_name["P1.zarr"], by_name["P2.zarr"], by_name["climate.zarr"]
    assert p1["kind"] == "cellpainting-plate" and p1["status"] == "complete"
    assert p1["samples"] == {"well": 3, "field": 2} and p1["n_samples"] == 6
    assert (p1["found"], p1["expected"], p1["plate"]) == (47, 48, "P1")
    assert p1["channels"][4] == "DNA" and p1["dtype"] == ["uint16"]
    assert p1["stored_bytes"] == sum(
        f.stat().st_size for f in (prefix / "P1.zarr").rglob("*") if f.is_file()
    )
    assert p1["written"].startswith("20")
    assert p2["status"] == "absent" and p2["plate"] == "P2" and "plates.csv" in p2["note"]
    assert climate["time_range"] == ["2000-01-01T12:00", "2000-02-28T12:00"]
    assert climate["samples"] == {"time": 59} and climate["variables"][0] == "T_surf"


def test_ls_a_cube_lists_it_and_not_cubes_are_named(cube_prefix: Path, tmp_path: Path, capsys):
    status, out, _ = _ls(capsys, str(cube_prefix / "P2.zarr"))
    assert status == 0 and list(_lines(out)) == ["P2.zarr"]
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3).create_array(
        "a", shape=(3,), dtype="int8"
    )
    status, out, err = _ls(capsys, str(tmp_path))
    assert status == 2 and out == ""
    assert err.startswith(f"error: No cubes under {tmp_path}: it holds ")
    assert f"{tmp_path}/plain.zarr (zarr-group)" in err and len(err.splitlines()) == 1


def test_ls_no_cubes_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    status, out, err = _ls(capsys, str(tmp_path / "nothing"))
    assert status == 2 and out == ""
    assert err == (
        f"error: No cubes under {tmp_path}/nothing: nothing is there (a cube is a folder with "
        "a zarr.json that records a cube layout). Check the prefix, or write cubes there with "
        "'python -m ingest'.\n"
    )


class _Recorder(FaultProxy):
    """A proxy in front of moto that records every request: (method, path and query)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, rate=0.0)
        self.requests: list[tuple[str, str]] = []

    def _forward(self, handler, body):  # noqa: ANN001, ANN202 - FaultProxy's signature
        self.requests.append((handler.command, handler.path))
        return super()._forward(handler, body)


@pytest.mark.s3
def test_ls_on_s3_is_bounded(s3_cubes, capsys) -> None:
    counts = {}
    with _Recorder(s3_cubes.endpoint) as proxy:
        for name in ("few", "many", "all"):
            proxy.requests.clear()
            status, out, err = _ls(capsys, f"{s3_cubes.url}/{name}/", "--endpoint-url", proxy.url)
            assert status == 0, err
            counts[name] = Counter(method for method, _ in proxy.requests)
            paths = [path for _, path in proxy.requests]
            assert not [p for p in paths if "/images/" in p or "/thumbnail/" in p], paths
    assert counts["few"] == counts["many"]  # does not grow with the shards
    # the probe, the delimiter listing, 4 root zarr.json, plates.csv, the time coord (2 GETs)
    assert counts["all"] == {"GET": 2 + 4 + 1 + 2}, proxy.requests
    lines = _lines(out)
    assert sorted(lines) == ["P1.zarr", "P2.zarr", "arrays.zarr", "climate.zarr"]
    assert lines["P1.zarr"].startswith(f"{s3_cubes.url}/all/P1.zarr ")
    assert "3 wells × 2 fields" in lines["P1.zarr"]
    assert "59 steps (2000-01-01T12:00 – 2000-02-28T12:00)" in lines["climate.zarr"]


@pytest.mark.s3
def test_ls_s3_recursive_and_sizes(s3_cubes, cube_prefix: Path, capsys) -> None:
    endpoint = ("--endpoint-url", s3_cubes.endpoint)
    status, _, err = _ls(capsys, s3_cubes.url, *endpoint)
    assert status == 2 and "3 folder(s) but no cube" in err and "--recursive" in err
    status, out, err = _ls(capsys, s3_cubes.url, "--recursive", "--sizes", "--json", *endpoint)
    assert status == 0, err
    by_url = {e["url"]: e for e in json.loads(out)}
    assert len(by_url) == 4 + 2
    entry = by_url[f"{s3_cubes.url}/many/P1.zarr"]
    assert entry["stored_bytes"] == _du(cube_prefix / "P1.zarr")
    assert by_url[f"{s3_cubes.url}/all/P1.zarr"]["stored_bytes"] == entry["stored_bytes"]
    status, out, err = _ls(capsys, f"{s3_cubes.url}/few", "--anon", *endpoint)  # unsigned
    assert status == 2 and len(err.splitlines()) == 1  # moto lists for anyone, reads for owners
    assert err.startswith(f"error: Anonymous access to {s3_cubes.url}/few/P2.zarr was denied")


@pytest.mark.s3
def test_ls_wrong_endpoint_fails_fast(capsys) -> None:
    start = time.perf_counter()
    status, _, err = _ls(capsys, "s3://bucket/cubes/", "--endpoint-url", "http://127.0.0.1:9")
    assert time.perf_counter() - start < 15
    assert status == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: Cannot reach the S3 endpoint http://127.0.0.1:9 for s3://bucket")


def test_python_m_cubes_version_help_and_error(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "cubes", *args], capture_output=True, text=True, env=env
        )

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("cellcubes ")
    bad = run("describe", str(tmp_path / "none.zarr"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"error: No cube at {tmp_path}/none.zarr: nothing is there")
