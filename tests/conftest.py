"""Shared fixtures: a real moto S3 server over HTTP, fresh buckets, small plates, the CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Dummy credentials for the moto server; real ones in the environment are left alone.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_key, _value)


logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real S3 endpoint: moto's ThreadedMotoServer on 127.0.0.1, any free port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass(frozen=True)
class Bucket:
    """A fresh bucket on the moto server."""

    endpoint: str
    name: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}"

    @property
    def storage_options(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint}

    def fs(self):  # noqa: ANN201 - s3fs.S3FileSystem
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True)


@pytest.fixture
def bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """A new bucket per test; AWS_ENDPOINT_URL points at moto (subprocesses inherit it)."""
    import boto3
    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    s3fs.S3FileSystem.clear_instance_cache()
    yield Bucket(moto_server, name)
    s3fs.S3FileSystem.clear_instance_cache()


def run_cli(
    *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m ingest ARGS`` as users do, in a subprocess (``env`` replaces os.environ)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"python -m ingest {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def local_plate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic plate on local disk: 3 wells x 2 fields x 8 channels of 64x64."""
    from ingest.sources.cellpainting.synth import parse_wells, write_synth_plate

    root = tmp_path_factory.mktemp("plate")
    write_synth_plate(str(root), wells=parse_wells("A01,A02,B05"), fields=2, size=64, seed=1)
    return root


@pytest.fixture(scope="session")
def local_cube(local_plate: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``local_plate`` ingested into a local cube."""
    dest = tmp_path_factory.mktemp("cubes") / "plate.zarr"
    run_cli("cellpainting", str(local_plate), str(dest), "--no-progress")
    return dest


# Files whose tests take minutes, run first: under `pytest -n 2 --dist loadfile` (make test)
# a process takes whole files in collection order, so the longest starting last would run
# alone at the end.
LONG_FIRST = ("tests/test_readme.py", "tests/ingest/test_jump_layouts.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the files of ``LONG_FIRST`` to the front, keeping every file's own order."""

    def rank(item: pytest.Item) -> int:
        path = Path(str(item.path)).relative_to(ROOT).as_posix()
        return LONG_FIRST.index(path) if path in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
