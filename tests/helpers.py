"""Helpers for tests: a plate's TIFFs read back as the truth to compare with; imports."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ingest.sources.cellpainting import IMAGE_NAME, SOURCE4_CHANNELS, well_name


def source_images(fs: Any, root: str) -> dict[tuple[str, int, str], np.ndarray]:
    """Every image under ``root`` keyed by (well, field, channel name), read with tifffile."""
    out = {}
    for path in fs.find(root):
        match = IMAGE_NAME.match(re.split(r"[\\/]", path)[-1])
        if match:
            g = {k: int(v) for k, v in match.groupdict().items()}
            key = (well_name(g["row"], g["column"]), g["field"], SOURCE4_CHANNELS[g["channel"]])
            out[key] = tifffile.imread(io.BytesIO(fs.cat_file(path)))
    return out


def real_data(*parts: str) -> Path | None:
    """A path in the public real files (``shared/real-data``, see its SOURCES.md), or None.

    Found above the tests (a checkout beside ``shared/``: a worktree, the main
    checkout, CI's clone), or at ``$CELLCUBES_REAL_DATA``. Tests that read it
    skip where it is absent; the main tests stand on fixtures they write.
    """
    roots = (
        [Path(os.environ["CELLCUBES_REAL_DATA"])] if os.environ.get("CELLCUBES_REAL_DATA") else []
    )
    roots += [parent / "shared" / "real-data" for parent in Path(__file__).resolve().parents]
    for root in roots:
        if root.is_dir() and root.joinpath(*parts).exists():
            return root.joinpath(*parts)
    return None


def names_only_plate(
    root: str,
    wells: list[tuple[int, int]],
    fields: int,
    size: int,
    *,
    plate: str = "SYNTH0001",
    channels: int = 8,
) -> list[str]:
    """A plate folder of image *names* on fsspec's ``memory://`` file system, for planning at
    scale without writing images: the first image is a real (zlib, all-zero) ``size`` x ``size``
    uint16 TIFF, whose header the planner reads; every other file is empty. Returns the URLs.
    """
    import fsspec

    from ingest.sources.cellpainting.synth import TIMESTAMP

    fs = fsspec.filesystem("memory")
    folder = f"{root.rstrip('/')}/{plate}__{TIMESTAMP}-Measurement1/Images"
    header = io.BytesIO()
    tifffile.imwrite(header, np.zeros((size, size), np.uint16), compression="zlib")
    urls = [
        f"{folder}/r{row:02d}c{column:02d}f{field:02d}p01-ch{channel}sk1fk1fl1.tiff"
        for row, column in sorted(wells)
        for field in range(1, fields + 1)
        for channel in range(1, channels + 1)
    ]
    for k, url in enumerate(urls):
        fs.pipe_file(url, header.getvalue() if k == 0 else b"")
    return urls


HEAVY_MODULES = ("xarray", "pandas", "dask", "zarr", "distributed", "s3fs", "torch")
"""What the command lines' start-up must not import (``--help`` costs ~0.4 s without them)."""


def imported_packages(*args: str, env: dict[str, str] | None = None) -> set[str]:
    """The top-level packages ``python -X importtime ARGS`` imports (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
    )
    if proc.returncode != 0:
        raise AssertionError(f"python {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    names = {line.rsplit("|", 1)[1].strip() for line in lines[1:]}  # [0] is the header
    if len(names) < 10:  # -X importtime lists every import; fewer is a broken parse
        raise AssertionError(f"no import list in:\n{proc.stderr[:2000]}")
    return {name.split(".")[0] for name in names}
