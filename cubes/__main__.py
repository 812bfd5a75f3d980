"""``python -m cubes ls|describe|preview``."""

from __future__ import annotations

import sys

from cubes.cli import main

if __name__ == "__main__":
    sys.exit(main())
