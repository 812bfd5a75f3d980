"""Helpers for tests: reading a plate's TIFFs back as the truth to compare with."""

from __future__ import annotations

import io
import os
import re
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
