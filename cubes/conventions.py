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

# The mask every cube has: True where the input was found and written (cubes/layout.py).
PRESENT = "present"

# Statistics of integer images, computed while ingesting (a layout names its own;
# cubes/layout.py). "saturated" is the fraction of values at the dtype's maximum.
STAT_NAMES = ("mean", "std", "min", "max", "p01", "p99", "saturated")
