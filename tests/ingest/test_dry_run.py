"""``--dry-run`` on every source: writes nothing, and its numbers match what a real run writes.

Each source is dry-run, then run for real into the same DEST: the objects the
dry run announced are the objects the run wrote (equal counts), its input
files and bytes are SRC's (exact), and its estimated stored bytes are within
:data:`STORED_TOLERANCE` of what the run stored. On the moto server the
bucket's listing is unchanged by the dry run, and the requests the real run
makes (counted from the server's request log) match the estimate.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest

from ingest.cli import main
from ingest.sources import SOURCES

STORED_TOLERANCE = 0.10  # estimated stored bytes vs stored, relative
REQUEST_TOLERANCE = 0.10  # estimated PUT/GET/LIST vs counted on the moto server, relative


def _climate(root: Path) -> list[Path]:
    from ingest.sources.netcdf.synth import write_synth_climate

    write_synth_climate(str(root), years=1, grid=(8, 16))
    return sorted(root.glob("*.nc"))


def _arrays(root: Path) -> list[Path]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for k in range(9):
        np.savez(
            root / f"s{k:02d}.npz",
            image=rng.integers(0, 4000, (2, 24, 24), dtype=np.uint16),
            label=np.int64(k % 3),
        )
    return sorted(root.glob("*.npz"))


@pytest.fixture(scope="module")
def sources(local_plate: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SRC of each source: the shared small plate, a year of 8x16 climate files, 9 .npz."""
    root = tmp_path_factory.mktemp("dry-sources")
    _climate(root / "climate")
    _arrays(root / "arrays")
    return {"cellpainting": local_plate, "netcdf": root / "climate", "arrays": root / "arrays"}


INPUTS: dict[str, Callable[[Path], list[Path]]] = {
    "cellpainting": lambda root: sorted(root.rglob("*.tiff")),
    "netcdf": lambda root: sorted(root.glob("*.nc")),
    "arrays": lambda root: sorted(root.glob("*.npz")),
}


def _dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*args, "--dry-run", "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_every_source_is_covered() -> None:
    assert set(SOURCES) <= set(INPUTS), "a new source needs its dry-run test here"


@pytest.mark.parametrize("name", ["cellpainting", "netcdf", "arrays"])
def test_local_dry_run_writes_nothing_and_matches_the_run(
    name: str, sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dest = sources[name], tmp_path / "out" / "cube.zarr"
    plan = _dry_run(capsys, name, str(src), str(dest))
    assert not (tmp_path / "out").exists()  # no cube, journal, lock or parent folder
    memory = fsspec.filesystem("memory").store  # the sampled tasks' copy of the cube is gone
    assert not [key for key in memory if "cellcubes-dry-run" in key]

    inputs = INPUTS[name](src)
    assert sum(c["inputs"] for c in plan["cubes"]) == len(inputs)
    assert sum(c["input_bytes"] for c in plan["cubes"]) == sum(p.stat().st_size for p in inputs)
    assert plan["rates"]["samples"], "no task was sampled"

    assert main([name, str(src), str(dest), "--no-progress"]) == 0
    capsys.readouterr()
    written = _files(tmp_path / "out")  # the cube and its quality report; journal and lock gone
    assert plan["objects"] == len(written)
    stored = sum(p.stat().st_size for p in written)
    assert plan["stored_bytes"] == pytest.approx(stored, rel=STORED_TOLERANCE)


def test_text_names_samples_rates_and_prices(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "plate.zarr"
    args = ["cellpainting", str(sources["cellpainting"]), str(dest), "--threads", "3"]
    assert main([*args, "--dry-run", "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert not dest.exists()
    assert re.search(r"Inputs: 48 files", text)
    assert re.search(r"images \(well 3, field 2, channel 8, y 64, x 64\) uint16, lz4hc1", text)
    assert len(re.findall(r"task \(\d+, \d+\): 8 files, read\+decode .* write ", text)) == 3
    assert "3 threads x 2 workers: tasks in parallel over 6 slots" in text
    assert "PUT/COPY/POST/LIST $0.005 per 1,000, GET $0.0004 per 1,000" in text


def test_array_job_slices_share_the_tasks(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dest = str(sources["cellpainting"]), str(tmp_path / "plate.zarr")
    whole = _dry_run(capsys, "cellpainting", src, dest)
    parts = [
        _dry_run(capsys, "cellpainting", src, dest, "--task-index", str(k), "--task-count", "3")
        for k in range(3)
    ]
    assert not Path(dest).exists()
    tasks = [sum(c["tasks"] for c in part["cubes"]) for part in parts]
    assert sum(tasks) == sum(c["tasks"] for c in whole["cubes"]) and min(tasks) > 0
    assert all(part["task_slice"]["count"] == 3 for part in parts)
    inputs = sum(c["inputs"] for part in parts for c in part["cubes"])
    assert inputs == sum(c["inputs"] for c in whole["cubes"])


@pytest.mark.parametrize("name", ["cellpainting", "netcdf", "arrays"])
def test_bad_src_fails_as_a_real_run(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [name, str(tmp_path / "no-such-folder"), str(tmp_path / "cube.zarr")]
    assert main(args) == 2
    real = capsys.readouterr().err
    assert main([*args, "--dry-run"]) == 2
    dry = capsys.readouterr().err
    assert dry == real and "no-such-folder" in dry
    assert list(tmp_path.iterdir()) == []


def test_json_without_dry_run_is_refused(
    local_plate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["arrays", str(local_plate), str(tmp_path / "a.zarr"), "--json"]) == 2
    assert "add --dry-run" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


class _RequestLog(logging.Handler):
    """The moto server's request lines (werkzeug's log), as ``(method, path)``."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r'"(\w+) (\S+) HTTP', record.getMessage())
        if match:
            self.requests.append((match.group(1), match.group(2)))


@pytest.fixture
def request_log() -> Iterator[_RequestLog]:
    handler = _RequestLog()
    log = logging.getLogger("werkzeug")
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _kinds(requests: list[tuple[str, str]]) -> Counter:
    kinds: Counter = Counter()
    for method, path in requests:
        listing = method == "GET" and "list-type=" in path
        kinds["LIST" if listing else "DELETE" if "?delete" in path else method] += 1
    return kinds


def test_s3_dry_run_leaves_the_bucket_unchanged_and_matches_the_run(
    local_plate: Path, bucket, request_log: _RequestLog, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001 - the conftest's Bucket
    fs = bucket.fs()
    fs.put(str(local_plate), f"{bucket.name}/src", recursive=True)
    src, dest = f"{bucket.url}/src", f"{bucket.url}/out/plate.zarr"
    before = {p: i["size"] for p, i in fs.find(bucket.name, detail=True).items()}

    request_log.requests.clear()
    plan = _dry_run(capsys, "cellpainting", src, dest, "--threads", "1")
    fs.invalidate_cache()
    assert {p: i["size"] for p, i in fs.find(bucket.name, detail=True).items()} == before
    assert not [m for m, _ in request_log.requests if m in ("PUT", "POST", "DELETE")]
    tiffs = {p: size for p, size in before.items() if p.endswith(".tiff")}
    assert sum(c["inputs"] for c in plan["cubes"]) == len(tiffs)
    assert sum(c["input_bytes"] for c in plan["cubes"]) == sum(tiffs.values())
    assert plan["remote_dest"] and plan["remote_src"]

    request_log.requests.clear()
    assert main(["cellpainting", src, dest, "--threads", "1", "--no-progress"]) == 0
    capsys.readouterr()
    fs.invalidate_cache()
    after = fs.find(bucket.name, detail=True)
    written = {p: i["size"] for p, i in after.items() if p not in before}
    assert plan["objects"] == len(written)
    assert plan["stored_bytes"] == pytest.approx(sum(written.values()), rel=STORED_TOLERANCE)
    prefix = f"/{bucket.name}/src/"
    tiffs_read = [p for m, p in request_log.requests if m == "GET" and p.endswith(".tiff")]
    reads = sum(c["reads"] for c in plan["cubes"])  # the tasks' reads; planning's come on top
    assert reads <= len(tiffs_read) <= reads + 1  # + the header the planner reads (if not cached)
    of_src = [r for r in request_log.requests if r[1].startswith(prefix) or "prefix=src" in r[1]]
    counted = _kinds([r for r in request_log.requests if r not in of_src])
    for kind in ("PUT", "GET", "LIST"):
        assert plan["requests"][kind] == pytest.approx(counted[kind], rel=REQUEST_TOLERANCE), kind
    assert plan["requests"]["DELETE"] == counted["DELETE"]


def test_json_is_valid_and_self_consistent(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _dry_run(capsys, "arrays", str(sources["arrays"]), str(tmp_path / "a.zarr"))
    cubes = plan["cubes"]
    assert plan["objects"] == sum(c["objects"] for c in cubes) + plan["index_objects"]
    put = plan["requests"]["PUT"] + plan["requests"]["LIST"]
    get = plan["requests"]["GET"] + plan["requests"]["HEAD"]
    prices = plan["prices"]
    expected = (
        put / 1000 * prices["put_copy_post_list_per_1000"]
        + get / 1000 * (prices["get_head_per_1000"])
    )
    assert plan["request_cost_usd"] == pytest.approx(expected)
    assert os.listdir(tmp_path) == []


def test_a_plan_from_names_only_is_the_plan_from_files(
    local_plate: Path, sources: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """What the JUMP-scale plan rests on (benchmarks/jump_dry_run.py): a listing of names
    (one real header) plans the same tasks, shards and bytes as the images themselves.
    Without the plate's Index.idx.xml it has fewer (small) coordinate arrays."""
    from ingest.dryrun import dry_run
    from ingest.dryrun_rates import measure_rates
    from ingest.sources.cellpainting import CellPaintingOptions
    from ingest.sources.cellpainting.synth import parse_wells
    from tests.helpers import names_only_plate

    source, options = SOURCES["cellpainting"], CellPaintingOptions()
    real = source.plan(str(local_plate), "s3://bkt/plate.zarr", options)
    rates = measure_rates(real, 1)
    names_only_plate("memory://names-only", parse_wells("A01,A02,B05"), 2, 64)
    named = source.plan("memory://names-only/", "s3://bkt/plate.zarr", options)
    sizes = dict.fromkeys({u for t in named[0].tasks for _, u in t.inputs}, 7)
    a = dry_run(real, {}, rates=rates).to_json()
    b = dry_run(named, {}, rates=rates, sizes=sizes).to_json()
    assert b["cubes"][0]["input_bytes"] == 7 * a["cubes"][0]["inputs"]
    assert b["cubes"][0]["arrays"] < a["cubes"][0]["arrays"]  # no Harmony index: fewer coords
    for key in ("tasks", "groups", "inputs"):
        assert b["cubes"][0][key] == a["cubes"][0][key], key
    lines = [
        (v["name"], v["shape"], v["objects"], v["raw_bytes"]) for v in a["cubes"][0]["variables"]
    ]
    assert [
        (v["name"], v["shape"], v["objects"], v["raw_bytes"]) for v in b["cubes"][0]["variables"]
    ] == lines


def test_a_batch_counts_every_plate_and_its_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ingest.sources.cellpainting.synth import parse_wells, write_synth_plate

    src, dest = tmp_path / "batch", tmp_path / "out"
    for plate, wells in (("P1", "2"), ("P2", "3")):
        write_synth_plate(str(src), wells=parse_wells(wells), fields=1, size=32, plate=plate)
    plan = _dry_run(capsys, "cellpainting", str(src), str(dest))
    assert not dest.exists()
    assert [Path(c["dest"]).name for c in plan["cubes"]] == ["P1.zarr", "P2.zarr"]
    assert plan["index_objects"] == 1  # plates.csv
    assert main(["cellpainting", str(src), str(dest), "--no-progress"]) == 0
    written = _files(dest)
    assert plan["objects"] == len(written)
    stored = sum(p.stat().st_size for p in written)
    assert plan["stored_bytes"] == pytest.approx(stored, rel=STORED_TOLERANCE)
