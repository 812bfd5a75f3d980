"""LoadData tables as pe2loaddata writes them: channel numbers, paths, metadata, real tables."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import cubes
from ingest.sources.cellpainting.loaddata import read_load_data, resolve_folder
from ingest.sources.cellpainting.plate import well_name
from ingest.sources.cellpainting.synth import write_synth_plate
from tests.conftest import ROOT, run_cli
from tests.helpers import real_data

# stain -> (chN of its file, instrument channel name, excitation nm, emission nm)
V1 = {
    "RNA": (3, "488 long", 488.0, 599.0),
    "ER": (4, "Alexa 488", 488.0, 522.0),
    "AGP": (2, "Alexa 568", 561.0, 599.0),
    "Mito": (1, "Alexa 647", 640.0, 706.0),
    "Brightfield": (6, "Brightfield", 740.0, 0.0),  # the map says 8; the file name says 6
    "DNA": (5, "HOECHST 33342", 405.0, 456.0),
}
V5 = {**{k: v for k, v in V1.items() if k != "DNA"}, "DPC": (7, "Digital Phase Contrast", 740, 0)}
V7 = {"Actin": (8, "405ex, 570-630-em)", 405.0, 599.0), **V1}
STAINS = {"v1": V1, "v5": V5, "v7": V7, "remote": V1}
PIXEL_M = 4.5e-07
GALLERY = "cpg0001-cellpainting-protocol/source_4/images/2020_06_19_Stain2_Batch1/images"


def _real_data() -> Path | None:
    return real_data()


REAL = _real_data()
needs_real = pytest.mark.skipif(REAL is None, reason="no shared/real-data above the tests")


def _position_m(row: int, column: int, field: int) -> tuple[float, float]:
    return (-0.000322907 * field, 0.0001 * row + 0.00001 * column)


def _name(row: int, column: int, field: int, ch: int) -> str:
    return f"r{row:02d}c{column:02d}f{field:02d}p01-ch{ch}sk1fk1fl1.tiff"


def _table(
    version: str, sites: list[tuple[int, int, int]], folder: str, plate: str
) -> pd.DataFrame:
    """A pe2loaddata table with the real tables' columns (for ``version``) and our values."""
    stains = STAINS[version]
    out = []
    for r, c, f in sites:
        rec: dict[str, str] = {}
        for stain, (ch, *_) in stains.items():
            rec[f"FileName_Orig{stain}"] = _name(r, c, f, ch)
            rec[f"PathName_Orig{stain}"] = folder
        rec |= {"Metadata_Plate": plate, "Metadata_Well": well_name(r, c), "Metadata_Site": str(f)}

        def per(what: str, k: int | None, rec: dict[str, str] = rec) -> None:
            if version == "remote":  # one value per row: the last channel's (DNA)
                rec[f"Metadata_{what}"] = "0.1" if k is None else str(stains["DNA"][k])
            else:
                for stain, info in stains.items():
                    rec[f"Metadata_{what}_Orig{stain}"] = "0.1" if k is None else str(info[k])

        per("AbsPositionZ", None)
        per("AbsTime", None)
        rec |= {"Metadata_BinningX": "2", "Metadata_BinningY": "2"}
        per("ChannelID", 0)
        per("ChannelName", 1)
        rec["Metadata_Col"] = str(c)
        if version in ("v1", "remote"):
            rec["Metadata_ExposureTime"] = "0.01"
        else:
            per("ExposureTime", None)
        x, y = _position_m(r, c, f)
        rec |= {"Metadata_FieldID": str(f), "Metadata_ImageResolutionX": repr(PIXEL_M)}
        rec |= {"Metadata_ImageResolutionY": repr(PIXEL_M), "Metadata_ImageSizeX": "64"}
        rec["Metadata_ImageSizeY"] = "64"
        per("MainEmissionWavelength", 3)
        per("MainExcitationWavelength", 2)
        rec |= {"Metadata_MaxIntensity": "65535", "Metadata_ObjectiveMagnification": "20"}
        rec |= {"Metadata_ObjectiveNA": "1", "Metadata_PlaneID": "1"}
        rec |= {"Metadata_PositionX": repr(x), "Metadata_PositionY": repr(y)}
        per("PositionZ", None)
        rec["Metadata_Row"] = str(r)
        out.append(rec)
    return pd.DataFrame(out)


SITES = [(1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 2, 2), (2, 5, 1), (2, 5, 2)]


@pytest.fixture
def base(local_plate: Path, tmp_path: Path) -> Path:
    """CellProfiler's base folder: ``base/images/`` holds the plate's TIFFs (no index)."""
    images = tmp_path / "base" / "images"
    images.mkdir(parents=True)
    for tiff in local_plate.rglob("*.tiff"):
        shutil.copy(tiff, images / tiff.name)
    return tmp_path / "base"


def _check_cube(dest: Path, version: str, images: Path, plate: str, pixel_um: float) -> None:
    ds = cubes.open_cube(str(dest), require_complete=True)
    stains = STAINS[version]
    assert ds.attrs["plate"] == plate
    assert sorted(str(c) for c in ds.channel.values) == sorted(stains)
    for stain, (ch, name, ex, em) in stains.items():
        one = ds.sel(channel=stain)
        assert one.channel_number.item() == ch
        assert str(one.instrument_channel.item()) == name
        assert one.excitation_wavelength.item() == ex and one.emission_wavelength.item() == em
        for r, c, f in SITES:
            truth = tifffile.imread(images / _name(r, c, f, ch))
            np.testing.assert_array_equal(one.images.sel(well=well_name(r, c), field=f), truth)
    assert ds.x.attrs["units"] == "µm" and ds.x.values[1] == pytest.approx(pixel_um)
    for r, c, f in SITES:
        x, y = _position_m(r, c, f)
        at = ds.sel(well=well_name(r, c), field=f)
        assert at.position_x.item() == pytest.approx(x * 1e6)
        assert at.position_y.item() == pytest.approx(y * 1e6)


@pytest.mark.parametrize("version", ["v1", "v5", "v7"])
def test_pe2loaddata_table_relative_to_a_root(base, tmp_path, version):
    """No index, no Measurement folder: everything comes from the table and the file names."""
    table = tmp_path / "tables" / "load_data.csv"
    table.parent.mkdir()
    _table(version, SITES, "images/", "BR00000042").to_csv(table, index=False)
    dest = tmp_path / "c.zarr"
    run_cli("cellpainting", str(base / "images"), str(dest), "--load-data", str(table),
            "--load-data-root", str(base), "--no-progress")  # fmt: skip
    _check_cube(dest, version, base / "images", "BR00000042", PIXEL_M * 1e6)


def test_relative_paths_without_root_name_the_remedy(base, tmp_path):
    table = tmp_path / "tables" / "load_data.csv"
    table.parent.mkdir()
    _table("v1", SITES, "images/", "BR00000042").to_csv(table, index=False)
    proc = run_cli("cellpainting", str(base / "images"), str(tmp_path / "c.zarr"),
                   "--load-data", str(table), check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'tables' / 'images'}" in proc.stderr and "--load-data-root" in proc.stderr


def test_an_index_beside_the_images_wins(base, local_plate, tmp_path):
    """The synth index agrees with the file names (Brightfield is ch6): no false contradiction."""
    shutil.copy(next(local_plate.rglob("Index.idx.xml")), base / "images")
    table = tmp_path / "load_data.csv"
    _table("v1", SITES, "images/", "BR00000042").to_csv(table, index=False)
    dest = tmp_path / "c.zarr"
    proc = run_cli("cellpainting", str(base / "images"), str(dest), "--load-data", str(table),
                   "--load-data-root", str(base), "--no-progress")  # fmt: skip
    assert "pixel size of 0.45 µm" in proc.stderr and "0.598 µm" in proc.stderr
    ds = cubes.open_cube(str(dest))
    assert ds.sel(channel="Brightfield").channel_number.item() == 6
    assert str(ds.sel(channel="Brightfield").instrument_channel.item()) == "Brightfield High"
    assert ds.x.values[1] == pytest.approx(0.598)  # the index's, not the table's 0.45
    assert ds.attrs["plate"] == "SYNTH0001"  # the index names the plate


def test_one_file_for_two_stains_is_one_channel(base, tmp_path):
    frame = _table("v1", SITES, "images/", "BR00000042")
    frame["FileName_OrigRNA"] = frame["FileName_OrigER"]  # source 15: ER and RNA in ch4
    frame = frame.drop(columns=[c for c in frame.columns if c.endswith("_OrigRNA")][2:])
    table = tmp_path / "load_data.csv"
    frame.to_csv(table, index=False)
    dest = tmp_path / "c.zarr"
    proc = run_cli("cellpainting", str(base / "images"), str(dest), "--load-data", str(table),
                   "--load-data-root", str(base), "--no-progress")  # fmt: skip
    assert "one file for the stains ER, RNA" in proc.stderr
    ds = cubes.open_cube(str(dest))
    assert "ER/RNA" in [str(c) for c in ds.channel.values] and ds.sizes["channel"] == 5
    er_rna = ds.sel(channel="ER/RNA")
    assert er_rna.channel_number.item() == 4
    assert str(er_rna.instrument_channel.item()) == "Alexa 488"


def test_two_files_for_one_channel_number(base, tmp_path):
    other = base / "other"
    other.mkdir()
    for r, c, f in SITES:
        shutil.copy(base / "images" / _name(r, c, f, 3), other / _name(r, c, f, 3))
    frame = _table("v1", SITES, "images/", "BR00000042")
    frame["FileName_OrigER"], frame["PathName_OrigER"] = frame["FileName_OrigRNA"], "other/"
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("Metadata_ChannelID")])
    table = tmp_path / "load_data.csv"
    frame.to_csv(table, index=False)
    proc = run_cli("cellpainting", str(base / "images"), str(tmp_path / "c.zarr"), "--load-data",
                   str(table), "--load-data-root", str(base), check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "names two files for channel 3" in proc.stderr
    assert str(base / "images" / _name(1, 1, 1, 3)) in proc.stderr
    assert str(other / _name(1, 1, 1, 3)) in proc.stderr


def test_synth_table_with_a_relative_dest(tmp_path):
    """synth-plate with a relative DEST, then --load-data from another working directory."""
    work = tmp_path / "work"
    work.mkdir()
    env_cmd = [sys.executable, "-m", "ingest"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    subprocess.run([*env_cmd, "synth-plate", "rel", "--wells", "2", "--fields", "2", "--size",
                    "16"], cwd=work, check=True, env=env, capture_output=True)  # fmt: skip
    for cwd, prefix in ((work, ""), (tmp_path, "work/")):
        dest = f"{prefix}c{len(prefix)}.zarr"
        proc = subprocess.run([*env_cmd, "cellpainting", f"{prefix}rel", dest, "--load-data",
                               f"{prefix}rel/load_data.csv", "--no-progress"], cwd=cwd, env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        ds = cubes.open_cube(str(cwd / dest), require_complete=True)
        assert ds.attrs["plate"] == "SYNTH0001" and ds.sizes["well"] == 2
        assert ds.sel(channel="Brightfield").channel_number.item() == 8
        image = next((work / "rel").rglob(_name(1, 2, 2, 5)))
        np.testing.assert_array_equal(
            ds.images.sel(well="A02", field=2, channel="DNA"), tifffile.imread(image)
        )


@pytest.mark.s3
def test_gallery_table_with_keys_inside_the_bucket(bucket, tmp_path):
    fs = bucket.fs()
    plate = write_synth_plate(f"{bucket.url}/{GALLERY}", wells=[(1, 1), (1, 2), (2, 5)],
                              fields=2, size=64, seed=1, plate="BR00113255",
                              measurement="Measurement2")  # fmt: skip
    fs.rm(f"{plate.images_url.removeprefix('s3://')}/Index.idx.xml")
    folder = plate.images_url.removeprefix(f"{bucket.url}/")
    assert folder.startswith("cpg0001-cellpainting-protocol/source_4/images/")
    key = f"{bucket.name}/workspace/load_data_csv/BR00113255/load_data.csv"
    fs.pipe_file(key, _table("remote", SITES, folder, "BR00113255").to_csv(index=False).encode())
    dest = tmp_path / "c.zarr"
    run_cli("cellpainting", plate.images_url.rsplit("/", 1)[0], str(dest),
            "--load-data", f"s3://{key}", "--no-progress")  # fmt: skip
    ds = cubes.open_cube(str(dest), require_complete=True)
    assert ds.attrs["plate"] == "BR00113255"
    assert ds.sel(channel="Brightfield").channel_number.item() == 6
    assert str(ds.sel(channel="DNA").instrument_channel.item()) == "HOECHST 33342"
    assert ds.sel(channel="DNA").excitation_wavelength.item() == 405
    assert np.isnan(ds.sel(channel="ER").excitation_wavelength.item())  # the table says DNA's only
    assert ds.x.values[1] == pytest.approx(PIXEL_M * 1e6)
    x, _ = _position_m(2, 5, 2)
    assert ds.position_x.sel(well="B05", field=2).item() == pytest.approx(x * 1e6)
    truth = tifffile.imread(io.BytesIO(fs.cat_file(f"{plate.images_url}/{_name(2, 5, 2, 4)}")))
    np.testing.assert_array_equal(ds.images.sel(well="B05", field=2, channel="ER"), truth)


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ({"s3://src-bkt/p/Images"}, "s3://src-bkt/p/Images"),  # key inside SRC's bucket
        ({"s3://tbl-bkt/p/Images"}, "s3://tbl-bkt/p/Images"),  # key inside the table's bucket
        ({"s3://p/Images"}, "s3://p/Images"),  # bucket/key: the first part is the bucket
        (set(), "s3://src-bkt/p/Images"),  # none exists: SRC's bucket (the error names it)
    ],
)
def test_resolve_remote_path_names(existing, expected):
    got = resolve_folder(
        "p/Images/", "s3://tbl-bkt/t.csv", "s3://src-bkt/x", None, existing.__contains__
    )
    assert got == expected


def test_resolve_urls_absolute_root_and_table_relative():
    def never(url: str) -> bool:
        raise AssertionError(f"no existence check expected, got {url}")

    assert resolve_folder("s3://b/k/", "/t/l.csv", "", None, never) == "s3://b/k"
    assert resolve_folder("/abs/images", "s3://b/l.csv", "s3://b", None, never) == "/abs/images"
    assert resolve_folder("images", "s3://b/l.csv", "s3://b", "/root", never) == "/root/images"
    assert resolve_folder("images", "tables/l.csv", "/src", None, never) == "tables/images"


# --- the real tables (pe2loaddata's own test data), when shared/real-data is there ---------


def _shape(columns: list[str]) -> set[str]:
    return {
        re.sub(r"_Orig\w+$", "_Orig*", c) for c in columns if not c.startswith(("File", "Path"))
    }


@needs_real
@pytest.mark.parametrize(
    ("version", "path"),
    [
        ("v1", "Version1/load_data_version1.csv"),
        ("v5", "Version5/load_data_version5.csv"),
        ("v7", "Version7/load_data_version7.csv"),
        ("remote", "Remote/loaddata_cpg_trimmed.csv"),
    ],
)
def test_fixture_tables_have_the_real_columns(version, path):
    assert REAL is not None
    real = pd.read_csv(REAL / "pe2loaddata" / path, dtype=str)
    ours = _table(version, SITES[:1], "images/", "P")
    assert _shape(list(ours.columns)) == _shape(list(real.columns))
    assert {c for c in ours.columns if c.startswith("File")} == {
        c for c in real.columns if c.startswith("File")
    }


@needs_real
def test_real_version1_table_and_tiffs(tmp_path):
    assert REAL is not None
    images = tmp_path / "tests" / "data" / "Version1" / "images"
    images.mkdir(parents=True)
    for tiff in (REAL / "pe2loaddata" / "Version1").glob("*.tiff"):
        shutil.copy(tiff, images)
    table = REAL / "pe2loaddata" / "Version1" / "load_data_version1.csv"
    for with_index in (False, True):
        if with_index:  # the real index beside the real images: no false contradiction
            shutil.copy(REAL / "pe2loaddata" / "Version1" / "Index.idx.xml", images)
        dest = tmp_path / f"c{with_index}.zarr"
        run_cli("cellpainting", str(images), str(dest), "--load-data", str(table),
                "--load-data-root", str(tmp_path), "--no-progress")  # fmt: skip
        ds = cubes.open_cube(str(dest), require_complete=True)
        assert ds.attrs["plate"] == "BR00121482"
        numbers = dict(
            zip(map(str, ds.channel.values), ds.channel_number.values.tolist(), strict=True)
        )
        assert numbers == {"Mito": 1, "AGP": 2, "RNA": 3, "ER": 4, "DNA": 5, "Brightfield": 6}
        dna = ds.sel(channel="DNA")
        assert str(dna.instrument_channel.item()) == "HOECHST 33342"
        assert dna.excitation_wavelength.item() == 405
        assert ds.x.values[1] == pytest.approx(0.5979760809567617)
        assert ds.position_x.item() == 0 and ds.position_y.item() == 0
        np.testing.assert_array_equal(
            ds.images.sel(channel="Brightfield").values[0, 0],
            tifffile.imread(images / "r01c01f01p01-ch6sk1fk1fl1.tiff"),
        )


def _empty_files(table: Path, root: Path) -> None:
    """Touch the files a table names under ``root`` (read_load_data checks only that they exist)."""
    frame = pd.read_csv(table, dtype=str)
    for column in [c for c in frame.columns if c.startswith("FileName_Orig")]:
        paths = frame[column.replace("FileName", "PathName")]
        for folder, name in zip(paths, frame[column], strict=True):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / name).touch()


@needs_real
@pytest.mark.parametrize(
    ("path", "numbers", "pixel_um", "position", "instrument"),
    [
        ("Version5/load_data_version5.csv", {"DPC": 1, "Brightfield": 2, "Mito": 6}, 0.59797608,
         (-322.907, -322.907), {"DPC": ("Digital Phase Contrast", 740, 0)}),
        ("Version7/load_data_version7.csv", {"ER": 1, "Actin": 4, "Brightfield": 7}, 0.29668813,
         (0.0, 0.0), {"RNA": ("Alexa 488 Em 650", 488, 706)}),
        ("Remote/loaddata_cpg_trimmed.csv", {"Mito": 1, "DNA": 5, "Brightfield": 6}, 0.29898804,
         (-645.814, 645.814), {"DNA": ("HOECHST 33342", 405, 456)}),
    ],
)  # fmt: skip
def test_real_tables_metadata(tmp_path, path, numbers, pixel_um, position, instrument):
    assert REAL is not None
    table = REAL / "pe2loaddata" / path
    _empty_files(table, tmp_path)
    got = read_load_data(str(table), {}, root=str(tmp_path))
    by_name = {im.channel: im.number for im in got.images}
    assert {k: by_name[k] for k in numbers} == numbers
    assert got.meta.pixel_size_um == pytest.approx(pixel_um)
    assert list(got.meta.positions.values())[-1 if "Remote" in path else 0] in (
        pytest.approx(position),
        pytest.approx(tuple(reversed(position))),
    )
    assert {k: got.instrument[k] for k in instrument} == instrument
    if "Remote" in path:  # one channel's values per row: the others stay unknown
        assert set(got.instrument) == {"DNA"}


@needs_real
def test_real_gallery_keys_resolve_inside_the_bucket():
    assert REAL is not None
    frame = pd.read_csv(REAL / "pe2loaddata" / "Remote" / "loaddata_cpg_trimmed.csv", dtype=str)
    src = f"s3://cellpainting-gallery/{GALLERY}/BR00113255__2020-06-19T11_13_27-Measurement2"
    keys = {p for c in frame.columns if c.startswith("PathName") for p in frame[c]}
    assert keys  # as pe2loaddata wrote them: no scheme, no bucket
    for key in keys:
        assert key.startswith("cpg0001-cellpainting-protocol/source_4/images/")

        def exists(url: str) -> bool:
            return url.startswith("s3://cellpainting-gallery/cpg0001-")

        got = resolve_folder(key, "/local/load_data.csv", src, None, exists)
        assert got == f"{src}/Images"
