"""Harmony index files of every version: synthetic fixtures of each layout, and the real files.

The real files (``shared/real-data``, see its SOURCES.md) are read where that
folder exists, found upward from this file or named by ``CELLCUBES_REAL_DATA``;
the tests that need them are skipped elsewhere. They are copied into
``tmp_path`` at test time, never into the repository.
"""

from __future__ import annotations

import codecs
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

import cubes
from cubes import conventions as cv
from cubes.errors import SchemaError
from ingest.cli import main
from ingest.sources.cellpainting.harmony import NAMESPACES, HarmonyImage, read_index, write_index
from ingest.sources.cellpainting.synth import write_synth_plate
from tests.helpers import real_data

CHANNELS = {1: ("Alexa 647", 640.0, 706.0), 2: ("HOECHST 33342", 405.0, 456.0)}
PIXEL_M = 0.2966881e-6
SPACING_M = 645.814e-6


def _real_data() -> Path | None:
    return real_data()


REAL = _real_data()


@pytest.fixture
def real() -> Path:
    if REAL is None or not REAL.is_dir():
        pytest.skip("shared/real-data not found (set CELLCUBES_REAL_DATA)")
    return REAL


def _images(wells=((1, 1),), fields=2, channels=CHANNELS) -> list[HarmonyImage]:
    return [
        HarmonyImage(
            name=f"r{r:02d}c{c:02d}f{f:02d}p01-ch{ch}sk1fk1fl1.tiff",
            row=r,
            column=c,
            field=f,
            plane=1,
            channel=ch,
            channel_name=name,
            excitation_nm=ex,
            emission_nm=em,
            resolution_x_m=PIXEL_M,
            resolution_y_m=PIXEL_M,
            position_x_m=(2 * f - 3) * SPACING_M,
            position_y_m=SPACING_M,
        )
        for r, c in wells
        for f in range(1, fields + 1)
        for ch, (name, ex, em) in channels.items()
    ]


def _read(tmp_path: Path, data: bytes, name: str = "Index.idx.xml"):
    path = tmp_path / name
    path.write_bytes(data)
    return read_index(str(path))


def _check(index, plate: str = "PLATE1") -> None:
    assert index.plate_id == plate and (index.rows, index.columns) == (16, 24)
    assert len(index.images) == 4
    by_channel = {im.channel: im for im in index.images}
    for ch, (name, ex, em) in CHANNELS.items():
        im = by_channel[ch]
        assert (im.channel_name, im.excitation_nm, im.emission_nm) == (name, ex, em)
        assert im.resolution_x_m * 1e6 == pytest.approx(0.2966881)
        assert im.resolution_y_m * 1e6 == pytest.approx(0.2966881)
    xs = sorted({(im.field, round(im.position_x_m * 1e6, 3)) for im in index.images})
    assert xs == [(1, -645.814), (2, 645.814)]
    assert {round(im.position_y_m * 1e6, 3) for im in index.images} == {645.814}


@pytest.mark.parametrize("version", [5, 6, 7])
def test_every_version_reads_the_same(tmp_path, version):
    data = write_index("PLATE1", 16, 24, _images(), version=version, instrument="Phenix")
    assert data.startswith(codecs.BOM_UTF8) == (version >= 6)
    assert NAMESPACES[version].encode() in data
    index = _read(tmp_path, data)
    assert index.version == version and index.namespace == NAMESPACES[version]
    assert index.instrument == "Phenix"
    _check(index)


def test_v7_keeps_channel_fields_in_maps_not_on_images(tmp_path):
    text = write_index("PLATE1", 16, 24, _images(), version=7).decode("utf-8-sig")
    images = text[text.index("<Images>") :]
    assert "<ChannelName>" not in images and "ImageResolutionX" not in images
    assert "MainExcitationWavelength" not in images and "<PositionX" in images
    maps = text[text.index("<Maps>") : text.index("</Maps>")]
    assert maps.count("<FlatfieldProfile>") == 2
    assert '<Entry ChannelID="2"><ChannelName>HOECHST 33342</ChannelName>' in maps


def test_default_output_is_v5_with_every_field_on_each_image(tmp_path):
    data = write_index("PLATE1", 16, 24, _images())
    assert data.startswith(b"<?xml") and b"<Maps>" not in data
    assert data.count(b"<ChannelName>") == 4
    assert data == write_index("PLATE1", 16, 24, _images(), version=5)


def test_no_namespace_and_micrometres(tmp_path):
    text = write_index("PLATE1", 16, 24, _images()).decode()
    text = text.replace(f' xmlns="{NAMESPACES[5]}"', "")
    text = re.sub(r'Unit="m">([^<]+)<', lambda m: f'Unit="µm">{float(m[1]) * 1e6!r}<', text)
    assert text.count('Unit="µm"') == 16 and "xmlns" not in text
    index = _read(tmp_path, text.encode())
    assert index.namespace == "" and index.version is None
    _check(index)


def test_unknown_unit_and_missing_fields_are_errors(tmp_path):
    data = write_index("PLATE1", 16, 24, _images()).replace(b'Unit="m"', b'Unit="furlong"', 1)
    with pytest.raises(SchemaError, match=r"Index.idx.xml is not a Harmony index .*furlong"):
        _read(tmp_path, data)
    data = write_index("PLATE1", 16, 24, _images()).replace(b"<FieldID>1</FieldID>", b"", 1)
    with pytest.raises(SchemaError, match=r"has no FieldID"):
        _read(tmp_path, data)
    with pytest.raises(SchemaError, match=r"root element is .*plist, expected EvaluationInput"):
        _read(tmp_path, b"<plist/>")


def test_operetta_style_index(tmp_path):
    """Operetta CLS ('Sonata'): HarmonyV5 namespace, BOM, CRLF, fields on each Image."""
    text = write_index("Test_Plate", 16, 24, _images(), instrument="Sonata").decode()
    data = codecs.BOM_UTF8 + text.replace("><", ">\r\n<").encode()
    index = _read(tmp_path, data)
    assert index.instrument == "Sonata" and index.version == 5
    _check(index, plate="Test_Plate")


def _export(tmp_path: Path, version: int, plate: str = "MyPlate_1") -> Path:
    """A synthetic plate's images in a folder without a Phenix name, with a fresh index."""
    write_synth_plate(str(tmp_path / "synth"), wells=[(1, 1), (2, 3)], fields=2, size=16)
    images = next((tmp_path / "synth").rglob("Images"))
    folder = tmp_path / "export"
    shutil.copytree(images, folder)
    (folder / "Index.idx.xml").unlink()
    index = write_index(plate, 16, 24, _images(wells=((1, 1), (2, 3))), version=version)
    (folder / ("Index.xml" if version == 7 else "Index.idx.xml")).write_bytes(index)
    return folder


def test_v7_index_end_to_end(tmp_path, capsys):
    src = _export(tmp_path, 7)
    dest = tmp_path / "cube.zarr"
    assert main(["cellpainting", str(src), str(dest), "--no-progress"]) == 0
    ds = cubes.open_cube(str(dest), require_complete=True)
    assert ds.attrs["plate"] == "MyPlate_1"
    assert ds.attrs[cv.ATTR_PROVENANCE]["index"] == str(src / "Index.xml")
    numbers = ds.channel_number.values.tolist()
    names = [str(n) for n in ds.instrument_channel.values]
    assert names == [CHANNELS[n][0] if n in CHANNELS else "" for n in numbers]
    ex = ds.excitation_wavelength.sel(channel=ds.channel[numbers.index(2)]).item()
    assert ex == 405.0
    assert ds.x.attrs["units"] == "µm" and ds.y.attrs["units"] == "µm"
    assert ds.x.values[1] == pytest.approx(0.2966881)
    assert ds.y.values[3] == pytest.approx(3 * 0.2966881)
    assert ds.position_x.sel(well="B03").values.tolist() == pytest.approx([-645.814, 645.814])
    assert ds.position_y.sel(well="A01").values.tolist() == pytest.approx([645.814, 645.814])


def test_index_matching_some_images_warns(tmp_path, caplog):
    src = _export(tmp_path, 5)
    with caplog.at_level(logging.WARNING):
        assert main(["cellpainting", str(src), str(tmp_path / "c.zarr"), "--no-progress"]) == 0
    assert "describes 8 of the 32 images found (it has 8 Image entries); the 24" in caplog.text


def test_index_naming_missing_images_does_not_warn(tmp_path, caplog):
    src = _export(tmp_path, 5)
    for path in src.glob("*-ch[3-8]sk1fk1fl1.tiff"):
        path.unlink()
    (src / "r01c01f01p01-ch1sk1fk1fl1.tiff").unlink()
    with caplog.at_level(logging.INFO):
        assert main(["cellpainting", str(src), str(tmp_path / "c.zarr"), "--no-progress"]) == 0
    assert "names 1 images that were not found" in caplog.text
    assert "describes" not in caplog.text


def test_index_matching_no_image_is_an_error(tmp_path, capsys):
    src = _export(tmp_path, 7)
    index = write_index("Other", 16, 24, _images(wells=((9, 9),)), version=7)
    (src / "Index.xml").write_bytes(index)
    dest = tmp_path / "c.zarr"
    assert main(["cellpainting", str(src), str(dest), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"Harmony index {src / 'Index.xml'} names none of the 32 images found" in err
    assert "its 4 Image entries name e.g. r09c09f01p01-ch1sk1fk1fl1.tiff" in err
    assert "the images are named e.g. r01c01f01p01-ch1sk1fk1fl1.tiff" in err
    assert "remove the index file" in err
    assert not dest.exists()


# The real files ------------------------------------------------------------


def test_real_v7(real):
    index = read_index(str(real / "pe2loaddata" / "Version7" / "Index.xml"))
    assert index.version == 7 and index.namespace == NAMESPACES[7]
    assert index.instrument == "Phenix"
    assert index.plate_id == "240624_WES_Perturbs_n_densities_1.1"
    assert (index.rows, index.columns) == (8, 12)
    assert [im.channel for im in index.images] == list(range(1, 8))
    names = [im.channel_name for im in index.images]
    assert names == [
        "Alexa 488", "Alexa 568", "Alexa 488 Em 650", "405ex, 570-630-em)", "Alexa 647",
        "HOECHST 33342", "Brightfield",
    ]  # fmt: skip
    assert [im.excitation_nm for im in index.images] == [488, 561, 488, 405, 640, 405, 740]
    assert [im.emission_nm for im in index.images] == [522, 599, 706, 599, 706, 456, 0]
    for im in index.images:
        assert im.resolution_x_m == im.resolution_y_m == pytest.approx(2.96688132474701e-07)
        assert (im.position_x_m, im.position_y_m) == (0.0, 0.0)
        assert (im.row, im.column, im.field, im.plane) == (1, 1, 1, 1)


def test_real_v1(real):
    index = read_index(str(real / "pe2loaddata" / "Version1" / "Index.idx.xml"))
    assert (index.version, index.instrument, index.plate_id) == (5, "Phenix", "BR00121482")
    assert [im.channel_name for im in index.images] == [
        "Alexa 647", "Alexa 568", "488 long", "Alexa 488", "HOECHST 33342", "Brightfield",
    ]  # fmt: skip
    assert [im.resolution_x_m * 1e6 for im in index.images] == pytest.approx([0.597976] * 6)


def test_real_v5_digital_phase_contrast(real):
    index = read_index(str(real / "pe2loaddata" / "Version5" / "Index.idx.xml"))
    assert (index.version, index.plate_id) == (5, "BR00122249")
    first = index.images[0]
    assert (first.channel, first.channel_name) == (1, "Digital Phase Contrast")
    assert (first.excitation_nm, first.emission_nm) == (740, 0)
    assert [im.channel_name for im in index.images][1:] == [
        "Brightfield high", "488 650", "Alexa 488", "Alexa 568", "Alexa 647",
    ]  # fmt: skip
    for im in index.images:
        assert im.position_x_m * 1e6 == pytest.approx(-322.907)
        assert im.position_y_m * 1e6 == pytest.approx(-322.907)


def test_real_2018(real):
    index = read_index(str(real / "pe2loaddata" / "2018" / "Index.idx.xml"))
    assert (index.version, index.plate_id) == (5, "BR00100044")
    assert [(im.row, im.column, im.channel) for im in index.images] == [
        (1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 2, 2),
    ]  # fmt: skip
    assert [im.channel_name for im in index.images] == ["Alexa 647", "Alexa 568"] * 2
    assert [im.resolution_x_m * 1e6 for im in index.images] == pytest.approx([0.298988] * 4)


def test_real_operetta(real):
    index = read_index(str(real / "operetta-compose" / "Index.idx.xml"))
    assert (index.version, index.instrument, index.plate_id) == (5, "Sonata", "Test_Sample_BALL")
    assert [(im.row, im.column, im.field) for im in index.images] == [(3, 3, 1), (3, 3, 2)]
    assert {im.channel_name for im in index.images} == {"Fluorescein (FITC)"}
    assert [im.position_x_m * 1e6 for im in index.images] == pytest.approx([-645.814, 645.814])
    assert [im.position_y_m * 1e6 for im in index.images] == pytest.approx([645.814, 645.814])
    assert index.images[0].resolution_x_m * 1e6 == pytest.approx(1.1959522)
    assert (index.images[0].excitation_nm, index.images[0].emission_nm) == (475, 525)


def _ingest_copy(folder: Path, tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(folder, src)
    dest = tmp_path / "cube.zarr"
    assert main(["cellpainting", str(src), str(dest), "--no-progress"]) == 0
    return src, cubes.open_cube(str(dest), require_complete=True)


def test_real_version1_folder_end_to_end(real, tmp_path):
    src, ds = _ingest_copy(real / "pe2loaddata" / "Version1", tmp_path)
    assert ds.attrs["plate"] == "BR00121482"
    assert ds.attrs[cv.ATTR_PROVENANCE]["index"] == str(src / "Index.idx.xml")
    assert ds.images.shape == (1, 1, 6, 1080, 1080)
    assert ds.channel_number.values.tolist() == [1, 2, 3, 4, 5, 6]
    assert str(ds.instrument_channel.values[4]) == "HOECHST 33342"
    assert ds.excitation_wavelength.values.tolist() == [640, 561, 488, 488, 405, 740]
    assert ds.x.attrs["units"] == "µm" and ds.x.values[1] == pytest.approx(0.597976, 1e-5)
    assert ds.position_x.values.tolist() == [[0.0]]
    for k in range(6):
        truth = tifffile.imread(src / f"r01c01f01p01-ch{k + 1}sk1fk1fl1.tiff")
        np.testing.assert_array_equal(ds.images.values[0, 0, k], truth)


def test_real_operetta_folder_end_to_end(real, tmp_path):
    src, ds = _ingest_copy(real / "operetta-compose", tmp_path)
    assert ds.attrs["plate"] == "Test_Sample_BALL"
    assert [str(w) for w in ds.well.values] == ["C03"] and ds.field.values.tolist() == [1, 2]
    assert [str(c) for c in ds.instrument_channel.values] == ["Fluorescein (FITC)"]
    assert ds.emission_wavelength.values.tolist() == [525]
    assert ds.y.attrs["units"] == "µm" and ds.y.values[1] == pytest.approx(1.1959522)
    assert ds.position_x.values[0].tolist() == pytest.approx([-645.814, 645.814])
    assert ds.position_y.values[0].tolist() == pytest.approx([645.814, 645.814])
    for f in (1, 2):
        truth = tifffile.imread(src / f"r03c03f0{f}p01-ch1sk1fk1fl1.tiff")
        np.testing.assert_array_equal(ds.images.values[0, f - 1, 0], truth)
