"""The Cell Painting source passes the source contract (tests/ingest/contract.py)."""

from __future__ import annotations

from pathlib import Path

from ingest.sources.cellpainting import CellPaintingOptions
from ingest.sources.cellpainting.synth import parse_wells, write_synth_plate
from tests.ingest.contract import SourceContract


class TestCellPaintingContract(SourceContract):
    name = "cellpainting"

    def make_input(self, root: Path) -> str:
        write_synth_plate(str(root), wells=parse_wells("A01,A02,B03"), fields=2, size=32, seed=4)
        return str(root)

    def options(self) -> CellPaintingOptions:
        return CellPaintingOptions()

    def spoil(self, src: str) -> str:
        victim = sorted(Path(src).rglob("r01c02f02p01-ch3*.tiff"))[0]
        victim.write_bytes(victim.read_bytes()[:100])
        return victim.name
