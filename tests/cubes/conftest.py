"""Cubes of every kind under one prefix, written once per session by ``python -m ingest``."""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ingest.cli import main as ingest

# B05 field 2 DNA (channel 5 in the synthetic plate's source_4 numbering) is left out.
MISSING_TIFF = "r02c05f02p01-ch5sk1fk1fl1.tiff"
P1_WELLS = ("A01", "A02", "B05")
P2_WELLS = ("C03",)
IMAGE_SIZE = 32


def _ingest(*args: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ingest([*args, "--no-progress", "--threads", "2"]) == 0


@pytest.fixture(scope="session")
def cube_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prefix holding a batch of two plates (``plates.csv``), a climate cube and an arrays cube.

    P1: wells A01, A02, B05 x 2 fields x 8 channels of 32x32, one image missing
    (B05, field 2, DNA); P2: well C03 x 1 field. climate: 59 daily steps
    (January and February 2000) on a 4x8 grid, 2000-01-05 left out. arrays: 5 samples of an image
    (uint8, 3x16x16) and a label.
    """
    root = tmp_path_factory.mktemp("cubes-cli")
    src, prefix = root / "plates", root / "cubes"
    _ingest_plates(src, prefix)
    ingest(["synth-climate", str(root / "clim"), "--grid", "4x8", "--drop-step", "2000-01-05"])
    months = str(root / "clim" / "model_2000-0[12].nc")  # January and February: 59 steps
    _ingest("netcdf", months, str(prefix / "climate.zarr"), "--steps-per-shard", "32")
    _npz_samples(root / "arrays")
    _ingest("arrays", str(root / "arrays"), str(prefix / "arrays.zarr"))
    return prefix


def _ingest_plates(src: Path, prefix: Path) -> None:
    for plate, wells, fields in (("P1", P1_WELLS, "2"), ("P2", P2_WELLS, "1")):
        args = ["--plate", plate, "--wells", ",".join(wells), "--fields", fields]
        assert ingest(["synth-plate", str(src), *args, "--size", str(IMAGE_SIZE)]) == 0
    (missing,) = src.glob(f"P1__*/Images/{MISSING_TIFF}")
    missing.unlink()
    _ingest("cellpainting", str(src), str(prefix))


def _npz_samples(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(5):
        image = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
        np.savez(folder / f"s{i}.npz", image=image, label=np.int64(i))


def npz_images(cube_prefix: Path) -> list[np.ndarray]:
    """The arrays cube's images, read back from its source files."""
    folder = cube_prefix.parent / "arrays"
    return [np.load(folder / f"s{i}.npz")["image"] for i in range(5)]


@dataclass(frozen=True)
class S3Cubes:
    """``cube_prefix`` copied once to a bucket of the moto server: ``all/`` holds every cube,
    ``few/`` plate P2 alone (1 image shard), ``many/`` plate P1 alone (6 image shards)."""

    endpoint: str
    bucket: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"


@pytest.fixture(scope="session")
def s3_cubes(moto_server: str, cube_prefix: Path) -> S3Cubes:
    """The session's cubes on S3, read-only (tests that change cubes copy them)."""
    import boto3
    import s3fs

    name = f"cubes-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=name)
    fs = s3fs.S3FileSystem(endpoint_url=moto_server, skip_instance_cache=True)
    fs.put(str(cube_prefix) + "/", f"{name}/all/", recursive=True)
    for folder, cube in (("few", "P2.zarr"), ("many", "P1.zarr")):
        fs.put(str(cube_prefix / cube), f"{name}/{folder}/{cube}", recursive=True)
    return S3Cubes(moto_server, name)
