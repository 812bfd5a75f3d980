"""JUMP channel maps as they are: sources written 4 or source_4, stains sharing a channel."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import cubes
from cubes.errors import SchemaError
from ingest.cli import main
from ingest.sources.cellpainting.jump import SOURCE4_CHANNELS, read_channel_map, source_key
from tests.helpers import real_data

_HEADER = (
    "Metadata_Source,Metadata_Channel_Num_DNA,Metadata_Channel_Num_ER,Metadata_Channel_Num_RNA,"
    "Metadata_Channel_Num_AGP,Metadata_Channel_Num_Mito,Metadata_Channel_Num_BFLowest,"
    "Metadata_Channel_Num_BFMedium,Metadata_Channel_Num_BFHighest"
)
# JUMP's metadata/channel_mapping.csv as it is: sources numbered, not source_N; source 7
# without brightfield (empty cells); source 15 with ER and RNA both on channel 2.
JUMP_MAP = f"""{_HEADER}
1,4,1,2,5,3,6,,
2,1,2,3,4,5,6,7,8
3,5,4,3,2,1,7,8,6
4,5,4,3,2,1,7,8,6
5,1,2,3,4,5,6,7,8
7,1,4,3,5,2,,,
11,1,2,4,3,5,6,,
13,1,4,3,5,2,,,
15,1,2,2,3,4,7,5,6
"""
SOURCE15 = {
    1: "DNA",
    2: "ER/RNA",
    3: "AGP",
    4: "Mito",
    5: "Brightfield",
    6: "HighZBF",
    7: "LowZBF",
}


def _real_data() -> Path | None:
    return real_data()


@pytest.fixture
def jump_map(tmp_path: Path) -> str:
    path = tmp_path / "channel_mapping.csv"
    path.write_text(JUMP_MAP)
    return str(path)


@pytest.mark.parametrize("source", ["4", "source_4", "Source_4", " 4 ", "SOURCE_4", "4.0"])
def test_numbered_rows_match_either_spelling(jump_map, source):
    assert read_channel_map(jump_map, source) == SOURCE4_CHANNELS


def test_rows_written_source_n_match_a_number(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text(f"{_HEADER}\nsource_4,5,4,3,2,1,7,8,6\n Source_7 ,1,4,3,5,2,,,\n")
    assert read_channel_map(str(path), "4") == SOURCE4_CHANNELS
    assert read_channel_map(str(path), "source_4") == SOURCE4_CHANNELS
    assert read_channel_map(str(path), "7") == {1: "DNA", 2: "Mito", 3: "RNA", 4: "ER", 5: "AGP"}


def test_default_and_built_in_take_either_spelling(jump_map):
    assert read_channel_map(jump_map, None) == SOURCE4_CHANNELS
    assert read_channel_map(None, "4") == read_channel_map(None, None) == SOURCE4_CHANNELS
    with pytest.raises(SchemaError, match=r"No built-in channel map for source '5'.*--channel-map"):
        read_channel_map(None, "5")


def test_source_key():
    assert source_key("source_15") == source_key(15) == source_key("15.0") == "15"
    assert source_key(" source_X ") == "source_X"
    assert source_key(float("nan")) == source_key(None) == ""


def test_missing_brightfield_cells_are_left_out(jump_map):
    assert read_channel_map(jump_map, "7") == {1: "DNA", 2: "Mito", 3: "RNA", 4: "ER", 5: "AGP"}
    assert read_channel_map(jump_map, "1") == {
        1: "ER", 2: "RNA", 3: "Mito", 4: "DNA", 5: "AGP", 6: "LowZBF",
    }  # fmt: skip


def test_two_stains_on_one_channel_keep_both_names(jump_map, caplog):
    with caplog.at_level(logging.WARNING, logger="ingest.sources.cellpainting.jump"):
        names = read_channel_map(jump_map, "source_15")
    assert names == SOURCE15
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "source source_15" in warnings[0] and "channel 2 holds ER and RNA" in warnings[0]
    assert "named ER/RNA" in warnings[0]


def test_unknown_source_lists_the_sources(jump_map):
    with pytest.raises(SchemaError) as info:
        read_channel_map(jump_map, "source_12")
    message = str(info.value)
    assert f"Channel map {jump_map} has no row for source 'source_12'" in message
    assert "(it has 1, 2, 3, 4, 5, 7, 11, 13, 15)" in message
    assert "Pass --source with one of them; 4 and source_4 are the same source" in message


def test_float_numbers_extra_columns_and_spaces(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text(
        "Metadata_Source, Metadata_Channel_Num_DNA,Metadata_Channel_Num_Mito,"
        "Metadata_Channel_Num_Actin,Metadata_Channel_Num_DPC\n"
        "4,5.0, 1 ,9,\n"
    )
    assert read_channel_map(str(path), "source_4") == {1: "Mito", 5: "DNA", 9: "Actin"}


@pytest.mark.parametrize("value", ["2.5", "two", "0"])
def test_a_cell_that_is_not_a_channel_number(tmp_path, value):
    path = tmp_path / "map.csv"
    path.write_text(
        f"Metadata_Source,Metadata_Channel_Num_DNA,Metadata_Channel_Num_ER\n4,5,{value}\n"
    )
    with pytest.raises(SchemaError, match=rf"Metadata_Channel_Num_ER: '{value}' is not a channel"):
        read_channel_map(str(path), "4")


def test_two_spellings_of_one_source_that_disagree(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text(f"{_HEADER}\n4,5,4,3,2,1,7,8,6\nsource_4,1,2,3,4,5,6,7,8\n")
    with pytest.raises(SchemaError, match=r"2 different rows for source '4' \(4, source_4\)"):
        read_channel_map(str(path), "4")


def _ingest(plate: Path, dest: Path, jump_map: str, source: str) -> int:
    return main(
        ["cellpainting", str(plate), str(dest), "--no-progress",
         "--channel-map", jump_map, "--source", source]
    )  # fmt: skip


def test_cli_numbered_source_names_the_cube(local_plate, tmp_path, jump_map):
    assert _ingest(local_plate, tmp_path / "c.zarr", jump_map, "4") == 0
    ds = cubes.open_cube(str(tmp_path / "c.zarr"), require_complete=True)
    assert [str(c) for c in ds.channel.values] == list(SOURCE4_CHANNELS.values())
    assert ds.channel_number.values.tolist() == list(SOURCE4_CHANNELS)


def test_cli_shared_channel_is_one_channel_of_the_cube(local_plate, tmp_path, jump_map):
    assert _ingest(local_plate, tmp_path / "c.zarr", jump_map, "source_15") == 0
    ds = cubes.open_cube(str(tmp_path / "c.zarr"), require_complete=True)
    assert [str(c) for c in ds.channel.values] == [*SOURCE15.values(), "ch8"]
    assert ds.channel_number.values.tolist() == list(range(1, 9))
    assert ds.images.sel(channel="ER/RNA").shape == ds.images.sel(channel="DNA").shape


def test_cli_unknown_source_is_a_user_error(local_plate, tmp_path, jump_map, capsys):
    assert _ingest(local_plate, tmp_path / "c.zarr", jump_map, "source_99") == 2
    err = capsys.readouterr().err
    assert "has no row for source 'source_99' (it has 1, 2, 3, 4, 5, 7, 11, 13, 15)" in err


def test_built_in_map_is_the_real_files_source_4():
    real = _real_data()
    if real is None:
        pytest.skip("no shared/real-data folder above this test")
    mapping = real / "jump-datasets" / "channel_mapping.csv"
    assert read_channel_map(str(mapping), "4") == SOURCE4_CHANNELS
    assert read_channel_map(str(mapping), "source_4") == SOURCE4_CHANNELS
    assert read_channel_map(None, None) == read_channel_map(str(mapping), None)
    assert read_channel_map(str(mapping), "15")[2] == "ER/RNA"


def test_every_source_of_the_microscope_table_has_a_map():
    """The real microscope_config.csv writes source_N; every one matches channel_mapping.csv."""
    real = _real_data()
    if real is None:
        pytest.skip("no shared/real-data folder above this test")
    import pandas as pd

    config = pd.read_csv(real / "jump-datasets" / "microscope_config.csv", dtype=str)
    mapping = str(real / "jump-datasets" / "channel_mapping.csv")
    sources = config["Metadata_Source"].tolist()
    assert sources and all(s.startswith("source_") for s in sources)
    for source in sources:
        assert read_channel_map(mapping, source), source
