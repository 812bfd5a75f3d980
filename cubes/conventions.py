"""Names shared by the packages: the contract a cube follows.

See ARCHITECTURE.md ("Cube conventions"). Changing a name here changes the
format of every cube written from now on: bump :data:`CONVENTION_VERSION`.
"""

from __future__ import annotations

CONVENTION_VERSION = "1"

# Group attributes.
ATTR_KIND = "cube_kind"
ATTR_VERSION = "cube_convention_version"
ATTR_COMPLETE = "cube_complete"
ATTR_PROVENANCE = "provenance"
ATTR_INPUTS = "ingest_inputs_sha256"  # of the plan's tasks and input files: re-runs compare it

KIND_PLATE = "cellpainting-plate"

# Variables and dims of a plate cube.
IMAGES = "images"
PRESENT = "present"
THUMBNAIL = "thumbnail"
ILLUM = "illum"
PLATE_DIMS = ("well", "field", "channel", "y", "x")
SAMPLE_DIMS = ("well", "field")

# Per-channel statistics over the present images, computed while ingesting.
# "saturated" is the fraction of pixels at the dtype's maximum (integer images).
STAT_NAMES = ("mean", "std", "min", "max", "p01", "p99", "saturated")


def stat_var(name: str) -> str:
    """Name of the variable holding one per-channel statistic (``channel_mean`` …)."""
    return f"channel_{name}"
