"""The arrays source passes the source contract (tests/ingest/contract.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ingest.sources.arrays.source import ArraysOptions
from tests.ingest.contract import SourceContract


class TestArraysContract(SourceContract):
    name = "arrays"
    extra_args = ("--samples-per-shard", "4")

    def make_input(self, root: Path) -> str:
        rng = np.random.default_rng(3)
        root.mkdir(parents=True)
        for k in range(10):
            image = rng.integers(0, 255, (3, 16, 16), dtype=np.uint8)
            np.savez(root / f"sample_{k}.npz", image=image, label=np.int64(k % 3))
        return str(root)

    def options(self) -> ArraysOptions:
        return ArraysOptions(samples_per_shard=4)

    def spoil(self, src: str) -> str:
        victim = Path(src) / "sample_7.npz"
        victim.write_bytes(victim.read_bytes()[:40])
        return victim.name
