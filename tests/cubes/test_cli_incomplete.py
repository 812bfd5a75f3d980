"""An incomplete cube (its ingest interrupted): ls, describe and preview say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cubes
from cubes.cli import main
from cubes.preview import preview_cube
from ingest.output import CubeOutput
from ingest.sources import cellpainting


@pytest.fixture(scope="module")
def incomplete(cube_prefix: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plate P2's schema only, as after an interrupted ingest: not consolidated, no statistics."""
    (plate,) = (cube_prefix.parent / "plates").glob("P2__*")
    dest = tmp_path_factory.mktemp("incomplete") / "P2.zarr"
    (plan,) = cellpainting.plan(str(plate), str(dest), cellpainting.CellPaintingOptions())
    CubeOutput().create(plan, {})
    return dest


def test_ls_and_describe_say_incomplete(incomplete: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["ls", str(incomplete.parent), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert (entry["status"], entry["complete"]) == ("incomplete", False)
    assert entry["samples"] == {"well": 1, "field": 1} and entry["dtype"] == ["uint16"]
    assert entry["found"] is None and entry["written"].startswith("20")
    assert main(["describe", str(incomplete)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{incomplete}: cellpainting-plate cube, INCOMPLETE (convention 1)")
    assert "  no quality counts recorded (the ingest has not finished)" in out
    assert err == ""


def test_preview_warns_incomplete(incomplete: Path, tmp_path: Path, capsys) -> None:
    with pytest.warns(cubes.IncompleteCubeWarning, match="shows the fill value"):
        result = preview_cube(str(incomplete), str(tmp_path / "p.png"))
    assert list(result.tiles) == ["C03/1"]
    capsys.readouterr()
    assert main(["preview", str(incomplete), "--out", str(tmp_path / "q.png")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"Wrote {tmp_path / 'q.png'} (")
    assert err.startswith(f"warning: The cube at {incomplete} is incomplete")
