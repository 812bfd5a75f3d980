"""The layout of a Cell Painting plate cube: ``images (well, field, channel, y, x)``.

See :mod:`cubes.layout`. The names below are the plate source's own: no module
outside this folder (and its OME output) uses them.
"""

from __future__ import annotations

from cubes import conventions as cv
from cubes.layout import Layout, StatSpec

__all__ = ["ILLUM", "IMAGES", "KIND_PLATE", "PLATE_DIMS", "PLATE_LAYOUT", "THUMBNAIL"]

KIND_PLATE = "cellpainting-plate"
IMAGES = "images"
THUMBNAIL = "thumbnail"
ILLUM = "illum"
PLATE_DIMS = ("well", "field", "channel", "y", "x")

PLATE_LAYOUT = Layout(
    kind=KIND_PLATE,
    sample_dims=("well", "field"),
    window_dims=("y", "x"),
    variables=(IMAGES,),
    channel_dim="channel",
    mask=cv.PRESENT,
    mask_item="image",
    statistics={IMAGES: StatSpec("channel", ("channel",), cv.STAT_NAMES)},
)
