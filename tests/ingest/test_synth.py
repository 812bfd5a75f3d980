"""Synthetic plates look like JUMP: names, layout, LoadData, dtype and cell-like content."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ingest.sources.base import ArgumentError
from ingest.sources.cellpainting import IMAGE_NAME
from ingest.sources.cellpainting.synth import parse_wells, synth_field


def test_layout_and_names(local_plate):
    images = sorted(local_plate.rglob("*.tiff"))
    assert len(images) == 3 * 2 * 8
    assert all(IMAGE_NAME.match(p.name) for p in images)
    folder = images[0].parent
    assert folder.name == "Images"
    assert folder.parent.name == "SYNTH0001__2021-05-02T16_02_51-Measurement1"
    assert (local_plate / folder.parent.name / "Images" / "r02c05f02p01-ch8sk1fk1fl1.tiff").exists()


def test_load_data_csv_is_pe2loaddata_style(local_plate):
    with open(local_plate / "load_data.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 2
    for stain in ("DNA", "ER", "RNA", "AGP", "Mito", "Brightfield", "HighZBF", "LowZBF"):
        assert f"FileName_Orig{stain}" in rows[0] and f"PathName_Orig{stain}" in rows[0]
    row = next(r for r in rows if r["Metadata_Well"] == "B05" and r["Metadata_Site"] == "2")
    assert row["Metadata_Plate"] == "SYNTH0001"
    assert row["FileName_OrigDNA"] == "r02c05f02p01-ch5sk1fk1fl1.tiff"  # source_4: DNA is ch5
    assert (local_plate / row["PathName_OrigDNA"] / row["FileName_OrigDNA"]).exists()


def test_content_is_cell_like_and_deterministic():
    stack = synth_field(256, seed=7, row=2, column=3, field=1)
    assert stack.dtype == np.uint16 and stack.shape == (8, 256, 256)
    np.testing.assert_array_equal(stack, synth_field(256, seed=7, row=2, column=3, field=1))
    assert not np.array_equal(stack, synth_field(256, seed=7, row=2, column=3, field=2))
    dna = stack[4].astype(float)
    background = np.median(dna)
    nuclei = dna > background + 10 * np.sqrt(background)
    assert 0.02 < nuclei.mean() < 0.5  # objects on a dark background, not noise
    for stain in (0, 1, 2, 3):  # cytoplasm stains are brighter around nuclei than far away
        assert stack[stain][nuclei].mean() > 1.2 * np.median(stack[stain])
    assert stack[5:].mean() > 4 * stack[:5].mean()  # brightfield: bright background


def test_parse_wells():
    assert parse_wells("3") == [(1, 1), (1, 2), (1, 3)]
    assert parse_wells("25")[-1] == (2, 1)
    assert parse_wells("A01,P24,AF48", plate_format=1536) == [(1, 1), (16, 24), (32, 48)]
    with pytest.raises(ArgumentError, match="outside a 384-well plate"):
        parse_wells("Q01")
    with pytest.raises(ArgumentError, match="not a well name"):
        parse_wells("A1B")
    with pytest.raises(ArgumentError, match="A01 is named twice"):
        parse_wells("A01,B02,a01")
