"""``python -m ingest arrays``: folders of .npy/.npz/.pt files -> cube -> open_cube."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import cubes
from cubes.errors import SchemaError
from ingest.cli import main
from ingest.sources.arrays import reader as arrays_reader
from ingest.sources.arrays import source as arrays_source
from ingest.sources.arrays.catalog import ArraySpec


def _npz_folder(folder: Path, n: int = 7) -> list[dict[str, np.ndarray]]:
    """``n`` single-sample .npz files (image uint8 (3,32,32), label int64 ()); in sub-folders."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        sample = {
            "image": rng.integers(0, 256, (3, 32, 32), dtype=np.uint8),
            "label": np.int64(i * 3 - 4),
        }
        path = folder / ("a" if i < 3 else "b") / f"sample_{i}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **sample)
        samples.append(sample)
    return samples


def _check_cube(ds: Any, samples: list[dict[str, np.ndarray]], names: list[str]) -> None:
    """Values, coords, mask and statistics agree with the samples (statistics as numpy's)."""
    assert ds.sample.values.tolist() == list(range(len(samples)))
    assert [str(s) for s in ds.source_file.values] == names
    assert ds.present.values.all()
    for var in samples[0]:
        stacked = np.stack([s[var] for s in samples])
        values = ds[var].values
        assert ds[var].dims[0] == "sample"
        assert values.dtype == stacked.dtype
        np.testing.assert_array_equal(values, stacked)
        as_float = stacked.astype(np.float64)
        as_float = as_float[~np.isnan(as_float)]
        np.testing.assert_allclose(float(ds[f"{var}_mean"]), as_float.mean(), rtol=1e-9)
        np.testing.assert_allclose(float(ds[f"{var}_std"]), as_float.std(), rtol=1e-6, atol=1e-9)
        assert float(ds[f"{var}_min"]) == as_float.min()
        assert float(ds[f"{var}_max"]) == as_float.max()


def test_npz_folder_round_trip_and_rerun_is_up_to_date(tmp_path: Path, capsys) -> None:
    samples = _npz_folder(tmp_path / "src")
    dest = str(tmp_path / "cube.zarr")
    assert main(["arrays", str(tmp_path / "src"), dest, "--no-progress"]) == 0
    ds = cubes.open_cube(dest, require_complete=True)
    assert ds.image.dims == ("sample", "image_dim0", "image_dim1", "image_dim2")
    assert ds.label.dims == ("sample",)
    assert "image_nan_count" not in ds
    names = [f"{'a' if i < 3 else 'b'}/sample_{i}.npz" for i in range(7)]
    _check_cube(ds, samples, names)
    assert ds.attrs["cube_kind"] == "arrays"
    capsys.readouterr()
    assert main(["arrays", str(tmp_path / "src"), dest, "--no-progress"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_pt_dicts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples = []
    for i in range(4):
        sample = {
            "x": rng.normal(size=(2, 6)).astype(np.float32),
            "y": np.array([i, i + 1], dtype=np.int16),
        }
        sample["x"][0, i] = np.nan
        torch.save({k: torch.from_numpy(v) for k, v in sample.items()}, tmp_path / f"s{i}.pt")
        samples.append(sample)
    dest = str(tmp_path / "cube.zarr")
    assert main(["arrays", str(tmp_path), dest, "--no-progress"]) == 0
    ds = cubes.open_cube(dest, require_complete=True)
    _check_cube(ds, samples, [f"s{i}.pt" for i in range(4)])
    assert float(ds["x_nan_count"]) == 4


def _batches(folder: Path, sizes: list[int]) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, size in enumerate(sizes):
        batch = rng.normal(size=(size, 2, 5)).astype(np.float32)
        np.save(folder / f"batch_{i}.npy", batch)
        samples.extend({"data": b} for b in batch)
    return samples


def test_batched_npy_straddling_shards(tmp_path: Path) -> None:
    sizes = [4, 3, 5]
    samples = _batches(tmp_path / "src", sizes)
    dest = str(tmp_path / "cube.zarr")
    argv = ["arrays", str(tmp_path / "src"), dest, "--no-progress", "--samples-per-shard", "3"]
    assert main(argv) == 0  # shapes differ in the first axis only: read as batches
    ds = cubes.open_cube(dest, require_complete=True)
    names = [f"batch_{i}.npy" for i, n in enumerate(sizes) for _ in range(n)]
    _check_cube(ds, samples, names)


def test_batched_flag_on_equal_batches(tmp_path: Path) -> None:
    samples = _batches(tmp_path / "src", [2, 2])
    dest = str(tmp_path / "cube.zarr")
    assert main(["arrays", str(tmp_path / "src"), dest, "--no-progress", "--batched"]) == 0
    ds = cubes.open_cube(dest, require_complete=True)
    _check_cube(ds, samples, ["batch_0.npy"] * 2 + ["batch_1.npy"] * 2)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pickled_object_is_refused_not_executed(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    marker = tmp_path / "executed"
    torch.save({"x": torch.zeros(2)}, src / "good.pt")
    torch.save({"x": _Payload(marker)}, src / "evil.pt")
    assert main(["arrays", str(src), str(tmp_path / "c.zarr"), "--no-progress"]) == 2
    assert "evil.pt" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "c.zarr").exists()


def test_other_shape_is_named(tmp_path: Path, capsys) -> None:
    _npz_folder(tmp_path / "src", n=3)
    np.savez(tmp_path / "src" / "odd.npz", image=np.zeros((3, 16, 16), np.uint8), label=1)
    assert main(["arrays", str(tmp_path / "src"), str(tmp_path / "c.zarr")]) == 2
    err = capsys.readouterr().err
    assert "odd.npz" in err and "image" in err


def test_skip_leaves_an_unreadable_file_absent(tmp_path: Path, monkeypatch, capsys) -> None:
    _npz_folder(tmp_path / "src", n=5)
    real = arrays_reader.read_file

    def flaky(url: str, storage_options: Any = None) -> dict[str, np.ndarray]:
        if url.endswith("sample_3.npz"):
            raise SchemaError(f"{url} is damaged.")
        return real(url, storage_options)

    monkeypatch.setattr(arrays_reader, "read_file", flaky)
    dest = str(tmp_path / "cube.zarr")
    argv = ["arrays", str(tmp_path / "src"), dest, "--no-progress", "--on-error", "skip"]
    assert main(argv) == 0
    ds = cubes.open_cube(dest)
    assert ds.present.values.tolist() == [True, True, True, False, True]
    assert "1 unreadable" in capsys.readouterr().out
    assert main(argv[:-2]) == 0  # already written: up to date


def test_default_samples_per_shard_keeps_shards_small() -> None:
    small = {"image": ArraySpec((3, 32, 32), np.dtype(np.uint8))}
    big = {"image": ArraySpec((4, 1024, 1024), np.dtype(np.float32))}
    assert arrays_source.default_samples_per_shard(small) == 256
    assert arrays_source.default_samples_per_shard(big) == 2


def test_options_are_checked() -> None:
    from ingest.sources.base import ArgumentError

    with pytest.raises(ArgumentError):
        arrays_source.ArraysOptions(samples_per_shard=0)
    with pytest.raises(ArgumentError):
        arrays_source.ArraysOptions(batched="yes")  # type: ignore[arg-type]


@pytest.mark.s3
def test_s3_round_trip(bucket, tmp_path: Path) -> None:
    samples = _npz_folder(tmp_path / "src", n=5)
    fs = bucket.fs()
    fs.put(str(tmp_path / "src") + "/", f"{bucket.name}/raw/", recursive=True)
    src, dest = f"{bucket.url}/raw", f"{bucket.url}/cubes/arrays.zarr"
    assert main(["arrays", src, dest, "--no-progress", "--samples-per-shard", "2"]) == 0
    ds = cubes.open_cube(dest, storage_options=bucket.storage_options, require_complete=True)
    names = [f"{'a' if i < 3 else 'b'}/sample_{i}.npz" for i in range(5)]
    _check_cube(ds, samples, names)


def test_array_job_slices_then_finalize(tmp_path: Path) -> None:
    samples = _npz_folder(tmp_path / "src", n=5)
    dest = str(tmp_path / "cube.zarr")
    for index in ("0", "1"):
        argv = ["arrays", str(tmp_path / "src"), dest, "--no-progress", "--samples-per-shard", "2"]
        assert main([*argv, "--task-index", index, "--task-count", "2"]) == 0
    assert main(["finalize", dest]) == 0
    names = [f"{'a' if i < 3 else 'b'}/sample_{i}.npz" for i in range(5)]
    _check_cube(cubes.open_cube(dest, require_complete=True), samples, names)
