"""``python -m ingest <source> SRC DEST``."""

from __future__ import annotations

import sys

from ingest.cli import main
from ingest.cli_common import process_start

if __name__ == "__main__":
    sys.exit(main(started=process_start()))
