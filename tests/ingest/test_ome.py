"""--ome: an OME-NGFF 0.5 HCS plate from the same plan, validated with ome-zarr-models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr
from ome_zarr_models.v05.hcs import HCS

from cubes.store import zarr_store
from ingest.sources.cellpainting.jump import SOURCE4_CHANNELS
from ingest.sources.cellpainting.ome import (
    BRIGHTFIELD_GREYS,
    PALETTE,
    STAIN_COLOURS,
    channel_colours,
)
from tests.conftest import run_cli
from tests.helpers import source_images

BLUE = "0000FF"


@pytest.mark.s3
def test_ome_plate_on_s3_is_valid_and_pixel_exact(bucket):
    src, dest = f"{bucket.url}/raw", f"{bucket.url}/plate.ome.zarr"
    run_cli("synth-plate", src, "--wells", "A01,B03", "--fields", "2", "--size", "40")
    fs = bucket.fs()
    images = next(p for p in fs.find(f"{bucket.name}/raw") if p.endswith(".tiff")).rsplit("/", 1)[0]
    fs.rm(f"{images}/r02c03f02p01-ch1sk1fk1fl1.tiff")
    proc = run_cli("cellpainting", src, dest, "--ome", "--no-progress")
    assert "SYNTH0001: 31/32 images, 1 missing" in proc.stdout

    group = zarr.open_group(zarr_store(dest, bucket.storage_options, read_only=True), mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "version not specified" or similar
        hcs = HCS.from_zarr(group)
    plate = hcs.ome_attributes.plate
    assert [r.name for r in plate.rows] == ["A", "B"]
    assert [c.name for c in plate.columns] == ["1", "3"]
    assert [w.path for w in plate.wells] == ["A/1", "B/3"]
    assert plate.field_count == 2

    image = group["B/3/1"]
    axes = image.attrs["ome"]["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["c", "y", "x"] and axes[1]["unit"] == "micrometer"
    scales = [
        d["coordinateTransformations"][0]["scale"]
        for d in image.attrs["ome"]["multiscales"][0]["datasets"]
    ]
    assert scales[0] == pytest.approx([1.0, 0.598, 0.598])
    assert scales[1] == pytest.approx([1.0, 0.598 * 8, 0.598 * 8])
    channels = image.attrs["ome"]["omero"]["channels"]
    assert [c["label"] for c in channels][:5] == ["Mito", "AGP", "RNA", "ER", "DNA"]
    assert channels[4]["window"]["start"] < channels[4]["window"]["end"]
    colours = {c["label"]: c["color"] for c in channels}
    assert len(set(colours.values())) == len(channels) == 8  # no two channels alike
    assert colours["DNA"] == BLUE and colours["ER"] == "00FF00"
    assert colours["Brightfield"] in BRIGHTFIELD_GREYS
    assert group.attrs["cellcubes"]["cube_complete"] is True

    truth = source_images(fs, f"{bucket.name}/raw")
    names = [c["label"] for c in channels]
    for (well, field, channel), pixels in truth.items():
        path = f"{well[0]}/{int(well[1:])}/{field - 1}/0"
        np.testing.assert_array_equal(group[path][names.index(channel)], pixels)
    assert not group["B/3/1/0"][0].any()  # the missing Mito image: fill value
    assert group.attrs["cellcubes"]["present"][1][1][0] is False
    assert group["A/1/0/1"].shape == (8, 5, 5)


def test_jump_channels_get_the_stain_colours_and_brightfield_greys():
    names = list(SOURCE4_CHANNELS.values())  # Mito, AGP, RNA, ER, DNA, HighZBF, LowZBF, BF
    colours = dict(zip(names, channel_colours(names), strict=True))
    assert len(set(colours.values())) == len(names)
    assert colours["DNA"] == BLUE and colours["ER"] == "00FF00"
    assert colours["AGP"] == "FF0000" and colours["Mito"] == "FF00FF"
    assert colours["RNA"] == STAIN_COLOURS["RNA"]
    assert {colours[n] for n in ("HighZBF", "LowZBF", "Brightfield")} == set(BRIGHTFIELD_GREYS)


def test_stains_are_found_by_dye_and_prefix_whatever_the_order():
    names = ["Alexa 647", "HOECHST 33342", "OrigER", "ER/RNA", "SYTO 14", "phalloidin"]
    colours = channel_colours(names)
    assert colours[1] == BLUE and colours[2] == "00FF00"
    assert colours[4] == STAIN_COLOURS["RNA"] and colours[5] == STAIN_COLOURS["AGP"]
    assert colours[0] == PALETTE[0]  # no stain in the name: the palette
    assert colours[3] == PALETTE[1]  # ER taken by OrigER: a stain's second channel is unknown
    assert len(set(colours)) == len(names)


def test_unknown_channels_are_distinct_up_to_the_palette_then_repeat():
    size = len({*PALETTE, *STAIN_COLOURS.values(), *BRIGHTFIELD_GREYS})
    names = [f"ch{i}" for i in range(size + 3)]
    colours = channel_colours(names)
    assert len(set(colours[:size])) == size
    assert colours[size:] == colours[:3]
    assert channel_colours(["ch1", "DNA"]) == [PALETTE[0], BLUE]  # DNA keeps its blue
