"""JUMP as it really is, on the moto server: key layout, 1536 wells, LZW, Harmony index, maps."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import cubes
from ingest.report import quality_report_url
from tests.conftest import run_cli
from tests.helpers import source_images

pytestmark = pytest.mark.s3

BATCH = "cpg0016-jump/source_4/images/2021_05_02_Batch1/images"
CUSTOM_MAP = """Metadata_Source,Metadata_Channel_Num_DNA,Metadata_Channel_Num_ER,\
Metadata_Channel_Num_RNA,Metadata_Channel_Num_AGP,Metadata_Channel_Num_Mito,\
Metadata_Channel_Num_BFLowest,Metadata_Channel_Num_BFMedium,Metadata_Channel_Num_BFHighest
source_4,5,4,3,2,1,7,8,6
source_X,1,2,3,4,5,6,7,8
"""


def _images_dir(fs, prefix: str) -> str:
    return next(p for p in fs.find(prefix) if p.endswith(".tiff")).rsplit("/", 1)[0]


def test_real_layout_1536_wells_lzw_missing_sites_and_index(bucket):
    src = f"{bucket.url}/{BATCH}"
    run_cli(
        "synth-plate", src, "--plate", "BR00117035", "--plate-format", "1536",
        "--wells", "A01,AF48", "--fields", "4", "--size", "40", "--compression", "lzw",
        "--measurement", "Measurement 1",
    )  # fmt: skip
    fs = bucket.fs()
    images = _images_dir(fs, f"{bucket.name}/{BATCH}")
    assert images.endswith("BR00117035__2021-05-02T16_02_51-Measurement 1/Images")
    for ch in range(1, 9):  # AF48 has only 3 of its 4 sites
        fs.rm(f"{images}/r32c48f04p01-ch{ch}sk1fk1fl1.tiff")
    dest = f"{bucket.url}/cubes/BR00117035.zarr"
    proc = run_cli("cellpainting", f"{src}/BR00117035__2021-05-02T16_02_51-Measurement 1", dest)
    assert "BR00117035: 56/64 images, 8 missing" in proc.stdout

    ds = cubes.open_cube(dest, require_complete=True)
    assert [str(w) for w in ds.well.values] == ["A01", "AF48"]
    assert [str(r) for r in ds.row.values] == ["A", "AF"]
    assert ds.attrs["plate"] == "BR00117035"
    assert ds.attrs["batch"] == "2021_05_02_Batch1"
    assert ds.attrs["source"] == "source_4"
    assert ds.x.attrs["units"] == "µm" and ds.x.values[1] == pytest.approx(0.598)
    assert ds.excitation_wavelength.sel(channel="DNA").item() == 375
    assert ds.emission_wavelength.sel(channel="Mito").item() == 706
    assert str(ds.instrument_channel.sel(channel="DNA").item()) == "HOECHST 33342"
    pos = ds.position_x.sel(well="A01").values
    assert pos.tolist() == [-350.0, 350.0, -350.0, 350.0]
    assert np.isnan(ds.position_x.sel(well="AF48", field=4).item())
    assert not ds.present.sel(well="AF48", field=4).any()
    truth = source_images(fs, f"{bucket.name}/{BATCH}")
    values = ds.images.values
    for (well, field, channel), image in truth.items():
        w, f = list(ds.well.values).index(well), list(ds.field.values).index(field)
        c = [str(x) for x in ds.channel.values].index(channel)
        np.testing.assert_array_equal(values[w, f, c], image)
    thumb = ds.thumbnail.sel(well="A01", field=1, channel="DNA").values
    block = ds.images.sel(well="A01", field=1, channel="DNA").values.astype(float)
    assert thumb.shape == (5, 5)
    assert thumb[0, 0] == int(np.rint(block[:8, :8].mean()))

    report = json.loads(fs.cat_file(quality_report_url(dest).removeprefix("s3://")))
    assert report["counts"] == {
        "expected": 64, "found": 56, "missing": 8, "unreadable": 0, "mismatched": 0,
    }  # fmt: skip
    assert {"well": "AF48", "field": 4, "channel": "DNA"} in report["absent"]
    assert set(report["saturation_fraction"]) == {str(c) for c in ds.channel.values}


def test_saturation_is_measured(local_plate, tmp_path):
    import shutil

    import tifffile

    plate = tmp_path / "plate"
    shutil.copytree(local_plate, plate)
    image = next(plate.rglob("r01c01f01p01-ch5sk1fk1fl1.tiff"))
    pixels = tifffile.imread(image)
    pixels[:16] = 65535  # 16 of 64 rows: 1/4 of one of the plate's 6 DNA images
    tifffile.imwrite(image, pixels)
    run_cli("cellpainting", str(plate), str(tmp_path / "c.zarr"), "--no-progress")
    ds = cubes.open_cube(str(tmp_path / "c.zarr"))
    assert ds.channel_saturated.sel(channel="DNA").item() == pytest.approx(0.25 / 6)
    assert ds.channel_saturated.sel(channel="ER").item() == 0


def test_channel_map_names_the_channels(local_plate, tmp_path):
    (tmp_path / "map.csv").write_text(CUSTOM_MAP)
    dest = tmp_path / "c.zarr"
    run_cli(
        "cellpainting", str(local_plate), str(dest), "--no-progress",
        "--channel-map", str(tmp_path / "map.csv"), "--source", "source_X",
    )  # fmt: skip
    ds = cubes.open_cube(str(dest))
    assert [str(c) for c in ds.channel.values] == [
        "DNA", "ER", "RNA", "AGP", "Mito", "LowZBF", "Brightfield", "HighZBF",
    ]  # fmt: skip
    assert ds.channel_number.values.tolist() == list(range(1, 9))


@pytest.mark.parametrize(
    ("content", "source", "message"),
    [
        (CUSTOM_MAP, "source_99", r"has no row for source 'source_99'.*Pass --source"),
        ("Source,DNA\nsource_4,5\n", "source_4", r"has no Metadata_Source column"),
    ],
)
def test_bad_channel_map(local_plate, tmp_path, content, source, message):
    import re

    (tmp_path / "map.csv").write_text(content)
    proc = run_cli(
        "cellpainting", str(local_plate), str(tmp_path / "c.zarr"), "--no-progress",
        "--channel-map", str(tmp_path / "map.csv"), "--source", source, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"Channel map {tmp_path / 'map.csv'}" in proc.stderr
    assert re.search(message, proc.stderr)


def test_index_that_contradicts_the_file_names(local_plate, tmp_path):
    import shutil

    plate = tmp_path / "plate"
    shutil.copytree(local_plate, plate)
    index = next(plate.rglob("Index.idx.xml"))
    text = index.read_text()
    entry = "<URL>r01c01f02p01-ch3sk1fk1fl1.tiff</URL><Row>1</Row>"
    assert entry in text
    index.write_text(text.replace(entry, entry.replace("<Row>1</Row>", "<Row>2</Row>")))
    proc = run_cli("cellpainting", str(plate), str(tmp_path / "c.zarr"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{index} contradicts the file names" in proc.stderr
    assert "r01c01f02p01-ch3sk1fk1fl1.tiff" in proc.stderr and "Fix or remove" in proc.stderr


def _load_data_plate(bucket, tmp_path, fs):
    """A plate in the bucket and its load_data.csv, PathName as bucket/key (no scheme)."""
    import pandas as pd

    src = f"{bucket.url}/{BATCH}"
    run_cli("synth-plate", src, "--wells", "2", "--fields", "2", "--size", "24")
    table = pd.read_csv(io.BytesIO(fs.cat_file(f"{bucket.name}/{BATCH}/load_data.csv")), dtype=str)
    for column in [c for c in table.columns if c.startswith("PathName_")]:
        table[column] = table[column].str.removeprefix("s3://")
    return src, table


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_load_data_names_the_images(bucket, tmp_path, suffix):
    fs = bucket.fs()
    src, table = _load_data_plate(bucket, tmp_path, fs)
    table = table[table["Metadata_Site"] == "1"]  # the table, not the listing, decides
    key = f"{bucket.name}/workspace/load_data_csv/Batch1/SYNTH0001/load_data.{suffix}"
    buf = io.BytesIO()
    if suffix == "csv":
        table.to_csv(buf, index=False)
    else:
        table.to_parquet(buf)  # Metadata_Site stays a string, as in JUMP's parquet files
    fs.pipe_file(key, buf.getvalue())
    dest = str(tmp_path / "c.zarr")
    run_cli("cellpainting", src, dest, "--load-data", f"s3://{key}", "--no-progress")
    ds = cubes.open_cube(dest, require_complete=True)
    assert ds.field.values.tolist() == [1]
    assert ds.sizes["well"] == 2 and bool(ds.present.all())
    truth = source_images(fs, f"{bucket.name}/{BATCH}")
    np.testing.assert_array_equal(
        ds.images.sel(well="A02", field=1, channel="AGP").values, truth[("A02", 1, "AGP")]
    )


@pytest.mark.parametrize("problem", ["missing column", "missing image"])
def test_bad_load_data(bucket, tmp_path, problem):
    fs = bucket.fs()
    src, table = _load_data_plate(bucket, tmp_path, fs)
    if problem == "missing column":
        table = table.drop(columns=["PathName_OrigER"])
        expected = "has no PathName_OrigER column for channel ER"
    else:
        table.loc[1, "FileName_OrigRNA"] = "r09c09f09p01-ch3sk1fk1fl1.tiff"
        expected = "r09c09f09p01-ch3sk1fk1fl1.tiff (well A01, site 2, RNA), which does not exist"
    path = tmp_path / "load_data.csv"
    table.to_csv(path, index=False)
    proc = run_cli("cellpainting", src, str(tmp_path / "c.zarr"), "--load-data", str(path),
                   check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"LoadData {path}" in proc.stderr and expected in proc.stderr


def test_a_batch_becomes_one_cube_per_plate_with_an_index(bucket):
    import pandas as pd

    fs = bucket.fs()
    batch = f"{bucket.url}/cpg0016-jump/source_4/images/2021_05_02_Batch1"
    for plate, wells in (("BR00000001", "2"), ("BR00000002", "3")):
        run_cli("synth-plate", f"{batch}/images", "--plate", plate, "--wells", wells,
                "--fields", "1", "--size", "16", "--seed", str(len(wells)))  # fmt: skip
    illum = np.random.default_rng(0).uniform(0.5, 1.5, (16, 16))
    buf = io.BytesIO()
    np.save(buf, illum)
    key = batch.removeprefix("s3://") + "/illum/BR00000002/BR00000002_IllumDNA.npy"
    fs.pipe_file(key, buf.getvalue())

    dest = f"{bucket.url}/cubes/Batch1"
    index_key = f"{bucket.name}/cubes/Batch1/plates.csv"
    proc = run_cli("cellpainting", batch, dest, "--plates", "BR00000002", "--no-progress")
    assert "1 cube(s)" in proc.stdout and "Index of the cubes" in proc.stdout
    index = pd.read_csv(io.BytesIO(fs.cat_file(index_key)))
    assert index["plate"].tolist() == ["BR00000002"]

    proc = run_cli("cellpainting", batch, dest, "--plates", "BR00000001", "--no-progress")
    index = pd.read_csv(io.BytesIO(fs.cat_file(index_key)))  # merged with the first run's
    assert index["plate"].tolist() == ["BR00000001", "BR00000002"]
    assert index["wells"].tolist() == [2, 3]
    assert set(index["batch"]) == {"2021_05_02_Batch1"} and set(index["source"]) == {"source_4"}
    assert index["url"].tolist() == [f"{dest}/BR00000001.zarr", f"{dest}/BR00000002.zarr"]

    one, two = (cubes.open_cube(u, require_complete=True) for u in index["url"])
    assert "illum" not in one
    np.testing.assert_allclose(two.illum.sel(channel="DNA").values, illum.astype(np.float32))
    assert np.isnan(two.illum.sel(channel="ER").values).all()
    assert two.attrs["plate"] == "BR00000002"

    proc = run_cli("cellpainting", batch, dest, "--no-progress")  # all again: a no-op
    assert proc.stdout.count("is up to date: nothing written") == 2
    assert pd.read_csv(io.BytesIO(fs.cat_file(index_key)))["plate"].tolist() == [
        "BR00000001",
        "BR00000002",
    ]
    proc = run_cli("cellpainting", batch, dest, "--no-progress", "--overwrite")  # all, again
    assert "2 cube(s)" in proc.stdout
    again = pd.read_csv(io.BytesIO(fs.cat_file(index_key)))
    assert again["plate"].tolist() == ["BR00000001", "BR00000002"]  # no duplicates


def test_unknown_plate_selection(local_plate, tmp_path):
    proc = run_cli("cellpainting", str(local_plate), str(tmp_path / "c"), "--plates", "NOPE",
                   check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "--plates NOPE: none of them is under" in proc.stderr and "SYNTH0001" in proc.stderr
