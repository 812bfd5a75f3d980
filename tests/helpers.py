"""Helpers for tests: reading a plate's TIFFs back as the truth to compare with."""

from __future__ import annotations

import io
import re
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
