"""The NetCDF source passes the source contract (tests/ingest/contract.py)."""

from __future__ import annotations

from pathlib import Path

from ingest.sources.netcdf.planning import NetcdfOptions
from ingest.sources.netcdf.synth import write_synth_climate
from tests.ingest.contract import SourceContract


class TestNetcdfContract(SourceContract):
    name = "netcdf"
    extra_args = ("--steps-per-shard", "8")
    keeps_journal = True

    def make_input(self, root: Path) -> str:
        synth = write_synth_climate(str(root), years=1, grid=(4, 8), seed=2)
        for url in synth.urls[2:]:  # January and February: 59 steps, 8 shards
            Path(url).unlink()
        return str(root)

    def options(self) -> NetcdfOptions:
        return NetcdfOptions(steps_per_shard=8)

    def spoil(self, src: str) -> str:
        victim = sorted(Path(src).glob("*.nc"))[1]
        victim.write_bytes(victim.read_bytes()[:2000])
        return victim.name
