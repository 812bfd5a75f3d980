"""The reading half of the arrays source: listing, headers, planning, whole-file reads."""

from __future__ import annotations

import io
import pathlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cubes.errors import SchemaError, SourceNotFoundError
from ingest.sources.arrays.catalog import (
    DATA_VARIABLE,
    ArraySpec,
    FileHeader,
    list_array_files,
    plan_samples,
    read_file,
    read_header,
)

MiB = 2**20


class Trap:
    """Unpickling it runs ``Path.touch(marker)``: proof of execution when the marker exists."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return pathlib.Path.touch, (self.marker,)


def _headers(src: str, storage_options: dict[str, Any] | None = None) -> list[FileHeader]:
    listing = list_array_files(src, storage_options)
    return [read_header(u, storage_options, size=listing.sizes[u]) for u in listing.files]


def _save_npz(path: Path, label: int, image_shape: tuple[int, ...] = (3, 32, 32)) -> None:
    image = np.full(image_shape, label, dtype=np.uint8)
    np.savez(path, image=image, label=np.int64(label))


@pytest.fixture
def npz_dir(tmp_path: Path) -> Path:
    """sample_0 … sample_11 as .npz (image uint8 (3,32,32), label int64 ()) and a README."""
    for i in range(12):
        _save_npz(tmp_path / f"sample_{i}.npz", i)
    (tmp_path / "README.txt").write_text("not an array")
    return tmp_path


# --- listing ---------------------------------------------------------------------------


def test_listing_is_in_natural_order_and_reports_other_files(tmp_path: Path) -> None:
    for name in ["sample_10.npy", "sample_2.npy", "Sample_1.npy", "sample_9.npy"]:
        np.save(tmp_path / name, np.zeros(2))
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "x_3.npy", np.zeros(2))
    (tmp_path / "notes.txt").write_text("x")
    np.save(tmp_path / ".hidden.npy", np.zeros(2))
    listing = list_array_files(str(tmp_path))
    names = [Path(u).relative_to(tmp_path).as_posix() for u in listing.files]
    assert names == ["Sample_1.npy", "sample_2.npy", "sample_9.npy", "sample_10.npy", "sub/x_3.npy"]
    assert sorted(Path(u).name for u in listing.ignored) == [".hidden.npy", "notes.txt"]
    assert listing.sizes[listing.files[0]] == (tmp_path / "Sample_1.npy").stat().st_size


def test_listing_a_missing_src_says_it_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"nowhere does not exist"):
        list_array_files(str(tmp_path / "nowhere"))


def test_listing_a_src_without_arrays_names_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "table.csv").write_text("a,b")
    with pytest.raises(SourceNotFoundError, match=r"holds no \.npy, \.npz or \.pt.*table\.csv"):
        list_array_files(str(tmp_path))


def test_listing_one_file(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert list_array_files(str(tmp_path / "one.npy")).files == (str(tmp_path / "one.npy"),)


# --- headers and plans -----------------------------------------------------------------


def test_npy_samples(tmp_path: Path) -> None:
    for i in range(3):
        np.save(tmp_path / f"s_{i}.npy", np.full((4, 5), i, dtype=np.float32))
    catalog = plan_samples(_headers(str(tmp_path)))
    assert catalog.variables == {DATA_VARIABLE: ArraySpec((4, 5), np.dtype(np.float32))}
    assert catalog.n_samples == 3
    assert [Path(u).name for u in catalog.source_file()] == ["s_0.npy", "s_1.npy", "s_2.npy"]
    np.testing.assert_array_equal(read_file(str(tmp_path / "s_2.npy"))[DATA_VARIABLE], 2)


def test_npz_keys_become_variables(npz_dir: Path) -> None:
    headers = _headers(str(npz_dir))
    catalog = plan_samples(headers)
    assert catalog.variables == {
        "image": ArraySpec((3, 32, 32), np.dtype(np.uint8)),
        "label": ArraySpec((), np.dtype(np.int64)),
    }
    assert [(f.start, f.stop) for f in catalog.files] == [(i, i + 1) for i in range(12)]
    assert Path(catalog.source_file()[10]).name == "sample_10.npz"
    arrays = read_file(catalog.files[10].url)
    assert arrays["label"] == 10 and arrays["image"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["image"], np.full((3, 32, 32), 10, np.uint8))


def test_pt_tensor_dicts_and_bare_tensors(tmp_path: Path) -> None:
    for i in range(2):
        torch.save({"x": torch.full((2, 3), float(i)), "y": torch.tensor(i)}, tmp_path / f"{i}.pt")
    catalog = plan_samples(_headers(str(tmp_path)))
    assert catalog.variables == {
        "x": ArraySpec((2, 3), np.dtype(np.float32)),
        "y": ArraySpec((), np.dtype(np.int64)),
    }
    assert read_file(str(tmp_path / "1.pt"))["y"] == 1
    torch.save(torch.arange(6, dtype=torch.int16), tmp_path / "bare.pth")
    header = read_header(str(tmp_path / "bare.pth"))
    assert header.variables == {DATA_VARIABLE: ArraySpec((6,), np.dtype(np.int16))}
    np.testing.assert_array_equal(read_file(str(tmp_path / "bare.pth"))["data"], np.arange(6))


def test_batched_files_give_sample_ranges(tmp_path: Path) -> None:
    for i, n in enumerate([4, 4, 3]):
        np.savez(tmp_path / f"batch_{i}.npz", x=np.zeros((n, 8), np.float32), y=np.arange(n))
    headers = _headers(str(tmp_path))
    catalog = plan_samples(headers, batched=True)
    assert catalog.batched
    assert catalog.variables["x"] == ArraySpec((8,), np.dtype(np.float32))
    assert catalog.variables["y"].shape == ()
    assert [(f.start, f.stop) for f in catalog.files] == [(0, 4), (4, 8), (8, 11)]
    assert [Path(u).name for u in catalog.source_file()] == (
        ["batch_0.npz"] * 4 + ["batch_1.npz"] * 4 + ["batch_2.npz"] * 3
    )
    assert plan_samples(headers, batched="auto") == catalog


def test_auto_reads_one_sample_per_file_when_that_fits(npz_dir: Path) -> None:
    catalog = plan_samples(_headers(str(npz_dir)), batched="auto")
    assert not catalog.batched and catalog.n_samples == 12


def test_auto_names_both_readings_when_neither_fits(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 2)))
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 5)))
    with pytest.raises(SchemaError, match=r"(?s)is \(3, 5\).*as batches.*is \(5,\)"):
        plan_samples(_headers(str(tmp_path)), batched="auto")


def test_batched_variables_must_share_the_first_axis(tmp_path: Path) -> None:
    np.savez(tmp_path / "b.npz", x=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(SchemaError, match=r"b\.npz is not a batch.*'x' \(4, 2\), 'y' \(3,\)"):
        plan_samples(_headers(str(tmp_path)), batched=True)


def test_mismatched_shape_is_named(npz_dir: Path) -> None:
    _save_npz(npz_dir / "sample_7.npz", 7, image_shape=(3, 32, 31))
    with pytest.raises(SchemaError) as info:
        plan_samples(_headers(str(npz_dir)))
    message = str(info.value)
    assert "sample_7.npz: variable 'image' is (3, 32, 31) uint8" in message
    assert "sample_0.npz has (3, 32, 32) uint8" in message
    assert "--batched" in message


def test_mismatched_dtype_is_named(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros(3, np.float32))
    np.save(tmp_path / "b.npy", np.zeros(3, np.float64))
    with pytest.raises(SchemaError, match=r"b\.npy: variable 'data' is \(3,\) float64.*float32"):
        plan_samples(_headers(str(tmp_path)))


def test_missing_and_extra_keys_are_named(npz_dir: Path) -> None:
    np.savez(npz_dir / "sample_3.npz", image=np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(SchemaError, match=r"sample_3\.npz lacks \['label'\]"):
        plan_samples(_headers(str(npz_dir)))
    _save_npz(npz_dir / "sample_3.npz", 3)
    np.savez(npz_dir / "sample_5.npz", image=np.zeros((3, 32, 32), np.uint8), label=1, mask=1)
    with pytest.raises(SchemaError, match=r"sample_5\.npz has \['mask'\] besides"):
        plan_samples(_headers(str(npz_dir)))


def test_byte_order_does_not_make_a_mismatch(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros(3, "<f4"))
    np.save(tmp_path / "b.npy", np.zeros(3, ">f4"))
    assert plan_samples(_headers(str(tmp_path))).variables["data"].dtype == np.dtype("=f4")


def test_fingerprint_follows_the_files(npz_dir: Path) -> None:
    before = plan_samples(_headers(str(npz_dir))).fingerprint
    assert plan_samples(_headers(str(npz_dir))).fingerprint == before
    _save_npz(npz_dir / "sample_12.npz", 12)
    assert plan_samples(_headers(str(npz_dir))).fingerprint != before


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        dtype=st.one_of(hnp.integer_dtypes(), hnp.floating_dtypes(), hnp.complex_number_dtypes()),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=5),
    ),
    st.booleans(),
)
def test_header_and_read_agree_with_what_was_saved(array: np.ndarray, fortran: bool) -> None:
    saved = array.copy(order="F" if fortran else "C")
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "a.npy")
        np.save(path, saved)
        assert read_header(path).variables == {"data": ArraySpec(array.shape, array.dtype)}
        np.testing.assert_array_equal(read_file(path)["data"], array)


# --- refusals --------------------------------------------------------------------------


def test_pt_with_a_pickled_object_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "trap.pt"
    torch.save({"data": torch.zeros(2), "trap": Trap(marker)}, path)
    for read in (read_header, read_file):
        with pytest.raises(SchemaError, match=r"trap\.pt .*refused, not executed"):
            read(str(path))
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the control: an unrestricted load runs the trap
    assert marker.exists()


def test_npy_of_objects_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "objects.npy"
    np.save(path, np.array([Trap(marker), 1], dtype=object), allow_pickle=True)
    for read in (read_header, read_file):
        with pytest.raises(SchemaError, match=r"objects\.npy holds Python objects.*refused"):
            read(str(path))
    assert not marker.exists()
    np.load(path, allow_pickle=True)  # the control
    assert marker.exists()


def test_npz_member_of_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.npz"
    np.savez(path, fine=np.zeros(2), bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(
        SchemaError, match=r"mixed\.npz \(member bad(\.npy)?\) holds Python objects"
    ):
        read_header(str(path))
    with pytest.raises(SchemaError, match=r"mixed\.npz \(member bad\) holds Python objects"):
        read_file(str(path))


@pytest.mark.parametrize("content", [[torch.zeros(2)], {"x": torch.zeros(2), "n": 3}])
def test_pt_holding_other_than_tensors_is_refused(tmp_path: Path, content: Any) -> None:
    torch.save(content, tmp_path / "odd.pt")
    with pytest.raises(SchemaError, match=r"odd\.pt holds .*(list|entry 'n' of type int)"):
        read_header(str(tmp_path / "odd.pt"))


def test_corrupt_npz_is_named(npz_dir: Path) -> None:
    path = npz_dir / "sample_4.npz"
    path.write_bytes(path.read_bytes()[:1000])
    for read in (read_header, read_file):
        with pytest.raises(SchemaError, match=r"sample_4\.npz is not a readable \.npz"):
            read(str(path))


def test_corrupt_pt_is_named(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(100)}, buffer)
    (tmp_path / "cut.pt").write_bytes(buffer.getvalue()[:300])
    with pytest.raises(SchemaError, match=r"cut\.pt is not a readable PyTorch file"):
        read_file(str(tmp_path / "cut.pt"))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"gone\.npz does not exist"):
        read_header(str(tmp_path / "gone.npz"))


# --- bytes read ------------------------------------------------------------------------


def test_local_npy_header_reads_the_first_kib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsspec.implementations.local import LocalFileSystem

    np.save(tmp_path / "big.npy", np.zeros(50 * MiB // 8))
    fetched: list[int] = []
    original = LocalFileSystem.cat_file

    def counting(self: Any, path: str, start: Any = None, end: Any = None, **kw: Any) -> bytes:
        data = original(self, path, start=start, end=end, **kw)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(LocalFileSystem, "cat_file", counting)
    header = read_header(str(tmp_path / "big.npy"))
    assert header.variables["data"].shape == (50 * MiB // 8,)
    assert fetched and sum(fetched) <= 1024


@pytest.fixture
def s3_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str | None, int]]]:
    """Every S3 request s3fs makes: (operation, Range, bytes of body returned)."""
    import s3fs

    calls: list[tuple[str, str | None, int]] = []
    original = s3fs.S3FileSystem._call_s3

    async def recording(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        response = await original(self, method, *args, **kwargs)
        body = response.get("ContentLength", 0) if method == "get_object" else 0
        calls.append((method, kwargs.get("Range"), int(body)))
        return response

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", recording)
    yield calls


@pytest.mark.s3
def test_s3_listing_headers_and_reads(bucket: Any, npz_dir: Path) -> None:
    fs = bucket.fs()
    fs.put(str(npz_dir) + "/", f"{bucket.name}/src/", recursive=True)
    src = f"{bucket.url}/src"
    listing = list_array_files(src, bucket.storage_options)
    assert [u.rsplit("/", 1)[1] for u in listing.files][:3] == [
        "sample_0.npz",
        "sample_1.npz",
        "sample_2.npz",
    ]
    assert listing.ignored == (f"{src}/README.txt",)
    catalog = plan_samples(_headers(src, bucket.storage_options))
    assert catalog.n_samples == 12 and catalog.source_file()[11] == f"{src}/sample_11.npz"
    assert read_file(f"{src}/sample_11.npz", bucket.storage_options)["label"] == 11
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3, dtype=np.int16))  # smaller than the first KiB read
    fs.pipe(f"{bucket.name}/small.npy", buffer.getvalue())
    header = read_header(f"{bucket.url}/small.npy", bucket.storage_options)
    assert header.variables == {"data": ArraySpec((3,), np.dtype(np.int16))}
    assert header.size == buffer.tell()


@pytest.mark.s3
def test_s3_missing_prefix(bucket: Any) -> None:
    with pytest.raises(SourceNotFoundError, match=r"nothing-here does not exist"):
        list_array_files(f"{bucket.url}/nothing-here", bucket.storage_options)


@pytest.mark.s3
def test_s3_npy_header_is_one_small_ranged_get(bucket: Any, s3_requests: list) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(50 * MiB // 8))
    bucket.fs().pipe(f"{bucket.name}/big.npy", buffer.getvalue())
    s3_requests.clear()  # the upload
    header = read_header(f"{bucket.url}/big.npy", bucket.storage_options, size=buffer.tell())
    assert header.variables["data"].shape == (50 * MiB // 8,)
    assert [(method, rng) for method, rng, _ in s3_requests] == [("get_object", "bytes=0-1023")]
    assert sum(n for _, _, n in s3_requests) < 64 * 1024


@pytest.mark.s3
def test_s3_npz_header_reads_little_of_the_file(bucket: Any, s3_requests: list) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, big=np.zeros(50 * MiB // 8), label=np.int64(1))
    bucket.fs().pipe(f"{bucket.name}/big.npz", buffer.getvalue())
    s3_requests.clear()  # the upload
    url = f"{bucket.url}/big.npz"
    header = read_header(url, bucket.storage_options, size=buffer.tell())
    assert header.variables == {
        "big": ArraySpec((50 * MiB // 8,), np.dtype(np.float64)),
        "label": ArraySpec((), np.dtype(np.int64)),
    }
    # s3fs's file HEADs once for the ETag it pins its ranged GETs to; no GET is whole.
    methods = [method for method, _, _ in s3_requests]
    assert methods.count("head_object") <= 1 and methods.count("get_object") <= 4
    assert all(rng for method, rng, _ in s3_requests if method == "get_object")
    assert sum(n for _, _, n in s3_requests) < 256 * 1024


@pytest.mark.s3
def test_s3_read_file_is_one_whole_get(bucket: Any, tmp_path: Path, s3_requests: list) -> None:
    torch.save({"x": torch.arange(10)}, tmp_path / "t.pt")
    bucket.fs().put(str(tmp_path / "t.pt"), f"{bucket.name}/t.pt")
    s3_requests.clear()  # the upload
    arrays = read_file(f"{bucket.url}/t.pt", bucket.storage_options)
    np.testing.assert_array_equal(arrays["x"], np.arange(10))
    assert [(method, rng) for method, rng, _ in s3_requests] == [("get_object", None)]
