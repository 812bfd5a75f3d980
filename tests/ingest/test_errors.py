"""Bad input: a clear message naming the path and the remedy, exit status 2, no traceback."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import run_cli

IMAGE = "r01c02f01p01-ch3sk1fk1fl1.tiff"


def _fails(*args: str) -> str:
    proc = run_cli(*args, "--no-progress", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    return proc.stderr


def _copy(plate: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "plate"
    shutil.copytree(plate, dest)
    return dest


def _image(root: Path, name: str = IMAGE) -> Path:
    return next(root.rglob(name))


def test_src_without_images(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("not an image")
    err = _fails("cellpainting", str(tmp_path / "src"), str(tmp_path / "out.zarr"))
    assert str(tmp_path / "src") in err
    assert "No Cell Painting images" in err and "Point SRC at a plate folder" in err
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("name", ["r01c01f01p01-ch1sk1fk1fl1.tiff", IMAGE])
def test_file_named_like_an_image_that_is_not_a_tiff(local_plate, tmp_path, name):
    # The first image is read while planning, the others inside write tasks: both paths.
    plate = _copy(local_plate, tmp_path)
    bad = _image(plate, name)
    bad.write_bytes(b"this is not a TIFF file")
    err = _fails("cellpainting", str(plate), str(tmp_path / "out.zarr"))
    assert str(bad) in err
    assert "not a readable TIFF" in err and "Replace it" in err


def test_images_of_different_shapes(local_plate, tmp_path):
    plate = _copy(local_plate, tmp_path)
    bad = _image(plate)
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((64, 60), np.uint16))
    bad.write_bytes(buf.getvalue())
    err = _fails("cellpainting", str(plate), str(tmp_path / "out.zarr"))
    assert f"Image {bad} is 64x60 uint16; the plate's images are 64x64 uint16" in err
    assert "Fix or remove it" in err
    _assert_incomplete(tmp_path / "out.zarr")


def test_two_images_of_one_well_field_and_channel(local_plate, tmp_path):
    plate = _copy(local_plate, tmp_path)
    first = _image(plate)
    second = first.with_name(IMAGE.replace("sk1", "sk2"))  # same well, field, channel
    shutil.copy(first, second)
    err = _fails("cellpainting", str(plate), str(tmp_path / "out.zarr"))
    assert "Two images for well A02, field 1, channel 3" in err
    assert str(first) in err and str(second) in err
    assert "point it at a single plate folder" in err
    assert not (tmp_path / "out.zarr").exists()  # refused while planning: nothing written


def _assert_incomplete(path: Path) -> None:
    import cubes

    if path.exists():  # a failed job never leaves a cube that looks complete
        with pytest.raises(cubes.IncompleteCubeError, match="incomplete"):
            cubes.open_cube(str(path), require_complete=True)


def test_dest_holding_a_cube_of_other_images_needs_overwrite(local_plate, local_cube, tmp_path):
    plate = _copy(local_plate, tmp_path)
    _image(plate).unlink()  # SRC changed since the cube was written
    err = _fails("cellpainting", str(plate), str(local_cube))
    assert f"{local_cube} holds a cube of other inputs" in err and "--overwrite" in err


def test_rerunning_a_finished_ingest_is_a_no_op(local_plate, local_cube):
    before = {p: p.stat().st_mtime_ns for p in local_cube.rglob("*")}
    proc = run_cli("cellpainting", str(local_plate), str(local_cube), "--no-progress")
    assert "is up to date: nothing written" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in local_cube.rglob("*")} == before


def test_overwrite_replaces_a_cube(local_plate, tmp_path):
    dest = tmp_path / "plate.zarr"
    run_cli("cellpainting", str(local_plate), str(dest), "--no-progress")
    (dest / "stale-object").write_text("left by an older cube")
    run_cli("cellpainting", str(local_plate), str(dest), "--overwrite", "--no-progress")
    assert not (dest / "stale-object").exists()


def test_overwrite_never_removes_other_data(local_plate, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "thesis.tex").write_text("precious")
    err = _fails("cellpainting", str(local_plate), str(tmp_path / "data"), "--overwrite")
    assert "holds data that is not a cube" in err
    assert (tmp_path / "data" / "thesis.tex").read_text() == "precious"


def test_unreachable_endpoint_and_no_secret_in_output(local_plate, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-123")
    args = ["cellpainting", str(local_plate), "s3://bucket/plate.zarr"]
    args += ["--endpoint-url", "http://127.0.0.1:9", "--log-level", "DEBUG"]
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2
    assert "Cannot reach the S3 endpoint http://127.0.0.1:9 for s3://bucket/plate.zarr" in (
        proc.stderr
    )
    assert "--endpoint-url" in proc.stderr
    assert "very-secret-value-123" not in proc.stderr + proc.stdout


@pytest.mark.s3
@pytest.mark.parametrize("which", ["src", "dest"])
def test_bucket_that_does_not_exist(bucket, local_plate, which):
    missing = "s3://no-such-bucket-here/plate"
    src = missing if which == "src" else str(local_plate)
    dest = missing + ".zarr" if which == "dest" else f"{bucket.url}/plate.zarr"
    err = _fails("cellpainting", src, dest)
    assert "Bucket 'no-such-bucket-here' does not exist" in err
    assert "create the bucket" in err


def test_on_error_skip_leaves_bad_images_out_and_reports_them(local_plate, tmp_path):
    import json

    import cubes
    from ingest.report import quality_report_url

    plate = _copy(local_plate, tmp_path)
    truncated = _image(plate, "r01c01f01p01-ch2sk1fk1fl1.tiff")
    truncated.write_bytes(truncated.read_bytes()[:100])
    empty = _image(plate, "r02c05f02p01-ch8sk1fk1fl1.tiff")
    empty.write_bytes(b"")
    wrong = _image(plate, IMAGE)
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((64, 64), np.uint8))  # right size, wrong dtype
    wrong.write_bytes(buf.getvalue())
    dest = tmp_path / "out.zarr"

    err = _fails("cellpainting", str(plate), str(dest))  # default: fail, naming a bad file
    assert any(str(p) in err for p in (truncated, empty, wrong))
    assert not (tmp_path / "out.lock").exists()  # released after the tasks in flight ended

    proc = run_cli("cellpainting", str(plate), str(dest), "--on-error", "skip")  # resumes
    assert "45/48 images, 0 missing, 2 unreadable, 1 mismatched" in proc.stdout
    ds = cubes.open_cube(str(dest), require_complete=True)
    assert int(ds.present.sum()) == 45
    assert not ds.present.sel(well="A01", field=1, channel="AGP")
    assert not ds.present.sel(well="B05", field=2, channel="Brightfield")
    assert not ds.present.sel(well="A02", field=1, channel="RNA")
    good = tifffile.imread(_image(plate, "r01c01f01p01-ch5sk1fk1fl1.tiff"))
    np.testing.assert_array_equal(ds.images.sel(well="A01", field=1, channel="DNA"), good)
    report = json.loads(Path(quality_report_url(str(dest))).read_text())
    assert report["unreadable"] == sorted([str(truncated), str(empty)])
    assert report["mismatched"] == [str(wrong)]


def test_tiffs_with_unparseable_names_are_named_in_the_report(local_plate, tmp_path):
    import json

    from ingest.report import quality_report_url

    plate = _copy(local_plate, tmp_path)
    folder = _image(plate).parent
    odd = folder / "r01c01f01-DNA.tif"  # not rRRcCCfFFpPP-chN…
    odd.write_bytes(_image(plate).read_bytes())
    dest = tmp_path / "out.zarr"
    proc = run_cli("cellpainting", str(plate), str(dest), "--no-progress")
    assert "1 file(s) with unrecognized names left out" in proc.stdout
    assert str(odd) in proc.stderr  # warned while planning
    report = json.loads(Path(quality_report_url(str(dest))).read_text())
    assert report["unrecognized_files"] == [str(odd)]
    assert report["counts"]["found"] == 48
